"""loom.layout_check: whether a live layout still fits a (changed) template."""

from __future__ import annotations

from loom.layout import Layout, NodeSpec
from loom.layout_check import violations
from loom.settings import REPO_ROOT
from loom.spec.loader import load_catalog


def _layout(*services: tuple[str, ...]) -> Layout:
    nodes = tuple(
        NodeSpec(i, f"c-{i}", "small", "debian", "f", "i", "root", svc) for i, svc in enumerate(services, 1)
    )
    return Layout("c", "dask", "local", tuple(sorted({s for n in services for s in n})), nodes)


CATALOG = load_catalog(REPO_ROOT / "templates")
DASK = CATALOG.template("dask")


def test_a_solved_layout_fits():
    layout = _layout(("base", "dask-scheduler"), ("base", "dask-worker"), ("base", "dask-worker"))
    assert violations(DASK, layout, CATALOG) == []


def test_every_kind_of_violation_is_named():
    layout = _layout(("base", "dask-scheduler", "dask-worker"), ("base", "dask-scheduler"), ("ghost",))
    found = violations(DASK, layout, CATALOG)
    assert "dask-scheduler runs on 2 node(s); the template now allows at most 1" in found
    assert "c-1 holds dask-scheduler, dask-worker, which now cantcoexist" in found
    assert "service 'ghost' is no longer in the catalog" in found


def test_size_outside_the_range():
    small = DASK.model_copy(update={"constraints": DASK.constraints.model_copy(
        update={"size": DASK.constraints.size.model_copy(update={"max": 2})})})
    layout = _layout(("base", "dask-scheduler"), ("base", "dask-worker"), ("base", "dask-worker"))
    assert violations(small, layout, CATALOG) == ["the cluster has 3 nodes; the template allows 2..2"]
