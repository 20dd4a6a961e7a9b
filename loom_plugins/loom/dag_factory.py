"""Catalog -> Airflow DAGs: one per (cluster template, operation), ids ``<template>.<operation>``.

The planner's steps become tasks (service actions grouped per service so the Graph view reads
like Loom's plan); node steps fan out with dynamic task mapping, one task instance per node,
labelled with its hostname. Parsing reads only the template files: no network, no database.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, AssetAlias, Param, TaskGroup, TriggerRule

from loom import operators as ops
from loom.names import CLUSTER_NAME_RE
from loom.planner import Plan, Step
from loom.settings import load_settings
from loom.spec.loader import Catalog, load_catalog
from loom.spec.models import ClusterTemplate

log = logging.getLogger(__name__)

START = datetime(2024, 1, 1)


def _cluster_param() -> Param:
    return Param(
        type="string",
        pattern=CLUSTER_NAME_RE.pattern,
        minLength=2,
        maxLength=40,
        title="Cluster name",
        description="2-40 characters: lowercase letters, digits and '-', starting with a letter.",
    )


def create_params(template: ClusterTemplate, catalog: Catalog) -> dict[str, Param]:
    size = template.constraints.size
    services = template.compatibility.services or sorted(catalog.services)
    return {
        "cluster": _cluster_param(),
        "size": Param(size.min, type="integer", minimum=size.min, maximum=size.max, title="Number of nodes"),
        "services": Param(
            list(template.defaults.services),
            type="array",
            items={"type": "string", "enum": services},
            uniqueItems=True,
            title="Services",
        ),
        "provider": Param(template.defaults.provider, type="string", enum=sorted(catalog.providers), title="Provider"),
        "hardwaretype": Param(None, type=["null", "string"], title="Hardware type (default: the template's)"),
        "imagetype": Param(None, type=["null", "string"], title="Image type (default: the template's)"),
        "config": Param({}, type="object", title="Config merged over the template's defaults.config"),
        "lease": Param(None, type=["null", "string"], pattern=r"^(0|\d+[smhdw])$", title="Lease (e.g. 4h)"),
    }


OPERATION_DOCS = {
    "create": "Creates a cluster: solves the layout, provisions one machine per node, confirms SSH, "
    "bootstraps, then installs, configures, initializes and starts services in dependency order.",
    "delete": "Deletes a cluster: stops services (dependents first), destroys every node, marks it TERMINATED.",
    "add_services": "Adds services to a live cluster's existing nodes (no node is created or moved): "
    "bootstrap, then install, configure, initialize and start the new services in dependency order.",
    "start_services": "Starts services (all, or the listed ones plus what they need), dependencies first.",
    "stop_services": "Stops services (all, or the listed ones plus what depends on them), dependents first.",
    "restart_services": "Restarts services (all, or the listed ones plus their dependents): stop in reverse "
    "order, then start in dependency order.",
    "configure": "Merges new config into the cluster's and re-runs every service's configure step; with "
    "restart: true, stops services first and starts them after.",
    "expand": "Adds nodes to a live cluster: the new nodes get their services created and started, then "
    "services on existing nodes that read the cluster's membership are reconfigured.",
    "sync": "Brings the cluster to its template's current version where compatible: services the template "
    "now adds by default go onto existing nodes, the config is rebuilt from the template's defaults plus "
    "the users' config, and services restart with it. Refuses, saying why, where the live layout breaks "
    "the template's current constraints.",
    "extend_lease": "Extends the cluster's lease by Loom's rules (at most `step` past the current expiry, "
    "never past create time + `max`).",
}
EXAMPLE_CONF = {
    "create": '{"cluster": "demo", "size": 3}',
    "add_services": '{"cluster": "demo", "services": ["..."]}',
    "configure": '{"cluster": "demo", "config": {"key": "value"}, "restart": true}',
    "expand": '{"cluster": "demo", "add_nodes": 2}',
    "extend_lease": '{"cluster": "demo", "lease": "2h"}',
    "start_services": '{"cluster": "demo", "services": ["..."]}',
}


def _doc(template: ClusterTemplate, operation: str, the_plan: Plan) -> str:
    steps = "\n".join(
        f"{i}. `{s.id}`" + (f" on {s.where} nodes" if s.where != "all" else "")
        + (f" (after {', '.join(f'`{a}`' for a in s.after)})" if s.after else "")
        for i, s in enumerate(the_plan.steps, 1)
    ) or "(no per-node steps)"
    conf = EXAMPLE_CONF.get(operation, '{"cluster": "demo"}')
    return (
        f"# {template.label or template.name}: {operation}\n\n{template.description}\n\n{OPERATION_DOCS[operation]}\n\n"
        f"## Steps\n`plan` first, `finish` last (it records the outcome and frees the cluster).\n\n{steps}\n\n"
        f"## Trigger\n```\n{conf}\n```\n"
        + _hooks_doc(template, operation)
        + "A bad conf is refused (HTTP 400, or a failed `plan` step) before anything changes; one operation "
        "runs on a cluster at a time. Resume a failed run by clearing its failed task(s). "
        "`loom cluster show <name>` shows the cluster's state and history."
    )


def _hooks_doc(template: ClusterTemplate, operation: str) -> str:
    from loom.hooks import PHASES, hooks_for

    lines = [f"- `hooks.{p}`: {len(hooks_for(template, operation, p))} hook(s)" for p in PHASES
             if hooks_for(template, operation, p)]
    event = ("On success, `finish` emits an Asset event for `loom://clusters/<cluster>`.\n\n"
             if operation in ("create", "expand", "delete") else "")
    return (("## Lifecycle hooks\n" + "\n".join(lines) + "\n\n") if lines else "") + event


def operation_params(operation: str, template: ClusterTemplate, catalog: Catalog) -> dict[str, Param]:
    if operation == "create":
        return create_params(template, catalog)
    services = template.compatibility.services or sorted(catalog.services)
    service_list = {"type": "string", "enum": services}
    params: dict[str, Param] = {"cluster": _cluster_param()}
    if operation in ("start_services", "stop_services", "restart_services"):
        params["services"] = Param(None, type=["null", "array"], items=service_list, uniqueItems=True,
                                   title="Services (default: all)")
    elif operation == "add_services":
        params["services"] = Param(type="array", items=service_list, minItems=1, uniqueItems=True, title="Services to add")
    elif operation == "configure":
        params["config"] = Param({}, type="object", title="Config merged into the cluster's")
        params["restart"] = Param(False, type="boolean", title="Stop services before and start them after")
    elif operation == "expand":
        params["add_nodes"] = Param(1, type="integer", minimum=1, maximum=template.constraints.size.max,
                                    title="Nodes to add")
    elif operation == "extend_lease":
        params["lease"] = Param(type="string", pattern=r"^\d+[smhdw]$", title="Extend by (e.g. 2h)")
    return params


def steps_plan(operation: str, catalog: Catalog, services: list[str]) -> Plan:
    """The DAG's shape: the plan over every service the template allows (a run skips what it
    does not touch: its ``nodes`` selectors return no node)."""
    from loom import planner

    shapes = {
        "create": lambda: planner.plan_create(catalog, services),
        "delete": lambda: planner.plan_delete(catalog, services),
        "add_services": lambda: planner.plan_add_services(catalog, [], services),
        "start_services": lambda: planner.plan_start(catalog, services),
        "stop_services": lambda: planner.plan_stop(catalog, services),
        "restart_services": lambda: planner.plan_restart(catalog, services),
        "configure": lambda: planner.plan_configure(catalog, services, restart=True),
        "expand": lambda: planner.plan_expand(catalog, services),
        "extend_lease": lambda: Plan("extend_lease", ()),
        "sync": lambda: planner.plan_sync(catalog, services),
    }
    return shapes[operation]()


def _gate(operation: str, step: Step) -> str | None:
    """What decides at run time whether a service step runs (see operations.step_nodes)."""
    if operation in ("start_services", "stop_services", "restart_services"):
        return "targets"
    if operation == "configure" and step.action in ("stop", "start"):
        return "restart"
    if operation == "add_services":
        return "new_services"
    if operation == "expand" and step.where == "existing":
        return "membership"
    if operation == "sync":
        return "restart" if step.id.endswith("_refresh") else "new_services"
    if operation == "delete" and step.action == "remove":
        return "reused"
    return None


def _selector_id(where: str, gate: str | None) -> str:
    return "_".join(["nodes", *([where] if where != "all" else []), *([gate] if gate else [])])


def _service_tasks(dag_plan: Plan, template: str, operation: str, begin: Any) -> dict[str, Any]:
    """One TaskGroup per service: its node selectors + one mapped task per action."""
    tasks: dict[str, Any] = {}
    groups: dict[str, TaskGroup] = {}
    selectors: dict[tuple[str, str, str | None], Any] = {}
    best_effort = operation == "delete"
    for step in dag_plan.service_steps:
        svc = step.service
        assert svc is not None
        if svc not in groups:
            groups[svc] = TaskGroup(group_id=svc, tooltip=f"service {svc}")
        group = groups[svc]
        gate = _gate(operation, step)
        with group:
            key = (svc, step.where, gate)
            if key not in selectors:
                selectors[key] = ops.SelectNodesOperator(
                    task_id=_selector_id(step.where, gate), template=template, operation=operation,
                    service=svc, where=step.where, gate=gate,
                )
                begin >> selectors[key]
            tasks[step.id] = ops.ServiceActionOperator.mapped(
                task_id=step.id.split(".", 1)[1],
                template=template,
                operation=operation,
                service=svc,
                action=step.action,
                best_effort=best_effort,
                retries=0 if best_effort else ops.ServiceActionOperator.default_retries,
            ).expand(hostname=selectors[key].output)
    return tasks


NODE_OPERATORS = {
    "create": ops.ProvisionNodeOperator,
    "confirm": ops.ConfirmNodeOperator,
    "bootstrap": ops.BootstrapNodeOperator,
    "delete": ops.DestroyNodeOperator,
}


def build_operation_dag(template: ClusterTemplate, catalog: Catalog, operation: str) -> DAG:
    services = template.compatibility.services or template.defaults.services
    dag_plan = steps_plan(operation, catalog, services)
    doc_plan = steps_plan(operation, catalog, template.defaults.services)
    name = template.name
    with DAG(
        dag_id=f"{name}.{operation}",
        schedule=None,
        start_date=START,
        catchup=False,
        is_paused_upon_creation=False,
        max_active_runs=8,
        tags=["loom", f"template:{name}", f"operation:{operation}"],
        doc_md=_doc(template, operation, doc_plan),
        params=operation_params(operation, template, catalog),
    ) as dag:
        begin_cls = ops.BeginCreateOperator if operation == "create" else ops.BeginOperator
        begin = begin_cls(task_id="plan", template=name, operation=operation)
        tasks: dict[str, Any] = {}
        node_steps = [s for s in dag_plan.steps if s.kind == "node"]
        if node_steps:
            with TaskGroup(group_id="node", tooltip="one task instance per node"):
                for step in node_steps:
                    tasks[step.id] = NODE_OPERATORS[step.action].mapped(
                        task_id=step.action, template=name, operation=operation
                    ).expand(hostname=begin.output)
        tasks.update(_service_tasks(dag_plan, name, operation, begin))
        for step in dag_plan.steps:
            for before in step.after:
                tasks[before] >> tasks[step.id]
        outlets = [AssetAlias(ops.CLUSTERS_ALIAS)] if operation in ops.EVENT_OPERATIONS else []
        finish = ops.FinishOperator(task_id="finish", template=name, operation=operation, outlets=outlets)
        begin >> finish
        list(tasks.values()) >> finish
        _hook_tasks(template, operation, begin, finish)
    return dag


def _hook_tasks(template: ClusterTemplate, operation: str, begin: Any, finish: Any) -> None:
    """``hooks.on_start`` before ``plan`` (a veto stops everything), ``hooks.on_success`` /
    ``hooks.on_failure`` after ``finish``; only the phases the template has hooks for."""
    from loom.hooks import PHASES, hooks_for

    phases = [p for p in PHASES if hooks_for(template, operation, p)]
    if not phases:
        return
    with TaskGroup(group_id="hooks", tooltip="the template's lifecycle hooks"):
        for phase in phases:
            task = ops.HookOperator(task_id=phase, phase=phase, template=template.name, operation=operation)
            if phase == "on_start":
                task >> begin
                task >> finish  # a veto still reaches finish (all_done), which says so
            else:
                finish >> task


OPERATIONS = (
    "create", "delete", "add_services", "start_services", "stop_services", "restart_services",
    "configure", "expand", "extend_lease", "sync",
)


def build_janitor_dag() -> DAG:
    from datetime import timedelta

    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    with DAG(
        dag_id="loom.janitor",
        schedule=timedelta(minutes=5),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=False,
        tags=["loom", "janitor"],
        doc_md=(
            "# Loom janitor\nEvery 5 minutes: deletes clusters whose lease expired (by triggering their "
            "`<template>.delete`), fails operations stuck longer than `[loom] operation_timeout` (freeing "
            "their cluster), and reports machines providers have that no live cluster owns (orphans) and "
            "live nodes whose machine is gone (lost)."
        ),
    ) as dag:
        expired = ops.JanitorOperator(task_id="expired_leases", job="expired")
        TriggerDagRunOperator.partial(task_id="delete_expired", logical_date=None).expand_kwargs(expired.output)
        ops.JanitorOperator(task_id="stuck_operations", job="stuck")
        ops.JanitorOperator(task_id="orphans", job="reconcile")
    return dag


def build_dags(templates_dir: str | None = None) -> dict[str, DAG]:
    """Every valid template's DAGs; a broken template is logged and skipped, the rest load."""
    started = time.monotonic()
    catalog = load_catalog(templates_dir or load_settings().templates_dir)
    dags: dict[str, DAG] = {}
    for name, template in sorted(catalog.clustertemplates.items()):
        for operation in OPERATIONS:
            try:
                dag = build_operation_dag(template, catalog, operation)
            except Exception:
                log.exception("template %s: cannot build the %s DAG; other DAGs still load", name, operation)
                continue
            dags[dag.dag_id] = dag
    janitor = build_janitor_dag()
    dags[janitor.dag_id] = janitor
    log.info("loom: %d DAG(s) from %d template(s) in %.3f s; %d template problem(s)",
             len(dags), len(catalog.clustertemplates), time.monotonic() - started, len(catalog.problems))
    return dags
