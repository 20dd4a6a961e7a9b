"""Benchmark the local stack: start-up, trigger->ACTIVE of a 3-node dask create, per-stage
times, delete, and the stack's idle memory.

Baseline (measured in the same run): the same create done by ``loom.engine`` directly in this
process (threads per node, stage by stage, same planner order) with no Airflow. The ratio
Airflow/baseline is the orchestration overhead. Memory is reported against the RSS of one bare
Python process that imported Airflow. Prints a table; asserts nothing (machines are noisy).

    .venv/bin/python bench/stack.py [--size 3] [--port 8280] [--ssh-port 2522]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loom_plugins"))

from loom.stack import isolated_env, process_tree_memory  # noqa: E402


def direct_create(cluster: str, size: int) -> dict[str, float]:
    """The baseline: create a cluster via loom.engine without Airflow; returns stage times."""
    from loom import engine
    from loom.planner import plan

    env = engine.Env.load()
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    view = engine.begin_create(env, "dask", {"cluster": cluster, "size": size}, "bench.direct", "direct-1", "bench")
    hosts = [n["hostname"] for n in view["nodes"]]
    times["plan"] = time.perf_counter() - t0
    the_plan = plan("create", env.catalog, view["services"])
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        for step in the_plan.steps:
            t = time.perf_counter()
            if step.kind == "node":
                func = {"create": engine.provision_node, "confirm": engine.confirm_node, "bootstrap": engine.bootstrap_node}[step.action]
                list(pool.map(lambda h: func(env, cluster, h), hosts))
            else:
                targets = engine.nodes_with_service(env, cluster, step.service)
                list(pool.map(lambda h: engine.run_service_action(env, cluster, h, step.service, step.action), targets))
            times[step.id] = time.perf_counter() - t
    engine.finish_ok(env, cluster, "bench.direct", "direct-1", engine.ClusterStatus.ACTIVE)
    times["total"] = time.perf_counter() - t0
    return times


def direct_delete(cluster: str) -> float:
    from loom import engine
    from loom.operations import begin
    from loom.planner import plan

    env = engine.Env.load()
    t0 = time.perf_counter()
    begin(env, "delete", "dask", {"cluster": cluster}, "bench.direct", "direct-del", "bench")
    view = env.store.require(cluster)
    with ThreadPoolExecutor(max_workers=8) as pool:
        for step in plan("delete", env.catalog, view["services"]).service_steps:
            targets = engine.nodes_with_service(env, cluster, step.service)
            list(pool.map(lambda h: engine.run_service_action(env, cluster, h, step.service, step.action), targets))
        list(pool.map(lambda n: engine.destroy_node(env, cluster, n["hostname"]), view["nodes"]))
    engine.finish_delete(env, cluster, "bench.direct", "direct-del")
    return time.perf_counter() - t0


def stage_times(stack, dag_id: str, run_id: str, token: str) -> dict[str, float]:
    base = f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}"
    tis = stack.request("GET", f"{base}/taskInstances?limit=500", token=token)["task_instances"]
    spans: dict[str, list[datetime]] = {}
    for ti in tis:
        if ti.get("start_date") and ti.get("end_date"):
            s, e = datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"])
            cur = spans.setdefault(ti["task_id"], [s, e])
            cur[0], cur[1] = min(cur[0], s), max(cur[1], e)
    return {task: (e - s).total_seconds() for task, (s, e) in spans.items()}


def bare_airflow_rss() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "import airflow.sdk, airflow.models, time; time.sleep(30)"])
    time.sleep(8)
    rss, _ = process_tree_memory([proc.pid])
    proc.kill()
    proc.wait()
    return rss


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=3)
    parser.add_argument("--port", type=int, default=8280)
    parser.add_argument("--ssh-port", type=int, default=2522)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="loom-bench-"))
    os.environ.update(isolated_env(root, args.port, args.ssh_port))
    from loom.demo import trigger, wait_for_dag, wait_for_run
    from loom.stack import Stack

    stack = Stack()
    quiet = lambda *_: None  # noqa: E731
    try:
        t = time.perf_counter()
        stack.start(wait=300, say=quiet)
        startup = time.perf_counter() - t
        token = stack.token()
        wait_for_dag(stack, "dask.create", token)

        time.sleep(10)
        pids = [p for p in stack.running().values() if p]
        idle_rss, idle_pss = process_tree_memory(pids)
        baseline_rss = bare_airflow_rss()

        direct = direct_create("bench-direct", args.size)
        direct_del = direct_delete("bench-direct")

        t = time.perf_counter()
        run_id = trigger(stack, "dask.create", {"cluster": "bench-af", "size": args.size}, token)
        state = wait_for_run(stack, "dask.create", run_id, token, say=quiet)
        airflow_total = time.perf_counter() - t
        stages = stage_times(stack, "dask.create", run_id, token)
        t = time.perf_counter()
        del_run = trigger(stack, "dask.delete", {"cluster": "bench-af"}, token)
        del_state = wait_for_run(stack, "dask.delete", del_run, token, say=quiet)
        airflow_del = time.perf_counter() - t
    finally:
        stack.stop(say=quiet)

    print(f"loom stack benchmark, {args.size}-node dask cluster, {os.cpu_count()} cores")
    print(f"  stack start-up (db migrate + 4 components healthy): {startup:6.1f} s")
    print(f"  create via Airflow (trigger -> run {state}):       {airflow_total:6.1f} s")
    print(f"  create direct (baseline, loom.engine, no Airflow): {direct['total']:6.1f} s")
    print(f"  ratio Airflow/baseline (create):                   {airflow_total / direct['total']:6.2f}x")
    print(f"  delete via Airflow (run {del_state}):               {airflow_del:6.1f} s")
    print(f"  delete direct (baseline):                          {direct_del:6.1f} s")
    print(f"  ratio Airflow/baseline (delete):                   {airflow_del / direct_del:6.2f}x")
    print(f"  idle stack RSS sum (4 components + workers):       {idle_rss / 2**20:6.0f} MiB")
    print(f"  idle stack PSS sum (shared pages counted once):    {idle_pss / 2**20:6.0f} MiB")
    print(f"  baseline: one Python process with Airflow imported: {baseline_rss / 2**20:5.0f} MiB")
    print(f"  ratio stack/baseline (memory):                     {idle_rss / baseline_rss:6.2f}x")
    print("  per stage (Airflow task span across nodes | direct):")
    for step, secs in direct.items():
        if step != "total":
            print(f"    {step:<28} {stages.get(step, float('nan')):6.1f} s | {secs:6.1f} s")
    print(f"    {'finish':<28} {stages.get('finish', float('nan')):6.1f} s |")
    return 0 if state == "success" and del_state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
