"""One real Airflow stack (api-server, scheduler, dag-processor, triggerer) for all e2e tests.

It runs on its own port, AIRFLOW_HOME, cluster store, templates copy and local-node SSH port,
so a developer's `make run` stack is never touched. Teardown destroys any node a test left.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from loom.settings import REPO_ROOT
from loom.stack import isolated_env

E2E_PORT = 8180
E2E_SSH_PORT = 2422
EXTRA = Path(__file__).parent / "extra_templates"
READY_CLUSTER = "e2e-hooked"  # examples/dags/cluster_ready.py watches this cluster in the e2e stack
HOOK_PORT = 8199  # the hook receiver of test_hooks_e2e (extra_templates' hook URLs)


CREATE_TIMEOUT = 900


@dataclass
class E2E:
    root: Path
    templates: Path
    stack: object
    token: str
    ready_cluster: str = READY_CLUSTER
    hook_port: int = HOOK_PORT

    def request(self, method: str, path: str, body: object = None):
        return self.stack.request(method, path, body, token=self.token)

    def trigger(self, dag_id: str, conf: dict) -> str:
        from loom.demo import trigger, wait_for_dag

        wait_for_dag(self.stack, dag_id, self.token)
        return trigger(self.stack, dag_id, conf, self.token)

    def wait(self, dag_id: str, run_id: str) -> str:
        from loom.demo import wait_for_run

        return wait_for_run(self.stack, dag_id, run_id, self.token, timeout=CREATE_TIMEOUT)

    def run(self, dag_id: str, conf: dict) -> tuple[str, str]:
        """Trigger through the REST API and wait: (run_id, final state)."""
        run_id = self.trigger(dag_id, conf)
        return run_id, self.wait(dag_id, run_id)

    def runs(self, dag_id: str) -> list[dict]:
        return self.request("GET", f"/api/v2/dags/{quote(dag_id)}/dagRuns?limit=100")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}/taskInstances?limit=500"
        return self.request("GET", path)["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, try_number: int = 1) -> str:
        path = (
            f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}/taskInstances/{quote(task_id)}"
            f"/logs/{try_number}?map_index={map_index}&full_content=true"
        )
        return json.dumps(self.request("GET", path)["content"])

    def nodes(self, prefix: str) -> list:
        """The provider's own view (not the store's) of machines named ``prefix-*``."""
        from loom.providers.local import LocalNodeDriver

        driver = LocalNodeDriver(state_dir=self.root / "state", ssh_port=E2E_SSH_PORT)
        return [n for n in driver.list_nodes() if n.name.startswith(prefix + "-")]


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    root = tmp_path_factory.mktemp("e2e")
    templates = root / "templates"
    shutil.copytree(REPO_ROOT / "templates", templates)
    shutil.copytree(EXTRA, templates, dirs_exist_ok=True)
    dags = root / "dags"  # Loom's DAG file + the README's example downstream DAG, on an e2e cluster
    dags.mkdir()
    shutil.copy(REPO_ROOT / "dags" / "loom_clusters.py", dags)
    example = (REPO_ROOT / "examples" / "dags" / "cluster_ready.py").read_text()
    (dags / "cluster_ready.py").write_text(example.replace('CLUSTER = "demo"', f'CLUSTER = "{READY_CLUSTER}"'))
    env = isolated_env(root, E2E_PORT, E2E_SSH_PORT, templates)
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from loom.stack import Stack

    stack = Stack()
    try:
        stack.start(wait=240)
        token = stack.token()
        _wait_for_first_parse(stack, token, templates)
        yield E2E(root=root, templates=templates, stack=stack, token=token)
    finally:
        _destroy_leftovers(root / "state")
        stack.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _wait_for_first_parse(stack, token: str, templates: Path, timeout: float = 300) -> None:
    """Until every DAG the templates give is registered: the dag-processor's first parse writes
    them all to SQLite, and requests made meanwhile wait behind its lock."""
    import time

    from loom.dag_factory import OPERATIONS
    from loom.spec.loader import load_catalog

    expected = len(load_catalog(templates).clustertemplates) * len(OPERATIONS) + 1  # + loom.janitor
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.request("GET", "/api/v2/dags?limit=1&tags=loom", token=token)["total_entries"] >= expected:
            return
        time.sleep(2)
    raise TimeoutError(f"the dag-processor did not register {expected} DAGs within {timeout:.0f} s")


def _destroy_leftovers(state: Path) -> None:
    from loom.providers.local import LocalNodeDriver

    driver = LocalNodeDriver(state_dir=state, ssh_port=E2E_SSH_PORT)
    for node in driver.list_nodes():
        driver.destroy_node(node)
