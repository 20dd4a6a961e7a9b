"""The planner: (operation, services, catalog) -> Plan, a graph of plain-data steps.

Nodes of the graph are node actions (create, confirm, bootstrap, delete) and service actions
(``<service>.<action>``). The DAG factory turns each step into a task and each edge into a
dependency; ``loom plan`` prints the same steps. Ordering rules are LOOM_SEMANTICS.md's:
install dependencies order installs; runtime dependencies put START(dep) before INITIALIZE and
START of the dependent; STOP runs in reverse. A service lacking an action is walked through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter

from loom.errors import TemplateError
from loom.spec.loader import Catalog

CREATE_ACTIONS = ("install", "configure", "initialize", "start")
_SERVICE_REF = re.compile(r"service\.([a-z][a-z0-9_-]*)")
NODE_CREATE_STEPS = ("create", "confirm", "bootstrap")


@dataclass(frozen=True)
class Step:
    id: str
    kind: str  # "node" or "service"
    action: str
    service: str | None = None
    after: tuple[str, ...] = ()
    where: str = "all"  # which of the service's nodes: "all", "new" (expand) or "existing"


@dataclass(frozen=True)
class Plan:
    operation: str
    steps: tuple[Step, ...] = field(default_factory=tuple)

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)

    @property
    def service_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.kind == "service")


def step_id(service: str, action: str) -> str:
    return f"{service}.{action}"


class _Graph:
    def __init__(self) -> None:
        self.preds: dict[str, set[str]] = {}

    def add(self, node: str) -> None:
        self.preds.setdefault(node, set())

    def edge(self, before: str, after: str) -> None:
        self.add(before)
        self.add(after)
        if before != after:
            self.preds[after].add(before)

    def contract(self, node: str) -> None:
        """Remove ``node`` keeping every path through it."""
        preds = self.preds.pop(node)
        for other, p in self.preds.items():
            if node in p:
                p.discard(node)
                p.update(preds - {other})

    def order(self, operation: str) -> list[str]:
        try:
            return list(TopologicalSorter(self.preds).static_order())
        except CycleError as exc:
            cycle = " -> ".join(exc.args[1])
            raise TemplateError([f"{operation}: dependency cycle between service actions: {cycle}"]) from None

    def reduced_preds(self, node: str, order_index: dict[str, int]) -> tuple[str, ...]:
        """Direct predecessors without those already implied through another predecessor."""
        direct = self.preds[node]
        implied: set[str] = set()
        for p in direct:
            implied |= self._ancestors(p)
        return tuple(sorted(direct - implied, key=order_index.__getitem__))

    def _ancestors(self, node: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.preds[node])
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self.preds[n])
        return seen


def _resolve(catalog: Catalog, services: set[str], names: list[str]) -> set[str]:
    """Map dependency names (services or ``provides`` names) to services on the cluster."""
    return {s for s in services for n in names if n in catalog.services[s].provides}


def _build(operation: str, graph: _Graph, catalog: Catalog, services: set[str], missing: set[str]) -> Plan:
    graph.order(operation)  # a cycle is a cycle even through actions a service lacks
    for node in sorted(missing):
        graph.contract(node)
    order = graph.order(operation)
    index = {n: i for i, n in enumerate(order)}
    steps = []
    for node in order:
        kind, _, rest = node.partition(":")
        if kind == "node":
            steps.append(Step(id=f"node.{rest}", kind="node", action=rest, after=()))
        else:
            svc, action = rest.rsplit(".", 1)
            action = action.split("_", 1)[0]  # "configure_existing", "stop_refresh" ...
            steps.append(Step(id=rest, kind="service", action=action, service=svc))
    ids = {n: s.id for n, s in zip(order, steps)}
    steps = [
        Step(s.id, s.kind, s.action, s.service, tuple(ids[p] for p in graph.reduced_preds(n, index)))
        for n, s in zip(order, steps)
    ]
    return Plan(operation=operation, steps=tuple(steps))


def _services(catalog: Catalog, names: set[str] | list[str] | tuple[str, ...]) -> set[str]:
    return {s for s in names if s in catalog.services}


def _runtime_deps(catalog: Catalog, services: set[str], svc: str) -> set[str]:
    deps = catalog.services[svc].dependencies.runtime
    return _resolve(catalog, services, deps.requires + deps.uses) - {svc}


def _closure(catalog: Catalog, services: set[str], targets: set[str], upward: bool) -> set[str]:
    """``targets`` plus, transitively, their runtime dependencies (upward) or dependents."""
    out, stack = set(), list(targets)
    while stack:
        svc = stack.pop()
        if svc in out or svc not in services:
            continue
        out.add(svc)
        if upward:
            stack.extend(_runtime_deps(catalog, services, svc))
        else:
            stack.extend(s for s in services if svc in _runtime_deps(catalog, services, s))
    return out


class _Builder:
    """Accumulates service-action steps; actions a service lacks are walked through."""

    def __init__(self, catalog: Catalog, operation: str, services: set[str]):
        self.catalog, self.operation, self.services = catalog, operation, services
        self.graph = _Graph()
        self.missing: set[str] = set()
        self.where: dict[str, str] = {}

    def node(self, action: str, where: str = "all") -> str:
        key = f"node:{action}"
        self.graph.add(key)
        self.where[key] = where
        return key

    def action(self, svc: str, action: str, where: str = "all", suffix: str = "") -> str:
        key = f"svc:{step_id(svc, action)}{suffix}"
        self.graph.add(key)
        self.where[key] = where
        if action not in self.catalog.services[svc].actions:
            self.missing.add(key)
        return key

    def chain(self, svc: str, actions: tuple[str, ...], after: str | None = None, where: str = "all") -> list[str]:
        keys = [self.action(svc, a, where) for a in actions]
        if after:
            self.graph.edge(after, keys[0])
        for before, then in zip(keys, keys[1:]):
            self.graph.edge(before, then)
        return keys

    def install_order(self, targets: set[str]) -> None:
        for svc in sorted(targets):
            deps = self.catalog.services[svc].dependencies.install
            for dep in sorted(_resolve(self.catalog, targets, deps.requires + deps.uses) - {svc}):
                self.graph.edge(f"svc:{step_id(dep, 'install')}", f"svc:{step_id(svc, 'install')}")

    def start_order(self, targets: set[str], then: tuple[str, ...] = ("initialize", "start")) -> None:
        """START(dep) before INITIALIZE/START of every dependent among ``targets``."""
        for svc in sorted(targets):
            for dep in sorted(_runtime_deps(self.catalog, targets, svc)):
                for action in then:
                    self.graph.edge(f"svc:{step_id(dep, 'start')}", f"svc:{step_id(svc, action)}")

    def stop_order(self, targets: set[str]) -> None:
        """STOP(dependent) before STOP(dep): the reverse of start order."""
        for svc in sorted(targets):
            for dep in sorted(_runtime_deps(self.catalog, targets, svc)):
                self.graph.edge(f"svc:{step_id(svc, 'stop')}", f"svc:{step_id(dep, 'stop')}")

    def build(self) -> Plan:
        plan = _build(self.operation, self.graph, self.catalog, self.services, self.missing)
        steps = tuple(
            Step(s.id, s.kind, s.action, s.service, s.after, self._where(s))
            for s in plan.steps
        )
        return Plan(operation=self.operation, steps=steps)

    def _where(self, step: Step) -> str:
        if step.kind == "node":
            return self.where.get(f"node:{step.action}", "all")
        return self.where.get(f"svc:{step.id}", "all")


def plan_create(catalog: Catalog, services: set[str] | list[str] | tuple[str, ...]) -> Plan:
    """CREATE -> CONFIRM -> BOOTSTRAP, then INSTALL -> CONFIGURE -> INITIALIZE -> START."""
    return _plan_new_nodes("create", catalog, _services(catalog, services), "all")


def _plan_new_nodes(operation: str, catalog: Catalog, services: set[str], where: str) -> Plan:
    b = _Builder(catalog, operation, services)
    prev = None
    for name in NODE_CREATE_STEPS:
        key = b.node(name, where)
        if prev:
            b.graph.edge(prev, key)
        prev = key
    for svc in sorted(services):
        b.chain(svc, CREATE_ACTIONS, after="node:bootstrap", where=where)
    b.install_order(services)
    b.start_order(services)
    return b.build()


def plan_delete(catalog: Catalog, services: set[str] | list[str] | tuple[str, ...]) -> Plan:
    """STOP in reverse dependency order, then REMOVE (services that define it; the DAG runs it
    only on hosts that outlive the cluster, i.e. a static pool's), then DELETE every node."""
    services = _services(catalog, services)
    b = _Builder(catalog, "delete", services)
    delete = b.node("delete")
    for svc in sorted(services):
        stop, remove = b.action(svc, "stop"), b.action(svc, "remove")
        b.graph.edge(stop, remove)
        b.graph.edge(remove, delete)
    b.stop_order(services)
    return b.build()


def plan_add_services(catalog: Catalog, existing: set[str] | list[str] | tuple[str, ...],
                      new: set[str] | list[str] | tuple[str, ...]) -> Plan:
    """BOOTSTRAP -> INSTALL -> CONFIGURE -> INITIALIZE -> START of the new services only.
    Dependencies among the new services order them; existing services are already running."""
    new_services = _services(catalog, new) - set(existing)
    b = _Builder(catalog, "add_services", new_services)
    b.node("bootstrap")
    for svc in sorted(new_services):
        b.chain(svc, CREATE_ACTIONS, after="node:bootstrap")
    b.install_order(new_services)
    b.start_order(new_services)
    return b.build()


def plan_configure(catalog: Catalog, services: set[str] | list[str] | tuple[str, ...], restart: bool = False) -> Plan:
    """CONFIGURE every service; with restart: STOP (reverse order) -> CONFIGURE -> START."""
    services = _services(catalog, services)
    b = _Builder(catalog, "configure", services)
    for svc in sorted(services):
        b.chain(svc, ("stop", "configure", "start") if restart else ("configure",))
    if restart:
        b.stop_order(services)
        b.start_order(services, then=("start",))
        for svc in sorted(services):  # every stop before any configure: no half-old cluster
            for other in sorted(services):
                b.graph.edge(f"svc:{step_id(other, 'stop')}", f"svc:{step_id(svc, 'configure')}")
    return b.build()


def plan_start(catalog: Catalog, cluster: set[str] | list[str] | tuple[str, ...], targets: set[str] | list[str] | tuple[str, ...] | None = None) -> Plan:
    """START the targets and, first, what they need at runtime (Loom pulled dependencies in)."""
    services = _services(catalog, cluster)
    chosen = _closure(catalog, services, set(targets) if targets else services, upward=True)
    b = _Builder(catalog, "start_services", chosen)
    for svc in sorted(chosen):
        b.action(svc, "start")
    b.start_order(chosen, then=("start",))
    return b.build()


def plan_stop(catalog: Catalog, cluster: set[str] | list[str] | tuple[str, ...], targets: set[str] | list[str] | tuple[str, ...] | None = None) -> Plan:
    """STOP the targets and, first, the services that depend on them."""
    services = _services(catalog, cluster)
    chosen = _closure(catalog, services, set(targets) if targets else services, upward=False)
    b = _Builder(catalog, "stop_services", chosen)
    for svc in sorted(chosen):
        b.action(svc, "stop")
    b.stop_order(chosen)
    return b.build()


def plan_restart(catalog: Catalog, cluster: set[str] | list[str] | tuple[str, ...], targets: set[str] | list[str] | tuple[str, ...] | None = None) -> Plan:
    """STOP the targets and their dependents (reverse order), then START them again (forward)."""
    services = _services(catalog, cluster)
    chosen = _closure(catalog, services, set(targets) if targets else services, upward=False)
    b = _Builder(catalog, "restart_services", chosen)
    for svc in sorted(chosen):
        b.chain(svc, ("stop", "start"))
    b.stop_order(chosen)
    b.start_order(chosen, then=("start",))
    return b.build()


def plan_sync(catalog: Catalog, services: set[str] | list[str] | tuple[str, ...]) -> Plan:
    """Bring a cluster to its template's current version: BOOTSTRAP and create the services the
    template now adds (``<svc>.install`` ...), then refresh every service with the new config:
    STOP (dependents first) -> CONFIGURE -> START (``<svc>.stop_refresh`` ...)."""
    services = _services(catalog, services)
    b = _Builder(catalog, "sync", services)
    b.node("bootstrap")
    for svc in sorted(services):
        b.chain(svc, CREATE_ACTIONS, after="node:bootstrap")
    b.install_order(services)
    b.start_order(services)
    refresh = {svc: [b.action(svc, a, suffix="_refresh") for a in ("stop", "configure", "start")] for svc in services}
    for svc, (stop, configure, start) in refresh.items():
        b.graph.edge(stop, configure)
        b.graph.edge(configure, start)
        for other in sorted(services):
            b.graph.edge(_last_create_step(catalog, other), stop)  # new services are up first
            b.graph.edge(refresh[other][0], configure)  # every stop before any configure
        for dep in sorted(_runtime_deps(catalog, services, svc)):
            b.graph.edge(stop, refresh[dep][0])
            b.graph.edge(refresh[dep][2], start)
    return b.build()


def membership_refs(catalog: Catalog, svc: str) -> set[str]:
    """Services whose node list this service's configure step reads (``%...service.X...%``)."""
    action = catalog.services[svc].actions.get("configure")
    texts = list(action.args) if action else []
    found = set()
    for text in texts:
        found.update(m.group(1) for m in _SERVICE_REF.finditer(text))
    return found


def plan_expand(catalog: Catalog, services: set[str] | list[str] | tuple[str, ...], grown: set[str] | list[str] | tuple[str, ...] | None = None) -> Plan:
    """New nodes get CREATE..START of their services; then, on existing nodes, CONFIGURE every
    service whose configure step reads the node list of a service that grew."""
    services = _services(catalog, services)
    grown_set = set(grown) if grown is not None else services
    b = _Builder(catalog, "expand", services)
    new_plan = _plan_new_nodes("expand", catalog, services, "new")
    for step in new_plan.steps:
        key = f"node:{step.action}" if step.kind == "node" else f"svc:{step.id}"
        b.graph.add(key)
        b.where[key] = "new"
        for before in step.after:
            b.graph.edge(f"node:{before[5:]}" if before.startswith("node.") else f"svc:{before}", key)
    for svc in sorted(services):
        if membership_refs(catalog, svc) & grown_set and "configure" in catalog.services[svc].actions:
            key = b.action(svc, "configure", where="existing", suffix="_existing")
            for other in sorted(services):  # after the new nodes are fully up
                b.graph.edge(_last_create_step(catalog, other), key)
    return b.build()


def _last_create_step(catalog: Catalog, svc: str) -> str:
    have = [a for a in CREATE_ACTIONS if a in catalog.services[svc].actions]
    return f"svc:{step_id(svc, have[-1])}" if have else "node:bootstrap"


PLANNERS = {
    "create": plan_create,
    "delete": plan_delete,
}


def plan(operation: str, catalog: Catalog, services: set[str] | list[str] | tuple[str, ...]) -> Plan:
    """Plan an operation over a cluster's services (create/delete); see the plan_* functions
    for operations that take more arguments."""
    try:
        planner = PLANNERS[operation]
    except KeyError:
        raise TemplateError([f"operation {operation!r} is not supported by plan(); use plan_{operation}"]) from None
    return planner(catalog, services)
