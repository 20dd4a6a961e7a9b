"""Cluster operations without Airflow, on real local nodes: one at a time, allowed transitions,
what each run targets, expand, leases, rollback, and the safety net for runs that vanish."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from loom import engine
from loom.errors import ClusterError, RequestError
from loom.operations import begin, run_ended, settle, step_nodes
from loom.providers.local import LocalNodeDriver
from loom.store import ClusterStatus

pytestmark = pytest.mark.integration


def _begin(env, op, conf, run="op-1", template="echo"):
    return begin(env, op, template, conf, f"{template}.{op}", run, "bob")


def test_one_operation_at_a_time_and_the_lock_is_released(env, make_cluster):
    make_cluster("one", 2)
    assert env.store.require("one")["busy"] is None
    _begin(env, "stop_services", {"cluster": "one"}, run="a")
    with pytest.raises(ClusterError, match=r"cluster 'one' is busy with echo.stop_services/a"):
        _begin(env, "start_services", {"cluster": "one"}, run="b")
    with pytest.raises(ClusterError, match="busy with echo.stop_services/a"):
        env.store.hold("one", "echo.start_services", "b")
    _begin(env, "stop_services", {"cluster": "one"}, run="a")  # the same run again: fine
    settle(env, "stop_services", "one", "echo.stop_services", "a", [])
    view = env.store.require("one")
    assert view["busy"] is None and view["status"] == "ACTIVE"
    assert [o["operation"] for o in view["operations"]] == ["create", "stop_services"]  # busy: nothing recorded


def test_targets_pull_in_dependencies_and_dependents(env, make_cluster):
    make_cluster("deps", 3)
    _begin(env, "start_services", {"cluster": "deps", "services": ["member"]}, run="s")
    assert env.store.operation("deps", "echo.start_services", "s")["params"]["targets"] == ["leader", "member"]
    assert step_nodes(env, "deps", "echo.start_services", "s", "leader", "all", "targets") == ["deps-1"]
    settle(env, "start_services", "deps", "echo.start_services", "s", [])
    _begin(env, "stop_services", {"cluster": "deps", "services": ["leader"]}, run="t")
    assert env.store.operation("deps", "echo.stop_services", "t")["params"]["targets"] == ["leader", "member"]
    settle(env, "stop_services", "deps", "echo.stop_services", "t", [])
    with pytest.raises(RequestError, match="extra not on cluster"):
        _begin(env, "restart_services", {"cluster": "deps", "services": ["extra"]}, run="u")
    refused = env.store.require("deps")
    assert refused["busy"] is None and refused["status"] == "ACTIVE"
    assert refused["operations"][-1]["state"] == "FAILED" and refused["operations"][-1]["message"] == "refused"


def test_service_operations_need_an_active_cluster_but_configure_repairs(env, make_cluster):
    make_cluster("broken", 2)
    env.store.update_cluster("broken", status=ClusterStatus.INCONSISTENT.value)
    with pytest.raises(ClusterError, match="is INCONSISTENT; start_services needs it to be ACTIVE"):
        _begin(env, "start_services", {"cluster": "broken"}, run="x")
    _begin(env, "configure", {"cluster": "broken", "config": {"greeting": "hello"}}, run="c")
    assert step_nodes(env, "broken", "echo.configure", "c", "member", "all", "restart") == []
    assert step_nodes(env, "broken", "echo.configure", "c", "member", "all", None) == ["broken-2"]
    view = settle(env, "configure", "broken", "echo.configure", "c", [])
    assert view["status"] == "ACTIVE" and view["config"]["greeting"] == "hello"


def test_a_failed_service_operation_leaves_the_cluster_inconsistent(env, make_cluster):
    make_cluster("flaky", 2)
    _begin(env, "restart_services", {"cluster": "flaky"}, run="r")
    with pytest.raises(ClusterError, match="restart_services failed at member.start.*now INCONSISTENT"):
        settle(env, "restart_services", "flaky", "echo.restart_services", "r", ["member.start"])
    view = env.store.require("flaky")
    assert view["status"] == "INCONSISTENT" and view["busy"] is None
    assert "clear the failed task" in view["operations"][-1]["message"]


def test_add_services_puts_new_services_on_existing_nodes_only(env, make_cluster):
    make_cluster("grow", 3)
    begun = _begin(env, "add_services", {"cluster": "grow", "services": ["extra"]}, run="add")
    assert begun.hostnames == ["grow-1", "grow-2", "grow-3"]
    assert step_nodes(env, "grow", "echo.add_services", "add", "extra", "all", "new_services") == begun.hostnames
    assert step_nodes(env, "grow", "echo.add_services", "add", "member", "all", "new_services") == []
    for host in begun.hostnames:
        engine.run_service_action(env, "grow", host, "extra", "install")
    view = settle(env, "add_services", "grow", "echo.add_services", "add", [])
    assert view["services"] == ["extra", "leader", "member"] and len(view["nodes"]) == 3
    out = env.settings.state_dir / "nodes" / "grow-2" / "home" / "out" / "extra.install"
    assert out.read_text() == "3\n"


def test_expand_adds_numbered_nodes_and_reconfigures_membership_readers(env, make_cluster):
    make_cluster("wide", 2)
    begun = _begin(env, "expand", {"cluster": "wide", "add_nodes": 2}, run="exp")
    assert begun.hostnames == ["wide-3", "wide-4"]
    assert _begin(env, "expand", {"cluster": "wide", "add_nodes": 2}, run="exp").hostnames == begun.hostnames
    for host in begun.hostnames:
        engine.provision_node(env, "wide", host)
        engine.confirm_node(env, "wide", host, timeout=20)
    assert step_nodes(env, "wide", "echo.expand", "exp", "member", "new", None) == ["wide-3", "wide-4"]
    assert step_nodes(env, "wide", "echo.expand", "exp", "member", "existing", "membership") == ["wide-2"]
    for host in ("wide-3", "wide-4", "wide-2"):
        engine.run_service_action(env, "wide", host, "member", "configure")
    view = settle(env, "expand", "wide", "echo.expand", "exp", [])
    assert [n["hostname"] for n in view["nodes"]] == ["wide-1", "wide-2", "wide-3", "wide-4"]
    args = (env.settings.state_dir / "nodes" / "wide-2" / "home" / "out" / "member.configure").read_text().split()
    assert args[2] == "3"  # the existing member now counts 3 members
    with pytest.raises(RequestError, match="more than template 'echo' allows"):
        _begin(env, "expand", {"cluster": "wide", "add_nodes": 2}, run="exp2")


def test_lease_rules(env, make_cluster):
    view = make_cluster("leased", 2)
    expiry = datetime.fromisoformat(view["lease_expires_at"])
    created = datetime.fromisoformat(view["created_at"])
    assert timedelta(minutes=59) < expiry - created.replace(tzinfo=expiry.tzinfo) <= timedelta(hours=1, seconds=5)
    with pytest.raises(RequestError, match="at most 1h past the current expiry"):
        _begin(env, "extend_lease", {"cluster": "leased", "lease": "2h"}, run="l1")
    _begin(env, "extend_lease", {"cluster": "leased", "lease": "1h"}, run="l2")
    settle(env, "extend_lease", "leased", "echo.extend_lease", "l2", [])
    _begin(env, "extend_lease", {"cluster": "leased", "lease": "1h"}, run="l3")
    settle(env, "extend_lease", "leased", "echo.extend_lease", "l3", [])
    with pytest.raises(RequestError, match=r"create time \+ max 3h"):
        _begin(env, "extend_lease", {"cluster": "leased", "lease": "1h"}, run="l4")
    later = datetime.fromisoformat(env.store.require("leased")["lease_expires_at"])
    assert later - expiry >= timedelta(hours=2) - timedelta(seconds=5)


def test_expired_leases_are_found_by_the_janitor(env, make_cluster):
    from loom.janitor import expired_deletes

    make_cluster("old", 2)
    assert expired_deletes(env) == []
    in_two_hours = datetime.now(timezone.utc) + timedelta(hours=2)
    assert expired_deletes(env, in_two_hours) == [{"trigger_dag_id": "echo.delete", "conf": {"cluster": "old"}}]


def test_rollback_policy_destroys_every_node_the_create_made(env):
    view = engine.begin_create(env, "fragile", {"cluster": "doomed", "size": 3}, "fragile.create", "run-1", "alice")
    for node in view["nodes"][:2]:
        engine.provision_node(env, "doomed", node["hostname"])
    driver = LocalNodeDriver(state_dir=env.settings.state_dir, ssh_port=2323)
    assert len(driver.list_nodes()) == 2
    with pytest.raises(ClusterError, match="rolled back.*now TERMINATED"):
        settle(env, "create", "doomed", "fragile.create", "run-1", ["node.confirm"])
    assert driver.list_nodes() == []
    gone = env.store.require("doomed")
    assert gone["status"] == "TERMINATED" and gone["busy"] is None
    assert not env.key_file(gone).exists()


def test_keep_policy_leaves_nodes_for_resume(env):
    view = engine.begin_create(env, "echo", {"cluster": "kept", "size": 2}, "echo.create", "run-1", "alice")
    engine.provision_node(env, "kept", view["nodes"][0]["hostname"])
    with pytest.raises(ClusterError, match="now INCOMPLETE"):
        settle(env, "create", "kept", "echo.create", "run-1", ["node.create"])
    assert env.store.require("kept")["busy"] is None
    # resume: clearing the failed task re-runs steps; the first one takes the cluster back
    env.store.hold("kept", "echo.create", "run-1")
    assert env.store.require("kept")["busy"] == "echo.create/run-1"
    assert env.store.operation("kept", "echo.create", "run-1")["state"] == "RUNNING"
    for node in view["nodes"]:
        engine.provision_node(env, "kept", node["hostname"])
    assert len(LocalNodeDriver(state_dir=env.settings.state_dir, ssh_port=2323).list_nodes()) == 2


def test_a_run_that_ends_without_its_finish_step_frees_the_cluster(env, make_cluster):
    make_cluster("lost", 2)
    _begin(env, "configure", {"cluster": "lost"}, run="gone")
    run_ended(env, "configure", "lost", "echo.configure", "gone", False, "Dag Run's state was manually set to `failed`.")
    view = env.store.require("lost")
    assert view["busy"] is None and view["status"] == "INCONSISTENT"
    assert view["operations"][-1]["state"] == "FAILED"
    assert "manually set" in view["operations"][-1]["message"]
    # a task of that run that was still starting must not take the cluster back
    with pytest.raises(ClusterError, match="was ended outside Loom"):
        env.store.hold("lost", "echo.configure", "gone")
    assert env.store.require("lost")["busy"] is None


def test_a_successful_resume_clears_the_failure_marks(env, make_cluster):
    make_cluster("mend", 2)
    _begin(env, "configure", {"cluster": "mend"}, run="c1")
    engine.record_step_failure(env, "mend", "member.configure on mend-2: exit 1", hostname="mend-2")
    with pytest.raises(ClusterError):
        settle(env, "configure", "mend", "echo.configure", "c1", ["member.configure"])
    assert env.store.require("mend")["nodes"][1]["status"] == "FAILED"
    env.store.hold("mend", "echo.configure", "c1")  # the cleared task runs again and succeeds
    view = settle(env, "configure", "mend", "echo.configure", "c1", [])
    assert view["status"] == "ACTIVE"
    assert [(n["status"], n["message"]) for n in view["nodes"]] == [("RUNNING", ""), ("RUNNING", "")]


def _edit_template(env, name: str, old: str, new: str) -> None:
    from loom.spec.loader import load_catalog

    path = env.catalog.root / "clustertemplates" / f"{name}.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    env.catalog = load_catalog(env.catalog.root)
    assert env.catalog.problems == []


def test_sync_brings_the_cluster_to_the_changed_template(env, make_cluster):
    make_cluster("synced", 3)
    _begin(env, "sync", {"cluster": "synced"}, run="s0")
    assert env.store.operation("synced", "echo.sync", "s0")["params"] == {"new_services": [], "restart": False, "changes": []}
    settle(env, "sync", "synced", "echo.sync", "s0", [])

    _edit_template(env, "echo", "config: {greeting: 'hi %cluster.name%'}", "config: {greeting: 'hi', color: blue}")
    _edit_template(env, "echo", "services: [leader, member]", "services: [leader, member, extra]")
    begun = _begin(env, "sync", {"cluster": "synced"}, run="s1")
    params = env.store.operation("synced", "echo.sync", "s1")["params"]
    assert params["new_services"] == ["extra"] and params["restart"] is True
    assert params["changes"] == ["add extra", "new config"]
    assert begun.hostnames == ["synced-1", "synced-2", "synced-3"]
    assert step_nodes(env, "synced", "echo.sync", "s1", "member", "all", "restart") == ["synced-2", "synced-3"]
    view = settle(env, "sync", "synced", "echo.sync", "s1", [])
    assert view["config"] == {"greeting": "hi", "color": "blue"}
    assert view["services"] == ["extra", "leader", "member"]


def test_sync_keeps_what_users_configured(env, make_cluster):
    make_cluster("mine", 2)
    _begin(env, "configure", {"cluster": "mine", "config": {"greeting": "mine"}}, run="c")
    settle(env, "configure", "mine", "echo.configure", "c", [])
    _edit_template(env, "echo", "config: {greeting: 'hi %cluster.name%'}", "config: {greeting: 'new', color: red}")
    _begin(env, "sync", {"cluster": "mine"}, run="s")
    assert settle(env, "sync", "mine", "echo.sync", "s", [])["config"] == {"greeting": "mine", "color": "red"}


def test_sync_refuses_an_incompatible_template_and_says_why(env, make_cluster):
    make_cluster("stuck", 3)
    _edit_template(env, "echo", "size: {min: 2, max: 5}", "size: {min: 2, max: 2}")
    with pytest.raises(ClusterError, match="cannot be synced to template 'echo': the cluster has 3 nodes; the template allows 2..2"):
        _begin(env, "sync", {"cluster": "stuck"}, run="s")
    view = env.store.require("stuck")
    assert view["status"] == "ACTIVE" and view["busy"] is None and view["operations"][-1]["message"] == "refused"
