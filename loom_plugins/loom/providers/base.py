"""What the engine asks of every provider (local, libcloud clouds, static pool): plain data in,
plain data out, so the engine never touches a libcloud object and tests can read the contract.

Every method is idempotent for its request: ``ensure`` finds the machine an earlier try made
(by its deterministic name and Loom's tags) instead of making a second one; ``destroy`` of a
machine that is gone is not an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# Tags/metadata every machine Loom makes carries (so retries and the janitor can find it).
TAG_CLUSTER = "loom-cluster"
TAG_CLUSTER_ID = "loom-cluster-id"
TAG_NODE = "loom-node"

RUNNING, PENDING, STOPPED, TERMINATED, ERROR, UNKNOWN = (
    "running", "pending", "stopped", "terminated", "error", "unknown",
)


@dataclass(frozen=True)
class MachineRequest:
    """One node's machine, as the layout and the cluster's key describe it."""

    provider: str
    cluster: str
    cluster_id: int
    hostname: str  # deterministic: "<cluster>-<number>" (see loom.solver); unique per live cluster
    number: int
    flavor: str  # the hardware type's provider mapping
    image: str  # the image type's provider mapping
    sshuser: str
    public_key: str  # "ssh-ed25519 AAAA... loom@<cluster>" - authorized for sshuser

    @property
    def tags(self) -> dict[str, str]:
        return {TAG_CLUSTER: self.cluster, TAG_CLUSTER_ID: str(self.cluster_id), TAG_NODE: self.hostname}


@dataclass(frozen=True)
class Machine:
    """What a provider reports about one machine."""

    id: str
    name: str
    state: str  # one of RUNNING, PENDING, STOPPED, TERMINATED, ERROR, UNKNOWN
    ip: str | None = None  # the address Loom connects to (public if any, else private)
    port: int = 22
    host_key: str | None = None  # "ssh-ed25519 AAAA..." when the provider knows it (local, static)
    user: str | None = None  # the SSH user, when the provider decides it (static pool)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def hostname(self) -> str | None:
        return self.tags.get(TAG_NODE)


class Machines(Protocol):
    """A provider's machines, as the engine uses them."""

    provider: str

    def ensure(self, req: MachineRequest) -> Machine:
        """Create the machine, or return the one an earlier try made. May return it PENDING."""

    def get(self, req: MachineRequest) -> Machine | None:
        """The request's machine as the provider sees it now, or None."""

    def destroy(self, req: MachineRequest) -> bool:
        """Destroy (or give back) the request's machine; True if there was one."""

    def owned(self) -> list[Machine]:
        """Every machine at this provider that carries Loom's tags (for the janitor)."""
