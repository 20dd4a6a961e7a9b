"""Load template files into a validated :class:`Catalog`.

Every problem is reported as ``file: field: problem``; all problems at once. A broken file is
skipped (and so is any cluster template that depends on it) while the rest still load, the way
dag-factory isolates failures: the DAG of a good template never vanishes because of another.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from loom.errors import TemplateError
from loom.spec.models import (
    ENTITY_KINDS,
    ClusterTemplate,
    Entity,
    HardwareType,
    ImageType,
    PartialTemplate,
    Provider,
    Service,
)

log = logging.getLogger(__name__)


@dataclass
class Catalog:
    root: Path
    providers: dict[str, Provider] = field(default_factory=dict)
    hardwaretypes: dict[str, HardwareType] = field(default_factory=dict)
    imagetypes: dict[str, ImageType] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    partialtemplates: dict[str, PartialTemplate] = field(default_factory=dict)
    clustertemplates: dict[str, ClusterTemplate] = field(default_factory=dict)
    files: dict[tuple[str, str], Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def file_of(self, kind: str, name: str) -> str:
        path = self.files.get((kind, name))
        return str(path.relative_to(self.root.parent)) if path else f"{kind}/{name}"

    def template(self, name: str) -> ClusterTemplate:
        try:
            return self.clustertemplates[name]
        except KeyError:
            known = ", ".join(sorted(self.clustertemplates)) or "none"
            raise TemplateError([f"no valid cluster template named {name!r} (valid: {known})"]) from None

    def raise_for_problems(self) -> None:
        if self.problems:
            raise TemplateError(self.problems)

    @property
    def services_dir(self) -> Path:
        return self.root / "services"


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _read_yaml(path: Path, shown: str) -> tuple[dict[str, Any] | None, list[str]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        return None, [f"{shown}: (yaml): {exc.problem or exc} at {where}: fix the YAML syntax"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return None, [f"{shown}: (file): cannot read: {exc}"]
    if not isinstance(data, dict):
        return None, [f"{shown}: (top level): expected a mapping of fields, got {type(data).__name__}"]
    return data, []


@dataclass
class _Raw:
    path: Path
    shown: str
    data: dict[str, Any]


def _read_kind(catalog: Catalog, kind: str) -> dict[str, _Raw]:
    """Every file of one kind, parsed, named (file stem) and de-duplicated; problems recorded."""
    out: dict[str, _Raw] = {}
    folder = catalog.root / kind
    if not folder.is_dir():
        return out
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        shown = str(path.relative_to(catalog.root.parent))
        data, problems = _read_yaml(path, shown)
        catalog.problems.extend(problems)
        if data is None:
            continue
        data.setdefault("name", path.stem)
        if data["name"] != path.stem:
            catalog.problems.append(f"{shown}: name: {data['name']!r} must match the file name {path.stem!r}")
            continue
        if path.stem in out:
            catalog.problems.append(
                f"{shown}: name: {path.stem!r} is already defined by {out[path.stem].shown}: keep one file"
            )
            continue
        out[path.stem] = _Raw(path, shown, data)
    return out


def _validate(catalog: Catalog, kind: str, raw: _Raw, data: dict[str, Any] | None = None) -> Entity | None:
    try:
        entity = ENTITY_KINDS[kind].model_validate(raw.data if data is None else data)
    except ValidationError as exc:
        catalog.problems.extend(f"{raw.shown}: {_field_path(e['loc'])}: {e['msg']}" for e in exc.errors())
        return None
    getattr(catalog, kind)[entity.name] = entity
    catalog.files[(kind, entity.name)] = raw.path
    return entity


def load_catalog(root: str | Path) -> Catalog:
    """Read every entity file under ``root``; resolve extends/includes; cross-check; keep what is valid."""
    root = Path(root).resolve()
    catalog = Catalog(root=root)
    if not root.is_dir():
        catalog.problems.append(f"{root}: (folder): templates folder does not exist")
        return catalog
    raws = {kind: _read_kind(catalog, kind) for kind in ENTITY_KINDS}
    for kind, entries in raws.items():
        if kind == "clustertemplates":
            continue
        for raw in entries.values():
            _validate(catalog, kind, raw)
    _check_building_blocks(catalog)  # before composing: a bad partial must not leak into templates
    from loom.spec.compose import compose_template

    for name, raw in raws["clustertemplates"].items():
        data, problems = compose_template(name, raws["clustertemplates"], catalog)
        catalog.problems.extend(problems)
        if data is not None:
            _validate(catalog, "clustertemplates", raw, data)
    _check_templates(catalog)
    for problem in catalog.problems:
        log.warning("template problem: %s", problem)
    return catalog


def _drop_invalid(catalog: Catalog, kind: str, check: Any) -> None:
    """Run ``check(catalog, entity)`` on every entity of ``kind``; drop those with problems."""
    entities = getattr(catalog, kind)
    for name in list(entities):
        problems = check(catalog, entities[name])
        if problems:
            catalog.problems.extend(problems)
            del entities[name]


def _check_building_blocks(catalog: Catalog) -> None:
    from loom.spec.checks import check_partial, check_provider, check_service, check_service_graph

    _drop_invalid(catalog, "providers", check_provider)
    _drop_invalid(catalog, "services", check_service)
    for name in check_service_graph(catalog):
        catalog.services.pop(name, None)
    _drop_invalid(catalog, "partialtemplates", check_partial)


def _check_templates(catalog: Catalog) -> None:
    from loom.spec.checks import check_template

    _drop_invalid(catalog, "clustertemplates", check_template)
