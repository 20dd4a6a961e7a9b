"""Airflow listener: whenever a Loom DAG run ends — its ``finish`` step ran or not (marked
failed by hand in the UI/API, a killed worker) — close its operation record and release the
cluster. Runs in the scheduler (natural ends) and the API server (runs marked by hand), both of
which may use Loom's own store (never Airflow's metadata DB from tasks)."""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)


def _loom_run(dag_run: Any) -> tuple[str, str] | None:
    """(operation, cluster) when the run belongs to a Loom operation DAG, else None."""
    dag_id = getattr(dag_run, "dag_id", "") or ""
    template, _, operation = dag_id.rpartition(".")
    conf = getattr(dag_run, "conf", None) or {}
    cluster = conf.get("cluster") if isinstance(conf, dict) else None
    from loom.dag_factory import OPERATIONS

    if not template or operation not in OPERATIONS or not isinstance(cluster, str):
        return None
    return operation, cluster


def _settle(dag_run: Any, succeeded: bool, msg: str) -> None:
    found = _loom_run(dag_run)
    if found is None:
        return
    operation, cluster = found
    try:
        from loom.engine import Env
        from loom.operations import run_ended

        run_ended(Env.load(), operation, cluster, dag_run.dag_id, dag_run.run_id, succeeded,
                  msg or ("run succeeded" if succeeded else "run failed"))
    except Exception:  # a listener must never break the scheduler
        log.exception("loom: could not settle %s/%s", dag_run.dag_id, dag_run.run_id)


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    _settle(dag_run, True, msg)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    _settle(dag_run, False, msg)
