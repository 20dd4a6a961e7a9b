"""Does an existing layout satisfy a template's constraints? (``sync`` asks this after the
template changed; the solver only builds layouts, this only checks one.)"""

from __future__ import annotations

from loom.layout import Layout
from loom.spec.loader import Catalog
from loom.spec.models import ClusterTemplate


def violations(template: ClusterTemplate, layout: Layout, catalog: Catalog) -> list[str]:
    """Every way ``layout`` breaks ``template``, as sentences; empty when it fits."""
    out: list[str] = []
    size, services = len(layout.nodes), set(layout.services)
    limits = template.constraints.size
    if not limits.min <= size <= limits.max:
        out.append(f"the cluster has {size} nodes; the template allows {limits.min}..{limits.max}")
    allowed = template.compatibility.services
    for svc in sorted(services):
        if svc not in catalog.services:
            out.append(f"service {svc!r} is no longer in the catalog")
        elif allowed and svc not in allowed:
            out.append(f"service {svc!r} is on the cluster but the template no longer allows it")
    for svc, rule in sorted(template.constraints.services.items()):
        if svc not in services:
            continue
        count = len(layout.nodes_with(svc))
        q = rule.quantities
        if q.min is not None and count < q.min:
            out.append(f"{svc} runs on {count} node(s); the template now needs at least {q.min}")
        if q.max is not None and count > q.max:
            out.append(f"{svc} runs on {count} node(s); the template now allows at most {q.max}")
        for node in layout.nodes_with(svc):
            if rule.hardwaretypes and node.hardwaretype not in rule.hardwaretypes:
                out.append(f"{node.hostname} has hardware type {node.hardwaretype!r}, not allowed for {svc}")
            if rule.imagetypes and node.imagetype not in rule.imagetypes:
                out.append(f"{node.hostname} has image type {node.imagetype!r}, not allowed for {svc}")
    for node in layout.nodes:
        on = set(node.services)
        for group in template.constraints.layout.cantcoexist:
            present = set(group) & services
            if len(present) > 1 and present <= on:
                out.append(f"{node.hostname} holds {', '.join(sorted(present))}, which now cantcoexist")
        for group in template.constraints.layout.mustcoexist:
            present = set(group) & services
            if present & on and not present <= on:
                missing = ", ".join(sorted(present - on))
                out.append(f"{node.hostname} lacks {missing}, which must now coexist with {', '.join(sorted(present & on))}")
    return out
