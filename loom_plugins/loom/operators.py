"""Airflow operators: each reads its inputs, calls one ``loom.engine`` function, records state.

Failures raise with a message naming the cluster, node and action; a task-level failure
callback records them in the cluster store (cluster INCOMPLETE, node FAILED) so
``loom cluster show`` tells what broke without opening Airflow.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

log = logging.getLogger(__name__)


def _conf(context: Any) -> dict[str, Any]:
    return dict(context["dag_run"].conf or {})


def _cluster_name(context: Any) -> str:
    return str(_conf(context).get("cluster") or context["params"].get("cluster") or "")


def record_task_failure(context: Any) -> None:
    """on_failure_callback: mark the cluster INCOMPLETE and the failing node FAILED."""
    from loom.engine import Env, record_failure
    from loom.store import ClusterStatus

    task = context["task"]
    cluster = _cluster_name(context)
    if not cluster:
        return
    exc = context.get("exception")
    hostname = getattr(task, "hostname", None)
    what = getattr(task, "step_name", task.task_id)
    message = f"{what}{' on ' + hostname if hostname else ''}: {exc}"
    try:
        record_failure(Env.load(), cluster, context["dag"].dag_id, context["run_id"],
                       ClusterStatus.INCOMPLETE, message, hostname=hostname)
    except Exception:  # the callback must never hide the task's own error
        log.exception("could not record the failure of %s in the cluster store", task.task_id)


HOSTNAME_LABEL = "{{ task.hostname }}"  # map_index_template: the UI labels mapped tasks by node


class LoomOperator(BaseOperator):
    """Common base: the cluster template this DAG was generated from, failure recording."""

    ui_color = "#e8f0fe"

    def __init__(self, *, template: str, **kwargs: Any):
        kwargs.setdefault("on_failure_callback", record_task_failure)
        super().__init__(**kwargs)
        self.template = template

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


class BeginCreateOperator(LoomOperator):
    """Validate the conf, solve the layout, record the PENDING cluster. Returns its hostnames."""

    ui_color = "#fff4e5"

    def execute(self, context: Any) -> list[str]:
        from loom.engine import begin_create
        from loom.errors import LoomError

        conf = _conf(context)
        allowed = set(self.dag.params)  # context["params"] also holds unknown conf keys
        unknown = sorted(set(conf) - allowed)
        try:
            if unknown:
                from loom.errors import RequestError

                raise RequestError(
                    f"{self.dag_id} conf: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
                )
            params = {k: context["params"].get(k) for k in allowed}
            owner = getattr(context["dag_run"], "triggering_user_name", None) or "airflow"
            view = begin_create(self.env(), self.template, params, self.dag_id, context["run_id"], owner)
        except LoomError as exc:
            self.fail(exc)
        return [n["hostname"] for n in view["nodes"]]


class BeginDeleteOperator(LoomOperator):
    ui_color = "#fff4e5"

    def execute(self, context: Any) -> list[str]:
        from loom.engine import begin_delete
        from loom.errors import LoomError, RequestError

        conf = _conf(context)
        unknown = sorted(set(conf) - set(self.dag.params))
        try:
            if unknown:
                raise RequestError(f"{self.dag_id} conf: unknown key(s) {', '.join(unknown)}; allowed: cluster")
            owner = getattr(context["dag_run"], "triggering_user_name", None) or "airflow"
            view = begin_delete(self.env(), {"cluster": context["params"]["cluster"]}, self.dag_id, context["run_id"], owner)
        except LoomError as exc:
            self.fail(exc)
        return [n["hostname"] for n in view["nodes"] if n["status"] != "DELETED"]


class SelectNodesOperator(LoomOperator):
    """Which of the cluster's nodes carry ``service`` (the list the service's actions map over)."""

    ui_color = "#f1f3f4"

    def __init__(self, *, service: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.service = service

    def execute(self, context: Any) -> list[str]:
        from loom.engine import nodes_with_service

        hosts = nodes_with_service(self.env(), _cluster_name(context), self.service)
        log.info("%s runs on: %s", self.service, ", ".join(hosts) or "no node")
        return hosts


class MappedPerNode:
    """Mixin: ``Op.mapped(...)`` = ``Op.partial(...)`` with this class's retry policy and the
    hostname as the UI label. (``partial`` never calls ``__init__`` for the scheduler's view of
    the task, so per-class defaults must be passed here, not set in ``__init__``.)"""

    default_retries = 0
    retry_seconds = 10

    @classmethod
    def mapped(cls, **kwargs: Any) -> Any:
        kwargs.setdefault("retries", cls.default_retries)
        kwargs.setdefault("retry_delay", timedelta(seconds=cls.retry_seconds))
        kwargs.setdefault("map_index_template", HOSTNAME_LABEL)
        kwargs.setdefault("on_failure_callback", record_task_failure)
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

        func = getattr(engine, f"{self.step}_node")
        return func(self.env(), _cluster_name(context), self.hostname)


class ProvisionNodeOperator(NodeOperator):
    """Create the node's machine through its provider (idempotent: a retry finds it)."""

    step = "provision"
    ui_color = "#e6f4ea"
    default_retries = 2
    retry_seconds = 5


class ConfirmNodeOperator(NodeOperator):
    """Wait until the node answers SSH with its pinned host key."""

    step = "confirm"
    ui_color = "#e6f4ea"


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

        try:
            run_service_action(self.env(), _cluster_name(context), self.hostname, self.service, self.action)
        except LoomError as exc:
            if not self.best_effort:
                raise
            log.warning("%s.%s on %s failed; continuing (best effort): %s", self.service, self.action, self.hostname, exc)


class FinishOperator(LoomOperator):
    """Record the operation's success and the cluster's new status."""

    ui_color = "#fff4e5"

    def __init__(self, *, operation: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.operation = operation

    def execute(self, context: Any) -> dict[str, Any]:
        from loom.engine import finish_delete, finish_ok
        from loom.store import ClusterStatus

        env, cluster = self.env(), _cluster_name(context)
        if self.operation == "delete":
            view = finish_delete(env, cluster, self.dag_id, context["run_id"])
        else:
            view = finish_ok(env, cluster, self.dag_id, context["run_id"], ClusterStatus.ACTIVE)
        for node in view["nodes"]:
            log.info("%s %s:%s %s %s", node["hostname"], node["ip"], node["port"], node["status"], ",".join(node["services"]))
        return {"cluster": view["name"], "status": view["status"]}
