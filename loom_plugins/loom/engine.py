"""Cluster operations as plain functions over the store, providers and automators.

Operators are thin wrappers around these; integration tests call them directly against real
sshd nodes. Every function is idempotent for its (cluster, node, step) so a retried or cleared
task continues instead of duplicating work.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loom.errors import ActionError, ClusterError, ProviderError, RequestError
from loom.layout import Layout, NodeSpec
from loom.macros import MacroContext, expand_config
from loom.names import check_cluster_name
from loom.settings import Settings, load_settings
from loom.spec.loader import Catalog, load_catalog
from loom.spec.models import CreateRequest
from loom.store import ClusterStatus, NodeStatus, OperationState, Store, open_store

log = logging.getLogger(__name__)


@dataclass
class Env:
    """Everything an operation needs: settings, catalog, store."""

    settings: Settings
    catalog: Catalog
    store: Store

    @classmethod
    def load(cls, templates_dir: str | Path | None = None) -> Env:
        settings = load_settings()
        catalog = load_catalog(templates_dir or settings.templates_dir)
        return cls(settings, catalog, open_store(settings.store_url))

    def key_file(self, cluster: dict[str, Any]) -> Path:
        return self.settings.keys_dir / f"{cluster['name']}.{cluster['id']}" / "id_ed25519"


def parse_request(model: type[Any], conf: dict[str, Any], where: str) -> Any:
    """Validate a trigger conf against its request model; the error names every bad field."""
    conf = {k: v for k, v in (conf or {}).items() if v is not None}
    try:
        request = model.model_validate(conf)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(conf)'}: {e['msg']}" for e in exc.errors())
        raise RequestError(f"{where}: bad trigger conf: {problems} (allowed keys: {', '.join(model.model_fields)})") from None
    check_cluster_name(request.cluster)
    return request


def layout_of(view: dict[str, Any]) -> Layout:
    return Layout(
        cluster=view["name"],
        template=view["template"],
        provider=view["provider"],
        services=tuple(view["services"]),
        nodes=tuple(
            NodeSpec(
                number=n["number"],
                hostname=n["hostname"],
                hardwaretype=n["hardwaretype"],
                imagetype=n["imagetype"],
                flavor=n["flavor"],
                image=n["image"],
                sshuser=n["sshuser"],
                services=tuple(n["services"]),
            )
            for n in view["nodes"]
        ),
        config=view["config"],
        dns_suffix=view["dns_suffix"],
    )


def _node(view: dict[str, Any], hostname: str) -> dict[str, Any]:
    for node in view["nodes"]:
        if node["hostname"] == hostname:
            return node
    raise ClusterError(f"cluster {view['name']!r} has no node {hostname!r}")


# --- create --------------------------------------------------------------------------------
def begin_create(env: Env, template: str, conf: dict[str, Any], dag_id: str, run_id: str, owner: str) -> dict[str, Any]:
    from loom.keys import write_keypair
    from loom.solver import solve

    request = parse_request(CreateRequest, conf, f"{dag_id} conf")
    spec = env.catalog.template(template)
    layout = solve(spec, request, env.catalog)
    view = env.store.begin_create(
        layout, dag_id, run_id, owner, lease_expiry(spec, request.lease),
        template_snapshot=spec.model_dump(mode="json"), params={"config": request.config or {}},
    )
    write_keypair(env.key_file(view), f"loom@{view['name']}")
    log.info("cluster %s: %d node(s) planned: %s", view["name"], len(view["nodes"]),
             ", ".join(f"{n['hostname']}={'+'.join(n['services'])}" for n in view["nodes"]))
    return view


def begin_create_preview(env: Env, template: str, conf: dict[str, Any], dag_id: str) -> dict[str, Any]:
    """What ``begin_create`` would record, recording nothing (for ``on_start`` hooks): the
    request validated, the name checked free, the layout solved (the solver is deterministic)."""
    from loom.solver import solve

    request = parse_request(CreateRequest, conf, f"{dag_id} conf")
    live = env.store.get(request.cluster)
    if live is not None and live["status"] != ClusterStatus.TERMINATED.value:
        raise ClusterError(f"cluster {request.cluster!r} already exists ({live['status']}): choose another name")
    spec = env.catalog.template(template)
    layout = solve(spec, request, env.catalog)
    lease_expiry(spec, request.lease)
    return {
        "name": request.cluster,
        "template": template,
        "nodes": [{"hostname": n.hostname, "ip": None, "port": None, "services": list(n.services),
                   "status": "PLANNED", "message": ""} for n in layout.nodes],
    }


def lease_expiry(template: Any, requested: str | int | None) -> datetime | None:
    """Loom's rule: expiry = now + initial (a request may ask for less, or up to max); 0 = never."""
    from loom.durations import format_duration, parse_duration

    initial, maximum, _ = template.administration.leaseduration.seconds()
    seconds = parse_duration(requested, "lease") if requested is not None else initial
    if maximum and (seconds == 0 or seconds > maximum):
        raise RequestError(f"lease: template {template.name!r} allows at most {format_duration(maximum)}")
    return datetime.now(timezone.utc) + timedelta(seconds=seconds) if seconds else None


def nodes_with_service(env: Env, cluster: str, service: str | None) -> list[str]:
    view = env.store.require(cluster)
    return [n["hostname"] for n in view["nodes"] if service is None or service in n["services"]]


def _provider_spec(env: Env, view: dict[str, Any]) -> Any:
    provider = env.catalog.providers.get(view["provider"])
    if provider is None:
        raise ProviderError(f"cluster {view['name']!r}: provider {view['provider']!r} is not in the catalog")
    return provider


def machines(env: Env, view: dict[str, Any], conn: Any = None) -> Any:
    """The cluster's provider (``loom.providers.base.Machines``)."""
    from loom.providers import machines_for

    return machines_for(_provider_spec(env, view), env.settings, conn=conn, store=env.store)


def machine_request(env: Env, view: dict[str, Any], hostname: str) -> Any:
    from loom.providers.base import MachineRequest

    node = _node(view, hostname)
    return MachineRequest(
        provider=view["provider"], cluster=view["name"], cluster_id=int(view["id"]), hostname=hostname,
        number=int(node["number"]), flavor=node["flavor"], image=node["image"], sshuser=node["sshuser"],
        public_key=_public_key(env, view),
    )


def _public_key(env: Env, view: dict[str, Any]) -> str:
    path = env.key_file(view).with_suffix(".pub")
    return path.read_text().strip() if path.exists() else ""  # gone once a cluster is deleted


def _record_machine(env: Env, view: dict[str, Any], hostname: str, machine: Any, status: str) -> None:
    node = _node(view, hostname)
    fields: dict[str, Any] = {"provider_id": machine.id, "status": status}
    if machine.ip:
        fields.update(ip=machine.ip, port=machine.port)
    if machine.host_key and machine.host_key != node["host_key"]:
        fields["host_key"] = machine.host_key
    if machine.user and machine.user != node["sshuser"]:
        fields["sshuser"] = machine.user
    env.store.update_node(view["name"], hostname, **fields)


def provision_node(env: Env, cluster: str, hostname: str) -> dict[str, Any]:
    """Create the node's machine (or find the one a previous try made) and record what the
    provider knows of it so far (a cloud machine may still be booting, without an address)."""
    view = env.store.require(cluster)
    env.store.update_node(cluster, hostname, status=NodeStatus.CREATING.value)
    machine = machines(env, view).ensure(machine_request(env, view, hostname))
    _record_machine(env, view, hostname, machine, NodeStatus.CREATING.value)
    log.info("node %s: machine %s (%s) at %s:%s", hostname, machine.id, machine.state, machine.ip or "?", machine.port)
    return {"hostname": hostname, "ip": machine.ip, "port": machine.port}


def probe_node(env: Env, cluster: str, hostname: str, provider: Any = None) -> dict[str, Any]:
    """Ask the provider how the node's machine is (recording a new address) and whether its
    SSH port answers with an SSH banner. Never waits long: the caller polls, passing the
    provider's ``Machines`` it built once (a cloud driver may fetch a token when built)."""
    from loom.providers.base import RUNNING

    view = env.store.require(cluster)
    machine = (provider or machines(env, view)).get(machine_request(env, view, hostname))
    if machine is None:
        return {"ready": False, "state": "missing", "detail": "the provider has no machine for it"}
    _record_machine(env, view, hostname, machine, NodeStatus.CREATING.value)
    if machine.state != RUNNING or not machine.ip:
        return {"ready": False, "state": machine.state, "detail": f"machine {machine.id} is {machine.state}"}
    banner = ssh_banner(machine.ip, machine.port)
    if banner is None:
        return {"ready": False, "state": machine.state, "detail": f"{machine.ip}:{machine.port} does not answer SSH yet"}
    return {"ready": True, "state": machine.state, "ip": machine.ip, "port": machine.port, "detail": banner}


def ssh_banner(ip: str, port: int, timeout: float = 3) -> str | None:
    """The server's SSH identification line, or None when nothing SSH answers there."""
    import socket

    try:
        with socket.create_connection((ip, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            line = sock.recv(256).split(b"\n", 1)[0].decode("ascii", "replace").strip()
    except OSError:
        return None
    return line if line.startswith("SSH-") else None


def learn_host_key(ip: str, port: int, timeout: float = 10) -> str:
    """Trust on first use: the host key a machine presents the first time (for providers that
    cannot tell it, e.g. a cloud image without Loom's host key); pinned from then on."""
    import paramiko

    with paramiko.Transport((ip, port)) as transport:
        transport.banner_timeout = timeout
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
    return f"{key.get_name()} {key.get_base64()}"


def _access(env: Env, view: dict[str, Any], hostname: str):
    from loom.automators.ssh import NodeAccess

    return NodeAccess.from_view(_node(view, hostname), env.key_file(view))


def confirm_node(env: Env, cluster: str, hostname: str, timeout: float = 120) -> None:
    """Wait until the node answers SSH with its recorded host key and our cluster key."""
    from loom.automators.ssh import ssh_exec

    view = env.store.require(cluster)
    node = _node(view, hostname)
    if node["ip"] and not node["host_key"]:
        key = learn_host_key(node["ip"], int(node["port"] or 22))
        log.warning("node %s: the provider does not report host keys; pinning the key it presented first: %s",
                    hostname, key[:40] + "...")
        env.store.update_node(cluster, hostname, host_key=key)
        view = env.store.require(cluster)
    access = _access(env, view, hostname)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            status, out, _ = ssh_exec(access, "hostname", timeout=30)
            if status == 0:
                env.store.update_node(cluster, hostname, status=NodeStatus.RUNNING.value)
                log.info("node %s answers SSH as %s", hostname, out.decode().strip())
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(1)
    raise ProviderError(f"node {hostname!r} ({access.ip}:{access.port}) did not answer SSH within {timeout:.0f} s: {last}")


def bootstrap_node(env: Env, cluster: str, hostname: str) -> None:
    """Base set-up: write the cluster description (nodes, addresses, services) onto the node."""
    from loom.automators.ssh import ssh_exec

    view = env.store.require(cluster)
    access = _access(env, view, hostname)
    description = {
        "cluster": cluster,
        "self": hostname,
        "nodes": [{k: n[k] for k in ("hostname", "ip", "services")} for n in view["nodes"]],
    }
    command = (
        "mkdir -p ~/.loom && chmod 700 ~/.loom && cat > ~/.loom/cluster.json <<'LOOM_EOF'\n"
        + json.dumps(description, indent=2)
        + "\nLOOM_EOF\necho bootstrapped $(hostname)"
    )
    status, _, err = ssh_exec(access, command, timeout=60)
    if status != 0:
        raise ActionError(f"bootstrap failed on {hostname}: {err.decode(errors='replace')[-300:]}")


def run_service_action(env: Env, cluster: str, hostname: str, service: str, action: str) -> str:
    """Run ``service.action`` on one node with macros expanded for that node, by the automator
    its ``type`` names (see loom.automators)."""
    from loom.automators import ActionContext, NodeView, automator_for

    view = env.store.require(cluster)
    spec = env.catalog.services.get(service)
    if spec is None:
        raise ActionError(f"service {service!r} is not in the catalog (see `loom templates validate`)")
    act = spec.actions.get(action)
    if act is None:
        log.info("service %s has no %s action: nothing to do", service, action)
        return ""
    layout = layout_of(view)
    me = next(n for n in layout.nodes if n.hostname == hostname)
    ips = {n["hostname"]: n["ip"] for n in view["nodes"] if n["ip"]}
    mctx = MacroContext(layout=layout, node=me, ips=ips, owner=view["owner"])
    ctx = ActionContext(
        cluster=cluster,
        hostname=hostname,
        ip=ips.get(hostname, ""),
        service=service,
        action=action,
        spec=act.expanded(lambda value: expand_config(value, mctx)),
        config=expand_config(view["config"], mctx),
        nodes=tuple(
            NodeView.from_view(n) for n in sorted(view["nodes"], key=lambda n: n["number"])
            if n["ip"] and n["status"] != NodeStatus.DELETED.value
        ),
        services_dir=env.catalog.services_dir,
        key_file=env.key_file(view),
        owner=view["owner"],
    )
    return automator_for(act.type).run(_access(env, view, hostname), ctx)


def finish_ok(env: Env, cluster: str, dag_id: str, run_id: str, status: ClusterStatus) -> dict[str, Any]:
    env.store.finish(cluster, dag_id, run_id, status=status, state=OperationState.COMPLETE)
    return env.store.require(cluster)


def record_step_failure(env: Env, cluster: str, message: str, hostname: str | None = None) -> None:
    """A step failed: note it on the node and the cluster. The operation's last step (or the
    run listener) decides the cluster's status and releases it."""
    try:
        if hostname:
            env.store.update_node(cluster, hostname, status=NodeStatus.FAILED.value, message=message[:2000])
        env.store.update_cluster(cluster, message=message[:2000])
    except ClusterError:
        pass


def destroy_node(env: Env, cluster: str, hostname: str) -> None:
    """Destroy (or return to its pool) the node's machine if the provider has it; record
    DELETED. Idempotent."""
    view = env.store.require(cluster)
    if machines(env, view).destroy(machine_request(env, view, hostname)):
        log.info("node %s: machine destroyed", hostname)
    else:
        log.info("node %s: the provider has no machine for it (already gone)", hostname)
    env.store.update_node(cluster, hostname, status=NodeStatus.DELETED.value)


def finish_delete(env: Env, cluster: str, dag_id: str, run_id: str) -> dict[str, Any]:
    view = env.store.require(cluster)
    left = [n["hostname"] for n in view["nodes"] if n["status"] != NodeStatus.DELETED.value]
    if left:
        raise ClusterError(f"cluster {cluster!r}: nodes not deleted: {', '.join(left)}")
    shutil.rmtree(env.key_file(view).parent, ignore_errors=True)
    return finish_ok(env, cluster, dag_id, run_id, ClusterStatus.TERMINATED)


def run_hook_on_nodes(env: Env, cluster: str, hook: Any, body: dict[str, Any], name: str) -> str:
    """A ``run_on: nodes`` command hook: run it over SSH on every node of the cluster that has a
    machine (only those with ``hook.services`` when given); the payload is in $LOOM_PAYLOAD."""
    import shlex

    from loom.automators.ssh import ssh_exec
    from loom.hooks import HookError, hook_env

    view = env.store.require(cluster)
    targets = [n for n in view["nodes"] if n["ip"] and n["host_key"] and n["status"] != NodeStatus.DELETED.value
               and (not hook.services or set(hook.services) & set(n["services"]))]
    if not targets:
        log.info("hook %s: no node of %s has a machine%s: nothing to run", name, cluster,
                 f" with {', '.join(hook.services)}" if hook.services else "")
        return f"{name}: no node"
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(hook_env(body).items()))
    command = f"cd ~ && export {exports} && bash -c {shlex.quote(hook.command)}"
    failures = []
    for node in targets:
        access = _access(env, view, node["hostname"])
        try:
            status, _, err = ssh_exec(access, command, timeout=hook.timeout)
        except Exception as exc:
            failures.append(f"{node['hostname']}: {type(exc).__name__}: {exc}")
            continue
        if status != 0:
            failures.append(f"{node['hostname']}: exit {status}: {err.decode(errors='replace').strip()[-300:]}")
    if failures:
        raise HookError(f"hook {name}: failed on " + "; ".join(failures))
    return f"{name}: ran on {', '.join(n['hostname'] for n in targets)}"
