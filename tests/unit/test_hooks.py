"""Lifecycle hooks: the template field, the DAG shape, and hooks run against a real local HTTP
server and real commands (no Airflow stack)."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from loom.hooks import HookError, hooks_for, payload, post, run_command, run_hooks
from loom.settings import REPO_ROOT
from loom.spec.loader import load_catalog
from loom.spec.models import CommandHook, HttpHook


class Receiver:
    """A real HTTP server on 127.0.0.1 answering from a script of (status, body) replies."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.replies: list[tuple[int, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (stdlib name)
                length = int(self.headers.get("Content-Length", 0))
                outer.requests.append({"path": self.path, "headers": dict(self.headers),
                                       "body": json.loads(self.rfile.read(length) or b"null")})
                status, body = outer.replies.pop(0) if outer.replies else (200, '{"ok": true}')
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/loom"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


BODY = payload({"name": "c1", "template": "dask", "nodes": [{"hostname": "c1-1000", "ip": "10.0.0.1", "port": 22,
                                                            "services": ["base"], "status": "FAILED",
                                                            "message": "boom", "host_key": "secret-ish"}]},
               "create", "dask.create", "manual__1", "on_failure", "INCOMPLETE")


def test_payload_has_the_contract_fields_and_no_host_keys():
    assert {"cluster", "operation", "run_id", "status", "nodes"} <= set(BODY)
    assert BODY["nodes"] == [{"hostname": "c1-1000", "ip": "10.0.0.1", "port": 22, "services": ["base"],
                              "status": "FAILED", "message": "boom"}]


def test_http_hook_posts_the_payload_with_a_stable_idempotency_key(receiver):
    hook = HttpHook(url=receiver.url, headers={"X-Team": "data"})
    post(hook, BODY, "k/1", "on_failure[0]")
    post(hook, BODY, "k/1", "on_failure[0]")
    assert [r["body"] for r in receiver.requests] == [BODY, BODY]
    assert {r["headers"]["Idempotency-Key"] for r in receiver.requests} == {"k/1"}
    assert receiver.requests[0]["headers"]["X-Team"] == "data"


def test_5xx_is_retried_with_backoff_then_succeeds(receiver):
    receiver.replies = [(503, "busy"), (502, "bad gateway")]
    waits: list[float] = []
    post(HttpHook(url=receiver.url, retries=2), BODY, "k", "on_start[0]", sleep=waits.append)
    assert len(receiver.requests) == 3 and waits == [1, 2]


def test_5xx_after_all_retries_fails_naming_the_hook(receiver):
    receiver.replies = [(500, "down")] * 2
    with pytest.raises(HookError, match=r"on_start\[0\].*500.*after 2 attempt"):
        post(HttpHook(url=receiver.url, retries=1), BODY, "k", "on_start[0]", sleep=lambda s: None)


def test_4xx_is_a_refusal_without_retry(receiver):
    receiver.replies = [(403, "size 40 needs approval")]
    with pytest.raises(HookError, match="403: size 40 needs approval"):
        post(HttpHook(url=receiver.url, retries=3), BODY, "k", "on_start[0]", sleep=lambda s: None)
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("answer", ['{"veto": true, "reason": "freeze week"}', '{"allow": false, "reason": "freeze week"}'])
def test_a_veto_body_refuses_even_with_200(receiver, answer):
    receiver.replies = [(200, answer)]
    with pytest.raises(HookError, match="vetoed: freeze week"):
        post(HttpHook(url=receiver.url), BODY, "k", "on_start[0]")


def test_no_answer_is_retried_then_fails():
    with pytest.raises(HookError, match="no answer"):
        post(HttpHook(url="http://127.0.0.1:9/none", retries=1, timeout=2), BODY, "k", "on_start[0]", sleep=lambda s: None)


def test_connection_credentials_go_in_headers_not_in_the_template(receiver):
    class Conn:
        login, password, extra = "bot", "s3cret", {"headers": {"X-Api-Key": "abc"}}

    post(HttpHook(url=receiver.url, connection="hooks_auth"), BODY, "k", "x", connection=lambda cid: Conn)
    headers = receiver.requests[0]["headers"]
    assert headers["Authorization"].startswith("Basic ") and headers["X-Api-Key"] == "abc"
    assert "s3cret" not in json.dumps(receiver.requests[0]["body"])


def test_command_hook_gets_the_payload_on_stdin_and_in_the_environment(tmp_path):
    out = tmp_path / "got"
    hook = CommandHook(command=f'cat > {out}.stdin; echo "$LOOM_STATUS $LOOM_CLUSTER" > {out}.env; echo "$LOOM_PAYLOAD" > {out}.json')
    run_command(hook, BODY, "on_failure[0]")
    assert json.loads(Path(f"{out}.stdin").read_text()) == BODY
    assert Path(f"{out}.env").read_text().strip() == "INCOMPLETE c1"
    assert json.loads(Path(f"{out}.json").read_text()) == BODY


def test_command_hook_failure_and_timeout_name_the_hook():
    with pytest.raises(HookError, match=r"on_start\[1\]: command exited 3: no way"):
        run_command(CommandHook(command="echo no way >&2; exit 3"), BODY, "on_start[1]")
    with pytest.raises(HookError, match="timed out after 1 s"):
        run_command(CommandHook(command="sleep 5", timeout=1), BODY, "on_start[1]")


def test_run_hooks_stops_at_the_first_failure(receiver, tmp_path):
    marker = tmp_path / "ran"
    hooks = [CommandHook(command="exit 1"), HttpHook(url=receiver.url), CommandHook(command=f"touch {marker}")]
    with pytest.raises(HookError, match=r"on_failure\[0\]"):
        run_hooks(hooks, BODY)
    assert receiver.requests == [] and not marker.exists()


# --- template field and DAG shape ------------------------------------------------------------
def _templates_with_hooks(tmp_path: Path, hooks: dict) -> Path:
    root = tmp_path / "templates"
    shutil.copytree(REPO_ROOT / "templates", root)
    path = root / "clustertemplates" / "dask.yaml"
    data = yaml.safe_load(path.read_text())
    data["hooks"] = hooks
    path.write_text(yaml.safe_dump(data))
    return root


HOOKS = {
    "all": {"on_failure": [{"url": "http://127.0.0.1:1/all"}]},
    "create": {"on_start": [{"url": "http://127.0.0.1:1/approve"}], "on_success": [{"command": "echo ok"}]},
    "delete": {"on_start": [{"command": "echo bye", "run_on": "nodes", "services": ["dask-worker"]}]},
}


def test_hooks_for_runs_all_first_then_the_operation(tmp_path):
    catalog = load_catalog(_templates_with_hooks(tmp_path, HOOKS))
    assert catalog.problems == []
    template = catalog.template("dask")
    assert [h.url for h in hooks_for(template, "create", "on_failure")] == ["http://127.0.0.1:1/all"]
    assert [type(h).__name__ for h in hooks_for(template, "create", "on_success")] == ["CommandHook"]
    assert hooks_for(template, "configure", "on_start") == []


@pytest.mark.parametrize(("hooks", "problem"), [
    ({"create": {"on_start": [{"command": "x", "run_on": "nodes"}]}},
     "hooks.create.on_start[0]: run_on: the cluster has no machines at create on_start"),
    ({"expand": {"on_success": [{"command": "x", "run_on": "nodes", "services": ["nosuch"]}]}},
     "hooks.expand.on_success[0].services[0]: unknown service 'nosuch'"),
    ({"create": {"on_start": [{"url": "ftp://x"}]}}, "hooks.create.on_start[0].http.url: String should match"),
    ({"create": {"on_start": [{"command": "x", "run_on": "moon"}]}}, "hooks.create.on_start[0].command.run_on"),
    ({"explode": {"on_start": []}}, "hooks.explode"),
    ({"create": {"before": []}}, "hooks.create.before"),
])
def test_bad_hooks_are_template_problems_naming_the_field(tmp_path, hooks, problem):
    catalog = load_catalog(_templates_with_hooks(tmp_path, hooks))
    assert any(problem in p and "dask.yaml" in p for p in catalog.problems), catalog.problems


def test_dag_shape_on_start_before_plan_and_outcome_hooks_after_finish(tmp_path):
    from loom.dag_factory import build_dags
    from loom.operators import CLUSTERS_ALIAS

    dags = build_dags(str(_templates_with_hooks(tmp_path, HOOKS)))
    create = dags["dask.create"]
    assert create.task_dict["plan"].upstream_task_ids == {"hooks.on_start"}
    assert "hooks.on_start" in create.task_dict["finish"].upstream_task_ids
    assert create.task_dict["hooks.on_success"].upstream_task_ids == {"finish"}
    assert create.task_dict["hooks.on_failure"].upstream_task_ids == {"finish"}
    for phase in ("on_success", "on_failure"):  # teardowns: they never decide the run's state
        assert create.task_dict[f"hooks.{phase}"].is_teardown
        assert create.task_dict[f"hooks.{phase}"].trigger_rule == "all_done_setup_success"
    assert not create.task_dict["hooks.on_start"].is_teardown
    configure = dags["dask.configure"]
    assert "hooks.on_start" not in configure.task_dict and "hooks.on_failure" in configure.task_dict
    assert "hooks.on_success" not in configure.task_dict
    for op in ("create", "expand", "delete"):
        assert [o.name for o in dags[f"dask.{op}"].task_dict["finish"].outlets] == [CLUSTERS_ALIAS]
    assert dags["dask.configure"].task_dict["finish"].outlets == []

