"""Fixtures that build real local nodes (namespaced sshd on loopback) in a temporary state dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from libcloud.compute.base import NodeAuthSSHKey

from loom import engine
from loom.keys import write_keypair
from loom.providers.local import LocalNodeDriver
from loom.settings import load_settings
from loom.spec.loader import load_catalog
from loom.store import Store

TEST_SSH_PORT = 2322  # not the default 2222, so a developer's running demo is never touched


@pytest.fixture
def node_state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def driver(node_state: Path) -> Iterator[LocalNodeDriver]:
    drv = LocalNodeDriver(state_dir=node_state, ssh_port=TEST_SSH_PORT)
    yield drv
    for node in drv.list_nodes():  # never leak a node, whatever the test did
        drv.destroy_node(node)


@pytest.fixture
def cluster_key(node_state: Path) -> tuple[Path, str]:
    key = node_state / "keys" / "test.1" / "id_ed25519"
    return key, write_keypair(key, "loom@test")


@pytest.fixture
def auth(cluster_key: tuple[Path, str]) -> NodeAuthSSHKey:
    return NodeAuthSSHKey(cluster_key[1])


TEMPLATES = {
    "providers/local.yaml": "name: local\ndriver: local\n",
    "hardwaretypes/small.yaml": "name: small\nprovidermap:\n  local: {flavor: local-small}\n",
    "imagetypes/debian.yaml": "name: debian\nprovidermap:\n  local: {image: host, sshuser: root}\n",
    "services/scripts/echo.sh": '#!/usr/bin/env bash\nset -eu\nmkdir -p ~/out\nprintf "%s\\n" "$@" > ~/out/"$LOOM_SERVICE.$LOOM_ACTION"\n',
    "services/leader.yaml": (
        "name: leader\nactions:\n"
        "  install: {type: shell, script: scripts/echo.sh, args: ['%host.self%']}\n"
        "  start: {type: shell, script: scripts/echo.sh, args: ['%ip.self%']}\n"
        "  stop: {type: shell, script: scripts/echo.sh}\n"
    ),
    "services/member.yaml": (
        "name: member\ndependencies:\n  runtime: {requires: [leader]}\nactions:\n"
        "  configure: {type: shell, script: scripts/echo.sh,"
        " args: ['%ip.service.leader%', '%instance.self.service.member%', '%num.service.member%',"
        " \"%join(map(host.service.member,'$:9'),',')%\", 'x; $(id)']}\n"
        "  start: {type: shell, script: scripts/echo.sh}\n"
        "  stop: {type: shell, script: scripts/echo.sh}\n"
    ),
    "services/extra.yaml": "name: extra\nactions:\n  install: {type: shell, script: scripts/echo.sh, args: ['%num.service.extra%']}\n",
    "clustertemplates/echo.yaml": (
        "name: echo\ndefaults:\n  services: [leader, member]\n  provider: local\n  hardwaretype: small\n"
        "  imagetype: debian\n  dnsSuffix: test\n  config: {greeting: 'hi %cluster.name%'}\n"
        "compatibility:\n  services: [leader, member, extra]\n"
        "constraints:\n  layout:\n    cantcoexist: [[leader, member]]\n"
        "  services:\n    leader: {quantities: {min: 1, max: 1}}\n  size: {min: 2, max: 5}\n"
        "administration:\n  leaseduration: {initial: 1h, max: 3h, step: 1h}\n"
    ),
    "clustertemplates/fragile.yaml": (
        "name: fragile\nextends: echo\nadministration:\n  on_failure: rollback\n"
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




def create_cluster(env: engine.Env, name: str, size: int, run: str = "run-1", template: str = "echo") -> dict:
    """What the create DAG does, step by step, without Airflow."""
    from loom.operations import settle
    from loom.planner import plan

    view = engine.begin_create(env, template, {"cluster": name, "size": size}, f"{template}.create", run, "alice")
    for node in view["nodes"]:
        engine.provision_node(env, name, node["hostname"])
        engine.confirm_node(env, name, node["hostname"], timeout=20)
        engine.bootstrap_node(env, name, node["hostname"])
    for step in plan("create", env.catalog, view["services"]).service_steps:
        for host in engine.nodes_with_service(env, name, step.service):
            engine.run_service_action(env, name, host, step.service, step.action)
    return settle(env, "create", name, f"{template}.create", run, [])


@pytest.fixture
def make_cluster(env):
    return lambda name, size, run="run-1", template="echo": create_cluster(env, name, size, run, template)
