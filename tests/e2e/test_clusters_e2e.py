"""End to end through Airflow's REST API: real scheduler, real sshd nodes, real Dask."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loom.demo import trigger, wait_for_dag
from loom.procs import port_open
from loom.stack import ApiError
from loom.store import open_store

pytestmark = pytest.mark.e2e

def _store():
    return open_store()


def _node_processes(state: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(state / "nodes")], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_bad_conf_is_refused_with_400_and_no_run(e2e):
    wait_for_dag(e2e.stack, "dask.create", e2e.token)
    before = len(e2e.runs("dask.create"))
    for conf in ({"cluster": "Bad Name; rm -rf /"}, {"cluster": "ok-name", "size": 1}, {"cluster": "ok-name", "size": "3"}, {"size": 3}):
        with pytest.raises(ApiError) as err:
            trigger(e2e.stack, "dask.create", conf, e2e.token)
        assert err.value.status == 400, conf
    assert len(e2e.runs("dask.create")) == before


def test_broken_template_is_reported_and_other_dags_still_load(e2e):
    dags = {d["dag_id"]: d for d in e2e.request("GET", "/api/v2/dags?tags=loom&limit=100")["dags"]}
    assert {"dask.create", "dask.delete", "flaky.create", "flaky.delete"} <= set(dags)
    assert not any(d.startswith("broken.") for d in dags)
    assert set(dags["dask.create"]["tags"][i]["name"] for i in range(3)) == {"loom", "template:dask", "operation:create"}
    result = subprocess.run(
        [sys.executable, "-m", "loom.cli", "templates", "validate", str(e2e.templates)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "templates/clustertemplates/broken.yaml: constraints.sizee: Extra inputs are not permitted" in result.stderr


def test_unknown_conf_key_fails_first_task_and_creates_nothing(e2e):
    run_id, state = e2e.run("dask.create", {"cluster": "typo", "sizee": 3})
    assert state == "failed"
    tis = {t["task_id"]: t["state"] for t in e2e.task_instances("dask.create", run_id)}
    assert tis["plan"] == "failed"
    assert tis["node.create"] in ("upstream_failed", None)
    assert _store().get("typo") is None
    assert "unknown key(s) sizee" in e2e.task_log("dask.create", run_id, "plan")


def test_dask_cluster_create_use_delete(e2e):
    from distributed import Client

    state_dir = e2e.root / "state"
    run_id, state = e2e.run("dask.create", {"cluster": "e2e-dask", "size": 3})
    assert state == "success"
    view = _store().require("e2e-dask")
    assert view["status"] == "ACTIVE"
    assert [n["status"] for n in view["nodes"]] == ["RUNNING"] * 3
    assert view["operations"][0]["run_id"] == run_id and view["operations"][0]["triggered_by"] == "admin"
    scheduler = next(n for n in view["nodes"] if "dask-scheduler" in n["services"])
    workers = sorted(n["hostname"] for n in view["nodes"] if "dask-worker" in n["services"])
    assert len(workers) == 2 and len({n["ip"] for n in view["nodes"]}) == 3

    # the UI labels mapped tasks by hostname, and action output streams into the task log
    tis = e2e.task_instances("dask.create", run_id)
    labels = sorted(t["rendered_map_index"] for t in tis if t["task_id"] == "node.create")
    assert labels == sorted(n["hostname"] for n in view["nodes"])
    start = next(t for t in tis if t["task_id"] == "dask-worker.start")
    assert "Registered to:" in e2e.task_log("dask.create", run_id, "dask-worker.start", start["map_index"])

    with Client(f"tcp://{scheduler['ip']}:8786", timeout=30) as client:
        client.wait_for_workers(2, timeout=60)
        names = sorted(w["name"] for w in client.scheduler_info()["workers"].values())
        assert names == workers
        assert client.submit(sum, range(101)).result(timeout=60) == 5050
        assert sorted(client.gather(client.map(lambda x: x * x, range(10)))) == [x * x for x in range(10)]

    # a second create with the same name fails in its first task and changes nothing
    run2, state2 = e2e.run("dask.create", {"cluster": "e2e-dask", "size": 2})
    assert state2 == "failed"
    assert "already exists" in e2e.task_log("dask.create", run2, "plan")
    again = _store().require("e2e-dask")
    assert again["status"] == "ACTIVE" and len(again["nodes"]) == 3 and len(again["operations"]) == 1

    # delete: services stopped, machines gone, nothing left behind
    del_run, del_state = e2e.run("dask.delete", {"cluster": "e2e-dask"})
    assert del_state == "success"
    gone = _store().require("e2e-dask")
    assert gone["status"] == "TERMINATED"
    assert [n["status"] for n in gone["nodes"]] == ["DELETED"] * 3
    assert [op["operation"] for op in gone["operations"]] == ["create", "delete"]
    for node in view["nodes"]:
        assert not port_open(node["ip"], node["port"])
        assert not port_open(node["ip"], 8786)
        assert not (state_dir / "nodes" / node["hostname"]).exists()
    assert _node_processes(state_dir) == []
    assert not list((state_dir / "keys").glob("e2e-dask.*"))


def test_failed_action_marks_cluster_incomplete_and_delete_leaves_nothing(e2e):
    state_dir = e2e.root / "state"
    run_id, state = e2e.run("flaky.create", {"cluster": "e2e-flaky", "size": 2})
    assert state == "failed"
    view = _store().require("e2e-flaky")
    assert view["status"] == "INCOMPLETE"
    assert "create failed at flaky.install" in view["message"]
    failed = [n for n in view["nodes"] if n["status"] == "FAILED"]
    assert failed and all("disk is full" in n["message"] and "exit 7" in n["message"] for n in failed)
    assert view["operations"][0]["state"] == "FAILED"

    del_run, del_state = e2e.run("flaky.delete", {"cluster": "e2e-flaky"})
    assert del_state == "success"
    assert _store().require("e2e-flaky")["status"] == "TERMINATED"
    assert e2e.nodes("e2e-flaky") == []
    assert _node_processes(state_dir) == []
