"""Compute providers behind one contract (``loom.providers.base.Machines``):

- ``local``: namespaced sshd nodes on this host (a libcloud NodeDriver, loom.providers.local);
- a libcloud cloud driver (``ec2``, ``gce``, ``openstack``, ``digitalocean``, ``azure_arm``,
  ``linode``; loom.providers.cloud), credentials from the provider's Airflow Connection;
- ``static``: a pool of existing SSH hosts (loom.providers.static).

libcloud is imported lazily (DAG files must parse fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loom.errors import ProviderError
from loom.providers.base import RUNNING, Machine, MachineRequest, Machines

if TYPE_CHECKING:
    from libcloud.compute.base import NodeDriver

    from loom.settings import Settings
    from loom.spec.models import Provider

LOCAL_DRIVER = "loom_local"


def local_driver(provider: Provider, settings: Settings) -> NodeDriver:
    from libcloud.compute.providers import get_driver, set_driver

    try:
        set_driver(LOCAL_DRIVER, "loom.providers.local", "LocalNodeDriver")
    except AttributeError:
        pass  # already registered in this process
    cls: Any = get_driver(LOCAL_DRIVER)
    return cls(
        state_dir=settings.state_dir,
        ssh_port=settings.local_ssh_port,
        pip_cache=settings.local_pip_cache,
        **provider.options,
    )


def needs_connection(provider: Provider) -> bool:
    return provider.driver != "local"


def machines_for(provider: Provider, settings: Settings, conn: Any = None, store: Any = None) -> Machines:
    """The provider's machines. ``conn``: its Airflow Connection as a ConnectionInfo (read
    through loom.connections when not given); ``store``: the cluster store (static pools)."""
    if provider.driver == "local":
        return LocalMachines(provider.name, local_driver(provider, settings))
    if conn is None:
        if not provider.connection:
            raise ProviderError(
                f"provider {provider.name!r}: driver {provider.driver!r} needs `connection:` (an Airflow "
                "Connection id holding its credentials)"
            )
        from loom.connections import get_connection

        conn = get_connection(provider.connection, f"provider {provider.name!r}")
    if provider.driver == "static":
        from loom.providers.static import StaticPool

        if store is None:
            raise ProviderError(f"provider {provider.name!r}: a static pool needs the cluster store")
        return StaticPool(provider, conn, store)
    from loom.providers.cloud import CLOUD_DRIVERS, cloud_machines

    if provider.driver not in CLOUD_DRIVERS:
        raise ProviderError(
            f"provider {provider.name!r}: unknown driver {provider.driver!r}; use local, static or one of "
            + ", ".join(sorted(CLOUD_DRIVERS))
        )
    return cloud_machines(provider.name, provider.driver, conn, provider.options)


class LocalMachines:
    """The local driver behind the Machines contract (node name = hostname)."""

    def __init__(self, provider: str, driver: Any):
        self.provider = provider
        self.driver = driver

    def _machine(self, node: Any) -> Machine:
        from libcloud.compute.types import NodeState

        state = {NodeState.RUNNING: RUNNING, NodeState.PENDING: "pending", NodeState.TERMINATED: "terminated"}
        return Machine(
            id=node.id, name=node.name, state=state.get(node.state, "unknown"), ip=(node.public_ips or [None])[0],
            port=int(node.extra.get("ssh_port", 22)), host_key=node.extra.get("host_key"),
            tags=dict(node.extra.get("metadata") or {}),
        )

    def ensure(self, req: MachineRequest) -> Machine:
        from libcloud.compute.base import NodeAuthSSHKey, NodeImage, NodeSize

        node = self.driver.create_node(
            name=req.hostname,
            size=NodeSize(req.flavor, req.flavor, 0, 0, 0, 0, self.driver),
            image=NodeImage(req.image, req.image, self.driver),
            auth=NodeAuthSSHKey(req.public_key),
            ex_metadata=req.tags,
        )
        return self._machine(node)

    def get(self, req: MachineRequest) -> Machine | None:
        return next((self._machine(n) for n in self.driver.list_nodes() if n.name == req.hostname), None)

    def destroy(self, req: MachineRequest) -> bool:
        for node in self.driver.list_nodes():
            if node.name == req.hostname:
                self.driver.destroy_node(node)
                return True
        return False

    def owned(self) -> list[Machine]:
        return [self._machine(n) for n in self.driver.list_nodes()]

