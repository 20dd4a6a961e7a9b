"""Deep merge of free-form config (later layers win; mappings merge, everything else replaces)."""

from __future__ import annotations

import copy
from typing import Any


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def leaf_paths(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: every non-mapping value by its dotted path."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(leaf_paths(value, path + "."))
        else:
            out[path] = value
    return out


def check_immutable(override: dict[str, Any], base: dict[str, Any], immutable: dict[str, str], field: str) -> list[str]:
    """Problems for every immutable path that ``override`` would change (``field`` names where)."""
    current = leaf_paths(base)
    wanted = leaf_paths(override)
    problems = []
    for path, owner in sorted(immutable.items()):
        touched = [p for p in wanted if p == path or p.startswith(path + ".") or path.startswith(p + ".")]
        if any(wanted[p] != current.get(p) for p in touched):
            problems.append(f"{field}.{path}: fixed by immutable partial {owner!r}; it cannot be overridden")
    return problems
