"""One real Airflow stack (api-server, scheduler, dag-processor, triggerer) for all e2e tests.

It runs on its own port, AIRFLOW_HOME, cluster store, templates copy and local-node SSH port,
so a developer's `make run` stack is never touched. Teardown destroys any node a test left.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loom.settings import REPO_ROOT
from loom.stack import isolated_env

E2E_PORT = 8180
E2E_SSH_PORT = 2422
EXTRA = Path(__file__).parent / "extra_templates"


@dataclass
class E2E:
    root: Path
    templates: Path
    stack: object
    token: str

    def request(self, method: str, path: str, body: object = None):
        return self.stack.request(method, path, body, token=self.token)


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    root = tmp_path_factory.mktemp("e2e")
    templates = root / "templates"
    shutil.copytree(REPO_ROOT / "templates", templates)
    shutil.copytree(EXTRA, templates, dirs_exist_ok=True)
    env = isolated_env(root, E2E_PORT, E2E_SSH_PORT, templates)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from loom.stack import Stack

    stack = Stack()
    try:
        stack.start(wait=240)
        yield E2E(root=root, templates=templates, stack=stack, token=stack.token())
    finally:
        _destroy_leftovers(root / "state")
        stack.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _destroy_leftovers(state: Path) -> None:
    from loom.providers.local import LocalNodeDriver

    driver = LocalNodeDriver(state_dir=state, ssh_port=E2E_SSH_PORT)
    for node in driver.list_nodes():
        driver.destroy_node(node)
