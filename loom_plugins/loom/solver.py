"""The layout solver: which services run on which machines (LOOM_SEMANTICS.md, "Layout solver").

Three entry points, each returning a :class:`Layout` or raising :class:`RequestError` (a bad
request) or :class:`LayoutError` (no layout exists; the message names the constraints and numbers):

* :func:`solve` lays out a new cluster;
* :func:`solve_add_services` puts new services on a live cluster's existing nodes;
* :func:`solve_expand` adds nodes to a live cluster.

How it works (no enumeration of service subsets, nothing that grows with the node count):

1. *Units.* Services that must coexist are merged into one unit (all-or-none on every node);
   services named by no constraint go on every node and take no part in the search.
2. *Blocks.* Nodes that may hold the same units form a block: for new nodes, one block per
   maximal set of units that some (hardware, image) pair admits; for add-services, one block per
   group of identical existing nodes.
3. *Components.* Within a block, units linked by cantcoexist groups form components. A node's
   services are one independent choice per component, so only the few unit sets *within one
   component* that break no cantcoexist group are enumerated.
4. *Integer program* (HiGHS, imported on first use): how many nodes of each block take each
   set of each component, so every quantity, the node totals and "every node runs something"
   hold. Its size does not depend on the number of nodes. It proves infeasibility, or picks,
   lexicographically, the most service placements (Loom preferred node layouts with more
   services), then alphabetically earlier services, then (add-services) lower-numbered nodes.
5. *Nodes.* Per block the components' sets are stacked largest first; each node gets the first
   hardware and image type, in preference order, that all its services allow. New nodes are
   sorted by (more services, service names) and numbered.
6. *Explanations.* Cheap necessary conditions give specific sentences; otherwise a deletion
   filter finds a minimal set of constraints that cannot hold together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from math import ceil
from typing import Any

from loom.errors import LayoutError, RequestError
from loom.layout import Layout, NodeSpec
from loom.config import cluster_config
from loom.names import check_cluster_name
from loom.spec.checks import provided_names
from loom.spec.loader import Catalog
from loom.spec.models import ClusterTemplate, CreateRequest

Atom = tuple[str, str]  # ("min"|"max"|"hw"|"img", service) | ("cant"|"must", group index) | NONEMPTY

MAX_COLUMNS = 50_000
TIME_LIMIT_SECONDS = 30.0
NONEMPTY: Atom = ("nonempty", "")
# Order in which the deletion filter tries to drop constraints: those tried last are kept when
# several minimal explanations exist, so minimums and cantcoexist groups are preferred.
_DROP_ORDER = ("nonempty", "max", "img", "hw", "must", "cant", "min")
_SHOW_ORDER = ("min", "max", "cant", "must", "hw", "img", "nonempty")


# --- public API ---------------------------------------------------------------------------------


def solve(template: ClusterTemplate, request: CreateRequest, catalog: Catalog) -> Layout:
    """Lay out a new cluster: every node's services, hardware and image type, numbered 1..N.

    Deterministic: the same template, request and catalog give the same layout.
    """
    cluster = check_cluster_name(request.cluster)
    size = request.size if request.size is not None else template.constraints.size.min
    _check_size(template, size)
    provider = _check_provider(catalog, request.provider or template.defaults.provider)
    wanted = list(request.services) if request.services is not None else list(template.defaults.services)
    services = _requested_services(template, catalog, wanted)
    fresh = _Fresh(
        template=template,
        services=frozenset(services),
        count=size,
        size=size,
        hardware=_usable_types(template, catalog, "hardwaretypes", provider, request.hardwaretype),
        images=_usable_types(template, catalog, "imagetypes", provider, request.imagetype),
        have={},
        frame=_Frame(
            headline=f"no layout for {size} nodes of template {template.name!r}",
            room=f"size is {size}",
            where=f"on {size} nodes",
        ),
    )
    nodes = _node_specs(cluster, provider, catalog, fresh, _lay_out_fresh(fresh), start=1)
    return Layout(
        cluster=cluster,
        template=template.name,
        provider=provider,
        services=tuple(sorted(services)),
        nodes=tuple(nodes),
        config=cluster_config(template, services, request.config, catalog),
        dns_suffix=template.defaults.dnsSuffix,
    )


def solve_expand(
    template: ClusterTemplate,
    layout: Layout,
    add_nodes: int,
    catalog: Catalog,
    *,
    hardwaretype: str | None = None,
    imagetype: str | None = None,
) -> Layout:
    """Add ``add_nodes`` nodes to a live cluster; existing nodes stay exactly as they are.

    New nodes are numbered after the highest existing number and laid out so the whole cluster
    keeps every constraint (quantities count existing nodes; the default max is the new size).
    ``hardwaretype``/``imagetype`` restrict the new nodes like the create request's overrides.
    """
    _check_same_template(template, layout)
    if add_nodes < 1:
        raise RequestError(f"add_nodes: {add_nodes} must be at least 1")
    size = len(layout.nodes) + add_nodes
    _check_size(template, size)
    provider = _check_provider(catalog, layout.provider)
    services = frozenset(layout.services)
    fresh = _Fresh(
        template=template,
        services=services,
        count=add_nodes,
        size=size,
        hardware=_usable_types(template, catalog, "hardwaretypes", provider, hardwaretype),
        images=_usable_types(template, catalog, "imagetypes", provider, imagetype),
        have={s: len(layout.nodes_with(s)) for s in services},
        frame=_Frame(
            headline=(
                f"cannot add {add_nodes} nodes to cluster {layout.cluster!r} "
                f"(template {template.name!r}, {len(layout.nodes)} nodes now)"
            ),
            room=f"only {add_nodes} are being added",
            where=f"on {add_nodes} new nodes",
            more=" more",
            noun="new nodes",
        ),
    )
    start = max((n.number for n in layout.nodes), default=0) + 1
    new = _node_specs(layout.cluster, provider, catalog, fresh, _lay_out_fresh(fresh), start=start)
    return replace(layout, nodes=tuple(layout.nodes) + tuple(new))


def solve_add_services(template: ClusterTemplate, layout: Layout, new_services: list[str], catalog: Catalog) -> Layout:
    """Put ``new_services`` on a live cluster's existing nodes; never creates or moves anything.

    Chooses which nodes receive each new service so every constraint holds on the whole cluster
    (quantities, cantcoexist/mustcoexist with services already on the nodes, hardware/image).
    """
    _check_same_template(template, layout)
    if not new_services:
        raise RequestError("services: name at least one service to add")
    present = set(layout.services)
    for svc in new_services:
        if svc in present:
            raise RequestError(f"services: {svc!r} already runs on cluster {layout.cluster!r}")
    _requested_services(template, catalog, new_services, frozenset(present))
    new = frozenset(new_services)
    ask = _Addition(
        template=template,
        layout=layout,
        new=new,
        frame=_Frame(
            headline=(
                f"cannot add {', '.join(sorted(new))} to cluster {layout.cluster!r} (template {template.name!r})"
            ),
            room=f"the cluster has {len(layout.nodes)} nodes",
            where=f"on the cluster's {len(layout.nodes)} nodes",
        ),
    )
    nodes = _lay_out_addition(ask)
    return replace(layout, services=tuple(sorted(present | new)), nodes=tuple(nodes))


# --- request checks -----------------------------------------------------------------------------


def _check_size(template: ClusterTemplate, size: int) -> None:
    limits = template.constraints.size
    if not limits.min <= size <= limits.max:
        raise RequestError(
            f"size: {size} is outside the template {template.name!r}'s allowed range {limits.min}..{limits.max}"
        )


def _check_provider(catalog: Catalog, provider: str) -> str:
    if provider not in catalog.providers:
        known = ", ".join(sorted(catalog.providers))
        raise RequestError(f"provider: unknown provider {provider!r} (known: {known})")
    return provider


def _check_same_template(template: ClusterTemplate, layout: Layout) -> None:
    if layout.template != template.name:
        raise RequestError(
            f"template: cluster {layout.cluster!r} was made from template {layout.template!r}, not {template.name!r}"
        )


def _requested_services(
    template: ClusterTemplate, catalog: Catalog, requested: list[str], already: frozenset[str] = frozenset()
) -> set[str]:
    """Check requested names against the catalog and the template; requirements are checked
    against ``requested`` plus what the cluster ``already`` has."""
    if not requested:
        raise RequestError("services: the cluster needs at least one service")
    allowed = template.compatibility.services
    for svc in requested:
        if svc not in catalog.services:
            raise RequestError(f"services: unknown service {svc!r}")
        if allowed and svc not in allowed:
            raise RequestError(
                f"services: {svc!r} is not allowed by template {template.name!r} (allowed: {', '.join(allowed)})"
            )
    chosen = set(requested)
    _check_dependencies(catalog, chosen | already)
    return chosen


def _check_dependencies(catalog: Catalog, chosen: set[str]) -> None:
    provides = provided_names(catalog)
    known = [s for s in sorted(chosen) if s in catalog.services]
    present = {name for svc in known for name in catalog.services[svc].provides}
    for svc in known:
        deps = catalog.services[svc].dependencies
        for kind in ("install", "runtime"):
            for need in getattr(deps, kind).requires:
                if need not in present:
                    options = ", ".join(sorted(provides.get(need, ()))) or "none available"
                    raise RequestError(f"services: {svc!r} requires {need!r} ({kind}); add one of: {options}")
        for other in deps.conflicts:
            clash = sorted(s for s in known if other in catalog.services[s].provides and s != svc)
            if clash:
                raise RequestError(f"services: {svc!r} conflicts with {clash[0]!r}; remove one of them")


def _usable_types(
    template: ClusterTemplate, catalog: Catalog, kind: str, provider: str, wanted: str | None
) -> tuple[str, ...]:
    """Hardware or image types in preference order: the request's, else the default first."""
    field = kind[:-1]
    entities = getattr(catalog, kind)
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
    usable = tuple(t for t in order if t in entities and provider in entities[t].providermap)
    if not usable:
        raise RequestError(f"{field}: no {field} of template {template.name!r} is mapped for provider {provider!r}")
    return usable


# --- the template's constraints as plain data ---------------------------------------------------


@dataclass(frozen=True)
class _Rules:
    """The template's constraints for one service set, minus any relaxed (dropped) atoms."""

    constrained: frozenset[str]
    lo: Mapping[str, int]
    explicit_lo: frozenset[str]
    hi: Mapping[str, int]
    hw: Mapping[str, frozenset[str]]
    img: Mapping[str, frozenset[str]]
    cant: tuple[tuple[int, tuple[str, ...]], ...]
    must: tuple[tuple[int, tuple[str, ...]], ...]

    def atoms(self, about: frozenset[str] | None = None) -> list[Atom]:
        """Every constraint that could be relaxed, optionally only those touching ``about``."""
        out: list[Atom] = [("min", s) for s in sorted(self.lo) if self.lo[s] > 0]
        out += [("max", s) for s in sorted(self.hi)]
        out += [("hw", s) for s in sorted(self.hw)] + [("img", s) for s in sorted(self.img)]
        out += [("cant", str(i)) for i, _ in self.cant] + [("must", str(i)) for i, _ in self.must]
        if about is None:
            return out
        return [a for a in out if set(self.members(a)) & about]

    def members(self, atom: Atom) -> tuple[str, ...]:
        kind, key = atom
        if kind in ("cant", "must"):
            return dict(getattr(self, kind))[int(key)]
        return (key,) if key else ()


def _rules(template: ClusterTemplate, services: Iterable[str], dropped: frozenset[Atom] = frozenset()) -> _Rules:
    c = template.constraints
    present = frozenset(services)
    named = set(c.services)
    for group in c.layout.cantcoexist + c.layout.mustcoexist:
        named.update(group)
    constrained = present & named
    lo: dict[str, int] = {}
    hi: dict[str, int] = {}
    hw: dict[str, frozenset[str]] = {}
    img: dict[str, frozenset[str]] = {}
    explicit = set()
    for svc in sorted(constrained):
        sc = c.services.get(svc)
        q = sc.quantities if sc else None
        lo[svc] = 0 if ("min", svc) in dropped else (q.min if q and q.min is not None else 1)
        if q and q.min is not None:
            explicit.add(svc)
        if q and q.max is not None and ("max", svc) not in dropped:
            hi[svc] = q.max
        if sc and sc.hardwaretypes and ("hw", svc) not in dropped:
            hw[svc] = frozenset(sc.hardwaretypes)
        if sc and sc.imagetypes and ("img", svc) not in dropped:
            img[svc] = frozenset(sc.imagetypes)
    return _Rules(
        constrained=constrained,
        lo=lo,
        explicit_lo=frozenset(explicit),
        hi=hi,
        hw=hw,
        img=img,
        cant=_present_groups(c.layout.cantcoexist, present, "cant", dropped),
        must=_present_groups(c.layout.mustcoexist, present, "must", dropped),
    )


def _present_groups(
    groups: list[list[str]], present: frozenset[str], kind: str, dropped: frozenset[Atom]
) -> tuple[tuple[int, tuple[str, ...]], ...]:
    out = []
    for i, group in enumerate(groups):
        members = tuple(sorted(set(group) & present))
        if len(members) > 1 and (kind, str(i)) not in dropped:
            out.append((i, members))
    return tuple(out)


# --- units: services that always share nodes ----------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    services: tuple[str, ...]
    lo: int  # placements still needed (the quantities minus existing placements)
    hi: int  # placements still allowed
    hw: frozenset[str] | None  # hardware types every service allows (None: any)
    img: frozenset[str] | None

    @property
    def weight(self) -> int:
        return len(self.services)

    @property
    def name(self) -> str:
        return "+".join(self.services)

    def allows(self, hardware: str, image: str) -> bool:
        return (self.hw is None or hardware in self.hw) and (self.img is None or image in self.img)


def _make_units(rules: _Rules, pool: Iterable[str], size: int, have: Mapping[str, int]) -> list[_Unit]:
    """Merge ``pool``'s constrained services along mustcoexist groups; sorted by name."""
    members = sorted(set(pool) & rules.constrained)
    parent = {s: s for s in members}

    def root(s: str) -> str:
        while parent[s] != s:
            s = parent[s]
        return s

    for _, group in rules.must:
        inside = [s for s in group if s in parent]
        for other in inside[1:]:
            parent[root(other)] = root(inside[0])
    merged: dict[str, list[str]] = {}
    for svc in members:
        merged.setdefault(root(svc), []).append(svc)
    units = [_unit(rules, tuple(group), size, have) for group in merged.values()]
    return sorted(units, key=lambda u: u.services)


def _unit(rules: _Rules, services: tuple[str, ...], size: int, have: Mapping[str, int]) -> _Unit:
    def common(limits: Mapping[str, frozenset[str]]) -> frozenset[str] | None:
        sets = [limits[s] for s in services if s in limits]
        return frozenset.intersection(*sets) if sets else None

    return _Unit(
        services=services,
        lo=max(max(0, rules.lo[s] - have.get(s, 0)) for s in services),
        hi=min(rules.hi.get(s, size) - have.get(s, 0) for s in services),
        hw=common(rules.hw),
        img=common(rules.img),
    )


# --- the counting model -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    """Interchangeable nodes: ``count`` of them, or a share of the model's free nodes (None)."""

    count: int | None
    allowed: frozenset[int]
    edges: tuple[frozenset[int], ...] = ()  # unit sets no node may hold in full
    forced: frozenset[int] = frozenset()  # units every node of the block must hold


@dataclass(frozen=True)
class _Model:
    units: tuple[_Unit, ...]
    blocks: tuple[_Block, ...]
    free: int  # nodes shared among the blocks with count None
    nonempty: bool  # every (free) node must hold at least one unit


@dataclass(frozen=True)
class _Part:
    """One cantcoexist component of one block, with the unit sets its nodes may take."""

    block: int
    forced: bool
    sets: tuple[frozenset[int], ...]  # non-empty; the empty set is implicit unless forced


def _components(units: Iterable[int], edges: Sequence[frozenset[int]]) -> list[list[int]]:
    parent = {u: u for u in units}

    def root(u: int) -> int:
        while parent[u] != u:
            u = parent[u]
        return u

    for edge in edges:
        first, *rest = sorted(edge)
        for other in rest:
            parent[root(other)] = root(first)
    out: dict[int, list[int]] = {}
    for u in sorted(parent):
        out.setdefault(root(u), []).append(u)
    return list(out.values())


def _independent_sets(
    units: Sequence[int], allowed: frozenset[int], forced: frozenset[int], edges: Sequence[frozenset[int]]
) -> list[frozenset[int]]:
    """Non-empty subsets of ``units`` within ``allowed``, containing ``forced``, breaking no edge."""
    if not forced <= allowed:
        return []
    touching = {u: [e for e in edges if u in e] for u in units}
    out: list[frozenset[int]] = []

    def walk(i: int, chosen: frozenset[int]) -> None:
        if i == len(units):
            if chosen:
                out.append(chosen)
                if len(out) > MAX_COLUMNS:
                    raise LayoutError(
                        f"too many combinations of cantcoexist services to search (over {MAX_COLUMNS}): "
                        "split the large cantcoexist groups"
                    )
            return
        u = units[i]
        bigger = chosen | {u}
        if u in allowed and not any(e <= bigger for e in touching[u]):
            walk(i + 1, bigger)
        if u not in forced:
            walk(i + 1, chosen)

    walk(0, frozenset())
    return out


def _parts(model: _Model) -> list[_Part]:
    parts = []
    for b, block in enumerate(model.blocks):
        pool = block.allowed | block.forced
        for comp in _components(pool, [e for e in block.edges if e <= pool]):
            members = frozenset(comp)
            edges = [e for e in block.edges if e <= members]
            forced = block.forced & members
            sets = _independent_sets(comp, block.allowed, forced, edges)
            parts.append(_Part(block=b, forced=bool(forced), sets=tuple(sets)))
    return parts


def _count_nodes(model: _Model, goal: str) -> tuple[list[_Part], list[int], list[int]] | None:
    """Solve the counting program: (parts, per-set node counts, per-block node counts) or None.

    ``goal`` is "best" (most placements, then earlier names), "any" (feasibility only) or "lp"
    (feasibility of the linear relaxation: None proves infeasibility, a result proves nothing).
    """
    if any(u.lo > u.hi for u in model.units):
        return None
    parts = _parts(model)
    program = _Program()
    columns = [(p, t, program.var(_cap(model, p.block))) for p in parts for t in p.sets]
    free_vars = {b: program.var(model.free) for b, blk in enumerate(model.blocks) if blk.count is None}
    _add_rows(model, parts, columns, free_vars, program)
    objectives = _objectives(model, columns) if goal == "best" else []
    values = program.solve(objectives, integral=goal != "lp")
    if values is None:
        return None
    per_set = [values[var] for _, _, var in columns]
    per_block = [blk.count if blk.count is not None else values[free_vars[b]] for b, blk in enumerate(model.blocks)]
    return parts, per_set, per_block


def _objectives(model: _Model, columns: list[tuple[_Part, frozenset[int], int]]) -> list[list[float]]:
    """Most service placements; then alphabetically earlier services; then earlier blocks."""
    rank = len(model.units)
    out = [
        [float(sum(model.units[u].weight for u in t)) for _, t, _ in columns],
        [float(sum(rank - u for u in t)) for _, t, _ in columns],
    ]
    if sum(1 for b in model.blocks if b.count is not None) > 1:
        last = len(model.blocks)
        out.append([float((last - p.block) * len(t)) for p, t, _ in columns])
    return out


def _cap(model: _Model, block: int) -> int:
    count = model.blocks[block].count
    return model.free if count is None else count


def _add_rows(
    model: _Model,
    parts: list[_Part],
    columns: list[tuple[_Part, frozenset[int], int]],
    free_vars: dict[int, int],
    program: _Program,
) -> None:
    by_part: dict[int, list[int]] = {id(p): [] for p in parts}
    by_unit: dict[int, list[int]] = {u: [] for u in range(len(model.units))}
    by_block: dict[int, list[int]] = {b: [] for b in free_vars}
    for part, units, var in columns:
        by_part[id(part)].append(var)
        for u in units:
            by_unit[u].append(var)
        if part.block in free_vars:
            by_block[part.block].append(var)
    for part in parts:
        terms = [(v, 1.0) for v in by_part[id(part)]]
        block = model.blocks[part.block]
        total = 0.0 if block.count is None else float(block.count)
        if block.count is None:
            terms.append((free_vars[part.block], -1.0))
        program.row(total if part.forced else -_INF, total, terms)
    for u, unit in enumerate(model.units):
        program.row(float(unit.lo), float(unit.hi), [(v, 1.0) for v in by_unit[u]])
    if free_vars:
        program.row(float(model.free), float(model.free), [(v, 1.0) for v in free_vars.values()])
        if model.nonempty:
            for b, var in free_vars.items():
                program.row(0.0, _INF, [(v, 1.0) for v in by_block[b]] + [(var, -1.0)])
    elif model.free:
        program.row(1.0, 1.0, [])  # free nodes but nowhere to put them: infeasible


_INF = float("inf")


class _Program:
    """A small integer program (all variables integer, >= 0), solved with HiGHS."""

    def __init__(self) -> None:
        self.upper: list[float] = []
        self.rows: list[tuple[float, float, list[tuple[int, float]]]] = []

    def var(self, upper: float) -> int:
        self.upper.append(float(upper))
        return len(self.upper) - 1

    def row(self, lo: float, hi: float, terms: list[tuple[int, float]]) -> None:
        self.rows.append((lo, hi, terms))

    def solve(self, objectives: Sequence[Sequence[float]], integral: bool = True) -> list[int] | None:
        """Maximise each objective in turn (keeping the previous optima); None if infeasible."""
        if not self.upper:
            return [] if all(lo <= 0 <= hi for lo, hi, _ in self.rows) else None
        import highspy

        highs = _quiet_highs(highspy)
        highs.passModel(self._lp(highspy, integral))
        n = len(self.upper)
        for k, given in enumerate(objectives or [[]]):
            costs = [float(c) for c in given] + [0.0] * (n - len(given))
            highs.changeColsCost(n, list(range(n)), costs)
            highs.run()
            status = highs.getModelStatus()
            if status in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kUnboundedOrInfeasible):
                return None
            if highs.getInfo().primal_solution_status != highspy.kSolutionStatusFeasible:
                raise LayoutError(
                    f"the layout search gave up ({status.name}) after {TIME_LIMIT_SECONDS:.0f} s: "
                    "simplify the template's constraints"
                )
            if k + 1 < len(objectives):
                best = highs.getInfo().objective_function_value
                nz = [i for i, c in enumerate(costs) if c]
                highs.addRow(best - 0.5, _INF, len(nz), nz, [costs[i] for i in nz])
        return [round(v) for v in highs.getSolution().col_value]

    def _lp(self, highspy: Any, integral: bool) -> Any:
        by_col: list[list[tuple[int, float]]] = [[] for _ in self.upper]
        for r, (_, _, terms) in enumerate(self.rows):
            for col, coef in terms:
                by_col[col].append((r, coef))
        lp = highspy.HighsLp()
        lp.num_col_ = len(self.upper)
        lp.num_row_ = len(self.rows)
        lp.col_cost_ = [0.0] * len(self.upper)
        lp.col_lower_ = [0.0] * len(self.upper)
        lp.col_upper_ = self.upper
        lp.row_lower_ = [lo for lo, _, _ in self.rows]
        lp.row_upper_ = [hi for _, hi, _ in self.rows]
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        starts, index, value = [0], [], []
        for entries in by_col:
            index += [r for r, _ in entries]
            value += [c for _, c in entries]
            starts.append(len(index))
        lp.a_matrix_.start_ = starts
        lp.a_matrix_.index_ = index
        lp.a_matrix_.value_ = value
        kind = highspy.HighsVarType.kInteger if integral else highspy.HighsVarType.kContinuous
        lp.integrality_ = [kind] * len(self.upper)
        lp.sense_ = highspy.ObjSense.kMaximize
        return lp


def _quiet_highs(highspy: Any) -> Any:
    # highspy.Highs prints a banner to stdout when it is constructed (it would corrupt
    # ``loom plan --json``); its base class is the same solver without the Python callbacks.
    try:
        from highspy._core import _Highs as Raw
    except ImportError:  # pragma: no cover - other highspy layouts
        Raw = highspy.Highs
    highs = Raw()
    for name, value in (
        ("output_flag", False),
        ("mip_rel_gap", 0.0),
        ("mip_abs_gap", 0.0),
        ("time_limit", TIME_LIMIT_SECONDS),
        ("random_seed", 0),
    ):
        highs.setOptionValue(name, value)
    return highs


# --- from counts to nodes -----------------------------------------------------------------------


def _stack(model: _Model, parts: list[_Part], per_set: list[int], per_block: list[int]) -> list[list[frozenset[int]]]:
    """Per block, the unit set of each node: components' sets stacked largest first."""
    columns: dict[int, list[list[frozenset[int]]]] = {b: [] for b in range(len(model.blocks))}
    counts = iter(per_set)
    for part in parts:
        runs = sorted(((units, next(counts)) for units in part.sets), key=lambda r: _set_key(model, r[0]))
        chosen = [units for units, n in runs for units in [units] * n]
        columns[part.block].append(chosen + [frozenset()] * (per_block[part.block] - len(chosen)))
    out = []
    for b, n in enumerate(per_block):
        nodes = [list(t) for t in zip(*columns[b])] if columns[b] else [[] for _ in range(n)]
        if model.nonempty and model.blocks[b].count is None:
            _fill_empty_nodes(nodes)
        unions: dict[tuple[frozenset[int], ...], frozenset[int]] = {}
        for node in map(tuple, nodes):
            if node not in unions:
                unions[node] = frozenset().union(*node)
        out.append([unions[node] for node in map(tuple, nodes)])
    return out


def _set_key(model: _Model, units: frozenset[int]) -> tuple[int, tuple[str, ...]]:
    names = sorted(s for u in units for s in model.units[u].services)
    return (-len(names), tuple(names))


def _fill_empty_nodes(nodes: list[list[frozenset[int]]]) -> None:
    """Move one component's set from a node holding several to each empty node."""
    d = len(nodes) - 1  # donors only lose parts, so one pointer from the end finds them all
    for node in nodes:
        if any(node):
            continue
        while sum(1 for p in nodes[d] if p) < 2:
            d -= 1
        donor = nodes[d]
        c = max(i for i, p in enumerate(donor) if p)
        node[c], donor[c] = donor[c], frozenset()


# --- create and expand: fresh nodes -------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """How explanations speak about this request."""

    headline: str
    room: str  # "size is 6" | "only 4 are being added"
    where: str  # "on 6 nodes"
    more: str = ""  # " more" when counting beyond existing nodes
    noun: str = "nodes"


@dataclass(frozen=True)
class _Fresh:
    """New nodes to lay out: a whole new cluster, or the nodes an expand adds."""

    template: ClusterTemplate
    services: frozenset[str]
    count: int
    size: int  # cluster size afterwards: the default max of every service
    hardware: tuple[str, ...]
    images: tuple[str, ...]
    have: Mapping[str, int]  # placements already on the cluster (expand)
    frame: _Frame


@dataclass(frozen=True)
class _FreshModel:
    rules: _Rules
    everywhere: tuple[str, ...]
    model: _Model
    banned: Mapping[int, tuple[int, tuple[str, ...]]]  # unit -> the cantcoexist group inside it
    edges: Mapping[frozenset[int], int]  # unit sets no node may hold in full -> cantcoexist group


def _fresh_model(fresh: _Fresh, dropped: frozenset[Atom] = frozenset()) -> _FreshModel:
    rules = _rules(fresh.template, fresh.services, dropped)
    units = _make_units(rules, fresh.services, fresh.size, fresh.have)
    edges, banned = _unit_edges(rules, units)
    blocks = []
    options = set()
    for h in fresh.hardware:
        for i in fresh.images:
            options.add(frozenset(k for k, u in enumerate(units) if k not in banned and u.allows(h, i)))
    for allowed in sorted((s for s in options if not any(s < t for t in options)), key=sorted):
        blocks.append(_Block(count=None, allowed=allowed, edges=tuple(e for e in edges if e <= allowed)))
    everywhere = tuple(sorted(fresh.services - rules.constrained))
    model = _Model(
        units=tuple(units),
        blocks=tuple(blocks),
        free=fresh.count,
        nonempty=not everywhere and NONEMPTY not in dropped,
    )
    return _FreshModel(rules, everywhere, model, banned, edges)


def _unit_edges(
    rules: _Rules, units: list[_Unit]
) -> tuple[dict[frozenset[int], int], dict[int, tuple[int, tuple[str, ...]]]]:
    unit_of = {s: k for k, u in enumerate(units) for s in u.services}
    edges: dict[frozenset[int], int] = {}
    banned: dict[int, tuple[int, tuple[str, ...]]] = {}
    for index, group in rules.cant:
        members = frozenset(unit_of[s] for s in group)
        if len(members) == 1:
            banned.setdefault(next(iter(members)), (index, group))
        else:
            edges.setdefault(members, index)
    return {e: i for e, i in edges.items() if not any(o < e for o in edges)}, banned


def _lay_out_fresh(fresh: _Fresh) -> list[tuple[tuple[str, ...], str, str]]:
    """(services, hardware, image) of each new node, in numbering order."""
    built = _fresh_model(fresh)
    reason = _diagnose_fresh(fresh, built)
    if reason:
        raise LayoutError(f"{fresh.frame.headline}: {reason}")
    solved = _count_nodes(built.model, "best")
    if solved is None:
        conflict = _minimal_conflict(lambda d: _fresh_model(fresh, d).model, built.rules.atoms() + _nonempty(built))
        raise LayoutError(
            f"{fresh.frame.headline}: {_conflict_sentence(fresh.frame, built.rules, conflict, fresh.have)}"
        )
    model = built.model
    layouts: dict[frozenset[int], int] = {}
    for block_nodes in _stack(model, *solved):
        for units in block_nodes:
            layouts[units] = layouts.get(units, 0) + 1
    kinds = []
    for units, count in layouts.items():
        names = tuple(sorted({*built.everywhere, *(s for u in units for s in model.units[u].services)}))
        hw = _first(fresh.hardware, [model.units[u].hw for u in units])
        img = _first(fresh.images, [model.units[u].img for u in units])
        kinds.append(((names, hw, img), count))
    kinds.sort(key=lambda k: (-len(k[0][0]), k[0][0], fresh.hardware.index(k[0][1]), fresh.images.index(k[0][2])))
    return [kind for kind, count in kinds for kind in [kind] * count]


def _nonempty(built: _FreshModel) -> list[Atom]:
    return [NONEMPTY] if built.model.nonempty else []


def _first(order: Sequence[str], limits: Iterable[frozenset[str] | None]) -> str:
    limits = [lim for lim in limits if lim is not None]
    return next(t for t in order if all(t in lim for lim in limits))


def _node_specs(
    cluster: str,
    provider: str,
    catalog: Catalog,
    fresh: _Fresh,
    nodes: list[tuple[tuple[str, ...], str, str]],
    start: int,
) -> list[NodeSpec]:
    out = []
    for number, (services, hw_name, img_name) in enumerate(nodes, start=start):
        hw = catalog.hardwaretypes[hw_name].providermap[provider]
        im = catalog.imagetypes[img_name].providermap[provider]
        out.append(  # one NodeSpec per node: the Layout's contract
            NodeSpec(
                number=number,
                hostname=f"{cluster}-{number}",
                hardwaretype=hw_name,
                imagetype=img_name,
                flavor=hw.flavor,
                image=im.image,
                sshuser=im.sshuser,
                services=services,
            )
        )
    return out


# --- add services: existing nodes ---------------------------------------------------------------


@dataclass(frozen=True)
class _Addition:
    template: ClusterTemplate
    layout: Layout
    new: frozenset[str]
    frame: _Frame


@dataclass(frozen=True)
class _AddModel:
    rules: _Rules
    everywhere: tuple[str, ...]  # new services that go on every node
    model: _Model
    groups: tuple[tuple[NodeSpec, ...], ...]  # the nodes of each block
    why_not: Mapping[tuple[int, int], tuple[str, Atom | None]]  # (block, unit) -> reason
    why_must: Mapping[tuple[int, int], tuple[str, Atom]]


def _add_model(ask: _Addition, dropped: frozenset[Atom] = frozenset()) -> _AddModel:
    old = frozenset(ask.layout.services)
    rules = _rules(ask.template, old | ask.new, dropped)
    units = _make_units(rules, ask.new, len(ask.layout.nodes), {})
    unit_of = {s: k for k, u in enumerate(units) for s in u.services}
    groups: dict[tuple[tuple[str, ...], str, str], list[NodeSpec]] = {}
    for node in sorted(ask.layout.nodes, key=lambda n: n.number):
        groups.setdefault((node.services, node.hardwaretype, node.imagetype), []).append(node)
    blocks, why_not, why_must = [], {}, {}
    for b, ((held, hw, img), nodes) in enumerate(groups.items()):
        terms = _node_terms(rules, units, unit_of, old, frozenset(held), hw, img)
        allowed, forced, edges, no, must = terms
        blocks.append(_Block(count=len(nodes), allowed=allowed, edges=edges, forced=forced))
        why_not.update({(b, u): r for u, r in no.items()})
        why_must.update({(b, u): r for u, r in must.items()})
    model = _Model(units=tuple(units), blocks=tuple(blocks), free=0, nonempty=False)
    everywhere = tuple(sorted(ask.new - rules.constrained))
    return _AddModel(rules, everywhere, model, tuple(tuple(g) for g in groups.values()), why_not, why_must)


def _node_terms(
    rules: _Rules,
    units: list[_Unit],
    unit_of: Mapping[str, int],
    old: frozenset[str],
    held: frozenset[str],
    hw: str,
    img: str,
) -> tuple[frozenset[int], frozenset[int], tuple[frozenset[int], ...], dict, dict]:
    """What nodes holding ``held`` on (hw, img) may, must and may not all take of the new units."""
    no: dict[int, tuple[str, Atom | None]] = {}
    must: dict[int, tuple[str, Atom]] = {}
    for k, u in enumerate(units):
        for svc in u.services:
            if svc in rules.hw and hw not in rules.hw[svc]:
                no.setdefault(k, (f"hardware {hw}, {svc} needs {'/'.join(sorted(rules.hw[svc]))}", ("hw", svc)))
            if svc in rules.img and img not in rules.img[svc]:
                no.setdefault(k, (f"image {img}, {svc} needs {'/'.join(sorted(rules.img[svc]))}", ("img", svc)))
    for index, group in rules.must:
        old_part = [s for s in group if s in old]
        if not old_part:
            continue
        for k in sorted({unit_of[s] for s in group if s in unit_of}):
            there = "/".join(old_part)
            if set(old_part) <= held:
                must[k] = (f"{there} is there, mustcoexist {'/'.join(group)}", ("must", str(index)))
            else:
                no.setdefault(k, (f"no {there} there, mustcoexist {'/'.join(group)}", ("must", str(index))))
    edges: list[frozenset[int]] = []
    for index, group in rules.cant:
        old_part = [s for s in group if s in old]
        members = frozenset(unit_of[s] for s in group if s in unit_of)
        if not members or not set(old_part) <= held:
            continue
        if len(members) == 1:
            there = f"{'/'.join(old_part)} is there" if old_part else "its services may not share a node"
            no.setdefault(next(iter(members)), (f"{there}, cantcoexist {'/'.join(group)}", ("cant", str(index))))
        elif members not in edges:
            edges.append(members)
    allowed = frozenset(range(len(units))) - set(no)
    minimal = tuple(e for e in edges if not any(o < e for o in edges))
    return allowed, frozenset(must), minimal, no, must


def _lay_out_addition(ask: _Addition) -> list[NodeSpec]:
    built = _add_model(ask)
    reason = _diagnose_addition(ask, built)
    if reason:
        raise LayoutError(f"{ask.frame.headline}: {reason}")
    solved = _count_nodes(built.model, "best")
    if solved is None:
        conflict = _minimal_conflict(lambda d: _add_model(ask, d).model, built.rules.atoms(ask.new))
        raise LayoutError(f"{ask.frame.headline}: {_conflict_sentence(ask.frame, built.rules, conflict, {})}")
    model = built.model
    placed: dict[int, tuple[str, ...]] = {}
    for nodes, sets in zip(built.groups, _stack(model, *solved)):
        for node, units in zip(nodes, sets):
            added = {*built.everywhere, *(s for u in units for s in model.units[u].services)}
            placed[node.number] = tuple(sorted(set(node.services) | added))
    return [replace(n, services=placed[n.number]) for n in ask.layout.nodes]


# --- explanations -------------------------------------------------------------------------------


def _diagnose_fresh(fresh: _Fresh, built: _FreshModel) -> str | None:
    """A specific sentence for the common ways new nodes cannot be laid out, else None."""
    checks: list[Callable[[_Fresh, _FreshModel], str | None]] = [
        _no_node_at_all,
        _unit_fits_nowhere,
        _mustcoexist_quantities,
        _too_many_apart,
        _group_capacity,
        _too_few_services,
    ]
    for check in checks:
        reason = check(fresh, built)
        if reason:
            return reason
    return None


def _alive(fresh: _Fresh, built: _FreshModel) -> list[int]:
    units = built.model.units
    return [
        k
        for k in range(len(units))
        if k not in built.banned and _hardware(fresh, units[k]) and _images(fresh, units[k])
    ]


def _hardware(fresh: _Fresh, unit: _Unit) -> list[str]:
    return [h for h in fresh.hardware if unit.hw is None or h in unit.hw]


def _images(fresh: _Fresh, unit: _Unit) -> list[str]:
    return [i for i in fresh.images if unit.img is None or i in unit.img]


def _no_node_at_all(fresh: _Fresh, built: _FreshModel) -> str | None:
    if built.everywhere or _alive(fresh, built) or not built.model.free:
        return None
    services = sorted(s for u in built.model.units for s in u.services)
    reasons = [_why_dead(fresh, built, k) for k in range(len(built.model.units))]
    atoms = [a for _, found in reasons for a in found] + [NONEMPTY]
    return (
        f"no node can hold any combination of {services} under the layout and hardware/image constraints "
        f"({'; '.join(text for text, _ in reasons)}). {_in_conflict(fresh.frame, built.rules, atoms, fresh.have)}"
    )


def _unit_fits_nowhere(fresh: _Fresh, built: _FreshModel) -> str | None:
    alive = set(_alive(fresh, built))
    for k, unit in enumerate(built.model.units):
        if k not in alive and unit.lo > 0:
            who = (
                f"service {unit.services[0]!r} fits"
                if unit.weight == 1
                else f"services {', '.join(map(repr, unit.services))} fit"
            )
            text, atoms = _why_dead(fresh, built, k)
            atoms = [_min_atom(built.rules, unit, fresh.have)] + atoms
            return f"{who} on no node: {text}. {_in_conflict(fresh.frame, built.rules, atoms, fresh.have)}"
    return None


def _why_dead(fresh: _Fresh, built: _FreshModel, k: int) -> tuple[str, list[Atom]]:
    unit, rules = built.model.units[k], built.rules
    together = [("must", str(i)) for i, group in rules.must if set(group) <= set(unit.services)]
    if k in built.banned:
        index, group = built.banned[k]
        names = "/".join(group)
        text = f"{names} must share nodes (mustcoexist) but may not all share a node (cantcoexist {names})"
        return text, together + [("cant", str(index))]
    for kind, atom, limits, usable, field in (
        ("hardware", "hw", rules.hw, fresh.hardware, unit.hw),
        ("image", "img", rules.img, fresh.images, unit.img),
    ):
        if field is not None and not set(field) & set(usable):
            named = [s for s in unit.services if s in limits]
            needs = "; ".join(f"{s} needs {kind} {'/'.join(sorted(limits[s]))}" for s in named)
            text = f"{needs}, and the usable {kind} types here are {', '.join(usable)}"
            return text, (together if len(named) > 1 else []) + [(atom, s) for s in named]
    return "no usable hardware and image type suits it", together


def _mustcoexist_quantities(fresh: _Fresh, built: _FreshModel) -> str | None:
    rules = built.rules
    for unit in built.model.units:
        if unit.lo <= unit.hi or unit.weight == 1:
            continue
        low = max(unit.services, key=lambda s: rules.lo[s] - fresh.have.get(s, 0))
        high = min(unit.services, key=lambda s: rules.hi.get(s, fresh.size) - fresh.have.get(s, 0))
        if low == high:
            continue
        atoms = [("must", str(i)) for i, group in rules.must if set(group) <= set(unit.services)]
        atoms += [("min", low), ("max", high)] if high in rules.hi else [("min", low)]
        return (
            f"{'/'.join(unit.services)} must share nodes (mustcoexist) but {low} needs at least "
            f"{_need(rules, low, fresh)} while {high} allows at most {_allow(rules, high, fresh)}. "
            f"{_in_conflict(fresh.frame, rules, atoms, fresh.have)}"
        )
    return None


def _need(rules: _Rules, svc: str, fresh: _Fresh) -> str:
    have = fresh.have.get(svc, 0)
    return f"{rules.lo[svc]} nodes" + (f" (already on {have})" if have else "")


def _allow(rules: _Rules, svc: str, fresh: _Fresh) -> str:
    have = fresh.have.get(svc, 0)
    return f"{rules.hi.get(svc, fresh.size)}" + (f" (already on {have})" if have else "")


def _pair_reason(fresh: _Fresh, built: _FreshModel, a: int, b: int) -> tuple[str, list[Atom]] | None:
    """Why units a and b can never share a node, or None."""
    units = built.model.units
    if frozenset((a, b)) in built.edges:
        return "cant", [("cant", str(built.edges[frozenset((a, b))]))]
    if not set(_hardware(fresh, units[a])) & set(_hardware(fresh, units[b])):
        return "hw", [("hw", s) for s in units[a].services + units[b].services if s in built.rules.hw]
    if not set(_images(fresh, units[a])) & set(_images(fresh, units[b])):
        return "img", [("img", s) for s in units[a].services + units[b].services if s in built.rules.img]
    return None


def _too_many_apart(fresh: _Fresh, built: _FreshModel) -> str | None:
    """Units that pairwise cannot share a node need the sum of their minimums in nodes."""
    units = built.model.units
    alive = [k for k in _alive(fresh, built) if units[k].lo > 0]
    reasons = {(a, b): _pair_reason(fresh, built, a, b) for a in alive for b in alive if a < b}
    adjacent = {k: {o for o in alive if reasons.get((min(k, o), max(k, o)))} for k in alive}
    clique = _heaviest_clique(alive, [u.lo for u in units], adjacent)
    total = sum(units[k].lo for k in clique)
    if total <= fresh.count:
        return None
    atoms = [_min_atom(built.rules, units[k], fresh.have) for k in clique]
    for i, a in enumerate(clique):
        for b in clique[i + 1 :]:
            atoms += reasons[(min(a, b), max(a, b))][1]
    frame = fresh.frame
    conflict = _in_conflict(frame, built.rules, atoms, fresh.have)
    if len(clique) == 1:
        return f"{units[clique[0]].name} needs at least {total}{frame.more} nodes, {frame.room}. {conflict}"
    sentence = _apart_sentence(fresh, built, clique, reasons)
    return f"{sentence}: {total} {frame.noun} needed, {frame.room}. {conflict}"


def _apart_sentence(fresh: _Fresh, built: _FreshModel, clique: list[int], reasons: dict) -> str:
    units, more = built.model.units, fresh.frame.more
    if len(clique) == 2:
        a, b = units[clique[0]], units[clique[1]]
        kind = reasons[(clique[0], clique[1])][0]
        if kind == "cant":
            return (
                f"{a.name} needs at least {_n(a.lo)}{more} but cantcoexist with {b.name} "
                f"which needs at least {b.lo}{more}"
            )
        pick = _hardware if kind == "hw" else _images
        word = "hardware" if kind == "hw" else "image"
        return (
            f"{a.name} needs at least {_n(a.lo)}{more} with {word} {'/'.join(pick(fresh, a))} but {b.name} "
            f"needs at least {b.lo}{more} with {word} {'/'.join(pick(fresh, b))}, so they never share a node"
        )
    names = [units[k].name for k in clique]
    why = sorted({reasons[(min(a, b), max(a, b))][0] for a in clique for b in clique if a < b})
    kinds = {"cant": "cantcoexist", "hw": "hardware", "img": "image"}
    return (
        f"{', '.join(names[:-1])} and {names[-1]} cannot share a node with one another "
        f"({', '.join(kinds[w] for w in why)}) and need at least "
        f"{' + '.join(str(units[k].lo) for k in clique)}{more} nodes"
    )


def _n(count: int) -> str:
    return f"{count} node" if count == 1 else f"{count} nodes"


def _heaviest_clique(vertices: list[int], weight: Sequence[int], adjacent: Mapping[int, set[int]]) -> list[int]:
    best: list[int] = []
    best_weight = -1

    def grow(clique: list[int], candidates: list[int], total: int) -> None:
        nonlocal best, best_weight
        if total > best_weight:
            best, best_weight = clique, total
        if total + sum(weight[c] for c in candidates) <= best_weight:
            return
        for i, v in enumerate(candidates):
            grow(clique + [v], [c for c in candidates[i + 1 :] if c in adjacent[v]], total + weight[v])

    grow([], sorted(vertices, key=lambda v: -weight[v]), 0)
    return sorted(best)


def _min_atom(rules: _Rules, unit: _Unit, have: Mapping[str, int]) -> Atom:
    return ("min", max(unit.services, key=lambda s: rules.lo[s] - have.get(s, 0)))


def _group_capacity(fresh: _Fresh, built: _FreshModel) -> str | None:
    """A node holds at most k-1 of the k units of a cantcoexist group."""
    units, rules = built.model.units, built.rules
    for index, group in rules.cant:
        members = sorted({k for k, u in enumerate(units) if set(u.services) & set(group)})
        if len(members) < 3:
            continue
        total = sum(units[k].lo for k in members)
        per_node = len(members) - 1
        if total <= per_node * fresh.count:
            continue
        atoms = [("cant", str(index))] + [_min_atom(rules, units[k], fresh.have) for k in members if units[k].lo]
        return (
            f"{'/'.join(group)} may not all share a node (cantcoexist), so a node holds at most "
            f"{per_node} of them, but their minimums add up to {total}{fresh.frame.more} placements: "
            f"{ceil(total / per_node)} {fresh.frame.noun} needed, {fresh.frame.room}. "
            f"{_in_conflict(fresh.frame, rules, atoms, fresh.have)}"
        )
    return None


def _too_few_services(fresh: _Fresh, built: _FreshModel) -> str | None:
    """Without services on every node, the maximums must fill every node."""
    if not built.model.nonempty:
        return None
    units = built.model.units
    alive = _alive(fresh, built)
    room = sum(max(0, min(units[k].hi, fresh.count)) for k in alive)
    if room >= fresh.count:
        return None
    limited = [k for k in alive if units[k].hi < fresh.count]
    atoms: list[Atom] = [NONEMPTY] + [("max", s) for k in limited for s in units[k].services if s in built.rules.hi]
    return (
        f"every node must run at least one service, but the services' maximums fill at most "
        f"{room} {fresh.frame.noun}, {fresh.frame.room}. {_in_conflict(fresh.frame, built.rules, atoms, fresh.have)}"
    )


def _diagnose_addition(ask: _Addition, built: _AddModel) -> str | None:
    """Specific sentences for new services that cannot be placed on the existing nodes."""
    model = built.model
    for k, unit in enumerate(model.units):
        where = [b for b, blk in enumerate(model.blocks) if k in blk.allowed]
        must = [b for b, blk in enumerate(model.blocks) if k in blk.forced]
        for b in must:
            if b not in where:
                return _forced_but_forbidden(ask, built, b, k)
        room = sum(model.blocks[b].count or 0 for b in where)
        if room < unit.lo:
            return _not_enough_room(ask, built, k, where, room)
        forced = sum(model.blocks[b].count or 0 for b in must)
        if forced > unit.hi:
            svc = min(unit.services, key=lambda s: built.rules.hi.get(s, len(ask.layout.nodes)))
            reason, atom = built.why_must[(must[0], k)]
            atoms = [atom, ("max", svc)]
            return (
                f"{unit.name} must go on {forced} nodes ({reason}) but {svc} max is {unit.hi}. "
                f"{_in_conflict(ask.frame, built.rules, atoms, {})}"
            )
    return None


def _forced_but_forbidden(ask: _Addition, built: _AddModel, b: int, k: int) -> str:
    hosts = ", ".join(n.hostname for n in built.groups[b])
    must_reason, must_atom = built.why_must[(b, k)]
    no_reason, no_atom = built.why_not[(b, k)]
    atoms = [must_atom] + ([no_atom] if no_atom else [])
    return (
        f"{built.model.units[k].name} must go on {hosts} ({must_reason}) but cannot ({no_reason}). "
        f"{_in_conflict(ask.frame, built.rules, atoms, {})}"
    )


def _not_enough_room(ask: _Addition, built: _AddModel, k: int, where: list[int], room: int) -> str:
    unit = built.model.units[k]
    total = len(ask.layout.nodes)
    ok = [n.hostname for b in where for n in built.groups[b]]
    hosts: dict[str, list[str]] = {}
    atoms = [_min_atom(built.rules, unit, {})]
    for b, nodes in enumerate(built.groups):
        if b in where:
            continue
        reason, atom = built.why_not[(b, k)]
        hosts.setdefault(reason, []).extend(n.hostname for n in nodes)
        atoms += [atom] if atom else []
    lines = [f"{', '.join(names)}: {reason}" for reason, names in hosts.items()]
    can = f" ({', '.join(ok)})" if ok else ""
    return (
        f"{unit.name} needs at least {_n(unit.lo)} but only {room} of the {total} nodes can take it{can}; "
        f"{'; '.join(lines)}. {_in_conflict(ask.frame, built.rules, atoms, {})}"
    )


def _minimal_conflict(build: Callable[[frozenset[Atom]], _Model], atoms: list[Atom]) -> list[Atom]:
    """Deletion filter: a minimal list of atoms that, kept, still make the model infeasible.

    Each kind of atom is first dropped as a whole, then atoms one by one; a linear relaxation
    that is infeasible settles a test without the integer program.
    """

    def infeasible(trial: list[Atom]) -> bool:
        model = build(frozenset(a for a in atoms if a not in trial))
        return _count_nodes(model, "lp") is None or _count_nodes(model, "any") is None

    kept = sorted(atoms, key=lambda a: _DROP_ORDER.index(a[0]))
    for kind in _DROP_ORDER:
        trial = [a for a in kept if a[0] != kind]
        if len(trial) < len(kept) - 1 and infeasible(trial):
            kept = trial
    for atom in list(kept):
        trial = [a for a in kept if a != atom]
        if infeasible(trial):
            kept = trial
    return sorted(kept, key=lambda a: (_SHOW_ORDER.index(a[0]), a))


def _conflict_sentence(frame: _Frame, rules: _Rules, atoms: list[Atom], have: Mapping[str, int]) -> str:
    if not atoms:  # pragma: no cover - every relaxation of all constraints is feasible
        return f"the constraints cannot all hold {frame.where}"
    return f"these constraints cannot all hold together: {_atom_list(rules, atoms, have)}, all {frame.where}"


def _in_conflict(frame: _Frame, rules: _Rules, atoms: list[Atom], have: Mapping[str, int]) -> str:
    return f"Constraints in conflict: {_atom_list(rules, atoms, have)}, all {frame.where}."


def _atom_list(rules: _Rules, atoms: list[Atom], have: Mapping[str, int]) -> str:
    seen: list[Atom] = []
    for atom in atoms:
        if atom not in seen:
            seen.append(atom)
    return ", ".join(_phrase(rules, a, have) for a in seen)


def _phrase(rules: _Rules, atom: Atom, have: Mapping[str, int]) -> str:
    kind, key = atom
    already = f" (already on {have[key]})" if have.get(key) else ""
    if kind == "min":
        return f"{key} min {rules.lo[key]}" + ("" if key in rules.explicit_lo else " (default)") + already
    if kind == "max":
        return f"{key} max {rules.hi[key]}{already}"
    if kind in ("hw", "img"):
        limits = rules.hw if kind == "hw" else rules.img
        word = "hardware" if kind == "hw" else "image"
        return f"{key} only on {word} {'/'.join(sorted(limits[key]))}"
    if kind == "cant":
        return f"keeping apart {'/'.join(rules.members(atom))} (cantcoexist)"
    if kind == "must":
        return f"keeping together {'/'.join(rules.members(atom))} (mustcoexist)"
    return "every node runs at least one service"
