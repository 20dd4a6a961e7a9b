"""Lifecycle hooks, Asset events and deferred boots through the real stack: a real HTTP hook
receiver on 127.0.0.1, nodes that boot in the background (confirm defers to the triggerer),
the README's example downstream DAG scheduled on the cluster's Asset."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

VETOED = "e2e-vetoed"


class Receiver:
    """Answers /approve with 403 for the cluster VETOED, 200 otherwise; records every POST."""

    def __init__(self, port: int) -> None:
        self.posts: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                outer.posts.append((self.path, body))
                refuse = self.path == "/approve" and body.get("cluster") == VETOED
                self.send_response(403 if refuse else 200)
                self.end_headers()
                self.wfile.write(b"change freeze: no new clusters" if refuse else b'{"ok": true}')

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, path: str, cluster: str) -> list[dict]:
        return [b for p, b in self.posts if p == path and b.get("cluster") == cluster]


@pytest.fixture(scope="module")
def receiver(e2e):
    r = Receiver(e2e.hook_port)
    yield r
    r.server.shutdown()
    r.server.server_close()


def _store():
    from loom.engine import Env

    return Env.load().store


def _states(e2e, dag_id: str, run_id: str) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in e2e.task_instances(dag_id, run_id)}


def test_on_start_veto_stops_the_operation_before_anything_is_recorded(e2e, receiver):
    run_id, state = e2e.run("hooked.create", {"cluster": VETOED, "size": 1})
    assert state == "failed"
    states = _states(e2e, "hooked.create", run_id)
    assert states["hooks.on_start"] == "failed" and states["plan"] == "upstream_failed"
    assert states["finish"] == "failed" and states["hooks.on_failure"] == "skipped"
    assert "403: change freeze" in e2e.task_log("hooked.create", run_id, "hooks.on_start")
    assert _store().get(VETOED) is None  # nothing recorded, no machine
    assert e2e.nodes(VETOED) == []
    (asked,) = receiver.bodies("/approve", VETOED)
    assert asked["status"] == "STARTING" and asked["operation"] == "create"
    assert [n["hostname"] for n in asked["nodes"]] == [f"{VETOED}-1000"] or len(asked["nodes"]) == 1
    assert receiver.bodies("/failed", VETOED) == []


def test_hooks_deferred_boot_and_the_asset_triggered_dag(e2e, receiver):
    name = e2e.ready_cluster
    run_id, state = e2e.run("hooked.create", {"cluster": name, "size": 2})
    assert state == "success"
    view = _store().require(name)
    assert view["status"] == "ACTIVE"
    # on_start saw the planned layout; on_success the live nodes with their addresses
    (start,) = receiver.bodies("/approve", name)
    assert start["status"] == "STARTING" and start["run_id"] == run_id and len(start["nodes"]) == 2
    (done,) = receiver.bodies("/done", name)
    assert done["status"] == "ACTIVE" and {n["ip"] for n in done["nodes"]} == {n["ip"] for n in view["nodes"]}
    # the node command hook ran on every node (in each node's own home)
    for node in view["nodes"]:
        home = e2e.root / "state" / "nodes" / node["hostname"] / "home"
        assert (home / "hooked.txt").read_text().split() == ["create", "ACTIVE", name]
    # the machines booted in the background: confirm was deferred to the triggerer, then resumed
    confirm_log = e2e.task_log("hooked.create", run_id, "node.confirm", map_index=0)
    assert "waiting up to 120 s in the triggerer" in confirm_log and "is up after" in confirm_log
    # the finish task emitted the cluster's Asset event; the example DAG ran on it
    deadline = time.monotonic() + 180
    runs = []
    while time.monotonic() < deadline:
        runs = [r for r in e2e.runs(f"{name}_cluster_ready") if r["state"] in ("success", "failed")]
        if runs:
            break
        time.sleep(3)
    assert runs and runs[0]["state"] == "success", runs
    assert runs[0]["run_type"] == "asset_triggered"
    log = e2e.task_log(f"{name}_cluster_ready", runs[0]["dag_run_id"], "smoke_test")
    assert f"{name}: create -> ACTIVE" in log and "answers SSH-" in log

    _, state = e2e.run("hooked.delete", {"cluster": name})
    assert state == "success" and e2e.nodes(name) == []


def test_on_failure_hook_sees_the_failure_and_the_failing_node(e2e, receiver):
    name = "e2e-hookfail"
    run_id, state = e2e.run("hookfail.create", {"cluster": name, "size": 1})
    assert state == "failed"
    states = _states(e2e, "hookfail.create", run_id)
    assert states["finish"] == "failed" and states["hooks.on_failure"] == "success"
    (failed,) = receiver.bodies("/failed", name)
    assert failed["status"] == "INCOMPLETE" and failed["result"] == "FAILED"
    assert "flaky.install" in failed["message"]
    assert failed["failed_nodes"] == [f"{name}-1000"] or len(failed["failed_nodes"]) == 1
    bad = [n for n in failed["nodes"] if n["status"] == "FAILED"]
    assert len(bad) == 1 and "disk is full" in bad[0]["message"]
    _, state = e2e.run("hookfail.delete", {"cluster": name})
    assert state == "success" and e2e.nodes(name) == []


def test_a_machine_that_never_boots_times_out_naming_the_node_and_rolls_back(e2e):
    name = "e2e-unbootable"
    run_id, state = e2e.run("unbootable.create", {"cluster": name})
    assert state == "failed"
    log = e2e.task_log("unbootable.create", run_id, "node.confirm", map_index=0)
    hostname = _store().get(name)["nodes"][0]["hostname"]
    assert f"node '{hostname}' did not run and answer SSH within 8 s" in log
    assert _store().get(name)["status"] == "TERMINATED"
    assert e2e.nodes(name) == []  # rollback destroyed the still-booting machine
    assert Path(e2e.root / "state" / "nodes" / hostname).exists() is False
