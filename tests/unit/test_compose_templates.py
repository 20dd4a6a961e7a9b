"""Cluster template composition: extends, includes of partial templates, immutable config."""

from __future__ import annotations

import pytest
from helpers import cluster_template, service, write_templates

from loom.durations import format_duration, parse_duration
from loom.errors import RequestError

SERVICES = {f"services/{n}.yaml": service(n, ("install",)) for n in ("base", "web", "db", "cache", "mon")}


def _tmpl(name: str, **fields) -> dict:
    data = cluster_template(name, fields.pop("services", ["base"]))
    for key, value in fields.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def test_extends_inherits_and_overrides(tmp_path):
    parent = _tmpl("parent", services=["base", "web"])
    parent["defaults"]["config"] = {"web": {"port": 80, "tls": False}}
    parent["constraints"] = {"size": {"min": 2, "max": 9}}
    child = {"name": "child", "extends": "parent", "description": "a child",
             "defaults": {"config": {"web": {"tls": True}}}}
    catalog = write_templates(tmp_path, {**SERVICES, "clustertemplates/parent.yaml": parent,
                                         "clustertemplates/child.yaml": child})
    assert catalog.problems == []
    c = catalog.clustertemplates["child"]
    assert c.description == "a child"
    assert c.defaults.services == ["base", "web"]
    assert c.defaults.config == {"web": {"port": 80, "tls": True}}
    assert (c.constraints.size.min, c.constraints.size.max) == (2, 9)
    assert catalog.clustertemplates["parent"].defaults.config == {"web": {"port": 80, "tls": False}}


def test_extends_unknown_parent_and_cycles_are_problems(tmp_path):
    catalog = write_templates(tmp_path, {
        **SERVICES,
        "clustertemplates/orphan.yaml": {"name": "orphan", "extends": "nobody"},
        "clustertemplates/a.yaml": {"name": "a", "extends": "b"},
        "clustertemplates/b.yaml": {"name": "b", "extends": "a"},
        "clustertemplates/fine.yaml": _tmpl("fine"),
    })
    assert set(catalog.clustertemplates) == {"fine"}
    text = "\n".join(catalog.problems)
    assert "templates/clustertemplates/orphan.yaml: extends: unknown cluster template 'nobody'" in text
    assert "templates/clustertemplates/a.yaml: extends: inheritance cycle a -> b -> a" in text


def test_includes_union_sets_and_deep_merge_config(tmp_path):
    files = {
        **SERVICES,
        "partialtemplates/monitoring.yaml": {
            "name": "monitoring",
            "defaults": {"services": ["mon"], "config": {"mon": {"interval": 10, "sink": "log"}}},
            "compatibility": {"services": ["mon"]},
        },
        "partialtemplates/storage.yaml": {
            "name": "storage",
            "defaults": {"services": ["db"], "config": {"db": {"size": "10G"}}},
            "compatibility": {"services": ["db", "cache"]},
        },
        "clustertemplates/t.yaml": {
            **_tmpl("t", services=["base", "web"]),
            "includes": ["monitoring", "storage"],
            "compatibility": {"services": ["base", "web"]},
        },
    }
    files["clustertemplates/t.yaml"]["defaults"]["config"] = {"mon": {"interval": 30}}
    catalog = write_templates(tmp_path, files)
    assert catalog.problems == []
    t = catalog.clustertemplates["t"]
    assert t.defaults.services == ["mon", "db", "base", "web"]
    assert set(t.compatibility.services) == {"mon", "db", "cache", "base", "web"}
    assert t.defaults.config == {"mon": {"interval": 30, "sink": "log"}, "db": {"size": "10G"}}
    assert t.immutable_config == {}


def test_immutable_partial_config_cannot_be_overridden_by_the_template(tmp_path):
    files = {
        **SERVICES,
        "partialtemplates/policy.yaml": {"name": "policy", "immutable": True,
                                          "defaults": {"config": {"security": {"tls": True}}}},
        "clustertemplates/t.yaml": {**_tmpl("t"), "includes": ["policy"]},
        "clustertemplates/ok.yaml": {**_tmpl("ok"), "includes": ["policy"]},
    }
    files["clustertemplates/t.yaml"]["defaults"]["config"] = {"security": {"tls": False}}
    catalog = write_templates(tmp_path, files)
    assert catalog.problems == [
        "templates/clustertemplates/t.yaml: defaults.config.security.tls: set by immutable partial 'policy'; "
        "remove it from this template"
    ]
    assert catalog.clustertemplates["ok"].immutable_config == {"security.tls": "policy"}


def test_unknown_partial_and_bad_partial_content_are_problems(tmp_path):
    catalog = write_templates(tmp_path, {
        **SERVICES,
        "partialtemplates/broken.yaml": {"name": "broken", "defaults": {"services": ["nope"]}},
        "clustertemplates/t.yaml": {**_tmpl("t"), "includes": ["ghost"]},
        "clustertemplates/u.yaml": {**_tmpl("u"), "includes": ["broken"]},
    })
    text = "\n".join(catalog.problems)
    assert "templates/partialtemplates/broken.yaml: defaults.services[0]: unknown or invalid service 'nope'" in text
    assert "templates/clustertemplates/t.yaml: includes[0]: unknown or invalid partial template 'ghost'" in text
    assert "templates/clustertemplates/u.yaml: includes[0]: unknown or invalid partial template 'broken'" in text
    assert catalog.clustertemplates == {}


@pytest.mark.parametrize(
    ("lease", "problem"),
    [
        ({"initial": "4h", "max": "1h"}, "initial (4h) must be non-zero and at most max (1h)"),
        ({"initial": "3x"}, "String should match pattern"),
        ({"initial": -5}, "greater than or equal to 0"),
    ],
)
def test_lease_durations_are_validated(tmp_path, lease, problem):
    catalog = write_templates(tmp_path, {**SERVICES, "clustertemplates/t.yaml": {
        **_tmpl("t"), "administration": {"leaseduration": lease}}})
    assert catalog.clustertemplates == {}
    assert any(p.startswith("templates/clustertemplates/t.yaml: administration.leaseduration") and problem in p
               for p in catalog.problems), catalog.problems


def test_lease_seconds(tmp_path):
    catalog = write_templates(tmp_path, {**SERVICES, "clustertemplates/t.yaml": {
        **_tmpl("t"), "administration": {"leaseduration": {"initial": "4h", "max": "7d", "step": 3600}}}})
    assert catalog.clustertemplates["t"].administration.leaseduration.seconds() == (14400, 604800, 3600)


@pytest.mark.parametrize(("text", "seconds"), [("0", 0), ("30s", 30), ("15m", 900), ("4h", 14400), ("7d", 604800), ("2w", 1209600), (90, 90)])
def test_durations_round_trip(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("bad", ["4 h", "h", "-1h", "1y", "", True, -1])
def test_bad_durations_name_the_field(bad):
    with pytest.raises(RequestError, match="^lease: "):
        parse_duration(bad, "lease")
