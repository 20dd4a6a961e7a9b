"""loom.engine on real local nodes, without Airflow: the operations the operators call."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from loom import engine
from loom.errors import ClusterError, RequestError
from loom.planner import plan
from loom.providers.local import LocalNodeDriver
from loom.settings import load_settings
from loom.spec.loader import load_catalog
from loom.store import Store

pytestmark = pytest.mark.integration

TEMPLATES = {
    "providers/local.yaml": "name: local\ndriver: local\n",
    "hardwaretypes/small.yaml": "name: small\nprovidermap:\n  local: {flavor: local-small}\n",
    "imagetypes/debian.yaml": "name: debian\nprovidermap:\n  local: {image: host, sshuser: root}\n",
    "services/scripts/echo.sh": '#!/usr/bin/env bash\nset -eu\nmkdir -p ~/out\nprintf "%s\\n" "$@" > ~/out/"$LOOM_SERVICE.$LOOM_ACTION"\n',
    "services/leader.yaml": (
        "name: leader\nactions:\n"
        "  install: {type: shell, script: scripts/echo.sh, args: ['%host.self%']}\n"
        "  start: {type: shell, script: scripts/echo.sh, args: ['%ip.self%']}\n"
    ),
    "services/member.yaml": (
        "name: member\ndependencies:\n  runtime: {requires: [leader]}\nactions:\n"
        "  configure: {type: shell, script: scripts/echo.sh,"
        " args: ['%ip.service.leader%', '%instance.self.service.member%', '%num.service.member%',"
        " \"%join(map(host.service.member,'$:9'),',')%\", 'x; $(id)']}\n"
    ),
    "clustertemplates/echo.yaml": (
        "name: echo\ndefaults:\n  services: [leader, member]\n  provider: local\n  hardwaretype: small\n"
        "  imagetype: debian\n  dnsSuffix: test\n  config: {greeting: 'hi %cluster.name%'}\n"
        "constraints:\n  layout:\n    cantcoexist: [[leader, member]]\n"
        "  services:\n    leader: {quantities: {min: 1, max: 1}}\n  size: {min: 2, max: 5}\n"
    ),
}


@pytest.fixture
def env(tmp_path: Path, monkeypatch) -> engine.Env:
    for rel, text in TEMPLATES.items():
        path = tmp_path / "templates" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    state = tmp_path / "state"
    monkeypatch.setenv("AIRFLOW__LOOM__STATE_DIR", str(state))
    monkeypatch.setenv("AIRFLOW__LOOM__LOCAL_SSH_PORT", "2323")
    monkeypatch.setenv("AIRFLOW__LOOM__LOCAL_PIP_CACHE", str(state / "pip"))
    catalog = load_catalog(tmp_path / "templates")
    assert catalog.problems == []
    result = engine.Env(load_settings(), catalog, Store(f"sqlite:///{state / 'loom.db'}"))
    yield result
    driver = LocalNodeDriver(state_dir=state, ssh_port=2323)
    for node in driver.list_nodes():
        driver.destroy_node(node)


def _create(env: engine.Env, name: str, size: int, run: str = "run-1") -> dict:
    view = engine.begin_create(env, "echo", {"cluster": name, "size": size}, "echo.create", run, "alice")
    for node in view["nodes"]:
        engine.provision_node(env, name, node["hostname"])
        engine.confirm_node(env, name, node["hostname"], timeout=20)
        engine.bootstrap_node(env, name, node["hostname"])
    for step in plan("create", env.catalog, view["services"]).service_steps:
        for host in engine.nodes_with_service(env, name, step.service):
            engine.run_service_action(env, name, host, step.service, step.action)
    return engine.finish_ok(env, name, "echo.create", run, engine.ClusterStatus.ACTIVE)


def _home(env: engine.Env, hostname: str) -> Path:
    return env.settings.state_dir / "nodes" / hostname / "home"


def test_create_runs_actions_with_per_node_macros_then_delete_leaves_nothing(env):
    view = _create(env, "echo", 3)
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

    engine.begin_delete(env, {"cluster": "echo"}, "echo.delete", "del-1", "alice")
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


def test_a_live_name_is_refused_and_the_cluster_untouched(env):
    _create(env, "taken", 2)
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
