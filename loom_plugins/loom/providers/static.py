"""The ``static`` provider: a pool of existing SSH hosts ("bring your own hosts").

Provider file::

    name: lab
    driver: static
    connection: lab_hosts          # login = SSH user, extra.private_key (or extra.key_file)
    options:
      hosts:                       # in the order they are lent
        - 10.0.0.11                # port 22
        - {address: 10.0.0.12, port: 2222, host_key: "ssh-ed25519 AAAA..."}
      authorized_keys: ~/.ssh/authorized_keys   # where the cluster's key is authorized

"Create" lends a free host to a node (the store's unique (provider, address, port) keeps two
clusters off one host) and authorizes the cluster's own key there, so every later step runs
with the cluster key like on any provider; "delete" (after the services' stop and remove
actions) revokes that key, removes what Loom put in ``~/.loom`` and returns the host to the pool.
Host keys: given per host, else trusted on first use and pinned for as long as the host is lent.
"""

from __future__ import annotations

import logging
import shlex
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loom.errors import ProviderError
from loom.providers.base import RUNNING, STOPPED, TAG_CLUSTER, TAG_CLUSTER_ID, TAG_NODE, Machine, MachineRequest

log = logging.getLogger(__name__)


def parse_hosts(provider: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    hosts = options.get("hosts")
    if not isinstance(hosts, list) or not hosts:
        raise ProviderError(f"static provider {provider!r}: options.hosts must list the pool's hosts (address or "
                            "{address, port, host_key, authorized_keys})")
    out = []
    for i, item in enumerate(hosts):
        entry = {"address": item} if isinstance(item, str) else dict(item) if isinstance(item, dict) else None
        if entry is None or not isinstance(entry.get("address"), str) or not entry["address"]:
            raise ProviderError(f"static provider {provider!r}: options.hosts[{i}]: expected an address or a mapping with 'address'")
        unknown = set(entry) - {"address", "port", "host_key", "authorized_keys"}
        if unknown:
            raise ProviderError(f"static provider {provider!r}: options.hosts[{i}]: unknown field(s) {', '.join(sorted(unknown))}")
        entry["port"] = int(entry.get("port", 22))
        out.append(entry)
    return out


class StaticPool:
    """``loom.providers.base.Machines`` over a pool of hosts; lending is recorded in the store."""

    def __init__(self, provider: Any, conn: Any, store: Any):
        self.provider = provider.name
        self.hosts = parse_hosts(provider.name, provider.options)
        self.by_address = {(h["address"], h["port"]): h for h in self.hosts}
        self.default_authorized = str(provider.options.get("authorized_keys", "~/.ssh/authorized_keys"))
        self.conn = conn
        self.user = conn.login or "root"
        self.store = store

    # --- contract -------------------------------------------------------------------------
    def ensure(self, req: MachineRequest) -> Machine:
        lent = self.store.pool_allocate(self.provider, list(self.by_address), req.cluster, req.cluster_id, req.hostname)
        host = self.by_address.get((lent["address"], lent["port"]))
        if host is None:
            raise ProviderError(f"static provider {self.provider!r}: {lent['address']}:{lent['port']} is no longer in the pool")
        host_key = host.get("host_key") or lent["host_key"]
        if not host_key:
            from loom.engine import learn_host_key

            host_key = learn_host_key(host["address"], host["port"])
            log.warning("pool host %s:%s: no host_key in the provider file; pinning the key it presented: %s...",
                        host["address"], host["port"], host_key[:40])
        self.store.pool_set_host_key(self.provider, host["address"], host["port"], host_key)
        key_line = f"{req.public_key.strip()}"
        path = self._authorized(host)
        self._run(host, host_key, (
            f"umask 077; f={path}; mkdir -p \"$(dirname \"$f\")\"; touch \"$f\"; "
            f"grep -qxF {shlex.quote(key_line)} \"$f\" || echo {shlex.quote(key_line)} >> \"$f\""
        ), f"authorize cluster {req.cluster}'s key")
        log.info("pool %s: %s:%s lent to %s", self.provider, host["address"], host["port"], req.hostname)
        return self._machine(lent, host_key, RUNNING)

    def get(self, req: MachineRequest) -> Machine | None:
        lent = self.store.pool_get(self.provider, req.cluster_id, req.hostname)
        if lent is None:
            return None
        from loom.engine import ssh_banner

        state = RUNNING if ssh_banner(lent["address"], lent["port"]) else STOPPED
        return self._machine(lent, lent["host_key"], state)

    def destroy(self, req: MachineRequest) -> bool:
        lent = self.store.pool_get(self.provider, req.cluster_id, req.hostname)
        if lent is None:
            return False
        host = self.by_address.get((lent["address"], lent["port"]))
        if host is not None and lent["host_key"] and req.public_key:
            path = self._authorized(host)
            self._run(host, lent["host_key"], (
                f"rm -rf ~/.loom; f={path}; if [ -f \"$f\" ]; then grep -vxF {shlex.quote(req.public_key.strip())} \"$f\""
                f" > \"$f.loom\" || true; cat \"$f.loom\" > \"$f\"; rm -f \"$f.loom\"; fi"
            ), f"revoke cluster {req.cluster}'s key")
        self.store.pool_release(self.provider, req.cluster_id, req.hostname)
        log.info("pool %s: %s:%s returned by %s", self.provider, lent["address"], lent["port"], req.hostname)
        return True

    def owned(self) -> list[Machine]:
        return [self._machine(h, h["host_key"], RUNNING) for h in self.store.pool_hosts(self.provider)]

    # --- internals ------------------------------------------------------------------------
    def _machine(self, lent: dict[str, Any], host_key: str | None, state: str) -> Machine:
        return Machine(
            id=f"{lent['address']}:{lent['port']}", name=lent["hostname"], state=state, ip=lent["address"],
            port=lent["port"], host_key=host_key, user=self.user,
            tags={TAG_CLUSTER: lent["cluster"], TAG_CLUSTER_ID: str(lent["cluster_id"]), TAG_NODE: lent["hostname"]},
        )

    def _authorized(self, host: dict[str, Any]) -> str:
        path = str(host.get("authorized_keys") or self.default_authorized)
        return "~/" + shlex.quote(path[2:]) if path.startswith("~/") else shlex.quote(path)

    @contextmanager
    def _pool_key(self) -> Iterator[Path]:
        """The pool's private key as a file only this process can read, removed afterwards."""
        extra = self.conn.extra or {}
        if extra.get("key_file"):
            yield Path(extra["key_file"])
            return
        text = extra.get("private_key")
        if not text:
            raise ProviderError(f"static provider {self.provider!r}: Airflow Connection {self.conn.conn_id!r} needs "
                                "extra.private_key (or extra.key_file) to log in to the pool's hosts")
        with tempfile.TemporaryDirectory(prefix="loom-pool-") as folder:
            path = Path(folder) / "id"
            path.touch(mode=0o600)
            path.write_text(text.strip() + "\n")
            yield path

    def _run(self, host: dict[str, Any], host_key: str, command: str, what: str) -> None:
        from loom.automators.ssh import NodeAccess, ssh_hook

        with self._pool_key() as key:
            access = NodeAccess(f"{host['address']}:{host['port']}", host["address"], host["port"], self.user, key, host_key)
            hook = ssh_hook(access, cmd_timeout=60)
            try:
                client = hook.get_conn()
            except Exception as exc:
                raise ProviderError(f"static provider {self.provider!r}: cannot log in to {access.hostname} as "
                                    f"{self.user} to {what}: {type(exc).__name__}: {exc} (check Airflow Connection "
                                    f"{self.conn.conn_id!r} and the host key)") from None
            try:
                status, _, err = hook.exec_ssh_client_command(client, command, get_pty=False, environment=None)
            finally:
                client.close()
        if status != 0:
            raise ProviderError(f"static provider {self.provider!r}: {what} on {access.hostname} failed "
                                f"(exit {status}): {err.decode(errors='replace')[-300:]}")
