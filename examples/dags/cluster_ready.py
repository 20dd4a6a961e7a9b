"""Example: a DAG of your own that runs whenever Loom's ``demo`` cluster is created, expanded or
deleted. Loom's ``<template>.create`` / ``.expand`` / ``.delete`` DAGs emit an Asset event for
``loom://clusters/<cluster>`` when they succeed; the event's ``extra`` says which operation ran
and lists the nodes (hostname, ip, port, services, status).

Install: copy this file into the dags folder (``dags/``) and set CLUSTER.
"""

from __future__ import annotations

import socket
from datetime import datetime

from airflow.sdk import DAG, Asset, task

CLUSTER = "demo"

with DAG(
    dag_id=f"{CLUSTER}_cluster_ready",
    schedule=[Asset(f"loom://clusters/{CLUSTER}")],
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["loom-example"],
    doc_md=f"Smoke-tests cluster `{CLUSTER}` after each Loom create/expand (skips deletes).",
):

    @task
    def smoke_test(*, triggering_asset_events=None) -> list[str]:
        checked = []
        for events in (triggering_asset_events or {}).values():
            for event in events:
                info = event.extra
                print(f"{info['cluster']}: {info['operation']} -> {info['status']} (run {info['run_id']})")
                if info["operation"] == "delete":
                    continue
                for node in info["nodes"]:
                    with socket.create_connection((node["ip"], node["port"]), timeout=10) as sock:
                        banner = sock.recv(64).decode(errors="replace").strip()
                    assert banner.startswith("SSH-"), f"{node['hostname']}: no SSH at {node['ip']}:{node['port']}"
                    checked.append(f"{node['hostname']} ({','.join(node['services'])}) answers {banner}")
        for line in checked:
            print(line)
        return checked

    smoke_test()
