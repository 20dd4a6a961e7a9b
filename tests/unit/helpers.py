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

from loom.layout import Layout
from loom.spec.loader import Catalog, load_catalog
from loom.spec.models import ClusterTemplate

# Two providers: "local" maps everything; "cloud" additionally has the "gpu" hardware type and
# lacks the "ubuntu" image type, so provider-dependent filtering can be exercised.
BASICS: dict[str, Any] = {
    "providers/local.yaml": {"name": "local", "driver": "local"},
    "providers/cloud.yaml": {"name": "cloud", "driver": "ec2", "connection": "aws"},
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


# --- the layout oracle: independent of the solver, used by every solver test ---------------
def constrained_services(template: ClusterTemplate) -> set[str]:
    c = template.constraints
    named = set(c.services)
    for group in c.layout.cantcoexist + c.layout.mustcoexist:
        named.update(group)
    return named


def assert_valid(template: ClusterTemplate, layout: Layout, catalog: Catalog) -> None:
    """Every rule of the layout solver holds on ``layout`` (whatever produced it)."""
    c = template.constraints
    services = set(layout.services)
    size = len(layout.nodes)
    free = services - constrained_services(template)
    assert len({n.number for n in layout.nodes}) == size
    for node in layout.nodes:
        on = set(node.services)
        assert node.hostname == f"{layout.cluster}-{node.number}"
        assert list(node.services) == sorted(on) and on <= services and on, node
        assert free <= on, f"{node.hostname} lacks services that go everywhere: {free - on}"
        for group in c.layout.cantcoexist:
            present = set(group) & services
            assert not (len(present) > 1 and present <= on), f"{node.hostname} holds all of {present}"
        for group in c.layout.mustcoexist:
            present = set(group) & services
            assert not (present & on) or present <= on, f"{node.hostname} holds part of {present}"
        for svc in on:
            sc = c.services.get(svc)
            assert not (sc and sc.hardwaretypes) or node.hardwaretype in sc.hardwaretypes, (node, svc)
            assert not (sc and sc.imagetypes) or node.imagetype in sc.imagetypes, (node, svc)
        hw = catalog.hardwaretypes[node.hardwaretype].providermap[layout.provider]
        im = catalog.imagetypes[node.imagetype].providermap[layout.provider]
        assert (node.flavor, node.image, node.sshuser) == (hw.flavor, im.image, im.sshuser)
        for kind, value in (("hardwaretypes", node.hardwaretype), ("imagetypes", node.imagetype)):
            allowed = getattr(template.compatibility, kind)
            assert not allowed or value in allowed, (node, kind)
    for svc in services:
        count = len(layout.nodes_with(svc))
        q = c.services[svc].quantities if svc in c.services else None
        lo = q.min if q and q.min is not None else 1
        hi = q.max if q and q.max is not None else size
        assert lo <= count <= hi, f"{svc}: {count} nodes, wanted {lo}..{hi}"
