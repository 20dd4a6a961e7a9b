"""Template loading and validation: precise ``file: field: problem`` messages, failure isolation."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import cluster_template, service, write_templates

from loom.errors import TemplateError
from loom.spec.loader import load_catalog

REPO = Path(__file__).resolve().parents[2]


def only_problem(catalog) -> str:
    assert len(catalog.problems) == 1, catalog.problems
    return catalog.problems[0]


def test_shipped_templates_load_without_problems():
    catalog = load_catalog(REPO / "templates")
    assert catalog.problems == []
    catalog.raise_for_problems()
    assert set(catalog.clustertemplates) == {"dask"}
    assert set(catalog.services) == {"base", "dask-scheduler", "dask-worker"}
    assert set(catalog.providers) == {"local"}
    dask = catalog.template("dask")
    assert dask.defaults.services == ["base", "dask-scheduler", "dask-worker"]
    assert dask.constraints.size.min == 2 and dask.constraints.size.max == 50
    assert dask.constraints.layout.cantcoexist == [["dask-scheduler", "dask-worker"]]
    worker = catalog.services["dask-worker"]
    assert worker.dependencies.runtime.requires == ["dask-scheduler"]
    assert worker.actions["configure"].args[0] == "worker"
    assert catalog.file_of("clustertemplates", "dask") == "templates/clustertemplates/dask.yaml"


def test_valid_synthetic_catalog_has_no_problems(tmp_path):
    catalog = write_templates(
        tmp_path,
        {
            "services/app.yaml": service("app"),
            "clustertemplates/one.yaml": cluster_template("one", ["app"]),
        },
    )
    assert catalog.problems == []
    assert set(catalog.clustertemplates) == {"one"}
    assert set(catalog.hardwaretypes) == {"small", "large", "gpu"}


def test_missing_templates_folder_is_a_problem(tmp_path):
    catalog = load_catalog(tmp_path / "nowhere")
    assert "templates folder does not exist" in only_problem(catalog)


def test_broken_yaml_names_file_and_line(tmp_path):
    text = "name: app\nactions:\n  install: [unclosed\n  start: {}\n"
    catalog = write_templates(tmp_path, {"services/app.yaml": text})
    problem = only_problem(catalog)
    assert problem.startswith("templates/services/app.yaml: (yaml): ")
    assert "line 4" in problem
    assert "app" not in catalog.services


def test_top_level_must_be_a_mapping(tmp_path):
    catalog = write_templates(tmp_path, {"providers/p.yaml": "- just\n- a list\n"})
    assert only_problem(catalog) == (
        "templates/providers/p.yaml: (top level): expected a mapping of fields, got list"
    )


def test_unknown_field_is_forbidden(tmp_path):
    catalog = write_templates(tmp_path, {"providers/p.yaml": {"name": "p", "driver": "local", "drvier": "x"}})
    problem = only_problem(catalog)
    assert problem.startswith("templates/providers/p.yaml: drvier: ")
    assert "not permitted" in problem
    assert "p" not in catalog.providers


def test_unknown_nested_field_names_its_path(tmp_path):
    svc = service("app")
    svc["dependencies"] = {"runtime": {"require": ["x"]}}
    catalog = write_templates(tmp_path, {"services/app.yaml": svc})
    assert only_problem(catalog).startswith("templates/services/app.yaml: dependencies.runtime.require: ")


def test_unknown_action_name_is_rejected(tmp_path):
    svc = service("app")
    svc["actions"]["launch"] = {"type": "shell", "script": "scripts/noop.sh"}
    catalog = write_templates(tmp_path, {"services/app.yaml": svc})
    assert only_problem(catalog).startswith("templates/services/app.yaml: actions.launch")


def test_name_must_match_file_stem(tmp_path):
    catalog = write_templates(tmp_path, {"services/app.yaml": service("other")})
    assert only_problem(catalog) == (
        "templates/services/app.yaml: name: 'other' must match the file name 'app'"
    )
    assert catalog.services == {}


def test_name_defaults_to_file_stem(tmp_path):
    catalog = write_templates(tmp_path, {"providers/mine.yaml": {"driver": "local"}})
    assert catalog.problems == []
    assert catalog.providers["mine"].name == "mine"


def test_invalid_entity_name_is_rejected(tmp_path):
    catalog = write_templates(tmp_path, {"providers/Bad.yaml": {"driver": "local"}})
    assert only_problem(catalog).startswith("templates/providers/Bad.yaml: name: ")


def test_missing_script_drops_the_service_and_its_templates(tmp_path):
    svc = service("app", ("install",))
    svc["actions"]["install"]["script"] = "scripts/app/install.sh"
    catalog = write_templates(
        tmp_path,
        {
            "services/app.yaml": svc,
            "services/other.yaml": service("other"),
            "clustertemplates/uses-app.yaml": cluster_template("uses-app", ["app"]),
            "clustertemplates/fine.yaml": cluster_template("fine", ["other"]),
        },
    )
    assert len(catalog.problems) == 2, catalog.problems
    script_problem, template_problem = catalog.problems
    assert script_problem.startswith("templates/services/app.yaml: actions.install.script: ")
    assert "'scripts/app/install.sh' not found" in script_problem
    assert template_problem.startswith("templates/clustertemplates/uses-app.yaml: defaults.services[0]: ")
    assert "'app'" in template_problem and "templates/services/app.yaml" in template_problem
    assert set(catalog.services) == {"other"}
    assert set(catalog.clustertemplates) == {"fine"}


@pytest.mark.parametrize("script", ["../outside.sh", "scripts/../../etc/passwd", "/etc/passwd", ""])
def test_script_path_must_stay_inside_services(tmp_path, script):
    svc = service("app", ("install",))
    svc["actions"]["install"]["script"] = script
    catalog = write_templates(tmp_path, {"services/app.yaml": svc})
    problem = only_problem(catalog)
    assert problem.startswith("templates/services/app.yaml: actions.install: ")
    assert "relative path inside templates/services/" in problem
    assert catalog.services == {}


def test_unknown_service_skips_only_that_template(tmp_path):
    catalog = write_templates(
        tmp_path,
        {
            "services/app.yaml": service("app"),
            "clustertemplates/bad.yaml": cluster_template("bad", ["app", "ghost"]),
            "clustertemplates/good.yaml": cluster_template("good", ["app"]),
        },
    )
    problem = only_problem(catalog)
    assert problem.startswith("templates/clustertemplates/bad.yaml: defaults.services[1]: ")
    assert "unknown or invalid service 'ghost'" in problem
    assert set(catalog.clustertemplates) == {"good"}
    with pytest.raises(TemplateError, match="no valid cluster template named 'bad'"):
        catalog.template("bad")


def test_broken_yaml_template_does_not_hide_the_others(tmp_path):
    catalog = write_templates(
        tmp_path,
        {
            "services/app.yaml": service("app"),
            "clustertemplates/bad.yaml": "name: bad\ndefaults: [\n",
            "clustertemplates/good.yaml": cluster_template("good", ["app"]),
        },
    )
    assert only_problem(catalog).startswith("templates/clustertemplates/bad.yaml: (yaml): ")
    assert set(catalog.clustertemplates) == {"good"}


def test_default_service_outside_compatibility(tmp_path):
    catalog = write_templates(
        tmp_path,
        {
            "services/app.yaml": service("app"),
            "services/db.yaml": service("db"),
            "clustertemplates/t.yaml": cluster_template("t", ["app", "db"], compatibility={"services": ["app"]}),
        },
    )
    assert only_problem(catalog) == (
        "templates/clustertemplates/t.yaml: defaults.services[1]: 'db' is not in compatibility.services"
    )
    assert catalog.clustertemplates == {}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"provider": "nope"}, "defaults.provider: unknown provider 'nope'"),
        ({"hardwaretype": "huge"}, "defaults.hardwaretype: unknown hardwaretype 'huge'"),
        ({"imagetype": "arch"}, "defaults.imagetype: unknown imagetype 'arch'"),
        ({"hardwaretype": "gpu"}, "defaults.hardwaretype: 'gpu' has no providermap entry for provider 'local'"),
        ({"imagetype": "ubuntu", "provider": "cloud"}, "defaults.imagetype: 'ubuntu' has no providermap entry"),
    ],
)
def test_defaults_must_name_known_mapped_types(tmp_path, overrides, expected):
    catalog = write_templates(
        tmp_path,
        {"services/app.yaml": service("app"), "clustertemplates/t.yaml": cluster_template("t", ["app"], **overrides)},
    )
    assert catalog.problems
    assert all(p.startswith("templates/clustertemplates/t.yaml: ") for p in catalog.problems)
    assert any(p.startswith(f"templates/clustertemplates/t.yaml: {expected}") for p in catalog.problems)
    assert catalog.clustertemplates == {}


def test_constraints_must_name_known_services(tmp_path):
    catalog = write_templates(
        tmp_path,
        {
            "services/app.yaml": service("app"),
            "clustertemplates/t.yaml": cluster_template(
                "t",
                ["app"],
                constraints={"layout": {"cantcoexist": [["app", "ghost"]]}, "services": {"phantom": {}}},
            ),
        },
    )
    assert len(catalog.problems) == 2, catalog.problems
    assert "constraints.layout: group 0 names unknown service 'ghost'" in catalog.problems[0]
    assert "constraints.services.phantom: unknown service 'phantom'" in catalog.problems[1]


def test_required_dependency_nobody_provides(tmp_path):
    catalog = write_templates(
        tmp_path,
        {
            "services/app.yaml": service("app", runtime_requires=["coordinator"]),
            "clustertemplates/t.yaml": cluster_template("t", ["app"]),
        },
    )
    assert catalog.problems == [
        "templates/services/app.yaml: dependencies.runtime.requires[0]: 'coordinator' is provided by no service",
        "templates/clustertemplates/t.yaml: defaults.services[0]: unknown or invalid service 'app' "
        "(see templates/services/app.yaml)",
    ]


def test_default_services_must_satisfy_each_others_requirements(tmp_path):
    catalog = write_templates(
        tmp_path,
        {
            "services/zk.yaml": service("zk", provides=["coordinator"]),
            "services/app.yaml": service("app", runtime_requires=["coordinator"]),
            "clustertemplates/t.yaml": cluster_template("t", ["app"]),
        },
    )
    assert only_problem(catalog) == (
        "templates/clustertemplates/t.yaml: defaults.services: 'app' requires 'coordinator' (runtime), "
        "which no default service provides; add one of: zk"
    )


def test_required_dependency_satisfied_via_provides(tmp_path):
    catalog = write_templates(
        tmp_path,
        {
            "services/zk.yaml": service("zk", provides=["coordinator"]),
            "services/app.yaml": service("app", runtime_requires=["coordinator"]),
            "clustertemplates/t.yaml": cluster_template("t", ["app", "zk"]),
        },
    )
    assert catalog.problems == []


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("quantities", {"min": 3, "max": 1}, "constraints.services.app.quantities: "),
        ("quantities", {"min": -1}, "constraints.services.app.quantities.min: "),
    ],
)
def test_bad_quantities(tmp_path, field, value, shown):
    catalog = write_templates(
        tmp_path,
        {
            "services/app.yaml": service("app"),
            "clustertemplates/t.yaml": cluster_template("t", ["app"], constraints={"services": {"app": {field: value}}}),
        },
    )
    assert only_problem(catalog).startswith(f"templates/clustertemplates/t.yaml: {shown}")


def test_bad_size_and_lease_and_dns_suffix_reported_together(tmp_path):
    template = cluster_template(
        "t",
        ["app"],
        constraints={"size": {"min": 5, "max": 2}},
        administration={"leaseduration": {"initial": "4 hours"}},
    )
    template["defaults"]["dnsSuffix"] = "Bad_Suffix."
    catalog = write_templates(tmp_path, {"services/app.yaml": service("app"), "clustertemplates/t.yaml": template})
    fields = [p.split(": ")[1] for p in catalog.problems]
    assert "defaults.dnsSuffix" in fields
    assert "constraints.size" in fields
    assert any(f.startswith("administration.leaseduration.initial") for f in fields)
    assert all(p.startswith("templates/clustertemplates/t.yaml: ") for p in catalog.problems)


def test_all_problems_reported_at_once(tmp_path):
    catalog = write_templates(
        tmp_path,
        {
            "services/app.yaml": service("app"),
            "providers/broken.yaml": "name: broken\ndriver: [\n",
            "hardwaretypes/odd.yaml": {"name": "odd", "providermap": {"local": {"flavor": "x", "colour": "red"}}},
            "clustertemplates/t.yaml": cluster_template("t", ["app"]),
        },
    )
    assert len(catalog.problems) == 2, catalog.problems
    assert catalog.problems[0].startswith("templates/providers/broken.yaml: (yaml): ")
    assert catalog.problems[1].startswith("templates/hardwaretypes/odd.yaml: providermap.local.colour: ")
    assert set(catalog.clustertemplates) == {"t"}
    with pytest.raises(TemplateError) as info:
        catalog.raise_for_problems()
    assert info.value.problems == catalog.problems
    assert "templates/providers/broken.yaml" in str(info.value)
    assert "templates/hardwaretypes/odd.yaml" in str(info.value)


def test_the_same_entity_in_yaml_and_yml_is_a_problem(tmp_path):
    catalog = write_templates(
        tmp_path,
        {"services/dup.yaml": service("dup", ()), "services/dup.yml": service("dup", ())},
    )
    [problem] = [p for p in catalog.problems if "dup" in p]
    assert problem.startswith("templates/services/dup.yml: name: 'dup' is already defined by templates/services/dup.yaml")


@pytest.mark.parametrize("kind", ["install", "runtime"])
def test_dependency_cycles_are_refused_with_the_cycle_named(tmp_path, kind):
    catalog = write_templates(
        tmp_path,
        {
            "services/ping.yaml": service("ping", ("install",), **{f"{kind}_requires": ["pong"]}),
            "services/pong.yaml": service("pong", ("install",), **{f"{kind}_uses": ["ping"]}),
            "services/ok.yaml": service("ok", ("install",)),
        },
    )
    [problem] = catalog.problems
    assert problem.startswith(f"templates/services/ping.yaml: dependencies.{kind}: dependency cycle")
    assert "ping" in problem and "pong" in problem
    assert set(catalog.services) == {"ok"}


def test_requiring_what_one_conflicts_with_is_refused(tmp_path):
    catalog = write_templates(
        tmp_path,
        {
            "services/a.yaml": service("a", ("install",), runtime_requires=["b"], conflicts=["b"]),
            "services/b.yaml": service("b", ("install",)),
        },
    )
    assert catalog.problems == ["templates/services/a.yaml: dependencies.conflicts: 'a' both requires and conflicts with 'b'"]


def test_requiring_a_name_nobody_provides_is_refused(tmp_path):
    catalog = write_templates(tmp_path, {"services/a.yaml": service("a", ("install",), install_requires=["ghost"])})
    assert catalog.problems == ["templates/services/a.yaml: dependencies.install.requires[0]: 'ghost' is provided by no service"]
