"""Housekeeping the scheduled ``loom.janitor`` DAG runs: expired leases, stuck operations, and
the difference between what providers have and what the store knows (orphans / lost nodes)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from loom.engine import Env
from loom.store import ClusterStatus, NodeStatus

log = logging.getLogger(__name__)


def expired_deletes(env: Env, now: datetime | None = None) -> list[dict[str, Any]]:
    """Delete-DAG triggers for live clusters whose lease has expired (busy ones wait a round)."""
    now = now or datetime.now(timezone.utc)
    out = []
    for view in env.store.expired(now):
        if view["busy"]:
            log.info("lease of %s expired but it is busy with %s; next round", view["name"], view["busy"])
            continue
        log.warning("lease of %s expired at %s: deleting it", view["name"], view["lease_expires_at"])
        out.append({"trigger_dag_id": f"{view['template']}.delete", "conf": {"cluster": view["name"]}})
    return out


def fail_stuck(env: Env, timeout: timedelta, now: datetime | None = None) -> list[str]:
    """Operations holding a cluster longer than ``timeout``: record them FAILED, free the cluster."""
    from loom.operations import run_ended

    now = now or datetime.now(timezone.utc)
    freed = []
    for view in env.store.busy():
        op = next((o for o in reversed(view["operations"]) if f"{o['dag_id']}/{o['run_id']}" == view["busy"]), None)
        if op is None:
            continue
        started = datetime.fromisoformat(op["started_at"])
        started = started if started.tzinfo else started.replace(tzinfo=timezone.utc)
        if now - started > timeout:
            run_ended(env, op["operation"], view["name"], op["dag_id"], op["run_id"], False,
                      f"stuck for more than {timeout}; failed by the janitor")
            freed.append(f"{view['name']}: {op['dag_id']}/{op['run_id']}")
    return freed


def reconcile(env: Env) -> dict[str, list[str]]:
    """Compare every provider's machines with the store. ``orphans``: machines Loom made (by
    name or tag) that no live node owns; ``lost``: live nodes whose machine is gone or down."""
    from loom.errors import LoomError
    from loom.providers import machines_for
    from loom.providers.base import RUNNING

    live_nodes: dict[str, dict[str, Any]] = {}
    providers = set()
    for view in env.store.list(include_terminated=False):
        providers.add(view["provider"])
        for node in view["nodes"]:
            if node["status"] != NodeStatus.DELETED.value:
                live_nodes[node["hostname"]] = {**node, "cluster": view["name"], "cluster_status": view["status"]}
    orphans, lost, seen = [], [], set()
    for name in sorted(providers | {p for p, spec in env.catalog.providers.items() if spec.driver == "local"}):
        provider = env.catalog.providers.get(name)
        if provider is None:
            continue
        try:
            owned = machines_for(provider, env.settings, store=env.store).owned()
        except LoomError as exc:
            log.error("provider %s: cannot list its machines: %s", name, exc)
            continue
        for machine in owned:
            if machine.state == "terminated":
                continue  # clouds list terminated machines for a while
            hostname = machine.hostname if machine.hostname in live_nodes else machine.name
            node = live_nodes.get(hostname)
            if node is None:
                orphans.append(f"{name}: {machine.name} ({machine.id}) belongs to no live cluster")
                continue
            seen.add(hostname)
            if machine.state != RUNNING:
                lost.append(f"{node['cluster']}: {hostname} is {machine.state}")
    for hostname, node in sorted(live_nodes.items()):
        if hostname not in seen and node["status"] in (NodeStatus.RUNNING.value, NodeStatus.CREATING.value) \
                and node["cluster_status"] != ClusterStatus.PENDING.value:
            lost.append(f"{node['cluster']}: {hostname} has no machine at provider {node.get('provider_id') or '?'}")
    for line in orphans:
        log.warning("orphan machine: %s", line)
    for line in lost:
        log.warning("lost node: %s", line)
    return {"orphans": orphans, "lost": lost}
