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


def _parse_entity(kind: str, path: Path, shown: str) -> tuple[Entity | None, list[str]]:
    data, problems = _read_yaml(path, shown)
    if data is None:
        return None, problems
    data.setdefault("name", path.stem)
    try:
        entity = ENTITY_KINDS[kind].model_validate(data)
    except ValidationError as exc:
        return None, [f"{shown}: {_field_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
    if entity.name != path.stem:
        return None, [f"{shown}: name: {entity.name!r} must match the file name {path.stem!r}"]
    return entity, []


def load_catalog(root: str | Path) -> Catalog:
    """Read every entity file under ``root``; cross-check; keep what is valid."""
    root = Path(root).resolve()
    catalog = Catalog(root=root)
    if not root.is_dir():
        catalog.problems.append(f"{root}: (folder): templates folder does not exist")
        return catalog
    for kind in ENTITY_KINDS:
        folder = root / kind
        if not folder.is_dir():
            continue
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            shown = str(path.relative_to(root.parent))
            entity, problems = _parse_entity(kind, path, shown)
            catalog.problems.extend(problems)
            if entity is not None and (kind, entity.name) in catalog.files:
                first = catalog.file_of(kind, entity.name)
                catalog.problems.append(f"{shown}: name: {entity.name!r} is already defined by {first}: keep one file")
                continue
            if entity is not None:
                getattr(catalog, kind)[entity.name] = entity
                catalog.files[(kind, entity.name)] = path
    _cross_check(catalog)
    for problem in catalog.problems:
        log.warning("template problem: %s", problem)
    return catalog


def _cross_check(catalog: Catalog) -> None:
    from loom.spec.checks import check_service, check_template

    for name in list(catalog.services):
        problems = check_service(catalog, catalog.services[name])
        if problems:
            catalog.problems.extend(problems)
            del catalog.services[name]
    for name in list(catalog.clustertemplates):
        problems = check_template(catalog, catalog.clustertemplates[name])
        if problems:
            catalog.problems.extend(problems)
            del catalog.clustertemplates[name]
