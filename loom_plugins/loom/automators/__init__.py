"""Automators run a service action on a node. ``automator_for(type)`` returns the runner.

An automator is one class: ``name``, its action model ``Action`` (pydantic, extra=forbid,
``type: Literal[name]``, a ``timeout`` field — inherit :class:`loom.spec.actions.ActionModel`)
and ``run(access, ctx) -> str`` (the output; raise :class:`loom.errors.ActionError` naming
``service.action`` and the node on failure). ``ctx`` is an :class:`ActionContext`: the action
with its macros expanded for this node, the expanded cluster config and the cluster's nodes.

Built in: ``shell``, ``ansible``, ``puppet``, ``chef-solo``. Their action models live in core
(``loom/spec/actions.py``) so templates validate without Airflow; their runners are the modules
here, imported on first use.

How to add an automator (e.g. ``docker``) — one file, one class, one registration line:

1. Create ``loom_plugins/loom/automators/docker.py`` (the file name is the type with ``-`` as
   ``_``; import heavy libraries inside ``run``, never at module level)::

       from typing import Annotated, Literal

       from loom.automators import ActionContext, Automator, register
       from loom.automators.remote import RemoteSession
       from loom.spec.actions import ActionModel, Macros, ServiceFile

       @register                                     # <- the registration line
       class DockerAutomator(Automator):
           name = "docker"

           class Action(ActionModel):
               type: Literal["docker"]
               compose_file: ServiceFile             # checked to exist by the loader
               env: Annotated[dict[str, str], Macros] = {}   # macro-expanded per node

           def run(self, access, ctx: ActionContext) -> str:
               with RemoteSession(access, ctx.service, ctx.action, ctx.spec.timeout) as node:
                   ...                               # upload, node.run(body) (sudo, timeout)

2. Use it in a service: ``actions: {start: {type: docker, compose_file: docker/app.yml}}``.
   The loader imports ``loom.automators.docker`` when it first meets ``type: docker`` and
   reports bad fields as ``file: actions.start.<field>: problem``. Run
   ``loom templates schema`` to add its fields to the editor schemas.

A plugin outside this package registers the same way; its module must then be imported before
templates are loaded (e.g. from the Airflow plugin file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from loom.errors import ActionError
from loom.spec.actions import ActionModel, import_automator, register_action, type_name, unregister_action

if TYPE_CHECKING:
    from loom.automators.ssh import NodeAccess

__all__ = ["ActionContext", "Automator", "NodeView", "automator_for", "register", "unregister"]


@dataclass(frozen=True)
class NodeView:
    """One node of the cluster as automators see it (inventories, facts)."""

    hostname: str
    ip: str
    port: int
    sshuser: str
    host_key: str
    services: tuple[str, ...]

    @classmethod
    def from_view(cls, node: dict[str, Any]) -> NodeView:
        return cls(
            node["hostname"], node["ip"], int(node.get("port") or 22), node["sshuser"],
            node.get("host_key") or "", tuple(node["services"]),
        )

    def as_dict(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "ip": self.ip, "services": list(self.services)}


@dataclass(frozen=True)
class ActionContext:
    """Everything one action on one node needs, macros already expanded for that node."""

    cluster: str
    hostname: str
    ip: str
    service: str
    action: str
    spec: ActionModel  # the action; its ``Macros`` fields expanded for this node
    config: dict[str, Any]  # the cluster config, expanded for this node
    nodes: tuple[NodeView, ...]  # every node that has an address, by number
    services_dir: Path  # templates/services: where action files are found
    key_file: Path  # the cluster's private SSH key
    owner: str = ""

    def path(self, rel: str) -> Path:
        """A file or folder named by the action, relative to templates/services/."""
        return self.services_dir / rel

    def loom_vars(self) -> dict[str, Any]:
        """The node's Loom data as structured values (ansible vars, chef attributes)."""
        return {
            "cluster": self.cluster,
            "host": self.hostname,
            "ip": self.ip,
            "service": self.service,
            "action": self.action,
            "config": self.config,
            "nodes": [n.as_dict() for n in self.nodes],
        }

    def env(self) -> dict[str, str]:
        """The node's Loom data as environment strings (shell scripts): LOOM_CLUSTER, ..."""
        return loom_env(self.cluster, self.hostname, self.ip, self.service, self.action, self.config)


def loom_env(cluster: str, hostname: str, ip: str, service: str, action: str, config: dict[str, Any]) -> dict[str, str]:
    return {
        "LOOM_CLUSTER": cluster,
        "LOOM_HOST": hostname,
        "LOOM_IP": ip,
        "LOOM_SERVICE": service,
        "LOOM_ACTION": action,
        "LOOM_CONFIG": json.dumps(config, sort_keys=True),
    }


class Automator:
    """Base class of automators: set ``name`` and ``Action``, implement ``run``."""

    name: ClassVar[str]
    Action: ClassVar[type[ActionModel]]

    def run(self, access: NodeAccess, ctx: ActionContext) -> str:
        raise NotImplementedError


_RUNNERS: dict[str, type[Automator]] = {}


def register(cls: type[Automator]) -> type[Automator]:
    """Class decorator: make ``cls`` the runner of ``type: cls.name`` actions (and its
    ``Action`` model valid in templates)."""
    declared = type_name(cls.Action)
    if declared != cls.name:
        raise TypeError(f"{cls.__name__}: name {cls.name!r} but Action.type is Literal[{declared!r}]")
    known = _RUNNERS.get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(f"automator {cls.name!r} is already registered by {known.__module__}.{known.__qualname__}")
    register_action(cls.Action)
    _RUNNERS[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Forget an automator and its action type (tests)."""
    _RUNNERS.pop(name, None)
    unregister_action(name)


def automator_for(type_name: str) -> Automator:
    """The runner of ``type: <type_name>`` actions; its module is imported on first use."""
    if type_name not in _RUNNERS:
        import_automator(type_name)
    try:
        return _RUNNERS[type_name]()
    except KeyError:
        known = ", ".join(sorted(_RUNNERS)) or "none imported yet"
        raise ActionError(
            f"no automator for action type {type_name!r} (loaded: {known}); add "
            f"loom_plugins/loom/automators/{type_name.replace('-', '_')}.py (see loom.automators)"
        ) from None
