"""``make run``: start the stack, create the demo cluster through Airflow's REST API, show it."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from loom.errors import LoomError
from loom.stack import ApiError, Stack


def wait_for_dag(stack: Stack, dag_id: str, token: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stack.request("GET", f"/api/v2/dags/{quote(dag_id)}", token=token)
            return
        except ApiError as exc:
            if exc.status != 404:
                raise
        time.sleep(2)
    raise LoomError(f"DAG {dag_id} did not appear within {timeout:.0f} s: run `loom templates validate` and see {stack.home}/logs/dag-processor.log")


def trigger(stack: Stack, dag_id: str, conf: dict[str, Any], token: str) -> str:
    run = stack.request("POST", f"/api/v2/dags/{quote(dag_id)}/dagRuns", {"logical_date": None, "conf": conf}, token=token)
    return run["dag_run_id"]


def wait_for_run(stack: Stack, dag_id: str, run_id: str, token: str, timeout: float = 1800, say: Any = print) -> str:
    """Poll the run, printing each task instance's state change; return the run's final state."""
    base = f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}"
    seen: dict[tuple[str, int], str] = {}
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        tis = stack.request("GET", f"{base}/taskInstances?limit=500", token=token)["task_instances"]
        for ti in sorted(tis, key=lambda t: (t.get("start_date") or "", t["task_id"], t["map_index"])):
            key = (ti["task_id"], ti["map_index"])
            state = ti.get("state") or "none"
            if seen.get(key) != state and state not in ("none", "scheduled", "queued"):
                seen[key] = state
                label = ti["task_id"] + (f"[{ti.get('rendered_map_index') or ti['map_index']}]" if ti["map_index"] >= 0 else "")
                say(f"  {time.monotonic() - started:6.1f}s  {label:<40} {state}")
        run = stack.request("GET", base, token=token)
        if run["state"] in ("success", "failed"):
            return run["state"]
        time.sleep(2)
    raise LoomError(f"{dag_id} run {run_id} did not finish within {timeout:.0f} s")


def run_demo(cluster: str = "demo", size: int = 3, template: str = "dask") -> int:
    from loom.engine import Env
    from loom.store import open_store

    stack = Stack()
    stack.start()
    token = stack.token()
    dag_id = f"{template}.create"
    wait_for_dag(stack, dag_id, token)
    store = open_store()
    view = store.get(cluster)
    run_id = None
    if view is None or view["status"] == "TERMINATED":
        conf = {"cluster": cluster, "size": size}
        print(f"Triggering {dag_id} with conf {conf} through {stack.api}/api/v2/dags/{dag_id}/dagRuns ...")
        run_id = trigger(stack, dag_id, conf, token)
    elif view["status"] == "PENDING":
        run_id = next(op["run_id"] for op in reversed(view["operations"]) if op["operation"] == "create")
        print(f"Cluster {cluster} is being created by {dag_id} run {run_id}; following it ...")
    if run_id:
        print(f"Run {run_id}:")
        state = wait_for_run(stack, dag_id, run_id, token)
        print(f"{dag_id} run finished: {state}")
    view = store.require(cluster)
    run_id = run_id or next((op["run_id"] for op in reversed(view["operations"]) if op["operation"] == "create"), "")
    print()
    print(f"Cluster {cluster}: {view['status']}")
    print(f"  Airflow UI : {stack.api}   (login: admin / {stack.password()})")
    print(f"  DAG run    : {stack.api}/dags/{dag_id}/runs/{quote(run_id, safe='')}")
    print("  Nodes      :")
    for n in view["nodes"]:
        print(f"    {n['hostname']:<12} {n['ip'] or '-'}:{n['port'] or '-'}  {n['status']:<8} {', '.join(n['services'])}")
    scheduler = next((n for n in view["nodes"] if "dask-scheduler" in n["services"]), None)
    if scheduler and scheduler["ip"]:
        print(f"  Dask       : scheduler tcp://{scheduler['ip']}:8786, dashboard http://{scheduler['ip']}:8787/status")
    key = Env.load().key_file(view)
    if view["nodes"] and view["nodes"][0]["ip"]:
        n = view["nodes"][0]
        print(f"  SSH        : ssh -i {key} -p {n['port']} {n['sshuser']}@{n['ip']}")
    print(f"  State      : .venv/bin/loom cluster show {cluster}   (store: {store.url})")
    print(f"  Delete     : curl -X POST {stack.api}/api/v2/dags/{template}.delete/dagRuns -H \"Authorization: Bearer $(.venv/bin/loom token)\" "
          f"-H 'Content-Type: application/json' -d '{{\"logical_date\": null, \"conf\": {{\"cluster\": \"{cluster}\"}}}}'")
    return 0 if view["status"] == "ACTIVE" else 1
