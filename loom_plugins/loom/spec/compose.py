"""Cluster template composition: ``extends`` (a parent's fields are the defaults) and
``includes`` (partial templates: service and compatibility sets unioned, config deep-merged,
an ``immutable`` partial's config keys fixed). Works on raw documents, before validation, so
a child may leave out what its parent or partials give it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loom.merge import deep_merge, leaf_paths

if TYPE_CHECKING:
    from loom.spec.loader import Catalog, _Raw

OWN_FIELDS = ("name", "label", "description", "icon", "extends")


def _extended(
    name: str, raws: dict[str, _Raw], chain: tuple[str, ...], shown: str
) -> tuple[dict[str, Any] | None, list[str]]:
    """``name``'s document merged over its ancestors'; problems are reported on ``shown``
    (the file of the template being composed), naming the ancestor at fault."""
    raw = raws[name]
    parent = raw.data.get("extends")
    if parent is None:
        return dict(raw.data), []
    via = f" (via {name})" if len(chain) > 1 else ""
    if not isinstance(parent, str) or parent not in raws:
        known = ", ".join(sorted(raws)) or "none"
        return None, [f"{shown}: extends: unknown cluster template {parent!r}{via} (known: {known})"]
    if parent in chain:
        cycle = " -> ".join((*chain, parent))
        return None, [f"{shown}: extends: inheritance cycle {cycle}"]
    base, problems = _extended(parent, raws, (*chain, parent), shown)
    if base is None:
        return None, problems
    inherited = {k: v for k, v in base.items() if k not in OWN_FIELDS}
    merged = deep_merge(inherited, {k: v for k, v in raw.data.items() if k != "includes"})
    merged["includes"] = list(dict.fromkeys([*base.get("includes", []), *raw.data.get("includes", [])]))
    return merged, []


def _union(*lists: list[Any]) -> list[Any]:
    return list(dict.fromkeys(x for lst in lists for x in lst))


def compose_template(name: str, raws: dict[str, _Raw], catalog: Catalog) -> tuple[dict[str, Any] | None, list[str]]:
    """The template's document with its parent and partials merged in, or problems."""
    raw = raws[name]
    data, problems = _extended(name, raws, (name,), raw.shown)
    if data is None:
        return None, problems
    includes = data.get("includes") or []
    if not includes:
        return data, []
    if not isinstance(includes, list):
        return None, [f"{raw.shown}: includes: expected a list of partial template names"]
    defaults = dict(data.get("defaults") or {})
    compat = dict(data.get("compatibility") or {})
    config: dict[str, Any] = {}
    immutable: dict[str, str] = {}
    services: list[str] = []
    for i, pname in enumerate(includes):
        partial = catalog.partialtemplates.get(pname)
        if partial is None:
            problems.append(
                f"{raw.shown}: includes[{i}]: unknown or invalid partial template {pname!r} "
                f"(see {catalog.file_of('partialtemplates', pname)})"
            )
            continue
        services = _union(services, partial.defaults.services)
        for kind in ("services", "hardwaretypes", "imagetypes"):
            compat[kind] = _union(getattr(partial.compatibility, kind), compat.get(kind) or [])
        config = deep_merge(config, partial.defaults.config)
        if partial.immutable:
            immutable.update({path: pname for path in leaf_paths(partial.defaults.config)})
    own_config = defaults.get("config") or {}
    own_paths = leaf_paths(own_config)
    for path, pname in sorted(immutable.items()):
        if path in own_paths and own_paths[path] != leaf_paths(config)[path]:
            problems.append(
                f"{raw.shown}: defaults.config.{path}: set by immutable partial {pname!r}; "
                "remove it from this template"
            )
    if problems:
        return None, problems
    defaults["services"] = _union(services, defaults.get("services") or [])
    defaults["config"] = deep_merge(config, own_config)
    data["defaults"] = defaults
    data["compatibility"] = {k: v for k, v in compat.items() if v}
    data["immutable_config"] = immutable
    return data, []
