"""Property tests: random templates against an independent brute force.

For every random template and size, either the solver returns a layout that satisfies every
constraint *and* has as many service placements as the best layout the brute force finds, or it
says there is none and the brute force agrees. Same for add-services and expand. The brute force
enumerates node types (subsets of the constrained services) the way Loom did, then every
multiset of them via reachable per-service counts, so it only works on small instances.
"""

from __future__ import annotations

from itertools import combinations, product
from typing import Any

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from helpers import assert_valid, constrained_services
from test_solver_cases import make_catalog

from loom.errors import LayoutError
from loom.layout import Layout
from loom.solver import solve, solve_add_services, solve_expand
from loom.spec.loader import Catalog
from loom.spec.models import ClusterTemplate, CreateRequest

NAMES = ["a", "b", "c", "d"]
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@st.composite
def templates(draw: Any) -> dict[str, Any]:
    """A template over a few of a..d (and maybe base) with random constraints of every kind."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=2, max_size=4, unique=True))
    services = sorted(names) + (["base"] if draw(st.booleans()) else [])
    constraints: dict[str, Any] = {"services": {}, "layout": {}}
    for svc in names:
        if draw(st.integers(0, 2)) == 0:
            continue
        entry: dict[str, Any] = {}
        lo = draw(st.sampled_from([None, 0, 1, 2, 3]))
        hi = draw(st.sampled_from([None, 0, 1, 2, 4]))
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        entry["quantities"] = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
        if draw(st.integers(0, 3)) == 0:
            entry["hardwaretypes"] = draw(st.sampled_from([["small"], ["large"], ["gpu"], ["large", "small"]]))
        if draw(st.integers(0, 3)) == 0:
            entry["imagetypes"] = draw(st.sampled_from([["debian"], ["ubuntu"]]))
        constraints["services"][svc] = entry
    group = st.lists(st.sampled_from(NAMES), min_size=2, max_size=3, unique=True)
    constraints["layout"]["cantcoexist"] = draw(st.lists(group, max_size=3))
    constraints["layout"]["mustcoexist"] = draw(st.lists(group.map(lambda g: g[:2]), max_size=1))
    return {
        "name": "t",
        "defaults": {"services": services, "provider": "local", "hardwaretype": "small", "imagetype": "debian"},
        "constraints": constraints,
    }


USABLE = {"local": (("small", "large"), ("debian", "ubuntu")), "cloud": (("small", "gpu", "large"), ("debian",))}


def bounds(template: ClusterTemplate, svc: str, size: int) -> tuple[int, int]:
    sc = template.constraints.services.get(svc)
    q = sc.quantities if sc else None
    return (q.min if q and q.min is not None else 1, q.max if q and q.max is not None else size)


def node_ok(
    template: ClusterTemplate, services: set[str], on: set[str], hardware: tuple[str, ...], images: tuple[str, ...]
) -> bool:
    """Loom's rules for one node's service set (``services`` = the cluster's)."""
    c = template.constraints
    if not on:
        return False
    for group in c.layout.cantcoexist:
        present = set(group) & services
        if len(present) > 1 and present <= on:
            return False
    for group in c.layout.mustcoexist:
        present = set(group) & services
        if present & on and not present <= on:
            return False
    for kind, usable in (("hardwaretypes", hardware), ("imagetypes", images)):
        limits = [getattr(c.services[s], kind) for s in on if s in c.services and getattr(c.services[s], kind)]
        if not any(all(t in lim for lim in limits) for t in usable):
            return False
    return True


def node_types(template: ClusterTemplate, services: set[str], provider: str) -> list[set[str]]:
    constrained = sorted(services & constrained_services(template))
    free = services - set(constrained)
    hardware, images = USABLE[provider]
    out = []
    for k in range(len(constrained) + 1):
        for subset in combinations(constrained, k):
            on = set(subset) | free
            if node_ok(template, services, on, hardware, images):
                out.append(on)
    return out


def brute_best(
    template: ClusterTemplate,
    services: set[str],
    added: int,
    provider: str = "local",
    have: dict[str, int] | None = None,
    size: int | None = None,
) -> int | None:
    """Most service placements over ``added`` new nodes, or None if no layout exists.

    ``have``: placements already on the cluster; ``size``: the cluster size afterwards.
    """
    order = sorted(services)
    start = tuple((have or {}).get(s, 0) for s in order)
    limits = [bounds(template, s, size or added) for s in order]
    steps = [tuple(int(s in t) for s in order) for t in node_types(template, services, provider)]
    states = {start}
    for _ in range(added):
        states = {
            tuple(v + d for v, d in zip(state, step))
            for state in states
            for step in steps
            if all(v + d <= hi for v, d, (_, hi) in zip(state, step, limits))
        }
    done = [sum(state) - sum(start) for state in states if all(lo <= v for v, (lo, _) in zip(state, limits))]
    return max(done) if done else None


def placements(layout: Layout, numbers: set[int] | None = None) -> int:
    return sum(len(n.services) for n in layout.nodes if numbers is None or n.number in numbers)


def catalog_for(data: dict[str, Any]) -> tuple[Catalog, ClusterTemplate]:
    catalog = make_catalog([data], services=["base", *NAMES])
    return catalog, catalog.template("t")


@SETTINGS
@given(data=templates(), size=st.integers(1, 5), provider=st.sampled_from(["local", "local", "cloud"]))
def test_create_matches_brute_force(data, size, provider):
    catalog, template = catalog_for(data)
    request = CreateRequest(cluster="prop", size=size, provider=provider)
    best = brute_best(template, set(template.defaults.services), size, provider)
    try:
        layout = solve(template, request, catalog)
    except LayoutError as exc:
        event("no layout")
        assert best is None, f"solver: {exc}; brute force found {best} placements"
        assert str(exc).startswith(f"no layout for {size} nodes of template 't': ")
        return
    assert best is not None, "the solver returned a layout the brute force says is impossible"
    assert_valid(template, layout, catalog)
    assert placements(layout) == best
    assert layout == solve(template, request, catalog)


@SETTINGS
@given(data=templates(), size=st.integers(1, 4), added=st.integers(1, 3))
def test_expand_matches_brute_force(data, size, added):
    catalog, template = catalog_for(data)
    try:
        layout = solve(template, CreateRequest(cluster="prop", size=size), catalog)
    except LayoutError:
        assume(False)
    services = set(layout.services)
    have = {s: len(layout.nodes_with(s)) for s in services}
    best = brute_best(template, services, added, have=have, size=size + added)
    try:
        out = solve_expand(template, layout, added, catalog)
    except LayoutError as exc:
        event("no layout")
        assert best is None, f"solver: {exc}; brute force found {best} placements"
        return
    assert best is not None, "the solver returned a layout the brute force says is impossible"
    assert_valid(template, out, catalog)
    assert out.nodes[:size] == layout.nodes
    assert placements(out, set(range(size + 1, size + added + 1))) == best


@SETTINGS
@given(data=templates(), size=st.integers(1, 4), new_count=st.integers(1, 2))
def test_add_services_matches_brute_force(data, size, new_count):
    requested = data["defaults"]["services"]
    new = [s for s in requested if s != "base"][-new_count:]
    before = [s for s in requested if s not in new]
    assume(before)
    first = {**data, "defaults": {**data["defaults"], "services": before}}
    catalog, template = catalog_for(first)
    try:
        layout = solve(template, CreateRequest(cluster="prop", size=size), catalog)
    except LayoutError:
        assume(False)
    best = brute_best_add(template, layout, new)
    try:
        out = solve_add_services(template, layout, new, catalog)
    except LayoutError as exc:
        event("no layout")
        assert best is None, f"solver: {exc}; brute force found {best} placements"
        return
    assert best is not None, "the solver returned a layout the brute force says is impossible"
    assert_valid(template, out, catalog)
    assert [(n.number, n.hardwaretype) for n in out.nodes] == [(n.number, n.hardwaretype) for n in layout.nodes]
    assert all(set(a.services) <= set(b.services) for a, b in zip(layout.nodes, out.nodes))
    assert placements(out) - placements(layout) == best


def brute_best_add(template: ClusterTemplate, layout: Layout, new: list[str]) -> int | None:
    services = set(layout.services) | set(new)
    free = set(new) - constrained_services(template)
    options = []
    for node in layout.nodes:
        here = []
        for k in range(len(new) + 1):
            for subset in combinations(new, k):
                on = set(node.services) | set(subset)
                if free <= on and node_ok(template, services, on, (node.hardwaretype,), (node.imagetype,)):
                    here.append(set(subset))
        options.append(here)
    best = None
    for choice in product(*options):
        counts = {s: sum(s in c for c in choice) for s in new}
        if all(
            bounds(template, s, len(layout.nodes))[0] <= n <= bounds(template, s, len(layout.nodes))[1]
            for s, n in counts.items()
        ):
            best = max(best or 0, sum(counts.values()))
    return best
