"""Cross-reference checks across the catalog (names that must exist, files that must be there)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loom.spec.models import ClusterTemplate, Service

if TYPE_CHECKING:
    from loom.spec.loader import Catalog


def provided_names(catalog: Catalog) -> dict[str, set[str]]:
    """Map every name (a service or a virtual ``provides`` name) to the services providing it."""
    out: dict[str, set[str]] = {}
    for service in catalog.services.values():
        for name in service.provides:
            out.setdefault(name, set()).add(service.name)
    return out


def check_service(catalog: Catalog, service: Service) -> list[str]:
    shown = catalog.file_of("services", service.name)
    problems = []
    for action, spec in service.actions.items():
        script = catalog.services_dir / spec.script
        if not script.is_file():
            problems.append(
                f"{shown}: actions.{action}.script: {spec.script!r} not found in "
                f"{catalog.services_dir}: add the script or fix the path"
            )
    return problems


def check_template(catalog: Catalog, template: ClusterTemplate) -> list[str]:
    shown = catalog.file_of("clustertemplates", template.name)
    problems: list[str] = []
    defaults, compat = template.defaults, template.compatibility
    provides = provided_names(catalog)

    if defaults.provider not in catalog.providers:
        problems.append(f"{shown}: defaults.provider: unknown provider {defaults.provider!r}")
    for fld, names in (("compatibility.services", compat.services), ("defaults.services", defaults.services)):
        for i, svc in enumerate(names):
            if svc not in catalog.services:
                file_hint = catalog.file_of("services", svc)
                problems.append(
                    f"{shown}: {fld}[{i}]: unknown or invalid service {svc!r} (see {file_hint})"
                )
    if compat.services:
        for i, svc in enumerate(defaults.services):
            if svc not in compat.services:
                problems.append(
                    f"{shown}: defaults.services[{i}]: {svc!r} is not in compatibility.services"
                )
    for kind, default, allowed in (
        ("hardwaretypes", defaults.hardwaretype, compat.hardwaretypes),
        ("imagetypes", defaults.imagetype, compat.imagetypes),
    ):
        entities = getattr(catalog, kind)
        field = kind[:-1]
        if default not in entities:
            problems.append(f"{shown}: defaults.{field}: unknown {field} {default!r}")
        elif defaults.provider not in entities[default].providermap:
            problems.append(
                f"{shown}: defaults.{field}: {default!r} has no providermap entry for provider "
                f"{defaults.provider!r}: add one in {catalog.file_of(kind, default)}"
            )
        for i, name in enumerate(allowed):
            if name not in entities:
                problems.append(f"{shown}: compatibility.{kind}[{i}]: unknown {field} {name!r}")
    for i, group in enumerate(template.constraints.layout.cantcoexist + template.constraints.layout.mustcoexist):
        for svc in group:
            if svc not in catalog.services:
                problems.append(f"{shown}: constraints.layout: group {i} names unknown service {svc!r}")
    for svc in template.constraints.services:
        if svc not in catalog.services:
            problems.append(f"{shown}: constraints.services.{svc}: unknown service {svc!r}")
    for svc_name in defaults.services:
        service = catalog.services.get(svc_name)
        if service is None:
            continue
        for kind in ("install", "runtime"):
            for dep in getattr(service.dependencies, kind).requires:
                if dep not in provides:
                    problems.append(
                        f"{shown}: defaults.services: {svc_name!r} requires {dep!r} "
                        f"({kind}), which no service provides"
                    )
    return problems
