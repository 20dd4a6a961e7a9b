"""Lifecycle hooks (a template's ``hooks:``): what each hook receives and how it runs.

Phases: ``on_start`` runs before the operation's ``plan`` step, so a veto (a non-2xx answer, a
``{"veto": true}`` body, a non-zero exit) stops the operation before anything is recorded or
touched; ``on_success`` / ``on_failure`` run after ``finish`` with the outcome. Every hook gets
the same JSON payload ``{cluster, operation, run_id, status, nodes, ...}``; HTTP hooks also an
``Idempotency-Key`` header (stable across retries and task clears), so receivers can drop
repeats - hooks must be idempotent, as in Loom.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from typing import Any

from loom.errors import LoomError
from loom.spec.models import ClusterTemplate, CommandHook, Hook, HttpHook

log = logging.getLogger(__name__)

PHASES = ("on_start", "on_success", "on_failure")
NODE_FIELDS = ("hostname", "ip", "port", "services", "status", "message")


class HookError(LoomError):
    """A hook failed; at on_start this is a veto."""


def hooks_for(template: ClusterTemplate, operation: str, phase: str) -> list[Hook]:
    """The hooks of ``phase`` for ``operation``: the template's ``all`` hooks first."""
    out: list[Hook] = []
    for key in ("all", operation):
        phases = template.hooks.get(key)
        if phases is not None:
            out.extend(getattr(phases, phase))
    return out


def payload(view: dict[str, Any] | None, operation: str, dag_id: str, run_id: str, phase: str, status: str,
            **more: Any) -> dict[str, Any]:
    """What every hook receives (no secrets: no keys, no host keys, no credentials). ``view``:
    the cluster as the store has it (None before a create's plan: pass cluster=, template=)."""
    view = view or {}
    cluster = view.get("name") or more.pop("cluster", None)
    template = view.get("template") or more.pop("template", None)
    return {
        "cluster": cluster,
        "template": template,
        "operation": operation,
        "dag_id": dag_id,
        "run_id": run_id,
        "phase": phase,
        "status": status,
        "nodes": [{k: n.get(k) for k in NODE_FIELDS} for n in view.get("nodes", [])],
        **more,
    }


def run_hooks(hooks: list[Hook], body: dict[str, Any], *, connection: Any = None, nodes_runner: Any = None,
              sleep: Any = time.sleep) -> list[str]:
    """Run ``hooks`` in order; return one line per hook. Raises HookError at the first failing
    hook (naming it). ``connection(conn_id)`` resolves an Airflow Connection (HTTP auth);
    ``nodes_runner(hook, body)`` runs a command hook on the cluster's nodes."""
    done = []
    for i, hook in enumerate(hooks):
        key = f"{body['dag_id']}/{body['run_id']}/{body['phase']}/{i}"
        name = f"{body['phase']}[{i}]"
        if isinstance(hook, HttpHook):
            done.append(post(hook, body, key, name, connection=connection, sleep=sleep))
        elif hook.run_on == "worker":
            done.append(run_command(hook, body, name))
        else:
            if nodes_runner is None:
                raise HookError(f"{name}: cannot run on nodes here")
            done.append(nodes_runner(hook, body, name))
    return done


def post(hook: HttpHook, body: dict[str, Any], key: str, name: str, *, connection: Any = None,
         sleep: Any = time.sleep) -> str:
    """POST the payload; retry 5xx and transport errors ``hook.retries`` times (1, 2, 4... s).
    A 4xx is an answer, not a fault: no retry. A veto body (``veto: true`` / ``allow: false``)
    counts as a refusal even with 2xx."""
    import requests

    headers = {"Content-Type": "application/json", "Idempotency-Key": key, **hook.headers}
    auth = None
    if hook.connection:
        conn = connection(hook.connection) if connection else None
        if conn is not None:
            if conn.login:
                auth = (conn.login, conn.password or "")
            headers.update({str(k): str(v) for k, v in (conn.extra.get("headers") or {}).items()})
    last = ""
    for attempt in range(hook.retries + 1):
        if attempt:
            sleep(min(2 ** (attempt - 1), 30))
        try:
            answer = requests.post(hook.url, json=body, headers=headers, auth=auth, timeout=hook.timeout)
        except requests.RequestException as exc:
            last = f"no answer from {hook.url}: {type(exc).__name__}"
            log.warning("hook %s: %s (attempt %d of %d)", name, last, attempt + 1, hook.retries + 1)
            continue
        text = answer.text[:500]
        if answer.status_code >= 500:
            last = f"{hook.url} answered {answer.status_code}: {text}"
            log.warning("hook %s: %s (attempt %d of %d)", name, last, attempt + 1, hook.retries + 1)
            continue
        log.info("hook %s: POST %s -> %d %s", name, hook.url, answer.status_code, text)
        if answer.status_code >= 300:
            raise HookError(f"hook {name}: {hook.url} answered {answer.status_code}: {text or answer.reason}")
        vetoed, reason = _veto(answer)
        if vetoed:
            raise HookError(f"hook {name}: {hook.url} vetoed: {reason}")
        return f"{name}: POST {hook.url} -> {answer.status_code}"
    raise HookError(f"hook {name}: {last} (after {hook.retries + 1} attempt(s))")


def _veto(answer: Any) -> tuple[bool, str]:
    try:
        data = answer.json()
    except ValueError:
        return False, ""
    if isinstance(data, dict) and (data.get("veto") is True or data.get("allow") is False):
        return True, str(data.get("reason") or "no reason given")
    return False, ""


def hook_env(body: dict[str, Any]) -> dict[str, str]:
    return {
        "LOOM_CLUSTER": str(body.get("cluster") or ""),
        "LOOM_OPERATION": body["operation"],
        "LOOM_PHASE": body["phase"],
        "LOOM_STATUS": body["status"],
        "LOOM_RUN_ID": body["run_id"],
        "LOOM_PAYLOAD": json.dumps(body, sort_keys=True),
    }


def run_command(hook: CommandHook, body: dict[str, Any], name: str) -> str:
    """Run the command on this (worker) machine: payload on stdin and in $LOOM_PAYLOAD; output
    into the log line by line."""
    env = {**os.environ, **hook_env(body)}
    try:
        proc = subprocess.run(["bash", "-c", hook.command], input=json.dumps(body), env=env, text=True,
                              capture_output=True, timeout=hook.timeout)
    except subprocess.TimeoutExpired:
        raise HookError(f"hook {name}: command timed out after {hook.timeout} s") from None
    for line in (proc.stdout + proc.stderr).splitlines():
        log.info("hook %s | %s", name, line)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise HookError(f"hook {name}: command exited {proc.returncode}: {tail}")
    return f"{name}: command ok"
