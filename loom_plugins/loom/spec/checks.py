"""Cross-reference checks across the catalog (names that must exist, files that must be there)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphlib import CycleError, TopologicalSorter

from loom.spec.models import ClusterTemplate, PartialTemplate, Provider, Service

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
        for fld, rel, kind in spec.required_paths():  # every automator's files, e.g. script, playbook
            path = catalog.services_dir / rel
            if not (path.is_file() if kind == "file" else path.is_dir()):
                what = "the script" if fld == "script" else ("the file" if kind == "file" else "the folder")
                problems.append(
                    f"{shown}: actions.{action}.{fld}: {rel!r} not found in "
                    f"{catalog.services_dir}: add {what} or fix the path"
                )
    return problems


def check_provider(catalog: Catalog, provider: Provider) -> list[str]:
    """The driver exists, its options are ones it knows (credentials belong in the Connection),
    and it names a Connection when it needs one."""
    from loom.errors import ProviderError

    shown = catalog.file_of("providers", provider.name)
    if provider.driver == "local":
        return []
    problems = []
    if not provider.connection:
        problems.append(f"{shown}: connection: driver {provider.driver!r} needs an Airflow Connection id "
                        "(credentials live there, never in this file)")
    try:
        if provider.driver == "static":
            from loom.providers.static import parse_hosts

            parse_hosts(provider.name, provider.options)
        else:
            from loom.providers.cloud import check_options

            check_options(provider.name, provider.driver, provider.options)
    except ProviderError as exc:
        field = "driver" if "not supported" in str(exc) else "options"
        problems.append(f"{shown}: {field}: {exc}")
    return problems


def check_service_graph(catalog: Catalog) -> set[str]:
    """Catalog-wide service checks; records problems and returns the services to drop:
    requires naming nothing, requiring what one conflicts with, install/runtime cycles."""
    provides = provided_names(catalog)
    bad: set[str] = set()
    for svc in sorted(catalog.services.values(), key=lambda s: s.name):
        shown = catalog.file_of("services", svc.name)
        deps = svc.dependencies
        for kind in ("install", "runtime"):
            for i, need in enumerate(getattr(deps, kind).requires):
                if need not in provides:
                    catalog.problems.append(
                        f"{shown}: dependencies.{kind}.requires[{i}]: {need!r} is provided by no service"
                    )
                    bad.add(svc.name)
                elif need in deps.conflicts or provides[need] & set(deps.conflicts):
                    catalog.problems.append(
                        f"{shown}: dependencies.conflicts: {svc.name!r} both requires and conflicts with {need!r}"
                    )
                    bad.add(svc.name)
    for kind in ("install", "runtime"):
        graph = {
            svc.name: {
                p for need in getattr(svc.dependencies, kind).requires + getattr(svc.dependencies, kind).uses
                for p in provides.get(need, ()) if p != svc.name
            }
            for svc in catalog.services.values()
        }
        try:
            TopologicalSorter(graph).prepare()
        except CycleError as exc:
            cycle = exc.args[1]
            first = sorted(set(cycle))[0]
            catalog.problems.append(
                f"{catalog.file_of('services', first)}: dependencies.{kind}: dependency cycle "
                + " -> ".join(reversed(cycle))
            )
            bad.update(cycle)
    return bad


def check_partial(catalog: Catalog, partial: PartialTemplate) -> list[str]:
    shown = catalog.file_of("partialtemplates", partial.name)
    problems = []
    for fld, names in (("defaults.services", partial.defaults.services), ("compatibility.services", partial.compatibility.services)):
        for i, svc in enumerate(names):
            if svc not in catalog.services:
                problems.append(f"{shown}: {fld}[{i}]: unknown or invalid service {svc!r}")
    for kind in ("hardwaretypes", "imagetypes"):
        for i, name in enumerate(getattr(partial.compatibility, kind)):
            if name not in getattr(catalog, kind):
                problems.append(f"{shown}: compatibility.{kind}[{i}]: unknown {kind[:-1]} {name!r}")
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
    for svc, constraint in template.constraints.services.items():
        if svc not in catalog.services:
            problems.append(f"{shown}: constraints.services.{svc}: unknown service {svc!r}")
        for kind in ("hardwaretypes", "imagetypes"):
            for i, name in enumerate(getattr(constraint, kind)):
                if name not in getattr(catalog, kind):
                    problems.append(f"{shown}: constraints.services.{svc}.{kind}[{i}]: unknown {kind[:-1]} {name!r}")
    present = [s for s in defaults.services if s in catalog.services]
    for svc in present:
        for other in catalog.services[svc].dependencies.conflicts:
            clash = [p for p in present if p != svc and other in catalog.services[p].provides]
            if clash:
                problems.append(f"{shown}: defaults.services: {svc!r} conflicts with {clash[0]!r}")
    chosen = {n for s in present for n in catalog.services[s].provides}
    for svc_name in present:
        for kind in ("install", "runtime"):
            for dep in getattr(catalog.services[svc_name].dependencies, kind).requires:
                if dep not in chosen:
                    options = ", ".join(sorted(provides.get(dep, ()))) or "none"
                    problems.append(
                        f"{shown}: defaults.services: {svc_name!r} requires {dep!r} ({kind}), which no "
                        f"default service provides; add one of: {options}"
                    )
    return problems + check_hooks(catalog, template, shown)


# (operation, phase) at which a cluster has no machines to run a command on.
NO_MACHINES = {("create", "on_start"), ("delete", "on_success")}


def check_hooks(catalog: Catalog, template: ClusterTemplate, shown: str) -> list[str]:
    from loom.spec.models import CommandHook

    problems = []
    for operation, phases in template.hooks.items():
        for phase in ("on_start", "on_success", "on_failure"):
            for i, hook in enumerate(getattr(phases, phase)):
                where = f"{shown}: hooks.{operation}.{phase}[{i}]"
                if not isinstance(hook, CommandHook):
                    continue
                if hook.run_on == "nodes" and (operation, phase) in NO_MACHINES:
                    problems.append(f"{where}: run_on: the cluster has no machines at {operation} {phase}: use run_on: worker")
                for j, svc in enumerate(hook.services):
                    if svc not in catalog.services:
                        problems.append(f"{where}.services[{j}]: unknown service {svc!r}")
                if hook.services and hook.run_on != "nodes":
                    problems.append(f"{where}.services: only meaningful with run_on: nodes")
    return problems
