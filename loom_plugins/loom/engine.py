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
from loom.macros import MacroContext, expand, expand_config
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


def provision_node(env: Env, cluster: str, hostname: str) -> dict[str, Any]:
    """Create the node's machine (or find the one a previous try made) and record its address."""
    from libcloud.compute.base import NodeAuthSSHKey, NodeImage, NodeSize

    from loom.providers import compute_driver

    view = env.store.require(cluster)
    node = _node(view, hostname)
    provider = env.catalog.providers.get(view["provider"])
    if provider is None:
        raise ProviderError(f"cluster {cluster!r}: provider {view['provider']!r} is not in the catalog")
    driver = compute_driver(provider, env.settings)
    env.store.update_node(cluster, hostname, status=NodeStatus.CREATING.value)
    pubkey = env.key_file(view).with_suffix(".pub").read_text().strip()
    machine = driver.create_node(
        name=hostname,
        size=NodeSize(node["flavor"], node["flavor"], 0, 0, 0, 0, driver),
        image=NodeImage(node["image"], node["image"], driver),
        auth=NodeAuthSSHKey(pubkey),
        ex_metadata={"loom-cluster": cluster, "loom-cluster-id": str(view["id"]), "loom-node": str(node["number"])},
    )
    ip = (machine.public_ips or machine.private_ips)[0]
    port = int(machine.extra.get("ssh_port", 22))
    env.store.update_node(
        cluster, hostname, provider_id=machine.id, ip=ip, port=port, host_key=machine.extra.get("host_key"),
        status=NodeStatus.CREATING.value,
    )
    log.info("node %s: machine %s at %s:%s", hostname, machine.id, ip, port)
    return {"hostname": hostname, "ip": ip, "port": port}


def _access(env: Env, view: dict[str, Any], hostname: str):
    from loom.automators.ssh import NodeAccess

    return NodeAccess.from_view(_node(view, hostname), env.key_file(view))


def confirm_node(env: Env, cluster: str, hostname: str, timeout: float = 120) -> None:
    """Wait until the node answers SSH with its recorded host key and our cluster key."""
    from loom.automators.ssh import ssh_hook

    view = env.store.require(cluster)
    access = _access(env, view, hostname)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        hook = ssh_hook(access, cmd_timeout=30)
        try:
            client = hook.get_conn()
            try:
                status, out, _ = hook.exec_ssh_client_command(client, "hostname", get_pty=False, environment=None)
            finally:
                client.close()
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
    from loom.automators.ssh import ssh_hook

    view = env.store.require(cluster)
    access = _access(env, view, hostname)
    description = {
        "cluster": cluster,
        "self": hostname,
        "nodes": [{k: n[k] for k in ("hostname", "ip", "services")} for n in view["nodes"]],
    }
    hook = ssh_hook(access, cmd_timeout=60)
    client = hook.get_conn()
    try:
        command = (
            "mkdir -p ~/.loom && chmod 700 ~/.loom && cat > ~/.loom/cluster.json <<'LOOM_EOF'\n"
            + json.dumps(description, indent=2)
            + "\nLOOM_EOF\necho bootstrapped $(hostname)"
        )
        status, _, err = hook.exec_ssh_client_command(client, command, get_pty=False, environment=None)
    finally:
        client.close()
    if status != 0:
        raise ActionError(f"bootstrap failed on {hostname}: {err.decode(errors='replace')[-300:]}")


def run_service_action(env: Env, cluster: str, hostname: str, service: str, action: str) -> str:
    """Run ``service.action`` on one node with macros expanded for that node."""
    from loom.automators.shell import ShellInvocation, action_env, run_shell_action

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
    ctx = MacroContext(layout=layout, node=me, ips=ips, owner=view["owner"])
    args = [expand(a, ctx) for a in act.args]
    config = expand_config(view["config"], ctx)
    inv = ShellInvocation(
        service=service,
        action=action,
        script=env.catalog.services_dir / act.script,
        args=args,
        env=action_env(cluster, hostname, ips.get(hostname, ""), service, action, config),
        timeout=act.timeout,
    )
    return run_shell_action(_access(env, view, hostname), inv)


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
    """Destroy the node's machine if the provider has it; record DELETED. Idempotent."""
    from loom.providers import compute_driver

    view = env.store.require(cluster)
    provider = env.catalog.providers.get(view["provider"])
    if provider is None:
        raise ProviderError(f"cluster {cluster!r}: provider {view['provider']!r} is not in the catalog")
    driver = compute_driver(provider, env.settings)
    for machine in driver.list_nodes():
        if machine.name == hostname:
            driver.destroy_node(machine)
            log.info("node %s: machine %s destroyed", hostname, machine.id)
            break
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
