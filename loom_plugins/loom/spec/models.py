"""Pydantic models of Loom's template entities (see LOOM_SEMANTICS.md).

Every model forbids unknown fields so a typo in a template is an error, not a silent no-op.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag, model_validator
from pydantic.json_schema import SkipJsonSchema

from loom.spec.actions import AnyAction, ShellAction  # noqa: F401 (ShellAction: re-export)

EntityName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
ACTION_NAMES = ("install", "configure", "initialize", "start", "stop", "remove")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Entity(Strict):
    name: EntityName
    label: str | None = None
    description: str = ""
    icon: str | None = None


class Provider(Entity):
    """A place machines come from: a libcloud driver name, ``local`` or ``static``."""

    driver: str
    connection: str | None = Field(
        default=None, description="Airflow Connection id holding credentials (never the file)"
    )
    options: dict[str, Any] = Field(default_factory=dict)
    boot_timeout: int = Field(
        default=900, gt=0, description="seconds a new machine may take to run and answer SSH"
    )


class HardwareMapping(Strict):
    flavor: str


class HardwareType(Entity):
    providermap: dict[str, HardwareMapping]


class ImageMapping(Strict):
    image: str
    sshuser: str = "root"


class ImageType(Entity):
    providermap: dict[str, ImageMapping]


class DependencyEdges(Strict):
    requires: list[EntityName] = Field(default_factory=list)
    uses: list[EntityName] = Field(default_factory=list)


class Dependencies(Strict):
    provides: list[EntityName] = Field(default_factory=list)
    conflicts: list[EntityName] = Field(default_factory=list)
    install: DependencyEdges = Field(default_factory=DependencyEdges)
    runtime: DependencyEdges = Field(default_factory=DependencyEdges)


class Link(Strict):
    label: str
    url: str


class Service(Entity):
    dependencies: Dependencies = Field(default_factory=Dependencies)
    config: dict[str, Any] = Field(
        default_factory=dict, description="defaults merged under the cluster's config (deep merge)"
    )
    actions: dict[Literal[ACTION_NAMES], AnyAction] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="{type: <automator>, ...fields}; see loom.spec.actions"
    )
    links: list[Link] = Field(default_factory=list)

    @property
    def provides(self) -> set[str]:
        return {self.name, *self.dependencies.provides}


class Quantities(Strict):
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Quantities:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class ServiceConstraint(Strict):
    hardwaretypes: list[EntityName] = Field(default_factory=list)
    imagetypes: list[EntityName] = Field(default_factory=list)
    quantities: Quantities = Field(default_factory=Quantities)


class LayoutConstraints(Strict):
    mustcoexist: list[list[EntityName]] = Field(default_factory=list)
    cantcoexist: list[list[EntityName]] = Field(default_factory=list)


class SizeConstraint(Strict):
    min: int = Field(default=1, ge=1)
    max: int = Field(default=10000, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> SizeConstraint:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Constraints(Strict):
    layout: LayoutConstraints = Field(default_factory=LayoutConstraints)
    services: dict[EntityName, ServiceConstraint] = Field(default_factory=dict)
    size: SizeConstraint = Field(default_factory=SizeConstraint)


class Defaults(Strict):
    services: list[EntityName] = Field(default_factory=list)
    provider: EntityName
    hardwaretype: EntityName
    imagetype: EntityName
    dnsSuffix: str | None = Field(default=None, pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
    config: dict[str, Any] = Field(default_factory=dict)


class Compatibility(Strict):
    services: list[EntityName] = Field(default_factory=list)
    hardwaretypes: list[EntityName] = Field(default_factory=list)
    imagetypes: list[EntityName] = Field(default_factory=list)


Duration = Annotated[str, StringConstraints(pattern=r"^(0|\d+[smhdw])$")] | Annotated[int, Field(ge=0)]


class LeaseDuration(Strict):
    """Lease rules: expiry = create + initial; an extension goes at most ``step`` past the current
    expiry and never past create + ``max``. 0 = unlimited. Durations: 30m, 4h, 7d, 2w, or seconds."""

    initial: Duration = 0
    max: Duration = 0
    step: Duration = 0

    def seconds(self) -> tuple[int, int, int]:
        from loom.durations import parse_duration

        return parse_duration(self.initial), parse_duration(self.max), parse_duration(self.step)

    @model_validator(mode="after")
    def _consistent(self) -> LeaseDuration:
        initial, maximum, _ = self.seconds()
        if maximum and (initial == 0 or initial > maximum):
            raise ValueError(
                f"initial ({self.initial}) must be non-zero and at most max ({self.max}) when max is set"
            )
        return self


class Administration(Strict):
    leaseduration: LeaseDuration = Field(default_factory=LeaseDuration)
    on_failure: Literal["keep", "rollback"] = Field(
        default="keep",
        description="a failed create/expand: keep the nodes for inspection and resume (INCOMPLETE), "
        "or destroy every node it created (rollback)",
    )


OPERATION_NAMES = (
    "create", "delete", "add_services", "start_services", "stop_services", "restart_services",
    "configure", "expand", "extend_lease", "sync",
)
HookOperation = Literal[(*OPERATION_NAMES, "all")]  # type: ignore[valid-type]


class HttpHook(Strict):
    """POST the operation's JSON (``{cluster, operation, run_id, status, nodes, ...}``) to ``url``.
    At ``on_start`` a non-2xx answer, or ``{"veto": true, "reason": ...}``, vetoes the operation."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")]
    timeout: float = Field(default=10, gt=0, le=600, description="seconds per attempt")
    retries: int = Field(default=2, ge=0, le=10, description="extra attempts after a 5xx or no answer")
    headers: dict[str, str] = Field(
        default_factory=dict, description="non-secret headers; secrets go in an Airflow Connection"
    )
    connection: str | None = Field(
        default=None,
        description="Airflow Connection id: its login/password are sent as basic auth, its extra "
        "'headers' object as headers (e.g. a bearer token)",
    )


class CommandHook(Strict):
    """Run a shell command on the Airflow worker (``run_on: worker``) or on the cluster's nodes
    (``run_on: nodes``, optionally only those with ``services``). The payload is on stdin and in
    ``$LOOM_PAYLOAD``; a non-zero exit at ``on_start`` vetoes the operation."""

    command: str = Field(min_length=1)
    run_on: Literal["worker", "nodes"] = "worker"
    services: list[EntityName] = Field(default_factory=list)
    timeout: int = Field(default=300, gt=0, le=86400)


def _hook_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "http" if "url" in value else "command"
    return "http" if isinstance(value, HttpHook) else "command"


# A hook with ``url`` is an HTTP hook, else a command hook (errors then name only that kind's fields).
Hook = Annotated[
    Annotated[HttpHook, Tag("http")] | Annotated[CommandHook, Tag("command")], Discriminator(_hook_kind)
]


class PhaseHooks(Strict):
    on_start: list[Hook] = Field(default_factory=list, description="before anything changes; may veto")
    on_success: list[Hook] = Field(default_factory=list)
    on_failure: list[Hook] = Field(default_factory=list)


class ClusterTemplate(Entity):
    extends: EntityName | None = Field(
        default=None, description="parent cluster template: its fields are the defaults of this one"
    )
    includes: list[EntityName] = Field(
        default_factory=list, description="partial templates merged in (sets unioned, config deep-merged)"
    )
    defaults: Defaults
    compatibility: Compatibility = Field(default_factory=Compatibility)
    constraints: Constraints = Field(default_factory=Constraints)
    administration: Administration = Field(default_factory=Administration)
    links: list[Link] = Field(default_factory=list)
    hooks: dict[HookOperation, PhaseHooks] = Field(  # type: ignore[valid-type]
        default_factory=dict,
        description="lifecycle hooks per operation ('all' = every operation; its hooks run first)",
    )
    # Set by the loader (not written by admins): config key paths fixed by immutable partials.
    immutable_config: SkipJsonSchema[dict[str, str]] = Field(default_factory=dict)


class PartialDefaults(Strict):
    services: list[EntityName] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)


class PartialTemplate(Entity):
    """A reusable piece of cluster templates (``includes``). With ``immutable: true`` the config
    keys it sets may not be overridden by the including template or by a request."""

    immutable: bool = False
    defaults: PartialDefaults = Field(default_factory=PartialDefaults)
    compatibility: Compatibility = Field(default_factory=Compatibility)


class CreateRequest(Strict):
    """The trigger conf of ``<template>.create`` (CONTRACT.md)."""

    cluster: str
    size: int | None = Field(default=None, ge=1)
    provider: EntityName | None = None
    services: list[EntityName] | None = None
    hardwaretype: EntityName | None = None
    imagetype: EntityName | None = None
    config: dict[str, Any] | None = None
    lease: Duration | None = None


class ClusterRequest(Strict):
    """The trigger conf of operations that only name a cluster (``delete``, ``sync``)."""

    cluster: str


class ServicesRequest(ClusterRequest):
    """``start_services`` / ``stop_services`` / ``restart_services``: no list = all services."""

    services: list[EntityName] | None = None


class AddServicesRequest(ClusterRequest):
    services: list[EntityName] = Field(min_length=1)


class ConfigureRequest(ClusterRequest):
    config: dict[str, Any] = Field(default_factory=dict)
    restart: bool = False


class ExpandRequest(ClusterRequest):
    add_nodes: int = Field(ge=1, le=1000)


class LeaseRequest(ClusterRequest):
    lease: Duration


OPERATION_REQUESTS: dict[str, type[ClusterRequest]] = {
    "delete": ClusterRequest,
    "add_services": AddServicesRequest,
    "start_services": ServicesRequest,
    "stop_services": ServicesRequest,
    "restart_services": ServicesRequest,
    "configure": ConfigureRequest,
    "expand": ExpandRequest,
    "sync": ClusterRequest,
    "extend_lease": LeaseRequest,
}


ENTITY_KINDS: dict[str, type[Entity]] = {
    "providers": Provider,
    "hardwaretypes": HardwareType,
    "imagetypes": ImageType,
    "services": Service,
    "partialtemplates": PartialTemplate,
    "clustertemplates": ClusterTemplate,
}
