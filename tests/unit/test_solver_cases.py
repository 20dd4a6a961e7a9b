"""Tables of layout cases for the solver's three modes: create, add-services and expand.

Catalogs are built in memory (no files) so the tables stay fast; ``assert_valid`` checks every
rule of LOOM_SEMANTICS.md's layout solver on any layout and is shared with the property tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import assert_valid, cluster_template

from loom.errors import LayoutError, RequestError
from loom.layout import Layout, NodeSpec
from loom.solver import solve, solve_add_services, solve_expand
from loom.spec.loader import Catalog, load_catalog
from loom.spec.models import ClusterTemplate, CreateRequest, HardwareType, ImageType, Provider, Service

REPO = Path(__file__).resolve().parents[2]

# "local" maps small/large and debian/ubuntu; "cloud" adds gpu and lacks ubuntu (as in helpers).
PROVIDERS = [{"name": "local", "driver": "local"}, {"name": "cloud", "driver": "dummy"}]
HARDWARE = [
    {"name": "small", "providermap": {"local": {"flavor": "local-small"}, "cloud": {"flavor": "s-1"}}},
    {"name": "large", "providermap": {"local": {"flavor": "local-large"}, "cloud": {"flavor": "l-8"}}},
    {"name": "gpu", "providermap": {"cloud": {"flavor": "g-1"}}},
]
IMAGES = [
    {"name": "debian", "providermap": {"local": {"image": "host"}, "cloud": {"image": "deb-12", "sshuser": "admin"}}},
    {"name": "ubuntu", "providermap": {"local": {"image": "host-ubuntu"}}},
]
SERVICE_NAMES = ["base", "a", "b", "c", "d", "e", "f", "g", "x", "y"]


def make_catalog(templates: list[dict[str, Any]], services: list[str] = SERVICE_NAMES) -> Catalog:
    """An in-memory catalog: the basic providers/hardware/images, ``services``, ``templates``."""
    catalog = Catalog(root=Path("/in-memory/templates"))
    catalog.providers = {p["name"]: Provider.model_validate(p) for p in PROVIDERS}
    catalog.hardwaretypes = {h["name"]: HardwareType.model_validate(h) for h in HARDWARE}
    catalog.imagetypes = {i["name"]: ImageType.model_validate(i) for i in IMAGES}
    catalog.services = {s: Service(name=s) for s in services}
    catalog.clustertemplates = {t["name"]: ClusterTemplate.model_validate(t) for t in templates}
    return catalog


def template(services: list[str], name: str = "t", **kw: Any) -> dict[str, Any]:
    return cluster_template(name, services, **kw)


def create(catalog: Catalog, size: int, name: str = "t", **kw: Any) -> Layout:
    t = catalog.template(name)
    layout = solve(t, CreateRequest(cluster="demo", size=size, **kw), catalog)
    assert_valid(t, layout, catalog)
    assert [n.number for n in layout.nodes] == list(range(1, size + 1))
    return layout


def shape(layout: Layout) -> list[str]:
    """Each node as 'svc+svc@hardware/image', in numbering order."""
    return [f"{'+'.join(n.services)}@{n.hardwaretype}/{n.imagetype}" for n in layout.nodes]


def q(lo: int | None = None, hi: int | None = None, **extra: Any) -> dict[str, Any]:
    quantities = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
    return {"quantities": quantities, **extra}


DASK = {
    "layout": {"cantcoexist": [["b", "c"]]},
    "services": {"b": q(1, 1), "c": q(1)},
}

# --- create: valid layouts ----------------------------------------------------------------------

VALID = [
    (
        "dask-shaped",
        ["base", "b", "c"],
        DASK,
        3,
        {},
        ["b+base@small/debian", "base+c@small/debian", "base+c@small/debian"],
    ),
    ("unconstrained everywhere", ["base", "a"], None, 2, {}, ["a+base@small/debian"] * 2),
    (
        "mustcoexist fills every node",
        ["a", "b", "c"],
        {"layout": {"mustcoexist": [["a", "b"]]}},
        2,
        {},
        ["a+b+c@small/debian"] * 2,
    ),
    (
        "cantcoexist: alphabetically earlier wins ties",
        ["base", "a", "b"],
        {"layout": {"cantcoexist": [["a", "b"]]}},
        3,
        {},
        ["a+base@small/debian", "a+base@small/debian", "b+base@small/debian"],
    ),
    (
        "hardware and image per service",
        ["base", "a", "b"],
        {"services": {"a": q(hi=1, hardwaretypes=["large"]), "b": {"imagetypes": ["ubuntu"]}}},
        3,
        {},
        ["a+b+base@large/ubuntu", "b+base@small/ubuntu", "b+base@small/ubuntu"],
    ),
    (
        "triple cantcoexist packs two per node",
        ["a", "b", "c"],
        {"layout": {"cantcoexist": [["a", "b", "c"]]}, "services": {s: q(2) for s in "abc"}},
        3,
        {},
        ["a+b@small/debian", "a+c@small/debian", "b+c@small/debian"],
    ),
    (
        "no service everywhere: every node still runs one",
        ["a", "b"],
        {"services": {"a": q(hi=1), "b": q(hi=2)}},
        3,
        {},
        ["a@small/debian", "b@small/debian", "b@small/debian"],
    ),
    (
        "min 0 max 0 places nothing",
        ["base", "a"],
        {"services": {"a": q(0, 0)}},
        2,
        {},
        ["base@small/debian"] * 2,
    ),
    (
        "mustcoexist inherits hardware",
        ["a", "b", "c"],
        {"layout": {"mustcoexist": [["a", "b"]]}, "services": {"a": {"hardwaretypes": ["large"]}, "c": q(hi=1)}},
        2,
        {},
        ["a+b+c@large/debian", "a+b@large/debian"],
    ),
    (
        "request overrides",
        ["base", "a"],
        None,
        2,
        {"hardwaretype": "large", "imagetype": "ubuntu"},
        ["a+base@large/ubuntu"] * 2,
    ),
    (
        "provider with gpu",
        ["base", "a"],
        {"services": {"a": q(hi=1, hardwaretypes=["gpu"])}},
        2,
        {"provider": "cloud"},
        ["a+base@gpu/debian", "base@small/debian"],
    ),
    (
        "cantcoexist group partly requested only binds present services",
        ["a", "b"],
        {"layout": {"cantcoexist": [["a", "b", "c"]]}},
        2,
        {},
        ["a@small/debian", "b@small/debian"],
    ),
]


@pytest.mark.parametrize(
    ("case", "services", "constraints", "size", "kw", "expected"), VALID, ids=[v[0] for v in VALID]
)
def test_create_valid(case, services, constraints, size, kw, expected):
    catalog = make_catalog([template(services, constraints=constraints)])
    layout = create(catalog, size, **kw)
    if expected is not None:
        assert shape(layout) == expected
    assert layout == create(catalog, size, **kw)


def test_nodes_without_an_everywhere_service_are_never_empty():
    catalog = make_catalog([template(["a", "b"], constraints={"services": {"a": q(hi=1), "b": q(hi=2)}})])
    layout = create(catalog, 3)
    assert sorted(len(n.services) for n in layout.nodes) == [1, 1, 1]
    assert len(layout.nodes_with("a")) == 1 and len(layout.nodes_with("b")) == 2


# --- create: impossible layouts -----------------------------------------------------------------

IMPOSSIBLE = [
    (
        "the issue's example",
        ["base", "b", "c"],
        {"layout": {"cantcoexist": [["b", "c"]]}, "services": {"b": q(3, 3), "c": q(5)}},
        6,
        [
            "no layout for 6 nodes of template 't': b needs at least 3 nodes but cantcoexist with c which "
            "needs at least 5: 8 nodes needed, size is 6. Constraints in conflict: b min 3, c min 5, "
            "keeping apart b/c (cantcoexist), all on 6 nodes."
        ],
    ),
    (
        "one service above the size",
        ["base", "a"],
        {"services": {"a": q(5)}},
        3,
        ["a needs at least 5 nodes, size is 3", "a min 5"],
    ),
    (
        "hardware keeps two services apart",
        ["base", "a", "b"],
        {"services": {"a": q(2, hardwaretypes=["large"]), "b": q(2, hardwaretypes=["small"])}},
        3,
        [
            "a needs at least 2 nodes with hardware large but b needs at least 2 with hardware small, so they "
            "never share a node: 4 nodes needed, size is 3",
            "a only on hardware large, b only on hardware small",
        ],
    ),
    (
        "three-way cantcoexist capacity",
        ["a", "b", "c"],
        {"layout": {"cantcoexist": [["a", "b", "c"]]}, "services": {s: q(3) for s in "abc"}},
        4,
        ["a node holds at most 2 of them, but their minimums add up to 9 placements: 5 nodes needed, size is 4"],
    ),
    (
        "maximums cannot fill the nodes",
        ["a", "b"],
        {"services": {"a": q(hi=1), "b": q(hi=1)}},
        3,
        [
            "every node must run at least one service, but the services' maximums fill at most 2 nodes, size is 3. "
            "Constraints in conflict: every node runs at least one service, a max 1, b max 1, all on 3 nodes."
        ],
    ),
    (
        "mustcoexist with clashing quantities",
        ["base", "a", "b"],
        {"layout": {"mustcoexist": [["a", "b"]]}, "services": {"a": q(3), "b": q(hi=2)}},
        4,
        ["a/b must share nodes (mustcoexist) but a needs at least 3 nodes while b allows at most 2"],
    ),
    (
        "service needs hardware the provider lacks",
        ["base", "a"],
        {"services": {"a": {"hardwaretypes": ["gpu"]}}},
        2,
        ["service 'a' fits on no node: a needs hardware gpu, and the usable hardware types here are small, large"],
    ),
    (
        "mustcoexist and cantcoexist on the same services",
        ["base", "a", "b"],
        {"layout": {"mustcoexist": [["a", "b"]], "cantcoexist": [["a", "b"]]}},
        2,
        [
            "services 'a', 'b' fit on no node: a/b must share nodes (mustcoexist) but may not all share a node "
            "(cantcoexist a/b)"
        ],
    ),
    (
        "five services in a ring of cantcoexist pairs need three nodes",
        ["a", "b", "c", "d", "e"],
        {"layout": {"cantcoexist": [["a", "b"], ["b", "c"], ["c", "d"], ["d", "e"], ["a", "e"]]}},
        2,
        [
            "no layout for 2 nodes of template 't': these constraints cannot all hold together: a min 1 (default), "
            "b min 1 (default), c min 1 (default), d min 1 (default), e min 1 (default), keeping apart a/b "
            "(cantcoexist), keeping apart b/c (cantcoexist), keeping apart c/d (cantcoexist), keeping apart "
            "d/e (cantcoexist), keeping apart a/e (cantcoexist), all on 2 nodes"
        ],
    ),
]


@pytest.mark.parametrize(
    ("case", "services", "constraints", "size", "fragments"), IMPOSSIBLE, ids=[v[0] for v in IMPOSSIBLE]
)
def test_create_impossible(case, services, constraints, size, fragments):
    catalog = make_catalog([template(services, constraints=constraints)])
    with pytest.raises(LayoutError) as info:
        solve(catalog.template("t"), CreateRequest(cluster="demo", size=size), catalog)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_solving_prints_nothing(capfd):
    catalog = make_catalog([template(["base", "b", "c"], constraints=DASK)])
    create(catalog, 4)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


# --- add services -------------------------------------------------------------------------------


def dask_cluster(extra: dict[str, Any] | None = None, size: int = 3, **constraints: Any) -> tuple[Catalog, Layout]:
    """A dask-shaped cluster (b = scheduler, c = workers) of a template that also allows x, y."""
    c = {"layout": {"cantcoexist": [["b", "c"]], **constraints}, "services": {"b": q(1, 1), "c": q(1), **(extra or {})}}
    catalog = make_catalog([template(["base", "b", "c"], constraints=c)])
    return catalog, create(catalog, size)


def add(catalog: Catalog, layout: Layout, services: list[str]) -> Layout:
    t = catalog.template("t")
    out = solve_add_services(t, layout, services, catalog)
    assert_valid(t, out, catalog)
    for before, after in zip(layout.nodes, out.nodes):
        assert set(before.services) <= set(after.services)
        assert (before.number, before.hostname, before.hardwaretype, before.flavor) == (
            after.number,
            after.hostname,
            after.hardwaretype,
            after.flavor,
        )
    assert len(out.nodes) == len(layout.nodes)
    return out


ADD_VALID = [
    ("unconstrained goes everywhere", {}, {}, ["x"], ["b+base+x", "base+c+x", "base+c+x"]),
    (
        "cantcoexist with workers: scheduler node only",
        {},
        {"cantcoexist": [["b", "c"], ["x", "c"]]},
        ["x"],
        ["b+base+x", "base+c", "base+c"],
    ),
    ("mustcoexist with the scheduler", {}, {"mustcoexist": [["x", "b"]]}, ["x"], ["b+base+x", "base+c", "base+c"]),
    ("mustcoexist with the workers", {}, {"mustcoexist": [["x", "c"]]}, ["x"], ["b+base", "base+c+x", "base+c+x"]),
    ("quantities limit the new service", {"x": q(hi=2)}, {}, ["x"], ["b+base+x", "base+c+x", "base+c"]),
    (
        "two new services kept apart",
        {"x": q(2)},
        {"cantcoexist": [["b", "c"], ["x", "y"]]},
        ["x", "y"],
        ["b+base+x", "base+c+x", "base+c+y"],
    ),
    (
        "new pair kept together",
        {"x": q(hi=1)},
        {"mustcoexist": [["x", "y"]]},
        ["x", "y"],
        ["b+base+x+y", "base+c", "base+c"],
    ),
]


@pytest.mark.parametrize(("case", "extra", "groups", "new", "expected"), ADD_VALID, ids=[v[0] for v in ADD_VALID])
def test_add_services_valid(case, extra, groups, new, expected):
    catalog, layout = dask_cluster(extra, **groups)
    out = add(catalog, layout, new)
    assert ["+".join(n.services) for n in out.nodes] == expected
    assert set(out.services) == set(layout.services) | set(new)


ADD_IMPOSSIBLE = [
    (
        "hardware no node has",
        {"x": {"hardwaretypes": ["large"]}},
        {},
        ["x"],
        3,
        "x needs at least 1 node but only 0 of the 3 nodes can take it; demo-1, demo-2, demo-3: hardware small, "
        "x needs large. Constraints in conflict: x min 1 (default), x only on hardware large, all on the "
        "cluster's 3 nodes.",
    ),
    (
        "too few nodes free of the workers",
        {"x": q(2)},
        {"cantcoexist": [["b", "c"], ["x", "c"]]},
        ["x"],
        3,
        "x needs at least 2 nodes but only 1 of the 3 nodes can take it (demo-1); demo-2, demo-3: c is there, "
        "cantcoexist c/x",
    ),
    (
        "mustcoexist forces more than the max",
        {"x": q(hi=1)},
        {"mustcoexist": [["x", "c"]]},
        ["x"],
        3,
        "x must go on 2 nodes (c is there, mustcoexist c/x) but x max is 1",
    ),
    (
        "mustcoexist onto nodes the hardware forbids",
        {"x": {"hardwaretypes": ["large"]}},
        {"mustcoexist": [["x", "b"]]},
        ["x"],
        3,
        "x must go on demo-1 (b is there, mustcoexist b/x) but cannot (hardware small, x needs large). Constraints in "
        "conflict: keeping together b/x (mustcoexist), x only on hardware large, all on the cluster's 3 nodes.",
    ),
    (
        "three new services pairwise apart on two nodes",
        {},
        {"cantcoexist": [["b", "c"], ["x", "y"], ["y", "g"], ["x", "g"]]},
        ["g", "x", "y"],
        2,
        "these constraints cannot all hold together: g min 1 (default), x min 1 (default), y min 1 (default), "
        "keeping apart x/y (cantcoexist), keeping apart g/y (cantcoexist), keeping apart g/x (cantcoexist), all on the "
        "cluster's 2 nodes",
    ),
]


@pytest.mark.parametrize(
    ("case", "extra", "groups", "new", "size", "fragment"), ADD_IMPOSSIBLE, ids=[v[0] for v in ADD_IMPOSSIBLE]
)
def test_add_services_impossible(case, extra, groups, new, size, fragment):
    catalog, layout = dask_cluster(extra, size=size, **groups)
    with pytest.raises(LayoutError) as info:
        solve_add_services(catalog.template("t"), layout, new, catalog)
    message = str(info.value)
    assert message.startswith(f"cannot add {', '.join(sorted(new))} to cluster 'demo' (template 't'): ")
    assert fragment in message


def replace_nodes(layout: Layout, nodes: tuple[NodeSpec, ...]) -> Layout:
    return Layout.from_dict({**layout.to_dict(), "nodes": [n.to_dict() for n in nodes]})


@pytest.mark.parametrize(
    ("new", "pattern"),
    [
        (["b"], r"^services: 'b' already runs on cluster 'demo'"),
        (["ghost"], r"^services: unknown service 'ghost'"),
        ([], r"^services: name at least one service to add"),
    ],
)
def test_add_services_bad_requests(new, pattern):
    catalog, layout = dask_cluster()
    with pytest.raises(RequestError, match=pattern):
        solve_add_services(catalog.template("t"), layout, new, catalog)


def test_add_services_refuses_a_service_the_shipped_dask_cluster_runs():
    catalog = load_catalog(REPO / "templates")
    layout = solve(catalog.template("dask"), CreateRequest(cluster="demo", size=3), catalog)
    with pytest.raises(RequestError, match=r"already runs"):
        solve_add_services(catalog.template("dask"), layout, ["base"], catalog)


# --- expand -------------------------------------------------------------------------------------


def expand(catalog: Catalog, layout: Layout, n: int, **kw: Any) -> Layout:
    t = catalog.template("t")
    out = solve_expand(t, layout, n, catalog, **kw)
    assert_valid(t, out, catalog)
    assert out.nodes[: len(layout.nodes)] == layout.nodes
    top = max(node.number for node in layout.nodes)
    assert [node.number for node in out.nodes[len(layout.nodes) :]] == list(range(top + 1, top + n + 1))
    return out


EXPAND_VALID = [
    ("workers join a dask cluster", DASK, ["base", "b", "c"], 3, 2, {}, ["base+c@small/debian"] * 2),
    (
        "quantities count existing nodes",
        {"layout": {"cantcoexist": [["a", "b"]]}, "services": {"a": q(hi=3)}},
        ["base", "a", "b"],
        2,
        3,
        {},
        ["a+base@small/debian", "a+base@small/debian", "b+base@small/debian"],
    ),
    ("override for new nodes", None, ["base", "a"], 1, 1, {"hardwaretype": "large"}, ["a+base@large/debian"]),
]


@pytest.mark.parametrize(
    ("case", "constraints", "services", "size", "n", "kw", "expected"), EXPAND_VALID, ids=[v[0] for v in EXPAND_VALID]
)
def test_expand_valid(case, constraints, services, size, n, kw, expected):
    catalog = make_catalog([template(services, constraints=constraints)])
    layout = create(catalog, size)
    out = expand(catalog, layout, n, **kw)
    assert shape(replace_nodes(out, out.nodes[size:])) == expected


def test_expand_numbers_after_the_highest_existing_node():
    catalog = make_catalog([template(["base", "b", "c"], constraints=DASK)])
    layout = create(catalog, 3)
    gappy = replace_nodes(layout, (layout.nodes[0], replace_number(layout.nodes[2], 7)))
    out = expand(catalog, gappy, 2)
    assert [n.hostname for n in out.nodes] == ["demo-1", "demo-7", "demo-8", "demo-9"]


def replace_number(node: NodeSpec, number: int) -> NodeSpec:
    return NodeSpec.from_dict({**node.to_dict(), "number": number, "hostname": f"demo-{number}"})


def test_expand_raises_minimums_that_the_cluster_does_not_meet_yet():
    catalog = make_catalog([template(["base", "a"], constraints={"services": {"a": q(hi=1)}})])
    layout = create(catalog, 2)
    stricter = make_catalog([template(["base", "a"], constraints={"services": {"a": q(3)}})])
    out = expand(stricter, layout, 2)
    assert len(out.nodes_with("a")) == 3


APART = {"layout": {"cantcoexist": [["a", "b"]]}}

EXPAND_IMPOSSIBLE = [
    (
        "every service at its max",
        {"services": {"a": q(hi=2), "b": q(hi=1)}},
        None,
        2,
        "every node must run at least one service, but the services' maximums fill at most 0 new nodes, only 2 "
        "are being added. Constraints in conflict: every node runs at least one service, a max 2 (already on 2), "
        "b max 1 (already on 1), all on 2 new nodes.",
    ),
    (
        "a stricter minimum than the cluster has",
        APART,
        {**APART, "services": {"b": q(3)}},
        1,
        "b needs at least 2 more nodes, only 1 are being added. Constraints in conflict: b min 3 (already on 1), "
        "all on 1 new nodes.",
    ),
]


@pytest.mark.parametrize(
    ("case", "constraints", "later", "n", "fragment"), EXPAND_IMPOSSIBLE, ids=[v[0] for v in EXPAND_IMPOSSIBLE]
)
def test_expand_impossible(case, constraints, later, n, fragment):
    layout = create(make_catalog([template(["a", "b"], constraints=constraints)]), 2)
    catalog = make_catalog([template(["a", "b"], constraints=later or constraints)])
    with pytest.raises(LayoutError) as info:
        solve_expand(catalog.template("t"), layout, n, catalog)
    message = str(info.value)
    assert message.startswith(f"cannot add {n} nodes to cluster 'demo' (template 't', 2 nodes now): ")
    assert fragment in message


@pytest.mark.parametrize(("n", "pattern"), [(0, r"^add_nodes: 0 must be at least 1"), (48, r"^size: 51 is outside")])
def test_expand_bad_requests(n, pattern):
    catalog = load_catalog(REPO / "templates")
    layout = solve(catalog.template("dask"), CreateRequest(cluster="demo", size=3), catalog)
    with pytest.raises(RequestError, match=pattern):
        solve_expand(catalog.template("dask"), layout, n, catalog)


def test_shipped_dask_expand_adds_workers():
    catalog = load_catalog(REPO / "templates")
    dask = catalog.template("dask")
    layout = solve(dask, CreateRequest(cluster="demo", size=3), catalog)
    out = solve_expand(dask, layout, 4, catalog)
    assert_valid(dask, out, catalog)
    assert [n.services for n in out.nodes[3:]] == [("base", "dask-worker")] * 4
    assert [n.hostname for n in out.nodes[3:]] == ["demo-4", "demo-5", "demo-6", "demo-7"]


# --- the benchmark's templates, and import cost ---------------------------------------------------


def load_bench() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_solver", REPO / "bench" / "solver.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["wide", "ring", "narrow"])
def test_bench_templates_solve_at_a_thousand_nodes(name):
    catalog = load_bench().bench_catalog(1000)
    t = catalog.template(name)
    layout = solve(t, CreateRequest(cluster="bench", size=1000), catalog)
    assert_valid(t, layout, catalog)
    assert len(t.defaults.services) >= 8 and len(layout.nodes) == 1000


def test_bench_infeasible_template_is_explained():
    catalog = load_bench().bench_catalog(1000)
    with pytest.raises(LayoutError) as info:
        solve(catalog.template("ring-plus1"), CreateRequest(cluster="bench", size=1000), catalog)
    assert str(info.value) == (
        "no layout for 1000 nodes of template 'ring-plus1': these constraints cannot all hold together: "
        "r1 min 401, r2 min 400, r3 min 400, r4 min 400, r5 min 400, keeping apart r1/r2 (cantcoexist), "
        "keeping apart r2/r3 (cantcoexist), keeping apart r3/r4 (cantcoexist), keeping apart r4/r5 "
        "(cantcoexist), keeping apart r1/r5 (cantcoexist), all on 1000 nodes"
    )


def test_bench_baseline_agrees_on_small_sizes():
    """The benchmark's copy of Loom's algorithm finds a layout wherever the solver does."""
    bench = load_bench()
    catalog = bench.bench_catalog(10)
    counts = bench.baseline(catalog.template("narrow"), 10, ["small", "large", "gpu"], ["debian", "ubuntu"], cap=30)
    assert sum(counts) == 10


def test_importing_the_solver_does_not_import_highspy():
    import subprocess
    import sys

    code = "import sys, loom.solver; assert 'highspy' not in sys.modules and 'numpy' not in sys.modules"
    env_path = str(REPO / "loom_plugins")
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {env_path!r}); {code}"], check=True)


def test_add_services_may_rely_on_services_already_on_the_cluster():
    from loom.solver import solve, solve_add_services
    from loom.spec.loader import load_catalog
    from loom.spec.models import CreateRequest
    from loom.settings import REPO_ROOT

    catalog = load_catalog(REPO_ROOT / "templates")
    template = catalog.template("dask")
    layout = solve(template, CreateRequest(cluster="cc", size=2, services=["base", "dask-scheduler"]), catalog)
    grown = solve_add_services(template, layout, ["dask-worker"], catalog)  # needs base, already there
    assert [n.services for n in grown.nodes] == [("base", "dask-scheduler"), ("base", "dask-worker")]
