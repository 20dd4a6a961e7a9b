"""The planner: (operation, services, catalog) -> Plan, a graph of plain-data steps.

Nodes of the graph are node actions (create, confirm, bootstrap, delete) and service actions
(``<service>.<action>``). The DAG factory turns each step into a task and each edge into a
dependency; ``loom plan`` prints the same steps. Ordering rules are LOOM_SEMANTICS.md's:
install dependencies order installs; runtime dependencies put START(dep) before INITIALIZE and
START of the dependent; STOP runs in reverse. A service lacking an action is walked through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter

from loom.errors import TemplateError
from loom.spec.loader import Catalog

CREATE_ACTIONS = ("install", "configure", "initialize", "start")
NODE_CREATE_STEPS = ("create", "confirm", "bootstrap")


@dataclass(frozen=True)
class Step:
    id: str
    kind: str  # "node" or "service"
    action: str
    service: str | None = None
    after: tuple[str, ...] = ()


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
            steps.append(Step(id=rest, kind="service", action=action, service=svc))
    ids = {n: s.id for n, s in zip(order, steps)}
    steps = [
        Step(s.id, s.kind, s.action, s.service, tuple(ids[p] for p in graph.reduced_preds(n, index)))
        for n, s in zip(order, steps)
    ]
    return Plan(operation=operation, steps=tuple(steps))


def plan_create(catalog: Catalog, services: set[str] | list[str] | tuple[str, ...]) -> Plan:
    services = set(services)
    graph = _Graph()
    prev = None
    for name in NODE_CREATE_STEPS:
        graph.add(f"node:{name}")
        if prev:
            graph.edge(f"node:{prev}", f"node:{name}")
        prev = name
    missing = set()
    for svc in sorted(services):
        service = catalog.services[svc]
        chain = [f"svc:{step_id(svc, a)}" for a in CREATE_ACTIONS]
        graph.edge("node:bootstrap", chain[0])
        for before, after in zip(chain, chain[1:]):
            graph.edge(before, after)
        missing |= {f"svc:{step_id(svc, a)}" for a in CREATE_ACTIONS if a not in service.actions}
        deps = service.dependencies
        for dep in sorted(_resolve(catalog, services, deps.install.requires + deps.install.uses) - {svc}):
            graph.edge(f"svc:{step_id(dep, 'install')}", f"svc:{step_id(svc, 'install')}")
        for dep in sorted(_resolve(catalog, services, deps.runtime.requires + deps.runtime.uses) - {svc}):
            graph.edge(f"svc:{step_id(dep, 'start')}", f"svc:{step_id(svc, 'initialize')}")
            graph.edge(f"svc:{step_id(dep, 'start')}", f"svc:{step_id(svc, 'start')}")
    return _build("create", graph, catalog, services, missing)


def plan_delete(catalog: Catalog, services: set[str] | list[str] | tuple[str, ...]) -> Plan:
    services = {s for s in services if s in catalog.services}
    graph = _Graph()
    graph.add("node:delete")
    missing = set()
    for svc in sorted(services):
        service = catalog.services[svc]
        stop = f"svc:{step_id(svc, 'stop')}"
        graph.edge(stop, "node:delete")
        if "stop" not in service.actions:
            missing.add(stop)
        deps = service.dependencies
        for dep in sorted(_resolve(catalog, services, deps.runtime.requires + deps.runtime.uses) - {svc}):
            graph.edge(stop, f"svc:{step_id(dep, 'stop')}")
    return _build("delete", graph, catalog, services, missing)


PLANNERS = {"create": plan_create, "delete": plan_delete}


def plan(operation: str, catalog: Catalog, services: set[str] | list[str] | tuple[str, ...]) -> Plan:
    try:
        planner = PLANNERS[operation]
    except KeyError:
        raise TemplateError([f"operation {operation!r} is not supported yet"]) from None
    return planner(catalog, services)
