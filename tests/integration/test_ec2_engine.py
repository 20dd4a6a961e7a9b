"""A cluster on an EC2 provider (moto's server on 127.0.0.1) through Loom's engine: the provider
file names only an Airflow Connection (here AIRFLOW_CONN_<ID>), nodes are created with tags and
the cluster key, a retried provision makes no second machine, the janitor sees orphans, rollback
leaves 0 instances, and the Connection's secret is in no log line and not in the store.
Moto's instance addresses are fake: nothing here connects to them (no confirm/SSH)."""

from __future__ import annotations

import gzip
import json
import logging
from importlib import resources
from pathlib import Path

import pytest

from loom import engine
from loom.janitor import reconcile
from loom.operations import settle
from loom.settings import load_settings
from loom.spec.loader import load_catalog
from loom.store import Store

pytestmark = pytest.mark.integration

SECRET = "ec2-engine-secret-key-9876543210"
CONN_ID = "loom_test_ec2"


@pytest.fixture(scope="module")
def moto():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield server.get_host_and_port()[1]
    server.stop()


def _ami() -> str:
    with resources.files("moto").joinpath("ec2/resources/amis.json.gz").open("rb") as fh:
        return next(a["ami_id"] for a in json.loads(gzip.decompress(fh.read())) if not a.get("platform"))


@pytest.fixture
def env(tmp_path: Path, moto: int, monkeypatch) -> engine.Env:
    files = {
        "providers/aws.yaml": f"name: aws\ndriver: ec2\nconnection: {CONN_ID}\noptions:\n  security_groups: [default]\n",
        "hardwaretypes/small.yaml": "name: small\nprovidermap:\n  aws: {flavor: t3.micro}\n",
        "imagetypes/debian.yaml": f"name: debian\nprovidermap:\n  aws: {{image: {_ami()}, sshuser: admin}}\n",
        "services/scripts/noop.sh": "#!/bin/sh\n",
        "services/base.yaml": "name: base\nactions:\n  install: {type: shell, script: scripts/noop.sh}\n",
        "clustertemplates/web.yaml": (
            "name: web\ndefaults:\n  services: [base]\n  provider: aws\n  hardwaretype: small\n  imagetype: debian\n"
            "constraints:\n  size: {min: 1, max: 5}\nadministration:\n  on_failure: rollback\n"
        ),
    }
    for rel, text in files.items():
        path = tmp_path / "templates" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({
        "conn_type": "aws", "login": "AKIDENGINETEST", "password": SECRET, "host": "127.0.0.1", "port": moto,
        "extra": {"secure": False, "region": "us-east-1"},
    }))
    state = tmp_path / "state"
    monkeypatch.setenv("AIRFLOW__LOOM__STATE_DIR", str(state))
    catalog = load_catalog(tmp_path / "templates")
    assert catalog.problems == []
    return engine.Env(load_settings(), catalog, Store(f"sqlite:///{state / 'loom.db'}"))


def _instances(env: engine.Env, cluster: str) -> list:
    view = env.store.get(cluster)
    return [m for m in engine.machines(env, view).owned() if m.tags.get("loom-cluster") == cluster]


def test_ec2_cluster_create_retry_orphan_rollback(env, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    view = engine.begin_create(env, "web", {"cluster": "shop", "size": 3}, "web.create", "r1", "alice")
    for node in view["nodes"]:
        engine.provision_node(env, "shop", node["hostname"])
    engine.provision_node(env, "shop", view["nodes"][0]["hostname"])  # a retried task: no new machine
    machines = _instances(env, "shop")
    assert len(machines) == 3
    assert {m.tags["loom-node"] for m in machines} == {n["hostname"] for n in view["nodes"]}
    assert {m.tags["loom-cluster-id"] for m in machines} == {str(view["id"])}
    stored = env.store.require("shop")["nodes"]
    assert {n["provider_id"] for n in stored} == {m.id for m in machines}
    assert all(n["ip"] and n["sshuser"] == "admin" and n["status"] == "CREATING" for n in stored)

    # the janitor: live nodes are not orphans; a machine whose node the store forgot is
    assert reconcile(env)["orphans"] == []
    env.store.update_node("shop", stored[2]["hostname"], status="DELETED")
    orphans = reconcile(env)["orphans"]
    assert len(orphans) == 1 and stored[2]["hostname"] in orphans[0]
    env.store.update_node("shop", stored[2]["hostname"], status="CREATING")

    # a failed create under on_failure: rollback destroys every machine it made
    with pytest.raises(Exception, match="rolled back"):
        settle(env, "create", "shop", "web.create", "r1", ["node.confirm"])
    assert env.store.get("shop")["status"] == "TERMINATED"
    assert _instances(env, "shop") == []  # 0 live instances in moto's own list

    # the Connection's secret never reached a log line or the store
    assert SECRET not in caplog.text
    assert SECRET.encode() not in (tmp_path / "state" / "loom.db").read_bytes()


def test_a_missing_connection_says_which_and_how_to_create_it(env, monkeypatch):
    monkeypatch.delenv(f"AIRFLOW_CONN_{CONN_ID.upper()}")
    view = engine.begin_create(env, "web", {"cluster": "lost", "size": 1}, "web.create", "r2", "alice")
    with pytest.raises(Exception, match=f"Airflow Connection '{CONN_ID}' is not available.*AIRFLOW_CONN_{CONN_ID.upper()}"):
        engine.provision_node(env, "lost", view["nodes"][0]["hostname"])
