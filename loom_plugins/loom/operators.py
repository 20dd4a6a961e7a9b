"""Airflow operators: each reads its inputs, calls one ``loom.engine``/``loom.operations``
function, and raises with a message naming the cluster, node and action.

Every operation DAG is: ``plan`` (validate, take the cluster, record what to do) -> steps ->
``finish`` (runs whatever happened: records the outcome, rolls back if the template says so,
releases the cluster). Each step re-checks that its run still holds the cluster.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, TriggerRule

log = logging.getLogger(__name__)

HOSTNAME_LABEL = "{{ task.hostname }}"  # map_index_template: the UI labels mapped tasks by node


def _conf(context: Any) -> dict[str, Any]:
    return dict(context["dag_run"].conf or {})


def _cluster_name(context: Any) -> str:
    return str(_conf(context).get("cluster") or context["params"].get("cluster") or "")


def _owner(context: Any) -> str:
    return getattr(context["dag_run"], "triggering_user_name", None) or "airflow"


def record_task_failure(context: Any) -> None:
    """on_failure_callback: note the failing step on its node and cluster."""
    from loom.engine import Env, record_step_failure

    task = context["task"]
    cluster = _cluster_name(context)
    if not cluster or task.task_id in ("plan", "finish"):
        return
    exc = context.get("exception")
    hostname = getattr(task, "hostname", None)
    message = f"{getattr(task, 'step_name', task.task_id)}{' on ' + hostname if hostname else ''}: {exc}"
    try:
        env = Env.load()
        if env.store.operation(cluster, context["dag"].dag_id, context["run_id"]) is not None:
            record_step_failure(env, cluster, message, hostname=hostname)
    except Exception:  # the callback must never hide the task's own error
        log.exception("could not record the failure of %s in the cluster store", task.task_id)


class LoomOperator(BaseOperator):
    """Common base: the cluster template this DAG was generated from, failure recording."""

    ui_color = "#e8f0fe"
    holds_cluster = True  # steps check their run still holds the cluster

    def __init__(self, *, template: str, operation: str, **kwargs: Any):
        kwargs.setdefault("on_failure_callback", record_task_failure)
        super().__init__(**kwargs)
        self.template = template
        self.operation = operation

    @property
    def step_name(self) -> str:
        return self.task_id

    def env(self) -> Any:
        from loom.engine import Env

        return Env.load()

    def fail(self, exc: Exception) -> None:
        """A request/template error: retrying cannot help, fail now with the message."""
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc

    def hold(self, env: Any, context: Any) -> None:
        from loom.errors import ClusterError

        try:
            env.store.hold(_cluster_name(context), self.dag_id, context["run_id"])
        except ClusterError as exc:
            self.fail(exc)

    def unknown_conf_keys(self, context: Any) -> None:
        from loom.errors import RequestError

        allowed = set(self.dag.params)  # context["params"] also holds unknown conf keys
        unknown = sorted(set(_conf(context)) - allowed)
        if unknown:
            self.fail(RequestError(
                f"{self.dag_id} conf: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
            ))

    def params_of(self, context: Any) -> dict[str, Any]:
        return {k: context["params"].get(k) for k in self.dag.params}


class BeginCreateOperator(LoomOperator):
    """Validate the conf, solve the layout, record the PENDING cluster. Returns its hostnames."""

    ui_color = "#fff4e5"

    def execute(self, context: Any) -> list[str]:
        from loom.engine import begin_create
        from loom.errors import LoomError

        self.unknown_conf_keys(context)
        try:
            view = begin_create(self.env(), self.template, self.params_of(context), self.dag_id, context["run_id"], _owner(context))
        except LoomError as exc:
            self.fail(exc)
        return [n["hostname"] for n in view["nodes"] if n["created_by_run"] == context["run_id"]]


class BeginOperator(LoomOperator):
    """First step of every other operation: validate, take the cluster (or say who has it),
    record what the run will do. Returns the hostnames its per-node steps map over."""

    ui_color = "#fff4e5"

    def execute(self, context: Any) -> list[str]:
        from loom.errors import LoomError
        from loom.operations import begin

        self.unknown_conf_keys(context)
        try:
            begun = begin(self.env(), self.operation, self.template, self.params_of(context), self.dag_id,
                          context["run_id"], _owner(context))
        except LoomError as exc:
            self.fail(exc)
        return begun.hostnames


class SelectNodesOperator(LoomOperator):
    """Which nodes a service's steps run on in this run (the list they map over)."""

    ui_color = "#f1f3f4"

    def __init__(self, *, service: str, where: str = "all", gate: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.service, self.where, self.gate = service, where, gate

    def execute(self, context: Any) -> list[str]:
        from loom.operations import step_nodes

        env = self.env()
        self.hold(env, context)
        hosts = step_nodes(env, _cluster_name(context), self.dag_id, context["run_id"], self.service, self.where, self.gate)
        log.info("%s (%s nodes, %s) runs on: %s", self.service, self.where, self.gate or "always", ", ".join(hosts) or "no node")
        return hosts


class MappedPerNode:
    """Mixin: ``Op.mapped(...)`` = ``Op.partial(...)`` with this class's retry policy, the
    hostname as the UI label and the failure callback. (``partial`` never calls ``__init__``
    for the scheduler's view of the task, so per-class defaults must be passed here.)"""

    default_retries = 0
    retry_seconds = 10

    @classmethod
    def mapped(cls, **kwargs: Any) -> Any:
        kwargs.setdefault("retries", cls.default_retries)
        kwargs.setdefault("retry_delay", timedelta(seconds=cls.retry_seconds))
        kwargs.setdefault("map_index_template", HOSTNAME_LABEL)
        kwargs.setdefault("on_failure_callback", record_task_failure)
        kwargs.setdefault("trigger_rule", TriggerRule.NONE_FAILED)
        return cls.partial(**kwargs)  # type: ignore[attr-defined]


class NodeOperator(MappedPerNode, LoomOperator):
    """A step on one node; mapped with ``expand(hostname=...)``, the UI shows the hostname."""

    step = ""

    def __init__(self, *, hostname: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.hostname = hostname

    @property
    def step_name(self) -> str:
        return f"node.{self.step}"

    def execute(self, context: Any) -> Any:
        from loom import engine

        env = self.env()
        self.hold(env, context)
        return getattr(engine, f"{self.step}_node")(env, _cluster_name(context), self.hostname)


class ProvisionNodeOperator(NodeOperator):
    """Create the node's machine through its provider (idempotent: a retry finds it)."""

    step = "provision"
    ui_color = "#e6f4ea"
    default_retries = 2
    retry_seconds = 5


class ConfirmNodeOperator(NodeOperator):
    """Wait until the node's machine runs and answers SSH with its pinned host key. While a
    machine boots the task is deferred (NodeReadyTrigger): the worker slot is free meanwhile."""

    step = "confirm"
    ui_color = "#e6f4ea"

    def execute(self, context: Any) -> Any:
        import time

        from loom import engine
        from loom.errors import LoomError
        from loom.triggers import NodeReadyTrigger

        env = self.env()
        self.hold(env, context)
        cluster = _cluster_name(context)
        try:
            probe = engine.probe_node(env, cluster, self.hostname)
        except LoomError as exc:
            self.fail(exc)
        if probe["ready"]:
            return engine.confirm_node(env, cluster, self.hostname, timeout=60)
        timeout = self.boot_timeout(env, cluster)
        log.info("node %s: %s; waiting up to %d s in the triggerer (this task is deferred)", self.hostname,
                 probe["detail"], timeout)
        self.defer(
            trigger=NodeReadyTrigger(cluster, self.hostname, deadline=time.time() + timeout),
            method_name="execute_complete",
            timeout=timedelta(seconds=timeout + 60),
        )

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        from loom import engine
        from loom.errors import ProviderError

        event = event or {}
        env = self.env()
        cluster = _cluster_name(context)
        if event.get("status") != "ready":
            timeout = self.boot_timeout(env, cluster)
            why = "did not run and answer SSH within %d s" % timeout if event.get("status") == "timeout" else "failed"
            raise ProviderError(f"node {self.hostname!r} {why}: {event.get('message', 'no event')}")
        log.info("node %s is up after %s poll(s): %s", self.hostname, event.get("polls"), event.get("detail"))
        self.hold(env, context)
        return engine.confirm_node(env, cluster, self.hostname, timeout=60)

    @staticmethod
    def boot_timeout(env: Any, cluster: str) -> int:
        provider = env.catalog.providers.get(env.store.require(cluster)["provider"])
        return provider.boot_timeout if provider is not None else 900


class BootstrapNodeOperator(NodeOperator):
    step = "bootstrap"
    ui_color = "#e6f4ea"


class DestroyNodeOperator(NodeOperator):
    step = "destroy"
    ui_color = "#fce8e6"
    default_retries = 2
    retry_seconds = 5


class ServiceActionOperator(MappedPerNode, LoomOperator):
    """Run one service action on one node (mapped over the service's nodes)."""

    ui_color = "#e8eaf6"
    default_retries = 1

    def __init__(self, *, service: str, action: str, hostname: str, best_effort: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.service, self.action, self.hostname, self.best_effort = service, action, hostname, best_effort

    @property
    def step_name(self) -> str:
        return f"{self.service}.{self.action}"

    def execute(self, context: Any) -> None:
        from loom.engine import run_service_action
        from loom.errors import LoomError

        env = self.env()
        self.hold(env, context)
        try:
            run_service_action(env, _cluster_name(context), self.hostname, self.service, self.action)
        except LoomError as exc:
            if not self.best_effort:
                raise
            log.warning("%s.%s on %s failed; continuing (best effort): %s", self.service, self.action, self.hostname, exc)


def run_states(context: Any, dag: Any) -> dict[str, str]:
    """This run's task states by task id (map indexes folded: failed beats the rest)."""
    states = context["ti"].get_task_states(dag_id=dag.dag_id, run_ids=[context["run_id"]])
    tasks = set(dag.task_ids)
    out: dict[str, str] = {}
    rank = {"failed": 3, "upstream_failed": 2}
    for key, state in states.get(context["run_id"], {}).items():
        match = re.match(r"^(.*)_(\d+)$", key)
        task_id = match.group(1) if match and match.group(1) in tasks and key not in tasks else key
        if task_id not in out or rank.get(state or "", 0) > rank.get(out[task_id] or "", 0):
            out[task_id] = state
    return out


class FinishOperator(LoomOperator):
    """Runs whatever happened before it: records the outcome, rolls back when the template
    says so, releases the cluster; fails the run when a step failed. After a successful
    create/expand/delete it emits the cluster's Asset event (``loom://clusters/<name>``)."""

    ui_color = "#fff4e5"

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("trigger_rule", TriggerRule.ALL_DONE)
        super().__init__(**kwargs)

    def execute(self, context: Any) -> dict[str, Any]:
        from loom.errors import LoomError
        from loom.operations import settle

        states = run_states(context, self.dag)
        if states.get("hooks.on_start") == "failed":
            self.fail(RuntimeError("vetoed by an on_start hook (see the hooks.on_start log); nothing was changed"))
        if states.get("plan") != "success":
            self.fail(RuntimeError("the operation was refused by its plan step (see its log); nothing was changed"))
        failed = self.failed_steps(states)
        env, cluster = self.env(), _cluster_name(context)
        try:
            view = settle(env, self.operation, cluster, self.dag_id, context["run_id"], failed)
        except LoomError as exc:
            self.fail(exc)
        for node in view["nodes"]:
            log.info("%s %s:%s %s %s", node["hostname"], node["ip"], node["port"], node["status"], ",".join(node["services"]))
        if self.outlets:
            emit_cluster_event(context, self.operation, view)
        return {"cluster": view["name"], "status": view["status"]}

    def failed_steps(self, states: dict[str, str]) -> list[str]:
        """Task ids of this run that failed (not merely upstream_failed)."""
        failed = {t for t, s in states.items() if s == "failed" and t != self.task_id}
        upstream = {t for t, s in states.items() if s == "upstream_failed"}
        return sorted(failed or upstream)


CLUSTERS_ALIAS = "loom.clusters"
EVENT_OPERATIONS = ("create", "expand", "delete")


def cluster_asset_uri(cluster: str) -> str:
    return f"loom://clusters/{cluster}"


def emit_cluster_event(context: Any, operation: str, view: dict[str, Any]) -> None:
    """An Asset event for ``loom://clusters/<name>`` (through the ``loom.clusters`` alias, as
    cluster names are only known at run time), so users' DAGs can run on "cluster ready"."""
    from airflow.sdk import Asset, AssetAlias

    extra = {
        "cluster": view["name"], "template": view["template"], "operation": operation, "status": view["status"],
        "run_id": context["run_id"],
        "nodes": [{k: n[k] for k in ("hostname", "ip", "port", "services", "status")} for n in view["nodes"]],
    }
    context["outlet_events"][AssetAlias(CLUSTERS_ALIAS)].add(Asset(cluster_asset_uri(view["name"])), extra=extra)
    log.info("asset event: %s (%s, %s)", cluster_asset_uri(view["name"]), operation, view["status"])


class HookOperator(LoomOperator):
    """Runs the template's lifecycle hooks of one phase (see loom.hooks). ``on_start`` runs
    before ``plan``: its failure is a veto. ``on_failure`` runs only when the operation began
    (its plan step succeeded) and then failed."""

    ui_color = "#fef7e0"

    def __init__(self, *, phase: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.phase = phase
        if phase != "on_start":
            # A teardown: runs however finish ended, and does not decide the run's state (a
            # run whose operation failed stays failed after its on_failure hooks succeed).
            self.as_teardown()

    @property
    def step_name(self) -> str:
        return f"hooks.{self.phase}"

    def execute(self, context: Any) -> list[str]:
        from airflow.sdk.exceptions import AirflowSkipException

        from loom import hooks
        from loom.engine import run_hook_on_nodes
        from loom.errors import LoomError
        from loom.operations import hook_payload

        if self.phase == "on_start":
            self.unknown_conf_keys(context)
        if self.phase != "on_start":
            states = run_states(context, self.dag)
            succeeded = states.get("finish") == "success"
            if self.phase == "on_success" and not succeeded:
                raise AirflowSkipException("the operation did not succeed: no on_success hooks")
            if self.phase == "on_failure" and (states.get("plan") != "success" or succeeded):
                raise AirflowSkipException("the operation did not begin, or it succeeded: no on_failure hooks")
        env = self.env()
        conf = self.params_of(context)
        try:
            body = hook_payload(env, self.operation, self.template, conf, self.dag_id, context["run_id"], self.phase)
            spec = env.catalog.template(self.template)
            selected = hooks.hooks_for(spec, self.operation, self.phase)
            log.info("%d %s hook(s) for %s of %s", len(selected), self.phase, self.operation, body["cluster"])
            return hooks.run_hooks(
                selected, body, connection=connection_of,
                nodes_runner=lambda hook, b, name: run_hook_on_nodes(env, str(b["cluster"]), hook, b, name),
            )
        except LoomError as exc:
            self.fail(exc)
        raise AssertionError("unreachable")


def connection_of(conn_id: str) -> Any:
    """An Airflow Connection (secrets are masked in task logs by Airflow)."""
    from loom.connections import get_connection

    return get_connection(conn_id, "a hook")


class JanitorOperator(BaseOperator):
    """One housekeeping job of ``loom.janitor`` (see loom.janitor)."""

    ui_color = "#f1f3f4"

    def __init__(self, *, job: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.job = job

    def execute(self, context: Any) -> Any:
        from loom import janitor
        from loom.engine import Env
        from loom.settings import load_settings

        env = Env.load()
        if self.job == "expired":
            return janitor.expired_deletes(env)
        if self.job == "stuck":
            return janitor.fail_stuck(env, timedelta(seconds=load_settings().operation_timeout))
        report = janitor.reconcile(env)
        log.info("orphans: %d, lost nodes: %d", len(report["orphans"]), len(report["lost"]))
        return report
