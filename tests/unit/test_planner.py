"""The planner: create/delete step graphs, walked-through actions, provides, cycles."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import service, write_templates

from loom.errors import TemplateError
from loom.planner import Plan, plan
from loom.spec.loader import Catalog, load_catalog

REPO = Path(__file__).resolve().parents[2]
ALL = ("install", "configure", "initialize", "start", "stop")


def ancestors(p: Plan, step_id: str) -> set[str]:
    seen: set[str] = set()
    stack = list(p.step(step_id).after)
    while stack:
        s = stack.pop()
        if s not in seen:
            seen.add(s)
            stack.extend(p.step(s).after)
    return seen


def precedes(p: Plan, before: str, after: str) -> bool:
    """``before`` is reachable backwards from ``after`` through ``after`` edges."""
    return before in ancestors(p, after)


def check_well_formed(p: Plan) -> None:
    ids = [s.id for s in p.steps]
    assert len(ids) == len(set(ids)), ids
    seen: set[str] = set()
    for s in p.steps:
        for a in s.after:
            assert a in seen, f"{s.id} is after {a}, which is not an earlier step"
        # edges are reduced: no predecessor is implied by another one
        for a in s.after:
            assert not any(a in ancestors(p, b) for b in s.after if b != a), (s.id, s.after)
        assert s.kind in ("node", "service")
        if s.kind == "service":
            assert s.id == f"{s.service}.{s.action}"
        else:
            assert s.id == f"node.{s.action}" and s.service is None
        seen.add(s.id)


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    catalog = load_catalog(REPO / "templates")
    catalog.raise_for_problems()
    return catalog


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Catalog:
    services = [
        service("base", ("install",)),
        service("db", ("install", "start")),
        service("app", ALL, install_requires=["base"], runtime_requires=["db"]),
        service("lib", ("install",)),
        service("tool", ("install", "configure", "start", "stop"), runtime_requires=["lib"]),
        service("empty", ()),
        service("needy", ("install", "start"), runtime_requires=["empty"]),
        service("zk", ("install", "start", "stop"), provides=["coordinator"]),
        service("kafka", ("install", "initialize", "start", "stop"), runtime_requires=["coordinator"], install_uses=["base"]),
        service("cache", ("install", "start", "stop")),
        service("web", ("install", "start", "stop"), runtime_uses=["cache"]),
        service("quiet", ("install", "start"), runtime_requires=["db"]),
    ]
    catalog = write_templates(tmp_path_factory.mktemp("planner"), {f"services/{s['name']}.yaml": s for s in services})
    catalog.raise_for_problems()
    return catalog


@pytest.fixture(scope="module")
def cyclic() -> Catalog:
    """Cyclic services, built from models directly: the loader refuses them (see test_spec), but
    the planner must still refuse a cycle on its own rather than emit a wrong order."""
    from loom.spec.models import Service

    services = [
        service("ping", ("install", "start", "stop"), runtime_requires=["pong"]),
        service("pong", ("install", "start", "stop"), runtime_requires=["ping"]),
        service("hen", ("install", "start"), install_requires=["egg"]),
        service("egg", ("install", "start"), install_requires=["hen"]),
        service("tick", ("install", "start"), runtime_requires=["tock"]),
        service("tock", ("install",), runtime_requires=["tick"]),
    ]
    catalog = Catalog(root=REPO / "templates")
    catalog.services = {s["name"]: Service.model_validate(s) for s in services}
    return catalog


# --- create -----------------------------------------------------------------------------------


def test_dask_create_steps(shipped):
    p = plan("create", shipped, ["base", "dask-scheduler", "dask-worker"])
    check_well_formed(p)
    assert p.operation == "create"
    assert [s.id for s in p.steps[:3]] == ["node.create", "node.confirm", "node.bootstrap"]
    assert p.step("node.confirm").after == ("node.create",)
    assert p.step("node.bootstrap").after == ("node.confirm",)
    assert {s.id for s in p.service_steps} == {
        "base.install",
        "dask-scheduler.install", "dask-scheduler.configure", "dask-scheduler.start",
        "dask-worker.install", "dask-worker.configure", "dask-worker.start",
    }
    for s in p.service_steps:
        assert precedes(p, "node.bootstrap", s.id)
    assert precedes(p, "base.install", "dask-scheduler.install")
    assert precedes(p, "base.install", "dask-worker.install")
    assert precedes(p, "dask-scheduler.start", "dask-worker.start")
    assert not precedes(p, "dask-worker.start", "dask-scheduler.start")
    assert set(p.step("dask-worker.start").after) == {"dask-worker.configure", "dask-scheduler.start"}
    assert p.step("dask-scheduler.install").after == ("base.install",)
    # the scheduler does not wait for anything of the worker, and the installs run in parallel
    assert not ancestors(p, "dask-scheduler.start") & {s.id for s in p.service_steps if s.service == "dask-worker"}
    assert not precedes(p, "dask-scheduler.install", "dask-worker.install")


def test_create_is_deterministic(shipped):
    services = ["dask-worker", "base", "dask-scheduler"]
    assert plan("create", shipped, services) == plan("create", shipped, set(services))


def test_create_chain_of_one_service(synthetic):
    p = plan("create", synthetic, ["app", "base", "db"])
    check_well_formed(p)
    chain = ["node.bootstrap", "app.install", "app.configure", "app.initialize", "app.start"]
    for before, after in zip(chain, chain[1:]):
        assert precedes(p, before, after)
    assert "app.stop" not in {s.id for s in p.steps}  # create never stops


def test_missing_actions_are_walked_through(synthetic):
    p = plan("create", synthetic, ["app", "base", "db"])
    check_well_formed(p)
    ids = {s.id for s in p.steps}
    assert {"db.install", "db.start"} <= ids
    assert not {"db.configure", "db.initialize", "base.configure", "base.start"} & ids
    assert p.step("db.start").after == ("db.install",)
    assert precedes(p, "base.install", "app.install")
    # runtime dependency: START(db) before INITIALIZE(app) and START(app)
    assert precedes(p, "db.start", "app.initialize")
    assert precedes(p, "db.start", "app.start")
    assert not precedes(p, "db.start", "app.configure")


def test_dependent_of_a_service_with_only_install_and_start(synthetic):
    p = plan("create", synthetic, ["db", "quiet"])
    check_well_formed(p)
    assert [s.id for s in p.service_steps if s.service == "quiet"] == ["quiet.install", "quiet.start"]
    assert set(p.step("quiet.start").after) == {"quiet.install", "db.start"}
    assert not precedes(p, "db.start", "quiet.install")


def test_dependency_without_start_uses_its_last_action(synthetic):
    p = plan("create", synthetic, ["lib", "tool"])
    check_well_formed(p)
    assert [s.id for s in p.service_steps if s.service == "lib"] == ["lib.install"]
    assert set(p.step("tool.start").after) == {"tool.configure", "lib.install"}
    assert not precedes(p, "lib.install", "tool.configure")


def test_dependency_without_any_action(synthetic):
    p = plan("create", synthetic, ["empty", "needy"])
    check_well_formed(p)
    assert not [s for s in p.steps if s.service == "empty"]
    assert set(p.step("needy.start").after) == {"needy.install"}
    assert precedes(p, "node.bootstrap", "needy.start")


def test_provides_resolves_to_the_providing_service(synthetic):
    p = plan("create", synthetic, ["kafka", "zk"])
    check_well_formed(p)
    assert precedes(p, "zk.start", "kafka.initialize")
    assert precedes(p, "zk.start", "kafka.start")
    assert "zk.start" in p.step("kafka.initialize").after


def test_uses_orders_only_when_present(synthetic):
    with_cache = plan("create", synthetic, ["cache", "web"])
    check_well_formed(with_cache)
    assert precedes(with_cache, "cache.start", "web.start")
    alone = plan("create", synthetic, ["web"])
    check_well_formed(alone)
    assert [s.id for s in alone.service_steps] == ["web.install", "web.start"]
    # install "uses" base: orders kafka.install after base.install only when base is there
    p = plan("create", synthetic, ["base", "kafka", "zk"])
    assert precedes(p, "base.install", "kafka.install")
    assert not precedes(p, "base.install", "zk.install")


@pytest.mark.parametrize(
    ("operation", "services", "members"),
    [
        ("create", ["ping", "pong"], {"ping.start", "pong.start"}),
        ("create", ["hen", "egg"], {"hen.install", "egg.install"}),
        ("delete", ["ping", "pong"], {"ping.stop", "pong.stop"}),
    ],
)
def test_dependency_cycle_is_a_template_error(cyclic, operation, services, members):
    with pytest.raises(TemplateError) as info:
        plan(operation, cyclic, services)
    msg = str(info.value)
    assert msg.startswith(f"{operation}: dependency cycle")
    assert "cycle" in msg
    for member in members:
        assert member in msg


def test_unknown_operation(synthetic):
    with pytest.raises(TemplateError, match="operation 'resize' is not supported"):
        plan("resize", synthetic, ["db"])


# --- delete -----------------------------------------------------------------------------------


def test_dask_delete_steps(shipped):
    p = plan("delete", shipped, ["base", "dask-scheduler", "dask-worker"])
    check_well_formed(p)
    assert p.operation == "delete"
    assert [s.id for s in p.steps] == ["dask-worker.stop", "dask-scheduler.stop", "node.delete"]
    assert p.step("dask-scheduler.stop").after == ("dask-worker.stop",)
    assert precedes(p, "dask-worker.stop", "node.delete")
    assert p.steps[-1].id == "node.delete"


def test_delete_stops_dependents_first(synthetic):
    p = plan("delete", synthetic, ["kafka", "zk", "cache", "web", "app", "db", "base"])
    check_well_formed(p)
    assert p.steps[-1].id == "node.delete"
    stops = {s.id for s in p.steps if s.kind == "service"}
    assert stops == {"kafka.stop", "zk.stop", "cache.stop", "web.stop", "app.stop"}
    assert all(s.action == "stop" for s in p.service_steps)
    assert precedes(p, "kafka.stop", "zk.stop")
    assert precedes(p, "web.stop", "cache.stop")
    for s in stops:
        assert precedes(p, s, "node.delete")
    assert not precedes(p, "zk.stop", "kafka.stop")


def test_delete_ignores_services_no_longer_in_the_catalog(shipped):
    p = plan("delete", shipped, ["dask-worker", "retired-service"])
    check_well_formed(p)
    assert [s.id for s in p.steps] == ["dask-worker.stop", "node.delete"]


def test_delete_with_no_stop_actions_only_deletes_nodes(synthetic):
    p = plan("delete", synthetic, ["base", "db"])
    assert [(s.id, s.after) for s in p.steps] == [("node.delete", ())]



def test_a_cycle_through_a_missing_action_is_still_a_cycle(cyclic):
    with pytest.raises(TemplateError, match="dependency cycle"):
        plan("create", cyclic, ["tick", "tock"])
