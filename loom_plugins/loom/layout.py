"""Plain data describing a cluster's machines: what the solver returns and the store records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class NodeSpec:
    number: int
    hostname: str
    hardwaretype: str
    imagetype: str
    flavor: str
    image: str
    sshuser: str
    services: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["services"] = list(self.services)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeSpec:
        return cls(**{**data, "services": tuple(data["services"])})


@dataclass(frozen=True)
class Layout:
    cluster: str
    template: str
    provider: str
    services: tuple[str, ...]
    nodes: tuple[NodeSpec, ...]
    config: dict[str, Any] = field(default_factory=dict)
    dns_suffix: str | None = None

    def nodes_with(self, service: str) -> list[NodeSpec]:
        return [n for n in self.nodes if service in n.services]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "template": self.template,
            "provider": self.provider,
            "services": list(self.services),
            "nodes": [n.to_dict() for n in self.nodes],
            "config": self.config,
            "dns_suffix": self.dns_suffix,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Layout:
        return cls(
            cluster=data["cluster"],
            template=data["template"],
            provider=data["provider"],
            services=tuple(data["services"]),
            nodes=tuple(NodeSpec.from_dict(n) for n in data["nodes"]),
            config=data.get("config") or {},
            dns_suffix=data.get("dns_suffix"),
        )
