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

from airflow.sdk import DAG, Param, TaskGroup, TriggerRule

from loom import operators as ops
from loom.names import CLUSTER_NAME_RE
from loom.planner import Plan, plan
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


def _doc(template: ClusterTemplate, operation: str, the_plan: Plan) -> str:
    steps = "\n".join(
        f"{i}. `{s.id}`" + (f" (after {', '.join(f'`{a}`' for a in s.after)})" if s.after else "")
        for i, s in enumerate(the_plan.steps, 1)
    )
    what = {
        "create": "Creates a cluster: solves the layout, provisions one machine per node, confirms SSH, "
        "bootstraps, then installs, configures, initializes and starts services in dependency order.",
        "delete": "Deletes a cluster: stops services (dependents first), destroys every node, marks it TERMINATED.",
    }[operation]
    conf = '{"cluster": "demo", "size": 3}' if operation == "create" else '{"cluster": "demo"}'
    return (
        f"# {template.label or template.name}: {operation}\n\n{template.description}\n\n{what}\n\n"
        f"## Plan (default services)\n{steps}\n\n## Trigger\n```\n{conf}\n```\n"
        "A bad conf is refused (HTTP 400 or a failed first task) before anything is created. "
        "`loom cluster show <name>` shows the cluster's state and history."
    )


def _service_groups(dag_plan: Plan, template: str, begin: Any, best_effort: bool) -> dict[str, Any]:
    """One TaskGroup per service: ``nodes`` (which nodes carry it, after ``begin``) + one mapped
    task per action, expanded over those nodes."""
    tasks: dict[str, Any] = {}
    groups: dict[str, TaskGroup] = {}
    hosts_of: dict[str, Any] = {}
    for step in dag_plan.service_steps:
        svc = step.service
        assert svc is not None
        if svc not in groups:
            groups[svc] = TaskGroup(group_id=svc, tooltip=f"service {svc}")
            with groups[svc]:
                hosts_of[svc] = ops.SelectNodesOperator(task_id="nodes", template=template, service=svc)
            begin >> hosts_of[svc]
        with groups[svc]:
            tasks[step.id] = ops.ServiceActionOperator.mapped(
                task_id=step.action,
                template=template,
                service=svc,
                action=step.action,
                best_effort=best_effort,
                trigger_rule=TriggerRule.NONE_FAILED,
                retries=0 if best_effort else ops.ServiceActionOperator.default_retries,
            ).expand(hostname=hosts_of[svc].output)
    return tasks


def _wire(dag_plan: Plan, tasks: dict[str, Any]) -> None:
    for step in dag_plan.steps:
        for before in step.after:
            tasks[before] >> tasks[step.id]


def _operation_dag(template: ClusterTemplate, operation: str, doc_plan: Plan, params: dict[str, Param]) -> DAG:
    return DAG(
        dag_id=f"{template.name}.{operation}",
        schedule=None,
        start_date=START,
        catchup=False,
        is_paused_upon_creation=False,
        max_active_runs=8,
        tags=["loom", f"template:{template.name}", f"operation:{operation}"],
        doc_md=_doc(template, operation, doc_plan),
        params=params,
    )


def _template_services(template: ClusterTemplate) -> list[str]:
    """Every service a cluster of this template may have: the DAG has tasks for each."""
    return template.compatibility.services or template.defaults.services


def build_create_dag(template: ClusterTemplate, catalog: Catalog) -> DAG:
    dag_plan = plan("create", catalog, _template_services(template))
    doc_plan = plan("create", catalog, template.defaults.services)
    name = template.name
    with _operation_dag(template, "create", doc_plan, create_params(template, catalog)) as dag:
        begin = ops.BeginCreateOperator(task_id="plan", template=name)
        with TaskGroup(group_id="node", tooltip="one task instance per node"):
            tasks = {
                f"node.{step}": cls.mapped(task_id=step, template=name).expand(hostname=begin.output)
                for step, cls in (
                    ("create", ops.ProvisionNodeOperator),
                    ("confirm", ops.ConfirmNodeOperator),
                    ("bootstrap", ops.BootstrapNodeOperator),
                )
            }
        tasks.update(_service_groups(dag_plan, name, begin, best_effort=False))
        _wire(dag_plan, tasks)
        finish = ops.FinishOperator(task_id="finish", template=name, operation="create", trigger_rule=TriggerRule.NONE_FAILED)
        list(tasks.values()) >> finish
    return dag


def build_delete_dag(template: ClusterTemplate, catalog: Catalog) -> DAG:
    dag_plan = plan("delete", catalog, _template_services(template))
    name = template.name
    with _operation_dag(template, "delete", dag_plan, {"cluster": _cluster_param()}) as dag:
        begin = ops.BeginDeleteOperator(task_id="plan", template=name)
        tasks = _service_groups(dag_plan, name, begin, best_effort=True)
        with TaskGroup(group_id="node", tooltip="one task instance per node"):
            tasks["node.delete"] = ops.DestroyNodeOperator.mapped(
                task_id="delete", template=name, trigger_rule=TriggerRule.NONE_FAILED
            ).expand(hostname=begin.output)
        _wire(dag_plan, tasks)
        ops.FinishOperator(task_id="finish", template=name, operation="delete") << tasks["node.delete"]
    return dag


BUILDERS = {"create": build_create_dag, "delete": build_delete_dag}


def build_dags(templates_dir: str | None = None) -> dict[str, DAG]:
    """Every valid template's DAGs; a broken template is logged and skipped, the rest load."""
    started = time.monotonic()
    catalog = load_catalog(templates_dir or load_settings().templates_dir)
    dags: dict[str, DAG] = {}
    for name, template in sorted(catalog.clustertemplates.items()):
        for operation, builder in BUILDERS.items():
            try:
                dag = builder(template, catalog)
            except Exception:
                log.exception("template %s: cannot build the %s DAG; other DAGs still load", name, operation)
                continue
            dags[dag.dag_id] = dag
    log.info("loom: %d DAG(s) from %d template(s) in %.3f s; %d template problem(s)",
             len(dags), len(catalog.clustertemplates), time.monotonic() - started, len(catalog.problems))
    return dags
