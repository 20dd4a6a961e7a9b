"""The layout solver: (template, request, catalog) -> Layout, or a LayoutError that says why.

Semantics follow LOOM_SEMANTICS.md: services without constraints go on every node; candidate
node layouts honour cantcoexist / mustcoexist and per-service hardware/image constraints; node
counts honour quantities and size. This first version enumerates service subsets of the
*constrained* services only, which is small for real templates; the scalable solver replaces
``_candidate_layouts``/``_distribute`` without changing this module's interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from loom.errors import LayoutError, RequestError
from loom.layout import Layout, NodeSpec
from loom.merge import deep_merge
from loom.names import check_cluster_name
from loom.spec.checks import provided_names
from loom.spec.loader import Catalog
from loom.spec.models import ClusterTemplate, CreateRequest

MAX_CONSTRAINED = 16


@dataclass(frozen=True)
class _Candidate:
    services: frozenset[str]
    hardwaretype: str
    imagetype: str

    def sort_key(self) -> tuple[int, tuple[str, ...]]:
        return (-len(self.services), tuple(sorted(self.services)))


def solve(template: ClusterTemplate, request: CreateRequest, catalog: Catalog) -> Layout:
    cluster = check_cluster_name(request.cluster)
    size = request.size if request.size is not None else template.constraints.size.min
    limits = template.constraints.size
    if not limits.min <= size <= limits.max:
        raise RequestError(
            f"size: {size} is outside the template {template.name!r}'s allowed range "
            f"{limits.min}..{limits.max}"
        )
    provider = request.provider or template.defaults.provider
    if provider not in catalog.providers:
        raise RequestError(f"provider: unknown provider {provider!r} (known: {', '.join(sorted(catalog.providers))})")
    services = _requested_services(template, request, catalog)
    hardware = _allowed_types(template, request, catalog, "hardwaretypes", provider)
    images = _allowed_types(template, request, catalog, "imagetypes", provider)

    candidates = _candidate_layouts(template, services, hardware, images)
    if not candidates:
        raise LayoutError(
            f"template {template.name!r}: no node can hold any combination of {sorted(services)} "
            "under the layout and hardware/image constraints"
        )
    counts = _distribute(template, services, candidates, size)
    nodes = _number_nodes(cluster, template, provider, candidates, counts, catalog)
    config = deep_merge(template.defaults.config, request.config or {})
    return Layout(
        cluster=cluster,
        template=template.name,
        provider=provider,
        services=tuple(sorted(services)),
        nodes=tuple(nodes),
        config=config,
        dns_suffix=template.defaults.dnsSuffix,
    )


def _requested_services(template: ClusterTemplate, request: CreateRequest, catalog: Catalog) -> set[str]:
    requested = list(request.services) if request.services is not None else list(template.defaults.services)
    if not requested:
        raise RequestError("services: the cluster needs at least one service")
    allowed = template.compatibility.services
    for svc in requested:
        if svc not in catalog.services:
            raise RequestError(f"services: unknown service {svc!r}")
        if allowed and svc not in allowed:
            raise RequestError(
                f"services: {svc!r} is not allowed by template {template.name!r} "
                f"(allowed: {', '.join(allowed)})"
            )
    chosen = set(requested)
    provides = provided_names(catalog)
    present = {name for svc in chosen for name in catalog.services[svc].provides}
    for svc in sorted(chosen):
        deps = catalog.services[svc].dependencies
        for kind in ("install", "runtime"):
            for need in getattr(deps, kind).requires:
                if need not in present:
                    options = ", ".join(sorted(provides.get(need, ()))) or "none available"
                    raise RequestError(
                        f"services: {svc!r} requires {need!r} ({kind}); add one of: {options}"
                    )
        for other in deps.conflicts:
            clash = [s for s in chosen if other in catalog.services[s].provides and s != svc]
            if clash:
                raise RequestError(f"services: {svc!r} conflicts with {clash[0]!r}; remove one of them")
    return chosen


def _allowed_types(
    template: ClusterTemplate, request: CreateRequest, catalog: Catalog, kind: str, provider: str
) -> list[str]:
    field = kind[:-1]
    entities = getattr(catalog, kind)
    wanted = getattr(request, field)
    default = getattr(template.defaults, field)
    compat = getattr(template.compatibility, kind) or sorted(entities)
    if wanted is not None:
        if wanted not in entities:
            raise RequestError(f"{field}: unknown {field} {wanted!r}")
        if wanted not in compat:
            raise RequestError(f"{field}: {wanted!r} is not allowed by template {template.name!r}")
        order = [wanted]
    else:
        order = [default] + [t for t in compat if t != default]
    usable = [t for t in order if t in entities and provider in entities[t].providermap]
    if not usable:
        raise RequestError(f"{field}: no {field} of template {template.name!r} is mapped for provider {provider!r}")
    return usable


def _constrained(template: ClusterTemplate, services: set[str]) -> set[str]:
    c = template.constraints
    named = set(c.services)
    for group in c.layout.cantcoexist + c.layout.mustcoexist:
        named.update(group)
    return named & services


def _set_ok(template: ClusterTemplate, chosen: frozenset[str], services: set[str]) -> bool:
    for group in template.constraints.layout.cantcoexist:
        present = set(group) & services
        if len(present) > 1 and present <= chosen:
            return False
    for group in template.constraints.layout.mustcoexist:
        present = set(group) & services
        if present & chosen and not present <= chosen:
            return False
    return True


def _candidate_layouts(
    template: ClusterTemplate, services: set[str], hardware: list[str], images: list[str]
) -> list[_Candidate]:
    constrained = sorted(_constrained(template, services))
    if len(constrained) > MAX_CONSTRAINED:
        raise LayoutError(
            f"template {template.name!r}: {len(constrained)} constrained services; this solver "
            f"handles at most {MAX_CONSTRAINED}"
        )
    everywhere = services - set(constrained)
    per_service = template.constraints.services
    out = []
    for k in range(len(constrained), -1, -1):
        for subset in combinations(constrained, k):
            chosen = frozenset(subset)
            if not chosen and not everywhere:
                continue
            if not _set_ok(template, chosen, services):
                continue
            hw = [h for h in hardware if all(
                not per_service.get(s) or not per_service[s].hardwaretypes or h in per_service[s].hardwaretypes
                for s in chosen)]
            im = [i for i in images if all(
                not per_service.get(s) or not per_service[s].imagetypes or i in per_service[s].imagetypes
                for s in chosen)]
            if hw and im:
                out.append(_Candidate(chosen | everywhere, hw[0], im[0]))
    return sorted(out, key=_Candidate.sort_key)


def _bounds(template: ClusterTemplate, services: set[str], size: int) -> dict[str, tuple[int, int]]:
    out = {}
    for svc in services:
        q = template.constraints.services.get(svc)
        lo = q.quantities.min if q and q.quantities.min is not None else 1
        hi = q.quantities.max if q and q.quantities.max is not None else size
        out[svc] = (lo, hi)
    return out


def _distribute(
    template: ClusterTemplate, services: set[str], candidates: list[_Candidate], size: int
) -> list[int]:
    bounds = _bounds(template, services, size)
    counts = {svc: 0 for svc in services}
    chosen = [0] * len(candidates)

    def search(i: int, left: int) -> bool:
        if i == len(candidates):
            return left == 0 and all(counts[s] >= bounds[s][0] for s in services)
        cand = candidates[i].services
        room = min([left] + [bounds[s][1] - counts[s] for s in cand])
        for n in range(room, -1, -1):
            for s in cand:
                counts[s] += n
            chosen[i] = n
            if search(i + 1, left - n):
                return True
            for s in cand:
                counts[s] -= n
        chosen[i] = 0
        return False

    if not search(0, size):
        raise LayoutError(_explain(template, services, candidates, bounds, size))
    return chosen


def _explain(
    template: ClusterTemplate,
    services: set[str],
    candidates: list[_Candidate],
    bounds: dict[str, tuple[int, int]],
    size: int,
) -> str:
    reachable = {s: any(s in c.services for c in candidates) for s in services}
    for svc, ok in sorted(reachable.items()):
        if not ok:
            return (
                f"no layout for {size} nodes of template {template.name!r}: service {svc!r} fits on "
                "no node under the layout/hardware/image constraints"
            )
    mins = ", ".join(f"{s} min {lo}" for s, (lo, _) in sorted(bounds.items()) if lo > 1)
    maxs = ", ".join(f"{s} max {hi}" for s, (_, hi) in sorted(bounds.items()) if hi < size)
    apart = "; ".join("/".join(g) for g in template.constraints.layout.cantcoexist)
    return (
        f"no layout for {size} nodes of template {template.name!r}: the quantities "
        f"({mins or 'each service at least 1'}{'; ' + maxs if maxs else ''}) cannot all hold "
        f"on {size} nodes{' while keeping apart ' + apart if apart else ''}; "
        "change the size or the services"
    )


def _number_nodes(
    cluster: str,
    template: ClusterTemplate,
    provider: str,
    candidates: list[_Candidate],
    counts: list[int],
    catalog: Catalog,
) -> list[NodeSpec]:
    nodes = []
    number = 0
    for cand, n in zip(candidates, counts):
        hw = catalog.hardwaretypes[cand.hardwaretype].providermap[provider]
        im = catalog.imagetypes[cand.imagetype].providermap[provider]
        for _ in range(n):
            number += 1
            nodes.append(
                NodeSpec(
                    number=number,
                    hostname=f"{cluster}-{number}",
                    hardwaretype=cand.hardwaretype,
                    imagetype=cand.imagetype,
                    flavor=hw.flavor,
                    image=im.image,
                    sshuser=im.sshuser,
                    services=tuple(sorted(cand.services)),
                )
            )
    return nodes
