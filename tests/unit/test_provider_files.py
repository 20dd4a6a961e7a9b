"""Provider files: drivers, options and Connections are checked when templates load."""

from __future__ import annotations

import shutil

import pytest

from loom.settings import REPO_ROOT
from loom.spec.loader import load_catalog


@pytest.mark.parametrize(("text", "problem"), [
    ("name: p\ndriver: ec2\n", "connection: driver 'ec2' needs an Airflow Connection id"),
    ("name: p\ndriver: ec2\nconnection: c\noptions: {secret_key: x}\n", "options: provider 'p': unknown option(s) secret_key"),
    ("name: p\ndriver: vmware\nconnection: c\n", "driver: provider 'p': driver 'vmware' is not supported"),
    ("name: p\ndriver: static\nconnection: c\noptions: {hosts: []}\n", "options: static provider 'p': options.hosts must list"),
])
def test_bad_provider_files_are_template_problems(tmp_path, text, problem):
    root = tmp_path / "templates"
    shutil.copytree(REPO_ROOT / "templates", root)
    (root / "providers" / "p.yaml").write_text(text)
    catalog = load_catalog(root)
    assert any(p.startswith("templates/providers/p.yaml: ") and problem in p for p in catalog.problems), catalog.problems
    assert "p" not in catalog.providers and "local" in catalog.providers
