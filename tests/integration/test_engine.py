"""loom.engine on real local nodes, without Airflow: the operations the operators call."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from loom import engine
from loom.errors import ClusterError, RequestError
from loom.operations import begin
from loom.providers.local import LocalNodeDriver

pytestmark = pytest.mark.integration

def _home(env: engine.Env, hostname: str) -> Path:
    return env.settings.state_dir / "nodes" / hostname / "home"


def test_create_runs_actions_with_per_node_macros_then_delete_leaves_nothing(env, make_cluster):
    view = make_cluster("echo", 3)
    assert view["status"] == "ACTIVE" and view["owner"] == "alice"
    leader, m1, m2 = view["nodes"]
    assert leader["services"] == ["leader"] and m1["services"] == m2["services"] == ["member"]
    assert (_home(env, "echo-1") / "out" / "leader.install").read_text() == "echo-1.test\n"
    assert (_home(env, "echo-1") / "out" / "leader.start").read_text() == f"{leader['ip']}\n"
    for rank, node in enumerate((m1, m2), 1):
        args = (_home(env, node["hostname"]) / "out" / "member.configure").read_text().splitlines()
        assert args == [leader["ip"], str(rank), "2", "echo-2.test:9,echo-3.test:9", "x; $(id)"]
    described = json.loads((_home(env, "echo-2") / ".loom" / "cluster.json").read_text())
    assert [n["hostname"] for n in described["nodes"]] == ["echo-1", "echo-2", "echo-3"]
    key = env.key_file(view)
    assert oct(key.stat().st_mode & 0o777) == "0o600"

    begin(env, "delete", "echo", {"cluster": "echo"}, "echo.delete", "del-1", "alice")
    for node in view["nodes"]:
        engine.destroy_node(env, "echo", node["hostname"])
        engine.destroy_node(env, "echo", node["hostname"])  # a retried destroy is a no-op
    done = engine.finish_delete(env, "echo", "echo.delete", "del-1")
    assert done["status"] == "TERMINATED"
    assert LocalNodeDriver(state_dir=env.settings.state_dir, ssh_port=2323).list_nodes() == []
    assert not key.exists()
    assert not any((env.settings.state_dir / "nodes").glob("echo-*"))


def test_retried_steps_do_not_duplicate_anything(env):
    first = engine.begin_create(env, "echo", {"cluster": "retry", "size": 2}, "echo.create", "run-1", "alice")
    again = engine.begin_create(env, "echo", {"cluster": "retry", "size": 2}, "echo.create", "run-1", "alice")
    assert again["id"] == first["id"] and len(again["operations"]) == 1
    a = engine.provision_node(env, "retry", "retry-1")
    b = engine.provision_node(env, "retry", "retry-1")
    assert a == b
    names = [n.name for n in LocalNodeDriver(state_dir=env.settings.state_dir, ssh_port=2323).list_nodes()]
    assert names == ["retry-1"]


def test_a_live_name_is_refused_and_the_cluster_untouched(env, make_cluster):
    make_cluster("taken", 2)
    with pytest.raises(ClusterError, match="already exists"):
        engine.begin_create(env, "echo", {"cluster": "taken", "size": 3}, "echo.create", "run-2", "bob")
    view = env.store.require("taken")
    assert view["status"] == "ACTIVE" and len(view["nodes"]) == 2 and view["owner"] == "alice"


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"cluster": "ok", "size": 9}, "size: 9 is outside"),
        ({"cluster": "ok", "services": ["nope"]}, "unknown service 'nope'"),
        ({"cluster": "ok", "bogus": 1}, "bogus: Extra inputs are not permitted"),
        ({"cluster": "../etc"}, "not a valid cluster name"),
        ({"cluster": "ok", "size": 1}, "size: 1 is outside"),
    ],
)
def test_bad_requests_create_nothing(env, conf, message):
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace("$", r"\$")):
        engine.begin_create(env, "echo", conf, "echo.create", "run-x", "alice")
    assert env.store.list() == []
    assert not os.path.exists(env.settings.state_dir / "nodes") or not any((env.settings.state_dir / "nodes").glob("*-*"))
