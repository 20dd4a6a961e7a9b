"""Benchmark the layout solver against Loom's algorithm, in the same process.

Templates with every constraint kind (cantcoexist pairs and a triple, mustcoexist pairs,
hardware and image constraints, min/max quantities, services that go everywhere):

* "wide": 20 services, feasible at every size;
* "ring": 20 services, five of them in a ring of cantcoexist pairs, each needing 2/5 of the
  nodes: feasible only when every node holds exactly two of them (tight);
* "ring-plus1": the same with one more node needed: infeasible, which is proved and explained;
* "narrow": 8 services, where Loom's greedy first try succeeds at once.

Each is solved for 10, 100, 1,000 and 5,000 nodes by ``loom.solver`` (best of --repeat, after
one warm-up call that also imports HiGHS) and by the baseline: Loom's algorithm (enumerate every
subset of the constrained services into candidate node layouts, then a depth-first search over
node counts per candidate, first assignment found wins), stopped at --cap seconds per case and
shown as "timeout". Prints a table; asserts nothing.

    .venv/bin/python bench/solver.py [--cap 10] [--repeat 3] [--sizes 10,100,1000,5000]
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import combinations
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loom_plugins"))

from loom.errors import LayoutError  # noqa: E402
from loom.spec.loader import Catalog  # noqa: E402
from loom.spec.models import ClusterTemplate, CreateRequest, HardwareType, ImageType, Provider, Service  # noqa: E402

WIDE_SERVICES = [
    "base",
    "monitor",
    "hdfs-namenode",
    "hdfs-secondary",
    "hdfs-datanode",
    "yarn-nodemanager",
    "yarn-resourcemanager",
    "zookeeper",
    "kafka",
    "spark-master",
    "spark-worker",
    "gpu-worker",
    "db-primary",
    "db-replica",
    "hive-metastore",
    "hive-server",
    "web-proxy",
    "cache",
    "scheduler",
    "notebook",
]
WIDE_CONSTRAINTS: dict[str, Any] = {
    "layout": {
        "mustcoexist": [["hdfs-datanode", "yarn-nodemanager"], ["hive-metastore", "hive-server"]],
        "cantcoexist": [
            ["hdfs-namenode", "hdfs-secondary"],
            ["yarn-resourcemanager", "hdfs-namenode"],
            ["spark-master", "spark-worker"],
            ["db-primary", "db-replica"],
            ["zookeeper", "kafka", "spark-worker"],
            ["gpu-worker", "kafka"],
            ["cache", "db-primary"],
        ],
    },
    "services": {
        "hdfs-namenode": {"quantities": {"min": 1, "max": 1}, "hardwaretypes": ["large"]},
        "hdfs-secondary": {"quantities": {"max": 1}},
        "yarn-resourcemanager": {"quantities": {"min": 1, "max": 1}},
        "zookeeper": {"quantities": {"min": 3, "max": 5}},
        "kafka": {"quantities": {"min": 3}},
        "spark-master": {"quantities": {"max": 1}},
        "gpu-worker": {"hardwaretypes": ["gpu"], "quantities": {"max": 64}},
        "db-primary": {"quantities": {"max": 1}, "imagetypes": ["ubuntu"]},
        "db-replica": {"quantities": {"max": 2}},
        "hive-metastore": {"quantities": {"max": 2}},
        "web-proxy": {"quantities": {"min": 2, "max": 2}, "imagetypes": ["ubuntu"]},
        "cache": {"quantities": {"min": 2, "max": 4}},
        "scheduler": {"quantities": {"min": 1, "max": 1}},
        "notebook": {"quantities": {"max": 3}, "hardwaretypes": ["large", "gpu"]},
    },
}
NARROW_SERVICES = ["base", "master", "worker", "zookeeper", "kafka", "gpu", "db", "db-agent"]
NARROW_CONSTRAINTS: dict[str, Any] = {
    "layout": {
        "mustcoexist": [["db", "db-agent"]],
        "cantcoexist": [["master", "worker"], ["zookeeper", "kafka", "worker"], ["gpu", "db"]],
    },
    "services": {
        "master": {"quantities": {"min": 1, "max": 1}, "hardwaretypes": ["large"]},
        "zookeeper": {"quantities": {"min": 3, "max": 3}},
        "kafka": {"quantities": {"min": 2}},
        "gpu": {"hardwaretypes": ["gpu"], "quantities": {"max": 8}},
        "db": {"quantities": {"min": 1, "max": 2}, "imagetypes": ["ubuntu"]},
    },
}


RING = ["r1", "r2", "r3", "r4", "r5"]
RING_SERVICES = [
    s for s in WIDE_SERVICES if s not in ("cache", "scheduler", "notebook", "db-replica", "web-proxy")
] + RING


def ring_constraints(size: int, extra: int) -> dict[str, Any]:
    """The wide constraints on RING_SERVICES plus the ring: each r needs 2/5 of ``size`` (+extra for r1)."""
    kept = [s for s in RING_SERVICES if s not in RING]
    cant = [g for g in WIDE_CONSTRAINTS["layout"]["cantcoexist"] if set(g) <= set(kept)]
    cant += [[RING[i], RING[(i + 1) % 5]] for i in range(5)]
    services = {s: c for s, c in WIDE_CONSTRAINTS["services"].items() if s in kept}
    services.update({r: {"quantities": {"min": 2 * size // 5 + (extra if r == "r1" else 0)}} for r in RING})
    return {
        "layout": {"mustcoexist": WIDE_CONSTRAINTS["layout"]["mustcoexist"], "cantcoexist": cant},
        "services": services,
    }


def bench_catalog(size: int = 10) -> Catalog:
    """An in-memory catalog: provider "local" mapping small/large/gpu and debian/ubuntu."""
    catalog = Catalog(root=Path("/in-memory/templates"))
    catalog.providers = {"local": Provider(name="local", driver="local")}
    catalog.hardwaretypes = {
        h: HardwareType.model_validate({"name": h, "providermap": {"local": {"flavor": f"f-{h}"}}})
        for h in ("small", "large", "gpu")
    }
    catalog.imagetypes = {
        i: ImageType.model_validate({"name": i, "providermap": {"local": {"image": f"i-{i}"}}})
        for i in ("debian", "ubuntu")
    }
    catalog.services = {s: Service(name=s) for s in {*WIDE_SERVICES, *NARROW_SERVICES, *RING}}
    for name, services, constraints in (
        ("wide", WIDE_SERVICES, WIDE_CONSTRAINTS),
        ("ring", RING_SERVICES, ring_constraints(size, 0)),
        ("ring-plus1", RING_SERVICES, ring_constraints(size, 1)),
        ("narrow", NARROW_SERVICES, NARROW_CONSTRAINTS),
    ):
        catalog.clustertemplates[name] = ClusterTemplate.model_validate(
            {
                "name": name,
                "defaults": {"services": services, "provider": "local", "hardwaretype": "small", "imagetype": "debian"},
                "constraints": {**constraints, "size": {"min": 1, "max": 10000}},
            }
        )
    return catalog


# --- the baseline: Loom's algorithm ------------------------------------------------------------


class Timeout(Exception):
    pass


def baseline(template: ClusterTemplate, size: int, hardware: list[str], images: list[str], cap: float) -> list[int]:
    """Loom's solver: candidate layouts from every subset, then DFS over counts; node counts per candidate."""
    deadline = time.perf_counter() + cap
    services = set(template.defaults.services)
    candidates = _candidate_layouts(template, services, hardware, images, deadline)
    return _distribute(template, services, candidates, size, deadline)


def _candidate_layouts(
    template: ClusterTemplate, services: set[str], hardware: list[str], images: list[str], deadline: float
) -> list[frozenset[str]]:
    c = template.constraints
    named = set(c.services).union(*c.layout.cantcoexist, *c.layout.mustcoexist)
    constrained = sorted(named & services)
    everywhere = services - set(constrained)
    out = []
    for k in range(len(constrained), -1, -1):
        for i, subset in enumerate(combinations(constrained, k)):
            if i % 4096 == 0 and time.perf_counter() > deadline:
                raise Timeout
            chosen = frozenset(subset)
            if (
                (chosen or everywhere)
                and _set_ok(template, chosen, services)
                and _types_ok(template, chosen, hardware, images)
            ):
                out.append(chosen | everywhere)
    return sorted(out, key=lambda s: (-len(s), tuple(sorted(s))))


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


def _types_ok(template: ClusterTemplate, chosen: frozenset[str], hardware: list[str], images: list[str]) -> bool:
    per = template.constraints.services
    hw = [
        h
        for h in hardware
        if all(s not in per or not per[s].hardwaretypes or h in per[s].hardwaretypes for s in chosen)
    ]
    im = [i for i in images if all(s not in per or not per[s].imagetypes or i in per[s].imagetypes for s in chosen)]
    return bool(hw and im)


def _distribute(
    template: ClusterTemplate, services: set[str], candidates: list[frozenset[str]], size: int, deadline: float
) -> list[int]:
    """Loom's depth-first search (iterative, same order): counts from the most allowed down to 0."""
    per = template.constraints.services
    lo = {s: per[s].quantities.min if s in per and per[s].quantities.min is not None else 1 for s in services}
    hi = {s: per[s].quantities.max if s in per and per[s].quantities.max is not None else size for s in services}
    counts = dict.fromkeys(services, 0)
    chosen = [0] * len(candidates)
    nxt: list[int | None] = [None] * len(candidates)
    i, left, steps = 0, size, 0
    while i >= 0:
        steps += 1
        if steps % 4096 == 0 and time.perf_counter() > deadline:
            raise Timeout
        if i == len(candidates):
            if left == 0 and all(counts[s] >= lo[s] for s in services):
                return chosen
            i -= 1
            continue
        cand = candidates[i]
        if nxt[i] is None:
            nxt[i] = min([left] + [hi[s] - counts[s] for s in cand])
        else:
            n = chosen[i]
            for s in cand:
                counts[s] -= n
            left, chosen[i], nxt[i] = left + n, 0, n - 1
        if nxt[i] < 0:
            nxt[i] = None
            i -= 1
            continue
        n = nxt[i]
        for s in cand:
            counts[s] += n
        left, chosen[i] = left - n, n
        i += 1
    raise LayoutError("no layout")


# --- the table ---------------------------------------------------------------------------------


def time_solver(catalog: Catalog, name: str, size: int, repeat: int) -> tuple[float, str]:
    from loom.solver import solve

    best, outcome = float("inf"), ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        try:
            layout = solve(catalog.template(name), CreateRequest(cluster="bench", size=size), catalog)
            outcome = f"{len(layout.nodes)} nodes, {sum(len(n.services) for n in layout.nodes)} placements"
        except LayoutError as exc:
            outcome = f"infeasible: {str(exc)[:90]}..."
        best = min(best, time.perf_counter() - t0)
    return best, outcome


def time_baseline(catalog: Catalog, name: str, size: int, cap: float) -> float | None:
    template = catalog.template(name)
    t0 = time.perf_counter()
    try:
        baseline(template, size, ["small", "large", "gpu"], ["debian", "ubuntu"], cap)
    except Timeout:
        return None
    except LayoutError:
        pass
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap", type=float, default=10.0, help="baseline time cap per case, seconds")
    parser.add_argument("--repeat", type=int, default=3, help="solver runs per case (best is shown)")
    parser.add_argument("--sizes", default="10,100,1000,5000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    t0 = time.perf_counter()
    time_solver(bench_catalog(), "narrow", 3, 1)  # warm-up: imports highspy/numpy once per process
    print(f"first solve in this process (imports HiGHS): {1000 * (time.perf_counter() - t0):.0f} ms")
    print(
        f"{'template':<10} {'services':>8} {'nodes':>6} {'solver ms':>10} {'baseline ms':>12} {'ratio':>9}"
        "  solver result"
    )
    for name in ("wide", "ring", "ring-plus1", "narrow"):
        for size in sizes:
            catalog = bench_catalog(size)
            count = len(catalog.template(name).defaults.services)
            solver_s, outcome = time_solver(catalog, name, size, args.repeat)
            base_s = time_baseline(catalog, name, size, args.cap)
            base = f"{1000 * base_s:12.1f}" if base_s is not None else f"{'timeout':>12}"
            ratio = f"{base_s / solver_s:8.2f}x" if base_s is not None else f">{args.cap / solver_s:7.0f}x"
            print(f"{name:<10} {count:>8} {size:>6} {1000 * solver_s:10.1f} {base} {ratio}  {outcome}", flush=True)
    print(f"ratio = baseline / solver; baseline: Loom's subset enumeration + count search, capped at {args.cap:g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
