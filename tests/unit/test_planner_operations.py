"""Plans for every cluster operation beyond create/delete (LOOM_SEMANTICS.md, Planner)."""

from __future__ import annotations

import pytest
from helpers import service, write_templates

from loom.planner import (
    Plan,
    plan_add_services,
    plan_configure,
    plan_expand,
    plan_restart,
    plan_start,
    plan_stop,
)

ALL = ("install", "configure", "initialize", "start", "stop")


def ids(p: Plan) -> list[str]:
    return [s.id for s in p.steps]


def before(p: Plan, a: str, b: str) -> bool:
    """``a`` is an ancestor of ``b`` through the steps' ``after`` edges."""
    seen, stack = set(), list(p.step(b).after)
    while stack:
        s = stack.pop()
        if s == a:
            return True
        if s not in seen:
            seen.add(s)
            stack.extend(p.step(s).after)
    return False


def well_formed(p: Plan) -> None:
    seen: set[str] = set()
    for step in p.steps:
        assert all(a in seen for a in step.after), step
        seen.add(step.id)
    assert len(seen) == len(p.steps)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    zk = service("zk", ALL, provides=["coordinator"])
    zk["actions"]["configure"]["args"] = ["%join(map(host.service.zk,'$:2181'),',')%"]
    kafka = service("kafka", ALL, runtime_requires=["coordinator"], install_requires=["base"])
    kafka["actions"]["configure"]["args"] = ["%host.service.zk%"]
    services = [
        service("base", ("install",)),
        zk,
        kafka,
        service("web", ("install", "configure", "start", "stop"), runtime_uses=["kafka"]),
        service("lonely", ("install", "start", "stop")),
        service("nostop", ("install", "start"), runtime_requires=["zk"]),
    ]
    return write_templates(tmp_path_factory.mktemp("ops"), {f"services/{s['name']}.yaml": s for s in services})


CLUSTER = ["base", "zk", "kafka", "web", "lonely"]


def test_start_pulls_in_runtime_dependencies_in_order(catalog):
    p = plan_start(catalog, CLUSTER, ["web"])
    well_formed(p)
    assert set(ids(p)) == {"web.start", "kafka.start", "zk.start"}
    assert before(p, "zk.start", "kafka.start") and before(p, "kafka.start", "web.start")
    assert p.operation == "start_services"


def test_stop_pulls_in_dependents_and_goes_in_reverse(catalog):
    p = plan_stop(catalog, CLUSTER, ["zk"])
    well_formed(p)
    assert set(ids(p)) == {"zk.stop", "kafka.stop", "web.stop"}
    assert before(p, "web.stop", "kafka.stop") and before(p, "kafka.stop", "zk.stop")


def test_no_target_list_means_every_service(catalog):
    assert set(ids(plan_stop(catalog, CLUSTER))) == {"zk.stop", "kafka.stop", "web.stop", "lonely.stop"}
    assert set(ids(plan_start(catalog, CLUSTER))) == {"zk.start", "kafka.start", "web.start", "lonely.start"}


def test_restart_stops_dependents_first_then_starts_forward(catalog):
    p = plan_restart(catalog, CLUSTER, ["kafka"])
    well_formed(p)
    assert set(ids(p)) == {"kafka.stop", "web.stop", "kafka.start", "web.start"}
    assert before(p, "web.stop", "kafka.stop")
    assert before(p, "kafka.stop", "kafka.start") and before(p, "kafka.start", "web.start")
    assert before(p, "web.stop", "web.start")


def test_configure_without_restart_only_configures(catalog):
    p = plan_configure(catalog, CLUSTER)
    assert set(ids(p)) == {"zk.configure", "kafka.configure", "web.configure"}
    assert all(s.after == () for s in p.steps)


def test_configure_with_restart_stops_everything_before_configuring(catalog):
    p = plan_configure(catalog, CLUSTER, restart=True)
    well_formed(p)
    stops = [i for i in ids(p) if i.endswith(".stop")]
    configures = [i for i in ids(p) if i.endswith(".configure")]
    for stop in stops:
        for configure in configures:
            assert before(p, stop, configure), (stop, configure)
    assert before(p, "zk.start", "kafka.start") and before(p, "web.stop", "kafka.stop")
    assert before(p, "kafka.configure", "kafka.start")


def test_add_services_runs_only_the_new_services(catalog):
    p = plan_add_services(catalog, ["base", "zk"], ["kafka", "web"])
    well_formed(p)
    assert ids(p)[0] == "node.bootstrap"
    assert not any(i.startswith(("zk.", "base.")) for i in ids(p))
    assert before(p, "kafka.start", "web.start")
    assert before(p, "kafka.install", "kafka.configure")


def test_add_services_ignores_ones_already_there(catalog):
    assert ids(plan_add_services(catalog, ["base", "zk"], ["zk"])) == ["node.bootstrap"]


def test_expand_builds_new_nodes_then_reconfigures_membership_readers(catalog):
    p = plan_expand(catalog, ["base", "zk", "kafka"], grown=["zk"])
    well_formed(p)
    new = [s for s in p.steps if s.where == "new"]
    existing = [s for s in p.steps if s.where == "existing"]
    assert [s.id for s in new][:3] == ["node.create", "node.confirm", "node.bootstrap"]
    assert {s.id for s in existing} == {"zk.configure_existing", "kafka.configure_existing"}
    assert all(s.action == "configure" for s in existing)
    for step in existing:
        assert before(p, "zk.start", step.id) and before(p, "kafka.start", step.id)


def test_expand_without_membership_readers_touches_no_existing_node(catalog):
    p = plan_expand(catalog, ["base", "lonely"], grown=["lonely"])
    assert all(s.where == "new" for s in p.steps)


def test_start_walks_through_a_dependency_without_start(catalog):
    p = plan_start(catalog, ["zk", "nostop", "base"], ["nostop"])
    assert set(ids(p)) == {"zk.start", "nostop.start"}
    assert before(p, "zk.start", "nostop.start")


def test_stop_of_a_service_without_stop_still_orders_the_rest(catalog):
    p = plan_stop(catalog, ["zk", "nostop"], ["zk"])
    assert ids(p) == ["zk.stop"]


def test_sync_adds_new_services_then_refreshes_everything(catalog):
    from loom.planner import plan_sync

    p = plan_sync(catalog, ["base", "zk", "kafka"])
    well_formed(p)
    assert ids(p)[0] == "node.bootstrap"
    refresh = [s for s in p.steps if s.id.endswith("_refresh")]
    assert {s.id for s in refresh} == {f"{svc}.{a}_refresh" for svc in ("zk", "kafka") for a in ("stop", "configure", "start")}
    assert {s.action for s in refresh} == {"stop", "configure", "start"}
    assert before(p, "kafka.start", "zk.stop_refresh")  # the new services are up first
    assert before(p, "kafka.stop_refresh", "zk.stop_refresh")  # dependents stop first
    assert before(p, "zk.stop_refresh", "kafka.configure_refresh")  # every stop before any configure
    assert before(p, "zk.start_refresh", "kafka.start_refresh")  # dependencies start first
