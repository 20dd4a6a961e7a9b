"""The layout solver: dask sizes, request validation, constraint semantics, and a property check."""

from __future__ import annotations

from itertools import combinations, combinations_with_replacement, product
from pathlib import Path

import pytest
from helpers import assert_valid, cluster_template, service, write_templates

from loom.errors import LayoutError, RequestError
from loom.layout import Layout
from loom.solver import solve
from loom.spec.checks import provided_names
from loom.spec.loader import Catalog, load_catalog
from loom.spec.models import ClusterTemplate, CreateRequest

REPO = Path(__file__).resolve().parents[2]


def check_layout(template: ClusterTemplate, layout: Layout, catalog: Catalog, size: int) -> None:
    """Assert that ``layout`` satisfies every rule of LOOM_SEMANTICS.md's layout solver, and that a
    new cluster's nodes are numbered 1..size."""
    assert len(layout.nodes) == size
    assert [n.number for n in layout.nodes] == list(range(1, size + 1))
    assert [n.hostname for n in layout.nodes] == [f"{layout.cluster}-{i}" for i in range(1, size + 1)]
    assert_valid(template, layout, catalog)


def request(cluster: str = "demo", **kw) -> CreateRequest:
    return CreateRequest(cluster=cluster, **kw)


# --- the shipped dask template ---------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    catalog = load_catalog(REPO / "templates")
    catalog.raise_for_problems()
    return catalog


@pytest.mark.parametrize("size", [2, 3, 10, 50])
def test_dask_layout(shipped, size):
    template = shipped.template("dask")
    layout = solve(template, request("demo", size=size), shipped)
    check_layout(template, layout, shipped, size)
    assert layout.cluster == "demo" and layout.template == "dask" and layout.provider == "local"
    assert layout.services == ("base", "dask-scheduler", "dask-worker")
    schedulers = layout.nodes_with("dask-scheduler")
    assert [n.number for n in schedulers] == [1]
    assert schedulers[0].services == ("base", "dask-scheduler")
    workers = layout.nodes_with("dask-worker")
    assert [n.number for n in workers] == list(range(2, size + 1))
    assert all(n.services == ("base", "dask-worker") for n in workers)
    assert [n.hostname for n in layout.nodes] == [f"demo-{i}" for i in range(1, size + 1)]
    assert {(n.hardwaretype, n.imagetype, n.flavor, n.image, n.sshuser) for n in layout.nodes} == {
        ("small", "debian", "local-small", "host", "root")
    }
    assert layout.config == {"dask": {"pip_spec": "dask[distributed]==2026.8.0", "worker_threads": 2, "memory_limit": "auto"}}
    assert layout.dns_suffix is None


def test_dask_is_deterministic_and_round_trips(shipped):
    template = shipped.template("dask")
    first = solve(template, request("demo", size=7), shipped)
    second = solve(template, request("demo", size=7), shipped)
    assert first == second
    assert first.to_dict() == second.to_dict()
    assert Layout.from_dict(first.to_dict()) == first


def test_dask_default_size_is_template_minimum(shipped):
    layout = solve(shipped.template("dask"), request("demo"), shipped)
    assert len(layout.nodes) == 2


def test_request_config_is_deep_merged_over_defaults(shipped):
    template = shipped.template("dask")
    layout = solve(template, request("demo", size=2, config={"dask": {"worker_threads": 8}, "x": 1}), shipped)
    assert layout.config == {"dask": {"pip_spec": "dask[distributed]==2026.8.0", "worker_threads": 8, "memory_limit": "auto"}, "x": 1}
    assert template.defaults.config["dask"]["worker_threads"] == 2


@pytest.mark.parametrize("size", [1, 51, 1000])
def test_dask_size_outside_range(shipped, size):
    with pytest.raises(RequestError, match=rf"^size: {size} is outside .*'dask'.* 2\.\.50$"):
        solve(shipped.template("dask"), request("demo", size=size), shipped)


@pytest.mark.parametrize(
    "name",
    ["Demo", "1demo", "demo-", "a" * 41, "a;rm -rf /", "../x", "", "a", "demo\n", "de mo", "demo.x", "dé"],
)
def test_bad_cluster_names(shipped, name):
    with pytest.raises(RequestError, match=r"^cluster: .* is not a valid cluster name"):
        solve(shipped.template("dask"), request(name, size=2), shipped)


@pytest.mark.parametrize("name", ["ab", "a" * 40, "demo-2", "x1-y2-z3"])
def test_good_cluster_names(shipped, name):
    layout = solve(shipped.template("dask"), request(name, size=2), shipped)
    assert layout.nodes[0].hostname == f"{name}-1"


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"services": ["base", "ghost"]}, r"^services: unknown service 'ghost'"),
        ({"services": []}, r"^services: the cluster needs at least one service"),
        ({"services": ["base", "dask-worker"]}, r"^services: 'dask-worker' requires 'dask-scheduler' \(runtime\)"),
        ({"provider": "nowhere"}, r"^provider: unknown provider 'nowhere'"),
        ({"hardwaretype": "huge"}, r"^hardwaretype: unknown hardwaretype 'huge'"),
        ({"imagetype": "arch"}, r"^imagetype: unknown imagetype 'arch'"),
    ],
)
def test_dask_bad_requests(shipped, overrides, pattern):
    with pytest.raises(RequestError, match=pattern):
        solve(shipped.template("dask"), request("demo", size=3, **overrides), shipped)


# --- synthetic catalogs for the constraint language -----------------------------------------

SERVICES = {
    "base": service("base", ("install",)),
    "a": service("a"),
    "b": service("b"),
    "c": service("c"),
    "d": service("d"),
    "e": service("e"),
    "zk": service("zk", provides=["coordinator"]),
    "kafka": service("kafka", runtime_requires=["coordinator"], install_requires=["base"]),
    "etcd": service("etcd", provides=["coordinator"], conflicts=["zk"]),
    "solo": service("solo", conflicts=["coordinator"]),
    "outsider": service("outsider"),
}

TEMPLATES = {
    "plain": cluster_template("plain", ["base", "a", "b"]),
    "strict": cluster_template(
        "strict",
        ["base", "a", "b"],
        compatibility={"services": ["base", "a", "b", "zk", "kafka", "etcd", "solo"], "hardwaretypes": ["small", "large"]},
    ),
    "together": cluster_template(
        "together", ["base", "a", "b", "c"], constraints={"layout": {"mustcoexist": [["a", "b"]]}}
    ),
    "apart": cluster_template(
        "apart",
        ["base", "a", "b", "c"],
        constraints={"layout": {"cantcoexist": [["a", "b"]]}, "services": {"c": {"quantities": {"max": 2}}}},
    ),
    "counted": cluster_template(
        "counted",
        ["base", "a", "b"],
        constraints={
            "layout": {"cantcoexist": [["a", "b"]]},
            "services": {"a": {"quantities": {"min": 2, "max": 3}}, "b": {"quantities": {"min": 2}}},
        },
    ),
    "hardware": cluster_template(
        "hardware",
        ["base", "a", "b"],
        constraints={
            "services": {
                "a": {"hardwaretypes": ["large"], "quantities": {"max": 1}},
                "b": {"imagetypes": ["ubuntu"]},
            }
        },
    ),
    "gpu-only": cluster_template(
        "gpu-only", ["base", "a", "b"], constraints={"services": {"a": {"hardwaretypes": ["gpu"]}}}
    ),
    "nowhere": cluster_template(
        "nowhere",
        ["a", "b"],
        constraints={"layout": {"mustcoexist": [["a", "b"]], "cantcoexist": [["a", "b"]]}},
    ),
}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Catalog:
    files = {f"services/{k}.yaml": v for k, v in SERVICES.items()}
    files.update({f"clustertemplates/{k}.yaml": v for k, v in TEMPLATES.items()})
    catalog = write_templates(tmp_path_factory.mktemp("synthetic"), files)
    catalog.raise_for_problems()
    return catalog


def solve_in(catalog: Catalog, template: str, size: int, **kw) -> Layout:
    t = catalog.template(template)
    layout = solve(t, request("syn", size=size, **kw), catalog)
    check_layout(t, layout, catalog, size)
    return layout


@pytest.mark.parametrize("size", [1, 2, 5])
def test_unconstrained_services_land_on_every_node(synthetic, size):
    layout = solve_in(synthetic, "plain", size)
    assert all(n.services == ("a", "b", "base") for n in layout.nodes)


@pytest.mark.parametrize("size", [1, 2, 3, 6])
def test_mustcoexist_services_always_together(synthetic, size):
    layout = solve_in(synthetic, "together", size)
    for node in layout.nodes:
        assert ("a" in node.services) == ("b" in node.services)
    assert layout.nodes_with("a") == layout.nodes_with("b")
    assert len(layout.nodes_with("c")) == size


@pytest.mark.parametrize("size", [2, 3, 4])
def test_cantcoexist_services_never_together(synthetic, size):
    layout = solve_in(synthetic, "apart", size)
    assert not any({"a", "b"} <= set(n.services) for n in layout.nodes)
    assert len(layout.nodes_with("a")) + len(layout.nodes_with("b")) == size
    assert 1 <= len(layout.nodes_with("c")) <= 2


def test_cantcoexist_one_node_is_impossible(synthetic):
    with pytest.raises(LayoutError, match=r"no layout for 1 nodes of template 'apart'.*keeping apart a/b"):
        solve(synthetic.template("apart"), request("syn", size=1), synthetic)


@pytest.mark.parametrize(("size", "a_count"), [(4, 2), (5, 3), (6, 3)])
def test_quantities_min_max(synthetic, size, a_count):
    layout = solve_in(synthetic, "counted", size)
    assert len(layout.nodes_with("a")) == a_count
    assert len(layout.nodes_with("b")) == size - a_count
    assert [n.number for n in layout.nodes_with("a")] == list(range(1, a_count + 1))


@pytest.mark.parametrize("size", [1, 2, 3])
def test_impossible_quantities_explained(synthetic, size):
    with pytest.raises(LayoutError) as info:
        solve(synthetic.template("counted"), request("syn", size=size), synthetic)
    msg = str(info.value)
    assert f"no layout for {size} nodes of template 'counted'" in msg
    assert "a min 2" in msg and "b min 2" in msg
    assert f"on {size} nodes" in msg
    assert "keeping apart a/b" in msg


def test_mustcoexist_and_cantcoexist_together_is_impossible(synthetic):
    with pytest.raises(LayoutError, match=r"no node can hold any combination of \['a', 'b'\]"):
        solve(synthetic.template("nowhere"), request("syn", size=2), synthetic)


@pytest.mark.parametrize("size", [1, 2, 4])
def test_per_service_hardware_and_image_constraints(synthetic, size):
    layout = solve_in(synthetic, "hardware", size)
    a_nodes = layout.nodes_with("a")
    assert len(a_nodes) == 1
    assert all(n.hardwaretype == "large" and n.flavor == "local-large" for n in a_nodes)
    assert all(n.imagetype == "ubuntu" and n.image == "host-ubuntu" for n in layout.nodes_with("b"))
    assert all(n.hardwaretype == "small" for n in layout.nodes if "a" not in n.services)
    assert len(layout.nodes_with("base")) == size


def test_service_that_fits_nowhere_for_the_provider(synthetic):
    with pytest.raises(LayoutError, match=r"service 'a' fits on no node"):
        solve(synthetic.template("gpu-only"), request("syn", size=2), synthetic)


def test_hardware_constraint_satisfiable_with_another_provider(synthetic):
    layout = solve_in(synthetic, "gpu-only", 2, provider="cloud")
    a_nodes = layout.nodes_with("a")
    assert a_nodes and all(n.hardwaretype == "gpu" and n.flavor == "g-1" for n in a_nodes)
    assert all(n.image == "deb-12" and n.sshuser == "admin" for n in layout.nodes)


def test_request_hardwaretype_override(synthetic):
    layout = solve_in(synthetic, "plain", 2, hardwaretype="large", imagetype="ubuntu")
    assert {(n.hardwaretype, n.imagetype) for n in layout.nodes} == {("large", "ubuntu")}


@pytest.mark.parametrize(
    ("template", "overrides", "pattern"),
    [
        ("strict", {"hardwaretype": "gpu"}, r"^hardwaretype: 'gpu' is not allowed by template 'strict'"),
        ("plain", {"hardwaretype": "gpu"}, r"^hardwaretype: no hardwaretype .* mapped for provider 'local'"),
        ("plain", {"imagetype": "ubuntu", "provider": "cloud"}, r"^imagetype: no imagetype .* for provider 'cloud'"),
        ("plain", {"provider": "mars"}, r"^provider: unknown provider 'mars' \(known: cloud, local\)"),
        ("strict", {"services": ["base", "outsider"]}, r"^services: 'outsider' is not allowed by template 'strict'"),
        ("plain", {"services": ["kafka"]}, r"^services: 'kafka' requires 'base' \(install\)"),
        ("plain", {"services": ["base", "kafka"]}, r"requires 'coordinator' \(runtime\); add one of: etcd, zk$"),
        ("strict", {"services": ["zk", "etcd"]}, r"^services: 'etcd' conflicts with 'zk'"),
        ("strict", {"services": ["zk", "solo"]}, r"^services: 'solo' conflicts with 'zk'"),
    ],
)
def test_synthetic_bad_requests(synthetic, template, overrides, pattern):
    with pytest.raises(RequestError, match=pattern):
        solve(synthetic.template(template), request("syn", size=2, **overrides), synthetic)


def test_requirement_satisfied_via_provides(synthetic):
    layout = solve_in(synthetic, "strict", 3, services=["base", "kafka", "zk"])
    assert layout.services == ("base", "kafka", "zk")
    assert provided_names(synthetic)["coordinator"] == {"zk", "etcd"}


# --- property check: every returned layout satisfies every constraint -------------------------

QUANTITIES_A = [None, (1, 1), (1, 2), (2, 3), (0, 0)]
QUANTITIES_B = [None, (2, 2), (3, None)]
C_HARDWARE = [None, ["large"]]
SIZES = range(1, 7)
PROPERTY_SERVICES = ["a", "b", "c", "d", "e"]


def _quantities(q):
    if q is None:
        return None
    lo, hi = q
    return {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}


def property_templates() -> dict[str, dict]:
    out = {}
    for i, (qa, qb, chw) in enumerate(product(QUANTITIES_A, QUANTITIES_B, C_HARDWARE)):
        services: dict = {}
        if qa:
            services["a"] = {"quantities": _quantities(qa)}
        if qb:
            services["b"] = {"quantities": _quantities(qb)}
        if chw:
            services["c"] = {"hardwaretypes": chw}
        name = f"prop-{i}"
        out[name] = cluster_template(
            name,
            PROPERTY_SERVICES,
            constraints={
                "layout": {"cantcoexist": [["a", "b"]], "mustcoexist": [["c", "d"]]},
                "services": services,
            },
        )
    return out


PROPERTY_TEMPLATES = property_templates()


def layout_exists(template: ClusterTemplate, size: int) -> bool:
    """Brute force, independent of the solver: is there any valid multiset of node types?"""
    c = template.constraints
    services = set(template.defaults.services)
    constrained = sorted({s for s in services if s in c.services or any(s in g for g in c.layout.cantcoexist + c.layout.mustcoexist)})
    free = services - set(constrained)
    types = []
    for k in range(len(constrained) + 1):
        for subset in combinations(constrained, k):
            on = set(subset) | free
            if not on:
                continue
            if any(set(g) & services <= on and len(set(g) & services) > 1 for g in c.layout.cantcoexist):
                continue
            if any(set(g) & on and not set(g) & services <= on for g in c.layout.mustcoexist):
                continue
            hw_ok = any(  # the provider is "local": only small and large are mapped
                all(not (s in c.services and c.services[s].hardwaretypes) or h in c.services[s].hardwaretypes for s in on)
                for h in ("small", "large")
            )
            if hw_ok:
                types.append(on)
    for combo in combinations_with_replacement(range(len(types)), size):
        ok = True
        for s in services:
            n = sum(1 for t in combo if s in types[t])
            q = c.services[s].quantities if s in c.services else None
            lo = q.min if q and q.min is not None else 1
            hi = q.max if q and q.max is not None else size
            if not lo <= n <= hi:
                ok = False
                break
        if ok:
            return True
    return False


@pytest.fixture(scope="module")
def property_catalog(tmp_path_factory) -> Catalog:
    files = {f"services/{s}.yaml": service(s) for s in PROPERTY_SERVICES}
    files.update({f"clustertemplates/{k}.yaml": v for k, v in PROPERTY_TEMPLATES.items()})
    catalog = write_templates(tmp_path_factory.mktemp("property"), files)
    catalog.raise_for_problems()
    return catalog


@pytest.mark.parametrize("name", sorted(PROPERTY_TEMPLATES))
def test_property_every_layout_satisfies_every_constraint(property_catalog, name):
    template = property_catalog.template(name)
    for size in SIZES:
        exists = layout_exists(template, size)
        try:
            layout = solve(template, request("prop", size=size), property_catalog)
        except LayoutError as exc:
            assert not exists, f"{name} size {size}: solver said {exc} but a layout exists"
            assert f"{size} nodes" in str(exc)
            continue
        assert exists, f"{name} size {size}: solver returned a layout the brute force says is impossible"
        check_layout(template, layout, property_catalog, size)
        assert layout == solve(template, request("prop", size=size), property_catalog)


def test_property_cases_cover_both_outcomes(property_catalog):
    """Guard against a vacuous property test: some cases solve, some are impossible."""
    outcomes = set()
    for name in sorted(PROPERTY_TEMPLATES):
        template = property_catalog.template(name)
        for size in SIZES:
            outcomes.add(layout_exists(template, size))
    assert outcomes == {True, False}
