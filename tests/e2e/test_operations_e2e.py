"""Every cluster operation end to end through the REST API, on one dask cluster, plus failure,
resume, rollback, concurrency, a run marked failed by hand, and lease expiry."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from urllib.parse import quote

import pytest

from loom.store import open_store

pytestmark = pytest.mark.e2e


def _view(name: str) -> dict:
    return open_store().require(name)


def _client(name: str):
    from distributed import Client

    scheduler = next(n for n in _view(name)["nodes"] if "dask-scheduler" in n["services"])
    return Client(f"tcp://{scheduler['ip']}:8786", timeout=30)


def _workers(name: str) -> dict[str, int]:
    """Registered dask workers by name -> threads."""
    with _client(name) as client:
        return {w["name"]: w["nthreads"] for w in client.scheduler_info()["workers"].values()}


def _wait_workers(name: str, count: int, timeout: float = 60) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        workers = _workers(name)
        if len(workers) == count or time.monotonic() > deadline:
            return workers
        time.sleep(1)


def test_every_operation_on_a_dask_cluster(e2e):
    name = "e2e-ops"
    # create without workers, then add the worker service to the existing nodes
    _, state = e2e.run("dask.create", {"cluster": name, "size": 2, "services": ["base", "dask-scheduler"]})
    assert state == "success"
    assert _view(name)["services"] == ["base", "dask-scheduler"]
    _, state = e2e.run("dask.add_services", {"cluster": name, "services": ["dask-worker"]})
    assert state == "success"
    view = _view(name)
    assert view["status"] == "ACTIVE" and len(view["nodes"]) == 2
    assert view["nodes"][1]["services"] == ["base", "dask-worker"]
    assert list(_wait_workers(name, 1)) == [f"{name}-2"]

    # stop / start the worker service; a dask client sees it go and come back
    _, state = e2e.run("dask.stop_services", {"cluster": name, "services": ["dask-worker"]})
    assert state == "success" and _wait_workers(name, 0) == {}
    run_id, state = e2e.run("dask.start_services", {"cluster": name, "services": ["dask-worker"]})
    assert state == "success" and len(_wait_workers(name, 1)) == 1
    states = {t["task_id"]: t["state"] for t in e2e.task_instances("dask.start_services", run_id)}
    assert states["dask-scheduler.start"] == "success"  # start pulls in what the worker needs

    # configure with restart: the new setting takes effect
    _, state = e2e.run("dask.configure", {"cluster": name, "config": {"dask": {"worker_threads": 3}}, "restart": True})
    assert state == "success"
    assert _wait_workers(name, 1) == {f"{name}-2": 3}
    assert _view(name)["config"]["dask"]["worker_threads"] == 3

    # expand 2 -> 4: the new workers register
    run_id, state = e2e.run("dask.expand", {"cluster": name, "add_nodes": 2})
    assert state == "success"
    view = _view(name)
    assert [n["hostname"] for n in view["nodes"]] == [f"{name}-{i}" for i in range(1, 5)]
    assert sorted(_wait_workers(name, 3)) == [f"{name}-2", f"{name}-3", f"{name}-4"]
    assert len(e2e.nodes(name)) == 4
    labels = sorted(t["rendered_map_index"] for t in e2e.task_instances("dask.expand", run_id) if t["task_id"] == "node.create")
    assert labels == [f"{name}-3", f"{name}-4"]

    # restart everything
    _, state = e2e.run("dask.restart_services", {"cluster": name})
    assert state == "success" and len(_wait_workers(name, 3)) == 3

    # the admin changes the template; sync brings the live cluster to it
    template = e2e.templates / "clustertemplates" / "dask.yaml"
    template.write_text(template.read_text().replace("memory_limit: auto", "memory_limit: 1GiB"))
    _, state = e2e.run("dask.sync", {"cluster": name})
    assert state == "success"
    assert _view(name)["config"]["dask"]["memory_limit"] == "1GiB"
    assert _view(name)["config"]["dask"]["worker_threads"] == 3  # what the user configured stays
    with _client(name) as client:
        client.wait_for_workers(3, timeout=60)
        limits = {w["name"]: w["memory_limit"] for w in client.scheduler_info()["workers"].values()}
    assert limits == {f"{name}-{i}": 2**30 for i in (2, 3, 4)}

    # every operation is in the cluster's history
    ops = [(o["operation"], o["state"]) for o in _view(name)["operations"]]
    assert ops == [(op, "COMPLETE") for op in (
        "create", "add_services", "stop_services", "start_services", "configure", "expand", "restart_services",
        "sync")]
    assert all(o["triggered_by"] == "admin" and o["ended_at"] for o in _view(name)["operations"])


def _wait_until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.5)


def test_two_operations_at_once_one_is_refused(e2e):
    name = "e2e-ops"
    first = e2e.trigger("dask.restart_services", {"cluster": name})
    _wait_until(lambda: _view(name)["busy"] is not None)
    second, state2 = e2e.run("dask.stop_services", {"cluster": name})
    assert e2e.wait("dask.restart_services", first) == "success"
    assert state2 == "failed"
    assert f"is busy with dask.restart_services/{first}" in e2e.task_log("dask.stop_services", second, "plan")
    view = _view(name)
    assert view["busy"] is None and view["status"] == "ACTIVE"
    assert view["operations"][-1]["operation"] == "restart_services"


def test_a_run_marked_failed_by_hand_releases_the_cluster(e2e):
    name = "e2e-ops"
    run_id = e2e.trigger("dask.restart_services", {"cluster": name})
    _wait_until(lambda: _view(name)["busy"] is not None)
    e2e.request("PATCH", f"/api/v2/dags/dask.restart_services/dagRuns/{quote(run_id, safe='')}", {"state": "failed"})
    _wait_until(lambda: _view(name)["busy"] is None)
    view = _view(name)
    assert view["busy"] is None
    assert view["operations"][-1]["state"] == "FAILED"
    assert view["status"] == "INCONSISTENT"
    # configure repairs an INCONSISTENT cluster
    _, state = e2e.run("dask.configure", {"cluster": name, "restart": True})
    assert state == "success" and _view(name)["status"] == "ACTIVE"
    assert len(_wait_workers(name, 3)) == 3


def test_delete_the_operations_cluster(e2e):
    _, state = e2e.run("dask.delete", {"cluster": "e2e-ops"})
    assert state == "success" and _view("e2e-ops")["status"] == "TERMINATED"
    assert e2e.nodes("e2e-ops") == []


def test_failed_create_resumes_after_the_cause_is_fixed(e2e):
    name = "e2e-resume"
    run_id, state = e2e.run("flaky.create", {"cluster": name, "size": 2})
    assert state == "failed" and _view(name)["status"] == "INCOMPLETE"
    assert _view(name)["busy"] is None
    for node in _view(name)["nodes"]:  # fix the cause on every node
        (e2e.root / "state" / "nodes" / node["hostname"] / "home" / "fixed").write_text("ok\n")
    e2e.request("POST", "/api/v2/dags/flaky.create/clearTaskInstances", {
        "dag_run_id": run_id, "only_failed": True, "include_downstream": True, "dry_run": False,
        "reset_dag_runs": True,
    })
    assert e2e.wait("flaky.create", run_id) == "success"
    view = _view(name)
    assert view["status"] == "ACTIVE" and [n["status"] for n in view["nodes"]] == ["RUNNING", "RUNNING"]
    assert len(e2e.nodes(name)) == 2  # resumed, not re-created: no duplicate machine
    assert len(view["operations"]) == 1 and view["operations"][0]["state"] == "COMPLETE"
    _, state = e2e.run("flaky.delete", {"cluster": name})
    assert state == "success" and e2e.nodes(name) == []


def test_rollback_policy_leaves_no_node(e2e):
    name = "e2e-rollback"
    _, state = e2e.run("fragile.create", {"cluster": name, "size": 2})
    assert state == "failed"
    view = _view(name)
    assert view["status"] == "TERMINATED" and "rolled back" in view["message"]
    assert e2e.nodes(name) == []  # the provider's own list, not the store


def test_expired_lease_is_deleted_by_the_janitor(e2e):
    name = "e2e-lease"
    _, state = e2e.run("brief.create", {"cluster": name, "size": 1})
    assert state == "success"
    expires = datetime.fromisoformat(_view(name)["lease_expires_at"])
    time.sleep(max(0.0, (expires - datetime.now(timezone.utc)).total_seconds()) + 1)
    janitor_run, state = e2e.run("loom.janitor", {})
    assert state == "success"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        runs = e2e.runs("brief.delete")
        if runs and runs[0]["state"] in ("success", "failed"):
            break
        time.sleep(2)
    assert runs and runs[0]["state"] == "success"
    assert _view(name)["status"] == "TERMINATED" and e2e.nodes(name) == []


def _task_process(ti_id: str) -> int | None:
    """The process running a task instance: LocalExecutor's worker (the supervisor, titled
    with the id) forks it, and it carries the id too. Read from /proc (ps truncates titles)."""
    from pathlib import Path

    carrying = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ti_id in title:
            carrying[int(proc.name)] = ppid
    children = [pid for pid, ppid in carrying.items() if ppid in carrying]
    return children[0] if children else None


def _listeners(path_part: str) -> list[str]:
    """Live sshd listeners whose config path contains ``path_part`` (not the short-lived
    per-connection children, which carry their listener's title until they rename themselves)."""
    from pathlib import Path

    from loom.procs import process_alive

    def title(pid: str) -> str:
        try:
            return (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""

    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        name = title(proc.name)
        if not (name.startswith("sshd: ") and "[listener]" in name and path_part in name):
            continue
        try:
            parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        if process_alive(int(proc.name)) and not title(parent).startswith("sshd: "):
            found.append(name)
    return found


def test_a_task_killed_mid_provisioning_retries_without_duplicates_or_leaks(e2e):
    import os
    import signal

    name = "e2e-killed"
    run_id = e2e.trigger("slow.create", {"cluster": name, "size": 2})
    victim, seen = None, []
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        for ti in e2e.task_instances("slow.create", run_id):
            if ti["task_id"] == "node.create":
                seen.append((ti["map_index"], ti["state"], ti["id"]))
                if ti["state"] == "running" and _task_process(ti["id"]):
                    victim = (ti, _task_process(ti["id"]))
                    break
        time.sleep(0.5)
    assert victim is not None, f"never saw node.create running in a process: {sorted(set(seen))}"
    ti, pid = victim
    time.sleep(2)  # the machine is being made: its sshd is booting
    assert len(e2e.nodes(name)) >= 1
    os.kill(pid, signal.SIGKILL)

    assert e2e.wait("slow.create", run_id) == "success"
    again = next(t for t in e2e.task_instances("slow.create", run_id)
                 if t["task_id"] == "node.create" and t["map_index"] == ti["map_index"])
    assert again["try_number"] >= 2  # it was retried
    view = _view(name)
    assert view["status"] == "ACTIVE" and len(view["nodes"]) == 2
    assert sorted(n.name for n in e2e.nodes(name)) == [f"{name}-1", f"{name}-2"]  # no duplicate machine
    listeners = _listeners(f"/nodes/{name}-")
    assert len(listeners) == 2, listeners  # one sshd per node: the killed attempt's machine did not leak
    _, state = e2e.run("slow.delete", {"cluster": name})
    assert state == "success" and e2e.nodes(name) == [] and _listeners(f"/nodes/{name}-") == []
