"""The ``static`` provider against a pool of real sshd hosts (local nodes made outside Loom, with
their own admin key): hosts are lent to one cluster at a time, the cluster key is authorized
and revoked, services' remove actions run before a host goes back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loom import engine
from loom.errors import ProviderError
from loom.keys import write_keypair
from loom.operations import begin, settle, step_nodes
from loom.planner import plan
from loom.providers.local import LocalNodeDriver
from loom.settings import load_settings
from loom.spec.loader import load_catalog
from loom.store import Store

pytestmark = pytest.mark.integration

POOL_PORT = 2324
CONN_ID = "loom_test_pool"


@pytest.fixture
def pool(tmp_path: Path):
    """Three existing hosts with an admin key; the first one's host key is given, the others
    are learned on first use."""
    from libcloud.compute.base import NodeAuthSSHKey

    admin_key = tmp_path / "admin" / "id_ed25519"
    admin_pub = write_keypair(admin_key, "admin@pool")
    driver = LocalNodeDriver(state_dir=tmp_path / "pool", ssh_port=POOL_PORT)
    hosts = [driver.create_node(name=f"host{i}", auth=NodeAuthSSHKey(admin_pub)) for i in (1, 2, 3)]
    yield admin_key, hosts
    for node in driver.list_nodes():
        driver.destroy_node(node)


TEMPLATES = {
    "hardwaretypes/small.yaml": "name: small\nprovidermap:\n  lab: {flavor: any}\n",
    "imagetypes/debian.yaml": "name: debian\nprovidermap:\n  lab: {image: any, sshuser: nobody}\n",
    "services/scripts/mark.sh": '#!/usr/bin/env bash\nset -eu\necho "$LOOM_SERVICE.$LOOM_ACTION $LOOM_CLUSTER" >> ~/marks\n',
    "services/app.yaml": (
        "name: app\nactions:\n"
        "  install: {type: shell, script: scripts/mark.sh}\n"
        "  stop: {type: shell, script: scripts/mark.sh}\n"
        "  remove: {type: shell, script: scripts/mark.sh}\n"
    ),
    "clustertemplates/labapp.yaml": (
        "name: labapp\ndefaults:\n  services: [app]\n  provider: lab\n  hardwaretype: small\n  imagetype: debian\n"
        "constraints:\n  size: {min: 1, max: 3}\n"
    ),
}


@pytest.fixture
def lab(tmp_path: Path, pool, monkeypatch):
    admin_key, hosts = pool
    entries = [{"address": h.public_ips[0], "port": POOL_PORT,
                "authorized_keys": str(Path(h.extra["home"]).parent / "authorized_keys")} for h in hosts]
    entries[0]["host_key"] = hosts[0].extra["host_key"]
    files = dict(TEMPLATES)
    files["providers/lab.yaml"] = json.dumps({"name": "lab", "driver": "static", "connection": CONN_ID,
                                              "options": {"hosts": entries}})
    for rel, text in files.items():
        path = tmp_path / "templates" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(
        {"conn_type": "ssh", "login": "root", "extra": {"private_key": admin_key.read_text()}}))
    state = tmp_path / "state"
    monkeypatch.setenv("AIRFLOW__LOOM__STATE_DIR", str(state))
    catalog = load_catalog(tmp_path / "templates")
    assert catalog.problems == []
    return engine.Env(load_settings(), catalog, Store(f"sqlite:///{state / 'loom.db'}")), hosts


def _create(env: engine.Env, name: str, size: int) -> dict:
    view = engine.begin_create(env, "labapp", {"cluster": name, "size": size}, "labapp.create", f"c-{name}", "alice")
    for node in view["nodes"]:
        engine.provision_node(env, name, node["hostname"])
        engine.confirm_node(env, name, node["hostname"], timeout=20)
        engine.bootstrap_node(env, name, node["hostname"])
        engine.run_service_action(env, name, node["hostname"], "app", "install")
    return settle(env, "create", name, "labapp.create", f"c-{name}", [])


def _delete(env: engine.Env, name: str) -> dict:
    """What the delete DAG does: stop, remove (gated: only on reused hosts), destroy, finish."""
    run = f"d-{name}"
    hostnames = begin(env, "delete", "labapp", {"cluster": name}, "labapp.delete", run, "alice").hostnames
    for step in plan("delete", env.catalog, ["app"]).service_steps:
        gate = "reused" if step.action == "remove" else None
        for host in step_nodes(env, name, "labapp.delete", run, step.service, step.where, gate):
            engine.run_service_action(env, name, host, step.service, step.action)
    for host in hostnames:
        engine.destroy_node(env, name, host)
    return settle(env, "delete", name, "labapp.delete", run, [])


def _authorized(host) -> str:
    return (Path(host.extra["home"]).parent / "authorized_keys").read_text()


def test_pool_hosts_are_lent_to_one_cluster_at_a_time_and_come_back_clean(lab):
    env, hosts = lab
    by_ip = {h.public_ips[0]: h for h in hosts}
    a = _create(env, "pa", 2)
    assert a["status"] == "ACTIVE"
    a_ips = {n["ip"] for n in a["nodes"]}
    assert len(a_ips) == 2 and a_ips <= set(by_ip)
    assert {n["sshuser"] for n in a["nodes"]} == {"root"}  # the pool's user, not the image type's
    a_key = env.key_file(a).with_suffix(".pub").read_text().strip()
    for ip in a_ips:
        assert a_key in _authorized(by_ip[ip])
        assert (Path(by_ip[ip].extra["home"]) / "marks").read_text() == "app.install pa\n"

    b = engine.begin_create(env, "labapp", {"cluster": "pb", "size": 2}, "labapp.create", "c-pb", "bob")
    first, second = (n["hostname"] for n in b["nodes"])
    engine.provision_node(env, "pb", first)
    (b_ip,) = {n["ip"] for n in env.store.require("pb")["nodes"] if n["ip"]}
    assert b_ip not in a_ips  # never the same host as another cluster
    with pytest.raises(ProviderError, match=r"all 3 pool host\(s\) are in use \(by clusters: pa, pb\)"):
        engine.provision_node(env, "pb", second)

    gone = _delete(env, "pa")
    assert gone["status"] == "TERMINATED"
    for ip in a_ips:
        home = Path(by_ip[ip].extra["home"])
        assert (home / "marks").read_text() == "app.install pa\napp.stop pa\napp.remove pa\n"
        assert a_key not in _authorized(by_ip[ip])  # the cluster key is revoked
        assert "admin@pool" in _authorized(by_ip[ip])  # the pool's own key stays
        assert not (home / ".loom").exists()
    engine.provision_node(env, "pb", second)  # a returned host is lent again
    b_ips = {n["ip"] for n in env.store.require("pb")["nodes"]}
    assert len(b_ips) == 2 and b_ips <= set(by_ip)
    for node in env.store.require("pb")["nodes"]:
        engine.confirm_node(env, "pb", node["hostname"], timeout=20)


def test_a_retried_provision_keeps_its_host_and_a_wrong_pool_key_says_which_connection(lab, monkeypatch, tmp_path):
    env, hosts = lab
    view = engine.begin_create(env, "labapp", {"cluster": "pc", "size": 1}, "labapp.create", "c-pc", "carol")
    (node,) = view["nodes"]
    engine.provision_node(env, "pc", node["hostname"])
    ip = env.store.require("pc")["nodes"][0]["ip"]
    engine.provision_node(env, "pc", node["hostname"])  # a retried task
    assert env.store.require("pc")["nodes"][0]["ip"] == ip
    assert len(env.store.pool_hosts("lab")) == 1
    stranger = tmp_path / "stranger" / "id_ed25519"
    write_keypair(stranger, "stranger")
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(
        {"conn_type": "ssh", "login": "root", "extra": {"private_key": stranger.read_text()}}))
    view = engine.begin_create(env, "labapp", {"cluster": "pd", "size": 1}, "labapp.create", "c-pd", "dave")
    with pytest.raises(ProviderError, match=f"check Airflow Connection '{CONN_ID}'"):
        engine.provision_node(env, "pd", view["nodes"][0]["hostname"])
