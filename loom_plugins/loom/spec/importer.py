"""Import an original Loom / Cask Coopr template export (JSON) as our YAML template files.

Reads a full export ``{"providers": [...], "hardwaretypes": [...], "imagetypes": [...],
"services": [...], "clustertemplates": [...], "partialtemplates": [...]}`` or a single entity
(one object, optionally wrapped as ``{"service": {...}}``), and writes one file per entity under
``<out>/<kind>/<name>.yaml`` plus the shell scripts the service actions need under
``<out>/services/scripts/<service>/``. Both export generations are understood: old Loom (before
0.9.7: ``dependson``, ``provisioner.auth``, actions with ``script``/``data``) and Coopr
(``dependencies``, flat ``provisioner`` fields, actions with ``fields``).

Nothing is silently dropped or silently made up: every rename, every unsupported field, every
credential that must go into an Airflow Connection and every script the admin still has to
write is a line of the :class:`ImportReport`. Credentials are never written to a file.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from loom.durations import format_duration
from loom.errors import LoomError
from loom.spec.models import ACTION_NAMES, ENTITY_KINDS

KINDS = tuple(ENTITY_KINDS)  # providers, hardwaretypes, imagetypes, services, partialtemplates, clustertemplates
DRIVERS = {
    "aws": "ec2",
    "openstack": "openstack",
    "rackspace": "rackspace",
    "google": "gce",
    "joyent": "joyent",
    "digitalocean": "digitalocean",
}
STUB_MARKER = "LOOM-IMPORT-STUB"
ACTION_ALIASES = {"init": "initialize"}
BASE_FIELDS = ("name", "label", "description", "icon")
IGNORED_FIELDS = ("version",)  # Coopr's per-entity version: git versions our files
TEMPLATE_FIELDS = (
    "extends", "parent", "includes", "defaults", "compatibility", "constraints", "administration", "links"
)
DEFAULTS_FIELDS = ("services", "provider", "hardwaretype", "imagetype", "dnsSuffix", "config")


class ImportConflict(LoomError):
    """The import would overwrite existing files (and ``force`` was not given)."""


@dataclass
class ImportReport:
    """What an import did and what the admin still has to do."""

    written: list[Path] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)
    converted: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # load_catalog(out_dir) after the import

    def lines(self) -> list[str]:
        """Human-readable report, one line per item, grouped by section."""
        out = [f"wrote {len(self.written)} file(s)"]
        for title, items in (
            ("renamed", self.renamed),
            ("converted", self.converted),
            ("not imported (unsupported fields)", self.dropped),
            ("TO DO before use", self.todo),
            ("problems `loom templates validate` reports", self.problems),
        ):
            if items:
                out.append(f"{title}:")
                out.extend(f"  - {item}" for item in items)
        return out


@dataclass
class _Ctx:
    """Conversion state: name maps per kind, the report, where shell scripts may be found."""

    report: ImportReport
    names: dict[str, dict[str, str]]
    out_dir: Path
    scripts_from: Path | None
    files: dict[str, tuple[str | bytes, int]] = field(default_factory=dict)  # rel path -> (content, mode)
    stubs: set[str] = field(default_factory=set)  # failing placeholders: replacing an older one is no clash
    seen_notes: set[str] = field(default_factory=set)

    def note_once(self, text: str) -> None:
        if text not in self.seen_notes:
            self.seen_notes.add(text)
            self.report.converted.append(text)

    def ref(self, kind: str, name: Any) -> str:
        """Our name for an entity (or virtual service name) referenced as ``name``."""
        text = str(name)
        return self.names.get(kind, {}).get(text) or sanitize_name(text)


# ---------------------------------------------------------------------------------------------
# public API


def import_export(
    doc_or_path: dict[str, Any] | list[Any] | str | Path,
    out_dir: Path,
    *,
    scripts_from: Path | None = None,
    force: bool = False,
) -> ImportReport:
    """Convert a Loom/Coopr export (a parsed document, or the path of a JSON file) into template
    files under ``out_dir``. Shell scripts named by the export are copied from ``scripts_from``
    (default: a ``scripts`` folder beside the export file) or written as failing stubs.
    Raises :class:`ImportConflict` if a file exists already, unless ``force``. The report's
    ``problems`` are what :func:`~loom.spec.loader.load_catalog` says about ``out_dir`` afterwards."""
    doc, source_dir = _read_document(doc_or_path)
    if scripts_from is None and source_dir is not None and (source_dir / "scripts").is_dir():
        scripts_from = source_dir / "scripts"
    report = ImportReport()
    entities = split_entities(doc, report)
    out_dir = Path(out_dir)
    ctx = _Ctx(report=report, names=_name_maps(entities, report), out_dir=out_dir, scripts_from=scripts_from)
    for kind in KINDS:
        for raw in entities[kind]:
            converted = CONVERTERS[kind](ctx, _clean(raw))
            ctx.files[f"{kind}/{converted['name']}.yaml"] = (_yaml_text(kind, converted), 0o644)
    _write(ctx, out_dir, force)
    _validate(ctx, out_dir)
    return report


def split_entities(doc: Any, report: ImportReport) -> dict[str, list[dict[str, Any]]]:
    """The export's entities by kind: a full export, a ``{kind: entity}`` wrapper, a list of
    entities or one entity (kind detected from its fields)."""
    out: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    if isinstance(doc, list):
        for item in doc:
            _add_single(out, item, report)
        return out
    if not isinstance(doc, dict):
        raise LoomError(f"export: expected a JSON object or list, got {type(doc).__name__}")
    if not any(_kind_of_key(k) for k in doc):
        _add_single(out, doc, report)
        return out
    for key, value in doc.items():
        kind = _kind_of_key(key)
        if kind is None:
            report.dropped.append(f"export: top-level {key!r} is not a template entity kind: not imported")
        elif isinstance(value, list):
            out[kind].extend(v for v in value if _is_entity(v, kind, report))
        elif _is_entity(value, kind, report):
            out[kind].append(value)
    return out


def sanitize_name(name: str) -> str:
    """``name`` made to fit ``^[a-z][a-z0-9_-]{0,62}$`` (lowercase, other characters -> '-')."""
    ascii_text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9_-]+", "-", ascii_text.strip().lower()).strip("-")
    text = re.sub(r"-{2,}", "-", text)
    if not text or not text[0].isalpha():
        text = f"x-{text}" if text else "unnamed"
    return text[:63].rstrip("-_") or "unnamed"


def detect_kind(entity: dict[str, Any]) -> str | None:
    """The entity kind of one exported object, from its fields."""
    keys = set(entity)
    if "providertype" in keys:
        return "providers"
    actions = isinstance(entity.get("provisioner"), dict) and "actions" in entity["provisioner"]
    if "dependson" in keys or "dependencies" in keys or actions:
        return "services"
    if "providermap" in keys:
        mappings = [m for m in (entity.get("providermap") or {}).values() if isinstance(m, dict)]
        if any("image" in m for m in mappings):
            return "imagetypes"
        return "hardwaretypes"
    if "immutable" in keys:
        return "partialtemplates"
    if keys & {"defaults", "compatibility", "constraints", "administration", "extends", "parent", "includes"}:
        return "clustertemplates"
    if "provisioner" in keys:
        return "providers"
    return None


# ---------------------------------------------------------------------------------------------
# reading and naming


def _read_document(doc_or_path: Any) -> tuple[Any, Path | None]:
    if isinstance(doc_or_path, (str, Path)):
        path = Path(doc_or_path)
        try:
            return json.loads(path.read_text(encoding="utf-8")), path.resolve().parent
        except OSError as exc:
            raise LoomError(f"{path}: cannot read the export: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise LoomError(f"{path}: not valid JSON: {exc}") from exc
    return doc_or_path, None


def _kind_of_key(key: str) -> str | None:
    key = key.lower().replace("_", "").replace("-", "")
    for kind in KINDS:
        if key in (kind, kind[:-1]):
            return kind
    return None


def _is_entity(value: Any, kind: str, report: ImportReport) -> bool:
    if isinstance(value, dict) and value.get("name"):
        return True
    report.dropped.append(f"{kind}: an entry without a name (or not an object) was skipped")
    return False


def _add_single(out: dict[str, list[dict[str, Any]]], item: Any, report: ImportReport) -> None:
    kind = detect_kind(item) if isinstance(item, dict) else None
    if kind is None:
        name = item.get("name") if isinstance(item, dict) else None
        report.dropped.append(f"entity {name!r}: cannot tell which kind of template entity it is: skipped")
    elif _is_entity(item, kind, report):
        out[kind].append(item)


def _clean(value: Any) -> Any:
    """Drop ``null`` members (Coopr serialises absent fields as null)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value if v is not None]
    return value


def _name_maps(entities: dict[str, list[dict[str, Any]]], report: ImportReport) -> dict[str, dict[str, str]]:
    """Per kind: exported name -> our name (sanitised, unique); one report line per rename."""
    maps: dict[str, dict[str, str]] = {}
    for kind, items in entities.items():
        taken: set[str] = set()
        maps[kind] = {}
        for item in items:
            old = str(item["name"])
            new = base = sanitize_name(old)
            n = 2
            while new in taken:
                new = f"{base[:60]}-{n}"
                n += 1
            taken.add(new)
            maps[kind][old] = new
            if new != old:
                report.renamed.append(f"{kind[:-1]} {old!r} -> {new!r} (references renamed too)")
    return maps


# ---------------------------------------------------------------------------------------------
# shared field helpers


def _base(ctx: _Ctx, kind: str, raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": ctx.names[kind][str(raw["name"])]}
    for key in BASE_FIELDS[1:]:
        if isinstance(raw.get(key), str) and raw[key]:
            out[key] = raw[key]
    for key in IGNORED_FIELDS:
        if key in raw:
            ctx.note_once("entity 'version' fields are not imported: these files are versioned with git")
    return out


def _unknown(ctx: _Ctx, where: str, raw: dict[str, Any], known: tuple[str, ...]) -> None:
    """Report every member of ``raw`` not in ``known``: nothing is dropped silently."""
    for key in sorted(set(raw) - set(known)):
        ctx.report.dropped.append(f"{where}: field {key!r} is not supported: not imported")


def _unknown_entity_fields(ctx: _Ctx, where: str, raw: dict[str, Any], known: tuple[str, ...]) -> None:
    _unknown(ctx, where, raw, BASE_FIELDS + IGNORED_FIELDS + known)


def _names(ctx: _Ctx, kind: str, values: Any) -> list[str]:
    if isinstance(values, str):
        values = [v for v in re.split(r"[,\s]+", values) if v]
    return list(dict.fromkeys(ctx.ref(kind, v) for v in (values or [])))


def _ref_name(value: Any) -> Any:
    """``extends``/``includes`` entries are ``{"name": ...}`` objects in Coopr, strings in ours."""
    return value.get("name") if isinstance(value, dict) else value


def _int(ctx: _Ctx, where: str, value: Any) -> int | None:
    """Coopr wrote numbers as JSON numbers or as strings ("1")."""
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if isinstance(value, bool) or not number.is_integer():
        ctx.report.dropped.append(f"{where}: {value!r} is not a whole number: not imported")
        return None
    return int(number)


def _links(ctx: _Ctx, where: str, raw: Any) -> list[dict[str, str]]:
    out = []
    for i, link in enumerate(raw or []):
        if isinstance(link, dict) and link.get("url"):
            url = _macros(ctx, f"{where}.links[{i}].url", str(link["url"]))
            out.append({"label": str(link.get("label") or link["url"]), "url": url})
        else:
            ctx.report.dropped.append(f"{where}: links[{i}] has no url: not imported")
    return out


# ---------------------------------------------------------------------------------------------
# macros


_SERVICE_REF = re.compile(r"\b((?:host|ip|num|instance\.self)\.service\.)([A-Za-z][A-Za-z0-9_-]*)")
_IDENT = re.compile(r"([A-Za-z_][A-Za-z0-9_.\-\[\]]*)\s*(\()?")
_OUR_REF = re.compile(r"^(host|ip|num|instance\.self)\.service\.[a-z][a-z0-9_-]*(\[\d+\])?$")
_SIMPLE_REFS = {"host.self", "ip.self", "cluster.name", "cluster.owner"}
_FUNCTIONS = {"join", "map"}
_COOPR_IP_KINDS = ("ip.bind_v4.", "ip.access_v4.")


def _map_macro_bodies(text: str, fn: Callable[[str], str]) -> tuple[str, bool]:
    """Apply ``fn`` to the inside of every ``%...%`` macro (``%%`` is a literal percent), the same
    scan as :func:`loom.macros.expand`; a last unpaired ``%`` becomes ``%%`` (True is returned)."""
    out, i, lone = [], 0, False
    while True:
        j = text.find("%", i)
        if j < 0:
            out.append(text[i:])
            break
        if text.startswith("%%", j):
            out.append(text[i : j + 2])
            i = j + 2
            continue
        k = text.find("%", j + 1)
        if k < 0:
            out.append(text[i:j] + "%%" + text[j + 1 :])
            lone = True
            break
        out.append(text[i:j] + "%" + fn(text[j + 1 : k]) + "%")
        i = k + 1
    return "".join(out), lone


def _macros(ctx: _Ctx, where: str, text: str) -> str:
    """Coopr macro dialect -> ours: ``ip.bind_v4.``/``ip.access_v4.`` -> ``ip.``; service names
    renamed; anything our expander would not understand reported."""

    def convert(body: str) -> str:
        for coopr in _COOPR_IP_KINDS:
            if coopr in body:
                body = body.replace(coopr, "ip.")
                ctx.note_once(f"macros {coopr}* became ip.* (a node has one address here)")
        body = _SERVICE_REF.sub(lambda m: m.group(1) + ctx.ref("services", m.group(2)), body)
        bad = _unsupported_idents(body)
        if bad:
            ctx.report.todo.append(
                f"{where}: macro %{body}% uses {', '.join(bad)}, which Loom on Airflow does not expand: rewrite it"
            )
        return body

    out, lone = _map_macro_bodies(text, convert)
    if lone:
        ctx.report.converted.append(f"{where}: a lone '%' became '%%' (a literal percent in our macro syntax)")
    return out


def _unsupported_idents(body: str) -> list[str]:
    bare = re.sub(r"'[^']*'", "''", body)
    bad = []
    for m in _IDENT.finditer(bare):
        name, call = m.group(1), m.group(2)
        ok = name in _FUNCTIONS if call else (name in _SIMPLE_REFS or _OUR_REF.match(name))
        if not ok:
            bad.append(name + ("()" if call else ""))
    return bad


def _config(ctx: _Ctx, where: str, value: Any) -> Any:
    if isinstance(value, str):
        return _macros(ctx, where, value)
    if isinstance(value, list):
        return [_config(ctx, f"{where}[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _config(ctx, f"{where}.{k}", v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------
# providers, hardware and image types


_LOCATION_FIELDS = (("region", re.compile(r"(^|_)region$")), ("zone", re.compile(r"(^|_)(availability_)?zone$")))


def _convert_provider(ctx: _Ctx, raw: dict[str, Any]) -> dict[str, Any]:
    """Provider: ``providertype`` -> libcloud ``driver``; provisioner fields -> the names the admin
    must put in an Airflow Connection (values never copied); region/zone -> ``options``."""
    out = _base(ctx, "providers", raw)
    where = f"providers/{out['name']}"
    ptype = str(raw.get("providertype") or "").lower()
    if ptype in DRIVERS:
        out["driver"] = DRIVERS[ptype]
        if DRIVERS[ptype] != ptype:
            ctx.report.converted.append(f"{where}: providertype {ptype!r} -> libcloud driver {DRIVERS[ptype]!r}")
        if not _libcloud_has(out["driver"]):
            ctx.report.todo.append(
                f"{where}: the installed Apache Libcloud has no {out['driver']!r} compute driver: "
                "choose another driver or provider"
            )
    else:
        out["driver"] = ptype or "unknown"
        ctx.report.todo.append(
            f"{where}: providertype {ptype or '(none)'!r} is not a known Loom provider type; kept as driver "
            f"{out['driver']!r}: set driver to an Apache Libcloud compute driver name (or local/static)"
        )
    fields = _provisioner_fields(raw.get("provisioner"))
    options, secret = _split_provisioner(fields)
    out["connection"] = out["name"]
    options = _driver_options(ctx, where, out["driver"], options)
    if options:
        out["options"] = options
        ctx.report.converted.append(f"{where}: {', '.join(sorted(options))} copied into options")
    if secret:
        ctx.report.todo.append(
            f"{where}: create the Airflow Connection {out['name']!r} holding {', '.join(secret)} "
            "(credentials are not copied from the export into template files)"
        )
    _unknown_entity_fields(ctx, where, raw, ("providertype", "provisioner"))
    return out


# Coopr's location fields -> the provider option each driver knows (the rest go to the Connection).
_OPTION_RENAMES = {"ec2": {"zone": "availability_zone"}, "openstack": {"zone": "availability_zone"},
                   "azure_arm": {"region": "location"}}


def _driver_options(ctx: _Ctx, where: str, driver: str, options: dict[str, str]) -> dict[str, str]:
    """Keep what the driver takes as a provider option; a region the driver reads from its
    Connection (ec2, openstack, gce) becomes a TO DO naming the Connection field."""
    from loom.providers.cloud import KNOWN_OPTIONS

    if driver not in KNOWN_OPTIONS:
        return options
    kept: dict[str, str] = {}
    for key, value in options.items():
        name = _OPTION_RENAMES.get(driver, {}).get(key, key)
        if name in KNOWN_OPTIONS[driver]:
            kept[name] = value
        else:
            ctx.report.todo.append(f"{where}: put {key} {value!r} in the Airflow Connection's extra.{key}")
    return kept


def _libcloud_has(driver: str) -> bool:
    try:
        from libcloud.compute.types import Provider
    except ImportError:  # pragma: no cover - libcloud is a dependency
        return True
    return driver in {p.value for p in Provider}


def _provisioner_fields(provisioner: Any) -> dict[str, Any]:
    """Old Loom nested credentials under ``auth``; Coopr kept them flat."""
    if not isinstance(provisioner, dict):
        return {}
    fields = {k: v for k, v in provisioner.items() if k != "auth"}
    if isinstance(provisioner.get("auth"), dict):
        fields.update(provisioner["auth"])
    return fields


def _split_provisioner(fields: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    options: dict[str, str] = {}
    secret: list[str] = []
    for key in sorted(fields):
        target = next((opt for opt, rx in _LOCATION_FIELDS if rx.search(key)), None)
        value = fields[key]
        if target and isinstance(value, str) and value and target not in options:
            options[target] = value
        else:
            secret.append(key)
    return options, secret


def _providermap(ctx: _Ctx, where: str, raw: Any, keep: tuple[str, ...], required: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for provider, mapping in (raw or {}).items():
        if not isinstance(mapping, dict) or mapping.get(required) in (None, ""):
            ctx.report.dropped.append(f"{where}: providermap.{provider} has no {required}: not imported")
            continue
        out[ctx.ref("providers", provider)] = {k: str(mapping[k]) for k in keep if mapping.get(k) not in (None, "")}
        extra = sorted(set(mapping) - set(keep))
        if extra:
            ctx.report.dropped.append(
                f"{where}: providermap.{provider}: {', '.join(extra)} not supported: not imported"
            )
    return out


def _convert_hardwaretype(ctx: _Ctx, raw: dict[str, Any]) -> dict[str, Any]:
    """Hardware type: ``providermap.<provider>.flavor`` (other per-provider fields reported)."""
    out = _base(ctx, "hardwaretypes", raw)
    where = f"hardwaretypes/{out['name']}"
    out["providermap"] = _providermap(ctx, where, raw.get("providermap"), ("flavor",), "flavor")
    _unknown_entity_fields(ctx, where, raw, ("providermap",))
    return out


def _convert_imagetype(ctx: _Ctx, raw: dict[str, Any]) -> dict[str, Any]:
    """Image type: ``providermap.<provider>.{image, sshuser}``."""
    out = _base(ctx, "imagetypes", raw)
    where = f"imagetypes/{out['name']}"
    out["providermap"] = _providermap(ctx, where, raw.get("providermap"), ("image", "sshuser"), "image")
    _unknown_entity_fields(ctx, where, raw, ("providermap",))
    return out


# ---------------------------------------------------------------------------------------------
# services


def _convert_service(ctx: _Ctx, raw: dict[str, Any]) -> dict[str, Any]:
    """Service: dependencies (``dependson`` -> install and runtime ``requires``), actions as shell
    actions with generated/copied/stub scripts, links."""
    out = _base(ctx, "services", raw)
    where = f"services/{out['name']}"
    deps = _dependencies(ctx, where, raw)
    if deps:
        out["dependencies"] = deps
    actions = (raw.get("provisioner") or {}).get("actions") or {}
    converted = {}
    for key, action in actions.items():
        name = _action_name(ctx, where, key)
        if name and isinstance(action, dict):
            converted[name] = _action(ctx, out["name"], name, action)
    if converted:
        out["actions"] = {a: converted[a] for a in ACTION_NAMES if a in converted}
    if isinstance(raw.get("config"), dict):
        out["config"] = _config(ctx, f"{where}: config", raw["config"])
    links = _links(ctx, where, raw.get("links"))
    if links:
        out["links"] = links
    extra = set((raw.get("provisioner") or {})) - {"actions"}
    for key in sorted(extra):
        ctx.report.dropped.append(f"{where}: provisioner.{key} is not supported: not imported")
    _unknown_entity_fields(ctx, where, raw, ("dependson", "dependencies", "provisioner", "links", "config"))
    return out


def _dependencies(ctx: _Ctx, where: str, raw: dict[str, Any]) -> dict[str, Any]:
    src = raw.get("dependencies") or {}
    out: dict[str, Any] = {}
    for key in ("provides", "conflicts"):
        names = _names(ctx, "services", src.get(key))
        if names:
            out[key] = names
    for stage in ("install", "runtime"):
        edges = {k: _names(ctx, "services", (src.get(stage) or {}).get(k)) for k in ("requires", "uses")}
        if "dependson" in raw:
            edges["requires"] = list(dict.fromkeys(edges["requires"] + _names(ctx, "services", raw["dependson"])))
        edges = {k: v for k, v in edges.items() if v}
        if edges:
            out[stage] = edges
    if "dependson" in raw:
        ctx.report.converted.append(
            f"{where}: dependson -> dependencies.install.requires and dependencies.runtime.requires"
        )
    _unknown(ctx, f"{where}: dependencies", src, ("provides", "conflicts", "install", "runtime"))
    return out


def _action_name(ctx: _Ctx, where: str, key: str) -> str | None:
    name = str(key).lower()
    name = ACTION_ALIASES.get(name, name)
    if name in ACTION_NAMES:
        return name
    ctx.report.dropped.append(f"{where}: action {key!r} is not one of {', '.join(ACTION_NAMES)}: not imported")
    return None


def _action(ctx: _Ctx, service: str, action: str, raw: dict[str, Any]) -> dict[str, Any]:
    kind = str(raw.get("type") or "").lower()
    fields = dict(raw.get("fields") or {})
    # old Loom (< 0.9.7) kept the fields on the action: script = run list / script, data = attributes / args
    if "script" in raw:
        fields.setdefault("run_list" if kind.startswith("chef") else "script", raw["script"])
    if "data" in raw:
        fields.setdefault("json_attributes" if kind.startswith("chef") else "args", raw["data"])
    if kind in ("chef-solo", "chef"):
        return _chef_action(ctx, service, action, fields)
    if kind == "shell":
        return _shell_action(ctx, service, action, fields)
    return _unsupported_action(ctx, service, action, kind, fields)


def _script_path(ctx: _Ctx, service: str, filename: str) -> str:
    """A free ``scripts/<service>/<file>`` path (relative to ``services/``)."""
    stem, dot, ext = filename.rpartition(".") if "." in filename else (filename, "", "")
    rel, n = f"scripts/{service}/{filename}", 2
    while f"services/{rel}" in ctx.files:
        rel = f"scripts/{service}/{stem}-{n}{dot}{ext}"
        n += 1
    return rel


def _chef_action(ctx: _Ctx, service: str, action: str, fields: dict[str, Any]) -> dict[str, Any]:
    where = f"services/{service}: actions.{action}"
    run_list = re.sub(r"\s+", "", str(fields.get("run_list") or ""))
    if not run_list:
        ctx.report.todo.append(
            f"{where}: chef-solo action without a run_list: the generated script fails until you add one"
        )
    attributes = _json_attributes(ctx, where, fields.get("json_attributes"))
    rel = _script_path(ctx, service, f"{action}.sh")
    ctx.files[f"services/{rel}"] = (_chef_script(service, action, run_list), 0o755)
    ctx.note_once(
        "chef-solo actions -> generated shell scripts running chef-solo (JSON attributes passed as the "
        "action's argument, cluster config merged in as Coopr did); nodes need chef-solo and the "
        "cookbooks in /var/chef/cookbooks"
    )
    _unknown(ctx, where, fields, ("run_list", "json_attributes"))
    out: dict[str, Any] = {"type": "shell", "script": rel}
    if attributes != "{}":
        out["args"] = [attributes]
    return out


def _json_attributes(ctx: _Ctx, where: str, value: Any) -> str:
    if value in (None, ""):
        return "{}"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            ctx.report.todo.append(f"{where}: json_attributes is not valid JSON ({exc}): kept as text; fix it")
            return _macros(ctx, f"{where}.args[0]", value)
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    return _macros(ctx, f"{where}.args[0]", text)


def _shell_action(ctx: _Ctx, service: str, action: str, fields: dict[str, Any]) -> dict[str, Any]:
    where = f"services/{service}: actions.{action}"
    words = _shell_args(ctx, f"{where}.script", fields.get("script"))  # "script" may carry arguments
    script = words[0] if words else ""
    args = words[1:] + _shell_args(ctx, where, fields.get("args"))
    rel = _script_path(ctx, service, _script_file_name(script or f"{action}.sh"))
    source = _find_script(ctx.scripts_from, script) if script else None
    if source is not None:
        ctx.files[f"services/{rel}"] = (source.read_bytes(), 0o755)
        ctx.report.converted.append(
            f"{where}: script {script!r} copied to services/{rel} (Coopr ran it via coopr_wrapper.sh; "
            "here the cluster config is in $LOOM_CONFIG): review it"
        )
    elif _stub(ctx, rel, service, action, f"shell script {script!r}" if script else "a shell action without a script"):
        ctx.report.todo.append(
            f"{where}: script {script!r} is not in the export{_looked_in(ctx)}: write services/{rel} "
            "(a stub that fails was written)"
        )
    _unknown(ctx, where, fields, ("script", "args"))
    return {"type": "shell", "script": rel, "args": args}


def _script_file_name(script: str) -> str:
    """The file name a Coopr script gets under ``scripts/<service>/``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(script).name).strip("-.")
    return name or "script.sh"


def _looked_in(ctx: _Ctx) -> str:
    return f" nor in {ctx.scripts_from}" if ctx.scripts_from else ""


def _shell_args(ctx: _Ctx, where: str, value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, list):
        words = [str(v) for v in value]
    else:
        try:
            words = shlex.split(str(value))
        except ValueError as exc:
            ctx.report.todo.append(f"{where}: args {value!r} cannot be split into words ({exc}): kept as one argument")
            words = [str(value)]
    return [_macros(ctx, f"{where}.args[{i}]", w) for i, w in enumerate(words)]


def _find_script(folder: Path | None, script: str) -> Path | None:
    if folder is None:
        return None
    candidates = [Path(script).name]
    if not script.startswith("/"):
        candidates.insert(0, script)
    for rel in candidates:
        path = (folder / rel).resolve()
        if path.is_file() and folder.resolve() in path.parents:
            return path
    return None


def _unsupported_action(ctx: _Ctx, service: str, action: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    rel = _script_path(ctx, service, f"{action}.sh")
    if _stub(ctx, rel, service, action, f"a {kind or 'untyped'} action"):
        ctx.report.todo.append(
            f"services/{service}: actions.{action}: automator type {kind or '(none)'!r} is not supported (fields: "
            f"{', '.join(sorted(fields)) or 'none'}): write services/{rel} (a stub that fails was written)"
        )
    return {"type": "shell", "script": rel}


def _stub(ctx: _Ctx, rel: str, service: str, action: str, what: str) -> bool:
    """Plan a failing stub at ``services/<rel>``; False if the admin already wrote that script
    (a real script is never replaced by a stub, not even with ``force``)."""
    existing = ctx.out_dir / "services" / rel
    if existing.is_file() and not _is_stub(existing):
        ctx.report.converted.append(f"services/{service}: actions.{action}: kept the existing services/{rel}")
        return False
    what = " ".join(what.split())  # one line: it goes into a comment
    message = f"{service}.{action}: not implemented: the import could not supply {what}; write services/{rel}"
    text = (
        "#!/usr/bin/env bash\n"
        f"# {STUB_MARKER}: written by `loom templates import` in place of {what} that the export\n"
        "# did not contain. Replace this file with the real script; until then the action fails.\n"
        f"echo {shlex.quote(message)} >&2\n"
        "exit 1\n"
    )
    ctx.files[f"services/{rel}"] = (text, 0o755)
    ctx.stubs.add(f"services/{rel}")
    return True


def _chef_script(service: str, action: str, run_list: str) -> str:
    return CHEF_SCRIPT.format(
        service=service, action=action, run_list=shlex.quote(run_list), label=f"{service}.{action}"
    )


CHEF_SCRIPT = """#!/usr/bin/env bash
# {label}: generated by `loom templates import` from a Loom/Coopr chef-solo action.
# Runs chef-solo with the run list below. $1 is the action's JSON attributes (macros expanded by
# Loom); as Coopr's chef-solo automator did, the cluster config ($LOOM_CONFIG) is merged on top
# and also put under coopr.cluster. The node needs chef-solo and the cookbooks (Coopr uploaded
# them at bootstrap): set LOOM_CHEF_COOKBOOKS if they are not in /var/chef/cookbooks.
set -euo pipefail
run_list={run_list}
cookbooks=${{LOOM_CHEF_COOKBOOKS:-/var/chef/cookbooks}}
if [ -z "$run_list" ]; then
  echo "{label}: the imported action has no run_list: add one to this script" >&2; exit 1
fi
if ! command -v chef-solo >/dev/null 2>&1; then
  echo "{label}: chef-solo is not installed on $(hostname): install Chef on the image or in a base service" >&2; exit 1
fi
if [ ! -d "$cookbooks" ]; then
  echo "{label}: no cookbooks in $cookbooks: copy the cookbooks Coopr used onto the node" >&2; exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "${{1:-}}" >"$work/attributes.json" <<'PY'
import json, os, sys
raw = sys.argv[1] if len(sys.argv) > 1 else ""
try:
    attrs = json.loads(raw) if raw.strip() else {{}}
except ValueError as exc:
    sys.exit(f"JSON attributes are not valid JSON: {{exc}}")
cluster = json.loads(os.environ.get("LOOM_CONFIG") or "{{}}")
for key in ["coopr"] + (["loom"] if isinstance(attrs.get("loom"), dict) else []):
    meta = attrs.setdefault(key, {{}})
    meta.update(cluster=cluster, hostname=os.environ.get("LOOM_HOST", ""), clusterId=os.environ.get("LOOM_CLUSTER", ""))
attrs.update(cluster)
json.dump(attrs, sys.stdout)
PY
printf 'cookbook_path %s\\nfile_cache_path %s\\n' "\\"$cookbooks\\"" "\\"$work/cache\\"" >"$work/solo.rb"
echo "{label}: chef-solo -o $run_list"
chef-solo -c "$work/solo.rb" -j "$work/attributes.json" -o "$run_list"
"""


# ---------------------------------------------------------------------------------------------
# templates


def _convert_partial(ctx: _Ctx, raw: dict[str, Any]) -> dict[str, Any]:
    """Partial template: ``immutable``, ``defaults.{services, config}``, ``compatibility``."""
    out = _base(ctx, "partialtemplates", raw)
    where = f"partialtemplates/{out['name']}"
    if raw.get("immutable") is not None:
        out["immutable"] = bool(raw["immutable"])
    defaults = raw.get("defaults") or {}
    services = _names(ctx, "services", defaults.get("services"))
    part: dict[str, Any] = {"services": services} if services else {}
    if isinstance(defaults.get("config"), dict) and defaults["config"]:
        part["config"] = _config(ctx, f"{where}: defaults.config", defaults["config"])
    if part:
        out["defaults"] = part
    _unknown(ctx, f"{where}: defaults", defaults, ("services", "config"))
    compat = _compatibility(ctx, where, raw.get("compatibility"))
    if compat:
        out["compatibility"] = compat
    _unknown_entity_fields(ctx, where, raw, ("immutable", "defaults", "compatibility"))
    return out


def _convert_template(ctx: _Ctx, raw: dict[str, Any]) -> dict[str, Any]:
    """Cluster template: defaults, compatibility, constraints, lease (ms -> durations), links,
    ``extends``/``includes`` (``{"name": ...}`` objects -> names)."""
    out = _base(ctx, "clustertemplates", raw)
    where = f"clustertemplates/{out['name']}"
    parent = _ref_name(raw.get("extends", raw.get("parent")))
    if parent:
        out["extends"] = ctx.ref("clustertemplates", parent)
    includes = [ctx.ref("partialtemplates", _ref_name(i)) for i in raw.get("includes") or [] if _ref_name(i)]
    if includes:
        out["includes"] = list(dict.fromkeys(includes))
    defaults = _defaults(ctx, where, raw.get("defaults") or {})
    if defaults:
        out["defaults"] = defaults
    for key, value in (
        ("compatibility", _compatibility(ctx, where, raw.get("compatibility"))),
        ("constraints", _constraints(ctx, where, raw.get("constraints") or {})),
        ("administration", _administration(ctx, where, raw.get("administration") or {})),
        ("links", _links(ctx, where, raw.get("links"))),
    ):
        if value:
            out[key] = value
    _unknown_entity_fields(ctx, where, raw, TEMPLATE_FIELDS)
    return out


def _defaults(ctx: _Ctx, where: str, raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    services = _names(ctx, "services", raw.get("services"))
    if services:
        out["services"] = services
    for key, kind in (("provider", "providers"), ("hardwaretype", "hardwaretypes"), ("imagetype", "imagetypes")):
        if raw.get(key):
            out[key] = ctx.ref(kind, raw[key])
    if raw.get("dnsSuffix"):
        out["dnsSuffix"] = str(raw["dnsSuffix"]).strip().lower().strip(".")
    if isinstance(raw.get("config"), dict) and raw["config"]:
        out["config"] = _config(ctx, f"{where}: defaults.config", raw["config"])
    _unknown(ctx, f"{where}: defaults", raw, DEFAULTS_FIELDS)
    return out


def _compatibility(ctx: _Ctx, where: str, raw: Any) -> dict[str, list[str]]:
    raw = raw or {}
    out = {kind: _names(ctx, kind, raw.get(kind)) for kind in ("services", "hardwaretypes", "imagetypes")}
    _unknown(ctx, f"{where}: compatibility", raw, ("services", "hardwaretypes", "imagetypes"))
    return {k: v for k, v in out.items() if v}


def _constraints(ctx: _Ctx, where: str, raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    layout = raw.get("layout") or {}
    groups = {k: [_names(ctx, "services", g) for g in layout.get(k) or []] for k in ("mustcoexist", "cantcoexist")}
    groups = {k: v for k, v in groups.items() if v}
    if groups:
        out["layout"] = groups
    _unknown(ctx, f"{where}: constraints.layout", layout, ("mustcoexist", "cantcoexist"))
    services = {
        ctx.ref("services", svc): _service_constraint(ctx, f"{where}: constraints.services.{svc}", spec or {})
        for svc, spec in (raw.get("services") or {}).items()
    }
    if services:
        out["services"] = services
    size = _bounds(ctx, f"{where}: constraints.size", raw.get("size") or {})
    if size:
        out["size"] = size
    _unknown(ctx, f"{where}: constraints", raw, ("layout", "services", "size"))
    return out


def _service_constraint(ctx: _Ctx, where: str, raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("hardwaretypes", "imagetypes"):
        names = _names(ctx, kind, raw.get(kind))
        if names:
            out[kind] = names
    quantities = _bounds(ctx, f"{where}.quantities", raw.get("quantities") or {})
    if quantities:
        out["quantities"] = quantities
    _unknown(ctx, where, raw, ("hardwaretypes", "imagetypes", "quantities"))
    return out


def _bounds(ctx: _Ctx, where: str, raw: dict[str, Any]) -> dict[str, int]:
    out = {}
    for key in ("min", "max"):
        if raw.get(key) not in (None, ""):
            value = _int(ctx, f"{where}.{key}", raw[key])
            if value is not None:
                out[key] = value
    _unknown(ctx, where, raw, ("min", "max"))
    return out


def _administration(ctx: _Ctx, where: str, raw: dict[str, Any]) -> dict[str, Any]:
    lease = raw.get("leaseduration") or {}
    out = {}
    for key in ("initial", "max", "step"):
        if lease.get(key) not in (None, ""):
            value = _ms_to_duration(ctx, f"{where}: administration.leaseduration.{key}", lease[key])
            if value is not None:
                out[key] = value
    _unknown(ctx, f"{where}: administration.leaseduration", lease, ("initial", "max", "step"))
    _unknown(ctx, f"{where}: administration", raw, ("leaseduration",))
    if out and any(v != 0 for v in out.values()):
        ctx.report.converted.append(f"{where}: lease durations (milliseconds) -> {out}")
    return {"leaseduration": out} if out else {}


def _ms_to_duration(ctx: _Ctx, where: str, value: Any) -> str | int | None:
    """Coopr lease milliseconds -> ``30m``/``4h``/``7d``... (``0`` stays 0; partial seconds round up)."""
    ms = _int(ctx, where, value)
    if ms is None:
        return None
    if ms < 0:
        ctx.report.dropped.append(f"{where}: negative duration {ms} ms: not imported")
        return None
    if ms == 0:
        return 0
    seconds = math.ceil(ms / 1000)
    if ms % 1000:
        ctx.report.converted.append(f"{where}: {ms} ms rounded up to {seconds} s")
    return format_duration(seconds)


CONVERTERS: dict[str, Callable[[_Ctx, dict[str, Any]], dict[str, Any]]] = {
    "providers": _convert_provider,
    "hardwaretypes": _convert_hardwaretype,
    "imagetypes": _convert_imagetype,
    "services": _convert_service,
    "partialtemplates": _convert_partial,
    "clustertemplates": _convert_template,
}


# ---------------------------------------------------------------------------------------------
# output


def _yaml_text(kind: str, data: dict[str, Any]) -> str:
    header = (
        f"# yaml-language-server: $schema=../schemas/{kind}.schema.json\n"
        "# Imported from a Loom/Coopr export by `loom templates import`: review before use.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def _is_stub(path: Path) -> bool:
    try:
        return STUB_MARKER in path.read_text(encoding="utf-8", errors="replace")[:400]
    except OSError:
        return False


def _write(ctx: _Ctx, out_dir: Path, force: bool) -> None:
    """Write every planned file, or none if one exists already (unless ``force``); an earlier
    import's stub is no clash."""
    clashes = sorted(rel for rel in ctx.files if rel not in ctx.stubs and (out_dir / rel).exists())
    if clashes and not force:
        shown = ", ".join(clashes[:10]) + (f" and {len(clashes) - 10} more" if len(clashes) > 10 else "")
        raise ImportConflict(f"{out_dir}: would overwrite {shown}: import elsewhere (--out) or pass --force")
    for rel, (content, mode) in sorted(ctx.files.items()):
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        path.chmod(mode)
        ctx.report.written.append(path)


def _validate(ctx: _Ctx, out_dir: Path) -> None:
    from loom.spec.loader import load_catalog

    ctx.report.problems.extend(load_catalog(out_dir).problems)
