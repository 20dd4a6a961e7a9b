"""Build real template trees on disk for the unit tests (no mocks).

``write_templates(tmp_path, files)`` writes ``tmp_path/templates/<relative path>`` for every entry
of ``files`` (a mapping of relative path -> YAML text, or a dict/list dumped as YAML, or ``None``
for an empty script file) and returns ``load_catalog`` of that folder. ``BASICS`` is a minimal
valid set of providers, hardware and image types that synthetic catalogs start from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from loom.spec.loader import Catalog, load_catalog

# Two providers: "local" maps everything; "cloud" additionally has the "gpu" hardware type and
# lacks the "ubuntu" image type, so provider-dependent filtering can be exercised.
BASICS: dict[str, Any] = {
    "providers/local.yaml": {"name": "local", "driver": "local"},
    "providers/cloud.yaml": {"name": "cloud", "driver": "dummy"},
    "hardwaretypes/small.yaml": {
        "name": "small",
        "providermap": {"local": {"flavor": "local-small"}, "cloud": {"flavor": "s-1"}},
    },
    "hardwaretypes/large.yaml": {
        "name": "large",
        "providermap": {"local": {"flavor": "local-large"}, "cloud": {"flavor": "l-8"}},
    },
    "hardwaretypes/gpu.yaml": {"name": "gpu", "providermap": {"cloud": {"flavor": "g-1"}}},
    "imagetypes/debian.yaml": {
        "name": "debian",
        "providermap": {"local": {"image": "host"}, "cloud": {"image": "deb-12", "sshuser": "admin"}},
    },
    "imagetypes/ubuntu.yaml": {"name": "ubuntu", "providermap": {"local": {"image": "host-ubuntu"}}},
    "services/scripts/noop.sh": "#!/bin/sh\nexit 0\n",
}


def write_tree(root: Path, files: dict[str, Any]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        else:
            text = yaml.safe_dump(content, sort_keys=False)
        path.write_text(text, encoding="utf-8")
    return root


def write_templates(tmp_path: Path, files: dict[str, Any], basics: bool = True) -> Catalog:
    """Write a ``templates`` folder under ``tmp_path`` and load it."""
    root = tmp_path / "templates"
    write_tree(root, {**(BASICS if basics else {}), **files})
    return load_catalog(root)


def service(
    name: str,
    actions: tuple[str, ...] | list[str] = ("install", "configure", "start", "stop"),
    *,
    provides: list[str] | None = None,
    conflicts: list[str] | None = None,
    install_requires: list[str] | None = None,
    install_uses: list[str] | None = None,
    runtime_requires: list[str] | None = None,
    runtime_uses: list[str] | None = None,
) -> dict[str, Any]:
    """A service entity whose actions all run ``scripts/noop.sh`` (present in ``BASICS``)."""
    deps: dict[str, Any] = {}
    if provides:
        deps["provides"] = provides
    if conflicts:
        deps["conflicts"] = conflicts
    for kind, requires, uses in (
        ("install", install_requires, install_uses),
        ("runtime", runtime_requires, runtime_uses),
    ):
        edges = {k: v for k, v in (("requires", requires), ("uses", uses)) if v}
        if edges:
            deps[kind] = edges
    data: dict[str, Any] = {"name": name}
    if deps:
        data["dependencies"] = deps
    data["actions"] = {a: {"type": "shell", "script": "scripts/noop.sh", "args": [a]} for a in actions}
    return data


def cluster_template(
    name: str,
    services: list[str],
    *,
    provider: str = "local",
    hardwaretype: str = "small",
    imagetype: str = "debian",
    compatibility: dict[str, Any] | None = None,
    constraints: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "defaults": {
            "services": services,
            "provider": provider,
            "hardwaretype": hardwaretype,
            "imagetype": imagetype,
        },
    }
    if compatibility is not None:
        data["compatibility"] = compatibility
    if constraints is not None:
        data["constraints"] = constraints
    data.update(extra)
    return data
