"""Cluster operations, Airflow-free: what each operation's first step checks and records, which
nodes each later step runs on, and how the last step settles the outcome.

One operation per cluster at a time: the first step takes the cluster's lock (``Store.acquire``;
"cluster X is busy with <dag>/<run>" otherwise); every step re-checks it (``Store.hold``), which
also takes it back when a failed run is resumed; the last step (and, as a safety net, the DAG-run
listener) releases it however the run ended.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from loom.config import cluster_config
from loom.durations import format_duration, parse_duration
from loom.engine import Env, destroy_node, layout_of
from loom.engine import parse_request as engine_parse_request
from loom.errors import ClusterError, LoomError, RequestError
from loom.merge import check_immutable, deep_merge
from loom.spec.models import OPERATION_REQUESTS, ClusterRequest
from loom.store import ClusterStatus, NodeStatus, OperationState

log = logging.getLogger(__name__)

LIVE = frozenset({"PENDING", "ACTIVE", "INCOMPLETE", "INCONSISTENT"})
ALLOWED_FROM: dict[str, frozenset[str]] = {
    "delete": LIVE,
    "configure": frozenset({"ACTIVE", "INCONSISTENT"}),
}
# Status after a failed run: node operations leave a half-built cluster, service ones a
# cluster whose services disagree with the store.
FAILED_STATUS = {
    "create": ClusterStatus.INCOMPLETE,
    "delete": ClusterStatus.INCOMPLETE,
    "expand": ClusterStatus.INCOMPLETE,
}
DONE_STATUS = {"delete": ClusterStatus.TERMINATED}


def failed_status(operation: str) -> ClusterStatus:
    return FAILED_STATUS.get(operation, ClusterStatus.INCONSISTENT)


def parse_request(operation: str, conf: dict[str, Any], where: str) -> ClusterRequest:
    return engine_parse_request(OPERATION_REQUESTS[operation], conf, where)


@dataclass(frozen=True)
class Begun:
    """What the first step hands the DAG: the nodes its per-node steps map over."""

    cluster: str
    hostnames: list[str]


def begin(env: Env, operation: str, template: str, conf: dict[str, Any], dag_id: str, run_id: str, owner: str) -> Begun:
    """Validate, take the cluster, record the operation and what it will do."""
    request = parse_request(operation, conf, f"{dag_id} conf")
    name = request.cluster
    allowed = ALLOWED_FROM.get(operation, frozenset({"ACTIVE"}))
    view = env.store.acquire(name, operation, dag_id, run_id, owner, allowed)
    try:
        if view["template"] != template:
            raise ClusterError(f"cluster {name!r} was made from template {view['template']!r}: use {view['template']}.{operation}")
        hostnames = _PREPARE[operation](env, view, request, dag_id, run_id)
    except LoomError:
        env.store.finish(name, dag_id, run_id, status=None, state=OperationState.FAILED, message="refused")
        raise
    return Begun(name, hostnames)


def _prepare_delete(env: Env, view: dict[str, Any], request: Any, dag_id: str, run_id: str) -> list[str]:
    return [n["hostname"] for n in view["nodes"] if n["status"] != NodeStatus.DELETED.value]


def _prepare_targets(operation: str):
    def prepare(env: Env, view: dict[str, Any], request: Any, dag_id: str, run_id: str) -> list[str]:
        from loom import planner

        services = view["services"]
        unknown = [s for s in request.services or [] if s not in services]
        if unknown:
            raise RequestError(f"services: {', '.join(unknown)} not on cluster {view['name']!r} (it has: {', '.join(services)})")
        planned = getattr(planner, f"plan_{operation.removesuffix('_services')}")(env.catalog, services, request.services)
        targets = sorted({s.service for s in planned.service_steps})
        _set_params(env, view, dag_id, run_id, {"targets": targets})
        log.info("%s on %s: %s", operation, view["name"], ", ".join(targets) or "nothing to do")
        return []

    return prepare


def _prepare_configure(env: Env, view: dict[str, Any], request: Any, dag_id: str, run_id: str) -> list[str]:
    template = env.catalog.template(view["template"])
    problems = check_immutable(request.config, view["config"], template.immutable_config, "config")
    if problems:
        raise RequestError("; ".join(problems))
    env.store.update_cluster(view["name"], config=deep_merge(view["config"], request.config))
    _set_params(env, view, dag_id, run_id, {"restart": request.restart, "config": request.config})
    return []


def _prepare_add_services(env: Env, view: dict[str, Any], request: Any, dag_id: str, run_id: str) -> list[str]:
    from loom.solver import solve_add_services

    template = env.catalog.template(view["template"])
    new = [s for s in request.services if s not in view["services"]]
    if not new:
        raise RequestError(f"services: {', '.join(request.services)} already on cluster {view['name']!r}")
    before = layout_of(view)
    after = solve_add_services(template, before, new, env.catalog)
    changed = {n.hostname: list(n.services) for n, old in zip(after.nodes, before.nodes) if n.services != old.services}
    for hostname, services in changed.items():
        env.store.update_node(view["name"], hostname, services=services)
    config = cluster_config(template, after.services, {}, env.catalog)
    env.store.update_cluster(view["name"], services=list(after.services), config=deep_merge(config, view["config"]))
    _set_params(env, view, dag_id, run_id, {"new_services": new, "nodes": sorted(changed)})
    return sorted(changed)


def _prepare_expand(env: Env, view: dict[str, Any], request: Any, dag_id: str, run_id: str) -> list[str]:
    from loom.solver import solve_expand

    mine = [n for n in view["nodes"] if n["created_by_run"] == run_id]
    if mine:  # a retried first step: the nodes are already planned
        return [n["hostname"] for n in mine]
    template = env.catalog.template(view["template"])
    limit = template.constraints.size.max
    size = len(view["nodes"]) + request.add_nodes
    if size > limit:
        raise RequestError(f"add_nodes: {len(view['nodes'])} + {request.add_nodes} = {size} nodes is more than template {template.name!r} allows ({limit})")
    before = layout_of(view)
    after = solve_expand(template, before, request.add_nodes, env.catalog)
    new_nodes = [n for n in after.nodes if n.hostname not in {o.hostname for o in before.nodes}]
    env.store.add_nodes(view["name"], new_nodes, run_id)
    grown = sorted({s for n in new_nodes for s in n.services})
    _set_params(env, view, dag_id, run_id, {"grown": grown, "add_nodes": request.add_nodes})
    return [n.hostname for n in new_nodes]


def _prepare_sync(env: Env, view: dict[str, Any], request: Any, dag_id: str, run_id: str) -> list[str]:
    """Bring the cluster to its template's current version where compatible: services the
    template now adds by default go onto existing nodes, and the config is rebuilt from the
    template's new defaults plus every config the users gave (create, configure). Refuses, saying
    why, when the live layout breaks the template's current constraints."""
    from loom.layout_check import violations
    from loom.solver import solve_add_services

    template = env.catalog.template(view["template"])
    snapshot = template.model_dump(mode="json")
    if view["template_snapshot"] == snapshot:
        _set_params(env, view, dag_id, run_id, {"new_services": [], "restart": False, "changes": []})
        log.info("cluster %s already matches template %s", view["name"], template.name)
        return []
    layout = layout_of(view)
    problems = violations(template, layout, env.catalog)
    if problems:
        raise ClusterError(
            f"cluster {view['name']!r} cannot be synced to template {template.name!r}: " + "; ".join(problems)
            + ". Revert the template change, or create a new cluster"
        )
    new = [s for s in template.defaults.services if s not in layout.services]
    changed: dict[str, list[str]] = {}
    if new:
        after = solve_add_services(template, layout, new, env.catalog)
        changed = {n.hostname: list(n.services) for n, old in zip(after.nodes, layout.nodes) if n.services != old.services}
        layout = after
    user_config: dict[str, Any] = {}
    for op in view["operations"]:
        if op["operation"] in ("create", "configure") and op["state"] != OperationState.FAILED.value:
            user_config = deep_merge(user_config, (op.get("params") or {}).get("config") or {})
    config = cluster_config(template, layout.services, user_config, env.catalog)
    restart = config != view["config"] or bool(new)
    for hostname, services in changed.items():
        env.store.update_node(view["name"], hostname, services=services)
    env.store.update_cluster(view["name"], services=list(layout.services), config=config, template_snapshot=snapshot)
    changes = [f"add {', '.join(new)}"] if new else []
    changes += ["new config"] if config != view["config"] else []
    _set_params(env, view, dag_id, run_id, {"new_services": new, "restart": restart, "changes": changes})
    log.info("sync %s to template %s: %s", view["name"], template.name, "; ".join(changes) or "nothing to run")
    return sorted(changed)


def _prepare_extend_lease(env: Env, view: dict[str, Any], request: Any, dag_id: str, run_id: str) -> list[str]:
    template = env.catalog.template(view["template"])
    _, maximum, step = template.administration.leaseduration.seconds()
    wanted = parse_duration(request.lease, "lease")
    current = datetime.fromisoformat(view["lease_expires_at"]) if view["lease_expires_at"] else None
    if current is None:
        raise RequestError(f"cluster {view['name']!r} has no lease (it never expires): nothing to extend")
    now = datetime.now(timezone.utc)
    new_expiry = max(current, now) + timedelta(seconds=wanted) if wanted else None
    created = datetime.fromisoformat(view["created_at"])
    if new_expiry is None:
        raise RequestError("lease: 0 (unlimited) cannot be granted by an extension")
    if step and new_expiry > current + timedelta(seconds=step):
        raise RequestError(f"lease: an extension may go at most {format_duration(step)} past the current expiry ({current.isoformat()})")
    if maximum and new_expiry > created + timedelta(seconds=maximum):
        raise RequestError(f"lease: the lease may not end after {(created + timedelta(seconds=maximum)).isoformat()} (create time + max {format_duration(maximum)})")
    env.store.update_cluster(view["name"], lease_expires_at=new_expiry)
    _set_params(env, view, dag_id, run_id, {"lease_expires_at": new_expiry.isoformat()})
    return []


def _set_params(env: Env, view: dict[str, Any], dag_id: str, run_id: str, params: dict[str, Any]) -> None:
    env.store.set_params(view["name"], dag_id, run_id, params)


_PREPARE = {
    "delete": _prepare_delete,
    "start_services": _prepare_targets("start_services"),
    "stop_services": _prepare_targets("stop_services"),
    "restart_services": _prepare_targets("restart_services"),
    "configure": _prepare_configure,
    "add_services": _prepare_add_services,
    "expand": _prepare_expand,
    "extend_lease": _prepare_extend_lease,
    "sync": _prepare_sync,
}


# --- which nodes a step runs on -------------------------------------------------------------
def step_nodes(env: Env, cluster: str, dag_id: str, run_id: str, service: str, where: str, gate: str | None) -> list[str]:
    """Hostnames a service step of this run maps over: nodes with the service, restricted to
    the run's new or existing nodes, and to what the run targets (``gate``)."""
    view = env.store.require(cluster)
    op = next((o for o in view["operations"] if o["dag_id"] == dag_id and o["run_id"] == run_id), None)
    params = (op or {}).get("params") or {}
    if gate == "targets" and service not in params.get("targets", []):
        return []
    if gate == "restart" and not params.get("restart"):
        return []
    if gate == "new_services" and service not in params.get("new_services", []):
        return []
    if gate == "reused":  # remove actions: only where the machine outlives the cluster (static pools)
        provider = env.catalog.providers.get(view["provider"])
        if provider is None or provider.driver != "static":
            return []
    if gate == "membership":
        from loom.planner import membership_refs

        if not membership_refs(env.catalog, service) & set(params.get("grown", [])):
            return []
    nodes = [n for n in view["nodes"] if service in n["services"] and n["status"] != NodeStatus.DELETED.value]
    if where == "new":
        nodes = [n for n in nodes if n["created_by_run"] == run_id]
    elif where == "existing":
        nodes = [n for n in nodes if n["created_by_run"] != run_id]
    return [n["hostname"] for n in nodes]


# --- the last step --------------------------------------------------------------------------
def settle(env: Env, operation: str, cluster: str, dag_id: str, run_id: str, failed: list[str]) -> dict[str, Any]:
    """Record how the run went. ``failed``: the steps that failed. With failures and the
    template's ``on_failure: rollback`` a create/expand destroys the nodes it made. Releases
    the cluster either way; raises ClusterError after recording a failure."""
    view = env.store.require(cluster)
    if not failed:
        if operation == "delete":
            from loom.engine import finish_delete

            return finish_delete(env, cluster, dag_id, run_id)
        status = DONE_STATUS.get(operation, ClusterStatus.ACTIVE)
        for node in view["nodes"]:  # a resumed run fixed what had failed on these nodes
            if node["status"] == NodeStatus.FAILED.value:
                env.store.update_node(cluster, node["hostname"], status=NodeStatus.RUNNING.value, message="")
        env.store.finish(cluster, dag_id, run_id, status=status, state=OperationState.COMPLETE)
        return env.store.require(cluster)
    message = f"{operation} failed at {', '.join(sorted(failed))}"
    template = env.catalog.clustertemplates.get(view["template"])
    rollback = template is not None and template.administration.on_failure == "rollback"
    if rollback and operation in ("create", "expand"):
        made = [n["hostname"] for n in view["nodes"] if n["created_by_run"] == run_id]
        log.warning("%s; rolling back: destroying %s", message, ", ".join(made))
        for hostname in made:
            destroy_node(env, cluster, hostname)
        status = ClusterStatus.TERMINATED if operation == "create" else ClusterStatus.ACTIVE
        message += f"; rolled back (destroyed {len(made)} node(s))"
        if operation == "create":
            _drop_key(env, view)
    else:
        status = failed_status(operation)
        message += "; fix the cause, then clear the failed task(s) in Airflow to resume"
    env.store.finish(cluster, dag_id, run_id, status=status, state=OperationState.FAILED, message=message)
    raise ClusterError(f"cluster {cluster!r}: {message} (now {status.value})")


def _drop_key(env: Env, view: dict[str, Any]) -> None:
    import shutil

    shutil.rmtree(env.key_file(view).parent, ignore_errors=True)


def run_ended(env: Env, operation: str, cluster: str, dag_id: str, run_id: str, succeeded: bool, why: str) -> None:
    """Safety net for runs that end without their last step (marked failed by hand, killed):
    close the operation record if still open and release the cluster."""
    op = env.store.operation(cluster, dag_id, run_id)
    if op is None:
        return
    if op["state"] == OperationState.RUNNING.value:
        # Ended without its finish step (by hand, or by the janitor): a task of that run still
        # starting must not take the cluster back; a run failed by its finish stays resumable.
        env.store.set_params(cluster, dag_id, run_id, {"closed_outside": True})
        if succeeded:
            env.store.finish(cluster, dag_id, run_id, status=None, state=OperationState.COMPLETE, message=why)
        else:
            env.store.finish(cluster, dag_id, run_id, status=failed_status(operation), state=OperationState.FAILED, message=why)
    env.store.release(cluster, dag_id, run_id)


# --- lifecycle hooks ------------------------------------------------------------------------
def hook_payload(env: Env, operation: str, template: str, conf: dict[str, Any], dag_id: str, run_id: str,
                 phase: str) -> dict[str, Any]:
    """The JSON a hook receives. At ``on_start`` the request is validated first (a bad conf
    fails here with the same message ``plan`` would give) and, for create, the nodes are the
    solver's preview (nothing exists yet); after ``finish`` they are the store's."""
    from loom import hooks
    from loom.engine import begin_create_preview

    if phase == "on_start":
        if operation == "create":
            preview = begin_create_preview(env, template, conf, dag_id)
            return hooks.payload(preview, operation, dag_id, run_id, phase, "STARTING", request=conf)
        request = parse_request(operation, conf, f"{dag_id} conf")
        view = env.store.require(request.cluster)
        if view["status"] == ClusterStatus.TERMINATED.value:
            raise ClusterError(f"cluster {request.cluster!r} is TERMINATED: nothing to {operation}")
        return hooks.payload(view, operation, dag_id, run_id, phase, view["status"], request=conf)
    name = str(conf.get("cluster") or "")
    view = env.store.get(name)
    op = env.store.operation(name, dag_id, run_id) or {}
    failed_nodes = [n["hostname"] for n in (view or {}).get("nodes", []) if n["status"] == NodeStatus.FAILED.value]
    return hooks.payload(view, operation, dag_id, run_id, phase, (view or {}).get("status") or "UNKNOWN",
                         cluster=name, template=template, result=op.get("state"), message=op.get("message") or "",
                         failed_nodes=failed_nodes)
