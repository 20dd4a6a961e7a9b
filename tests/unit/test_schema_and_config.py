"""JSON Schemas shipped for editors stay current and accept the shipped templates; config merging."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from helpers import cluster_template, service, write_templates

from loom.config import cluster_config
from loom.errors import RequestError
from loom.settings import REPO_ROOT
from loom.spec.schema import schemas

SCHEMA_DIR = REPO_ROOT / "templates" / "schemas"


def test_committed_schemas_are_current():
    for name, schema in schemas().items():
        committed = json.loads((SCHEMA_DIR / name).read_text())
        assert committed == json.loads(json.dumps(schema)), f"{name} is stale: run `loom templates schema`"


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "templates").glob("*/*.yaml")), ids=lambda p: p.name)
def test_shipped_templates_validate_against_their_schema_and_point_to_it(path):
    kind = path.parent.name
    text = path.read_text()
    assert text.splitlines()[0] == f"# yaml-language-server: $schema=../schemas/{kind}.schema.json"
    schema = json.loads((SCHEMA_DIR / f"{kind}.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(text), schema)


def test_schema_rejects_unknown_fields_like_the_loader():
    schema = json.loads((SCHEMA_DIR / "clustertemplates.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "defaults": {"provider": "p", "hardwaretype": "h", "imagetype": "i"}, "typo": 1}, schema)


def _catalog(tmp_path):
    web = service("web", ("install",))
    web["config"] = {"web": {"port": 80, "workers": 2}, "shared": {"a": 1}}
    db = service("db", ("install",))
    db["config"] = {"db": {"port": 5432}, "shared": {"b": 2}}
    tmpl = cluster_template("t", ["web", "db"])
    tmpl["defaults"]["config"] = {"web": {"workers": 4}}
    tmpl["includes"] = ["policy"]
    return write_templates(tmp_path, {
        "services/web.yaml": web, "services/db.yaml": db, "clustertemplates/t.yaml": tmpl,
        "partialtemplates/policy.yaml": {"name": "policy", "immutable": True, "defaults": {"config": {"tls": {"on": True}}}},
    })


def test_config_layers_deep_merge_service_template_request(tmp_path):
    catalog = _catalog(tmp_path)
    t = catalog.clustertemplates["t"]
    config = cluster_config(t, ["web", "db"], {"web": {"port": 8080}, "extra": [1]}, catalog)
    assert config == {
        "web": {"port": 8080, "workers": 4},
        "db": {"port": 5432},
        "shared": {"a": 1, "b": 2},
        "tls": {"on": True},
        "extra": [1],
    }


@pytest.mark.parametrize("override", [{"tls": {"on": False}}, {"tls": False}, {"tls": {"on": None}}])
def test_request_cannot_change_immutable_config(tmp_path, override):
    catalog = _catalog(tmp_path)
    with pytest.raises(RequestError, match=r"config\.tls\.on: fixed by immutable partial 'policy'"):
        cluster_config(catalog.clustertemplates["t"], ["web"], override, catalog)


def test_request_may_repeat_an_immutable_value(tmp_path):
    catalog = _catalog(tmp_path)
    assert cluster_config(catalog.clustertemplates["t"], ["web"], {"tls": {"on": True}}, catalog)["tls"] == {"on": True}


def test_request_may_add_keys_beside_immutable_ones(tmp_path):
    catalog = _catalog(tmp_path)
    config = cluster_config(catalog.clustertemplates["t"], ["web"], {"tls": {"cert": "x"}}, catalog)
    assert config["tls"] == {"on": True, "cert": "x"}


def test_solver_applies_service_defaults_and_refuses_immutable_overrides(tmp_path):
    from loom.solver import solve
    from loom.spec.models import CreateRequest

    catalog = _catalog(tmp_path)
    t = catalog.clustertemplates["t"]
    layout = solve(t, CreateRequest(cluster="cc", size=1), catalog)
    assert layout.config["db"] == {"port": 5432} and layout.config["tls"] == {"on": True}
    with pytest.raises(RequestError, match="fixed by immutable partial"):
        solve(t, CreateRequest(cluster="cc", size=1, config={"tls": {"on": False}}), catalog)
