"""Service action models, one per automator type, and the registry the ``Service`` model reads.

Core code: no Airflow, no SSH, no ansible. A service's ``actions.<name>`` mapping is validated by
its ``type`` (missing ``type`` means ``shell``, as before) against the models registered here, at
validation time, so an automator registered later (a plugin, a test) is accepted by the loader.

Field markers every automator can use:

- ``ServiceFile`` / ``ServiceDir``: a path relative to ``templates/services/`` (no ``/``-prefix,
  no ``..``); the catalog check reports ``file: actions.<a>.<field>: ... not found`` when it
  is missing (see :meth:`ActionModel.required_paths`).
- ``Macros``: the field's strings are macro-expanded per node before the automator runs
  (:meth:`ActionModel.expanded`).

The runner of each type lives in ``loom.automators.<type>`` (imported only when an action
runs). A type not registered here is looked up once as module ``loom.automators.<type>``,
whose ``@register`` adds its model: ``loom/automators/__init__.py`` explains how to add one.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError, core_schema

ACTION_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


class _PathKind:
    """Field marker: the value names a file or folder under templates/services/."""

    def __init__(self, kind: Literal["file", "dir"]):
        self.kind = kind


class _MacrosMarker:
    """Field marker: strings inside the value are macro-expanded per node."""


Macros = _MacrosMarker()


def _inside_services(value: str) -> bool:
    parts = value.split("/")
    return bool(value) and not value.startswith("/") and ".." not in parts and "\x00" not in value


ServiceFile = Annotated[str, _PathKind("file")]
ServiceDir = Annotated[str, _PathKind("dir")]


class ActionModel(BaseModel):
    """Base of every action model: ``type`` (a ``Literal`` of the automator's name) and ``timeout``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: str
    timeout: int = Field(default=1800, gt=0, description="seconds before the action is killed and fails")

    @model_validator(mode="after")
    def _paths_stay_inside_services(self) -> ActionModel:
        for name, _ in self._marked(_PathKind):
            value = getattr(self, name)
            if value is not None and not _inside_services(value):
                raise ValueError(
                    f"{name} {value!r} must be a relative path inside templates/services/ "
                    "(no leading '/', no '..')"
                )
        return self

    def _marked(self, marker: type) -> list[tuple[str, Any]]:
        """Fields carrying ``marker``, also inside ``Optional[...]`` (``ServiceFile | None``)."""
        out = []
        for name, info in type(self).model_fields.items():
            metadata = list(info.metadata)
            for arg in get_args(info.annotation):
                metadata += getattr(arg, "__metadata__", ())
            found = next((m for m in metadata if isinstance(m, marker)), None)
            if found is not None:
                out.append((name, found))
        return out

    def required_paths(self) -> list[tuple[str, str, str]]:
        """``(field, path relative to templates/services/, "file"|"dir")`` that must exist."""
        return [
            (name, getattr(self, name), meta.kind)
            for name, meta in self._marked(_PathKind)
            if getattr(self, name) is not None
        ]

    def expanded(self, expand: Callable[[Any], Any]) -> ActionModel:
        """A copy with every ``Macros`` field passed through ``expand`` (one node's macros)."""
        return self.model_copy(update={name: expand(getattr(self, name)) for name, _ in self._marked(_MacrosMarker)})


_MODELS: dict[str, type[ActionModel]] = {}


def type_name(model: type[ActionModel]) -> str:
    """The automator name an action model declares with ``type: Literal["<name>"]``."""
    args = get_args(model.model_fields["type"].annotation)
    if len(args) != 1 or not isinstance(args[0], str) or not ACTION_TYPE_RE.match(args[0]):
        raise TypeError(f"{model.__name__}.type must be Literal['<automator name>'] (lowercase, digits, '-')")
    return args[0]


def register_action(model: type[ActionModel]) -> type[ActionModel]:
    """Make ``type: <name>`` actions valid in templates. Re-registering the same model is a no-op."""
    name = type_name(model)
    known = _MODELS.get(name)
    if known is not None and known is not model:
        raise ValueError(f"action type {name!r} is already registered by {known.__module__}.{known.__qualname__}")
    _MODELS[name] = model
    return model


def unregister_action(name: str) -> None:
    _MODELS.pop(name, None)


def action_types() -> list[str]:
    return sorted(_MODELS)


# Where automators live: ``type: <name>`` may be defined by ``loom.automators.<name with _>``,
# imported on first use (like libcloud's lazily imported drivers). Those modules import only
# light things at module level, so this stays cheap and Airflow-free.
AUTOMATOR_PACKAGE = "loom.automators"


def import_automator(name: str) -> None:
    """Import ``loom.automators.<name>`` if it exists (it registers itself)."""
    module = f"{AUTOMATOR_PACKAGE}.{name.replace('-', '_')}"
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name not in (module, AUTOMATOR_PACKAGE):
            raise


def discover_automators() -> None:
    """Import every module of the automator package, so all in-repo action types are registered."""
    import pkgutil

    package = importlib.import_module(AUTOMATOR_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{AUTOMATOR_PACKAGE}.{info.name}")


def action_model(name: str) -> type[ActionModel]:
    if name not in _MODELS and ACTION_TYPE_RE.match(name):
        import_automator(name)
    try:
        return _MODELS[name]
    except KeyError:
        raise PydanticCustomError(
            "action_type",
            "unknown action type {type}: use one of {known}",
            {"type": repr(name), "known": ", ".join(action_types())},
        ) from None


class _AnyAction:
    """Pydantic type of ``Service.actions`` values: dispatch on ``type`` to the registered model."""

    @staticmethod
    def _validate(value: Any) -> ActionModel:
        if isinstance(value, ActionModel):
            return value
        if not isinstance(value, dict):
            raise PydanticCustomError("action", "an action is a mapping like {type: shell, script: ...}")
        kind = value.get("type", "shell")
        if not isinstance(kind, str):
            raise PydanticCustomError("action_type", "type must be a string naming an automator")
        return action_model(kind).model_validate(value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        def dump(value: ActionModel, info: Any) -> Any:
            return value.model_dump(
                mode=info.mode, by_alias=info.by_alias, exclude_defaults=info.exclude_defaults,
                exclude_none=info.exclude_none, exclude_unset=info.exclude_unset,
            )

        return core_schema.no_info_plain_validator_function(
            cls._validate, serialization=core_schema.plain_serializer_function_ser_schema(dump, info_arg=True)
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        discover_automators()
        return {"oneOf": [handler(_MODELS[name].__pydantic_core_schema__) for name in action_types()]}


AnyAction = Annotated[ActionModel, _AnyAction]


# --- the built-in automators' action models --------------------------------------------------
@register_action
class ShellAction(ActionModel):
    """Run a script from the service folder on the node, with macro-expanded args."""

    type: Literal["shell"] = "shell"
    script: ServiceFile
    args: Annotated[list[str], Macros] = Field(default_factory=list)


@register_action
class AnsibleAction(ActionModel):
    """Run ``ansible-playbook`` on the Airflow worker against this node (``--limit``); the
    inventory holds the whole cluster with one group per service."""

    type: Literal["ansible"]
    playbook: ServiceFile | None = Field(default=None, description="playbook path in templates/services/")
    role: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", description="run this role instead of a playbook"
    )
    roles_path: ServiceDir = Field(default="roles", description="folder of roles in templates/services/")
    extra_vars: Annotated[dict[str, Any], Macros] = Field(
        default_factory=dict, description="extra vars; strings are macro-expanded for the node"
    )
    tags: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _playbook_or_role(self) -> AnsibleAction:
        if (self.playbook is None) == (self.role is None):
            raise ValueError("give exactly one of playbook (a file) or role (a role name)")
        return self

    def required_paths(self) -> list[tuple[str, str, str]]:
        paths = [p for p in super().required_paths() if p[0] != "roles_path" or self.role]
        if self.role:
            paths.append(("role", f"{self.roles_path}/{self.role}", "dir"))
        return paths


@register_action
class PuppetAction(ActionModel):
    """Upload a manifest (and a module folder) and ``puppet apply`` it on the node."""

    type: Literal["puppet"]
    manifest: ServiceFile
    modulepath: ServiceDir | None = Field(default=None, description="folder of puppet modules to upload")


@register_action
class ChefSoloAction(ActionModel):
    """Upload cookbooks, write solo.rb and node.json, run ``chef-solo`` on the node."""

    type: Literal["chef-solo"]
    run_list: list[Annotated[str, Field(pattern=r"^(recipe|role)\[[A-Za-z0-9_.:@-]+\]$")]] = Field(min_length=1)
    cookbooks: ServiceDir
    attributes: Annotated[dict[str, Any], Macros] = Field(
        default_factory=dict, description="node attributes; strings are macro-expanded for the node"
    )

    @model_validator(mode="after")
    def _own_keys(self) -> ChefSoloAction:
        taken = sorted({"run_list", "loom"} & set(self.attributes))
        if taken:
            raise ValueError(f"attributes may not set {', '.join(taken)}: Loom writes those (use run_list)")
        return self
