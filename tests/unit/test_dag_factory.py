"""The generated DAGs' shape, without running Airflow: ids, tags, params, plan-shaped graph."""

from __future__ import annotations

from pathlib import Path

import pytest

from loom.dag_factory import OPERATIONS, build_dags
from loom.planner import plan
from loom.settings import REPO_ROOT
from loom.spec.loader import load_catalog


@pytest.fixture(scope="module")
def dags():
    return build_dags(str(REPO_ROOT / "templates"))


def test_one_dag_per_template_and_operation(dags):
    assert set(dags) == {f"dask.{op}" for op in OPERATIONS} | {"loom.janitor"}
    for dag_id, dag in dags.items():
        if dag_id == "loom.janitor":
            continue
        template, operation = dag_id.split(".")
        assert set(dag.tags) == {"loom", f"template:{template}", f"operation:{operation}"}
        assert dag.is_paused_upon_creation is False
        assert dag.schedule is None
        assert dag.doc_md and operation in dag.doc_md


def test_create_params_have_a_json_schema_and_only_cluster_is_required(dags):
    params = dags["dask.create"].params
    assert set(params) == {"cluster", "size", "services", "provider", "hardwaretype", "imagetype", "config", "lease"}
    assert params.get_param("cluster").schema["pattern"] == r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$"
    size = params.get_param("size").schema
    assert (size["minimum"], size["maximum"]) == (2, 50)
    assert params.get_param("services").schema["items"]["enum"] == ["base", "dask-scheduler", "dask-worker"]
    with pytest.raises(Exception):
        params.get_param("size").resolve(1)
    with pytest.raises(Exception):
        params.get_param("cluster").resolve("Bad;Name")
    assert params.get_param("cluster").resolve("demo") == "demo"


def test_create_graph_follows_the_plan(dags):
    dag = dags["dask.create"]
    catalog = load_catalog(REPO_ROOT / "templates")
    the_plan = plan("create", catalog, ["base", "dask-scheduler", "dask-worker"])
    for step in the_plan.steps:
        task = dag.task_dict[step.id]
        for before in step.after:
            assert before in task.upstream_task_ids, f"{before} -> {step.id}"
    assert dag.task_dict["node.create"].upstream_task_ids == {"plan"}
    assert {"dask-scheduler.start", "dask-worker.configure"} <= dag.task_dict["dask-worker.start"].upstream_task_ids
    finish = dag.task_dict["finish"]
    assert {"dask-worker.start", "dask-scheduler.start", "plan"} <= finish.upstream_task_ids
    assert finish.trigger_rule == "all_done"


def test_mapped_tasks_carry_retry_policy_label_and_failure_callback(dags):
    dag = dags["dask.create"]
    create = dag.task_dict["node.create"]
    assert create.partial_kwargs["retries"] == 2
    assert create.partial_kwargs["map_index_template"] == "{{ task.hostname }}"
    assert create.partial_kwargs["on_failure_callback"]
    install = dag.task_dict["dask-worker.install"]
    assert install.partial_kwargs["retries"] == 1
    assert install.partial_kwargs["trigger_rule"] == "none_failed"


def test_delete_stops_dependents_first_and_destroys_last(dags):
    dag = dags["dask.delete"]
    assert "dask-worker.stop" in dag.task_dict["dask-scheduler.stop"].upstream_task_ids
    assert "dask-scheduler.stop" in dag.task_dict["node.delete"].upstream_task_ids
    assert dag.task_dict["dask-worker.stop"].partial_kwargs["retries"] == 0


def test_a_broken_template_does_not_hide_the_others(tmp_path: Path):
    import shutil

    shutil.copytree(REPO_ROOT / "templates", tmp_path / "templates")
    (tmp_path / "templates" / "clustertemplates" / "oops.yaml").write_text("name: oops\ndefaults: [not, a, mapping]\n")
    dags = build_dags(str(tmp_path / "templates"))
    assert set(dags) == {f"dask.{op}" for op in OPERATIONS} | {"loom.janitor"}



def test_every_operation_starts_with_plan_and_ends_with_an_all_done_finish(dags):
    for dag in (d for d in dags.values() if d.dag_id != "loom.janitor"):
        assert dag.task_dict["plan"].upstream_task_ids == set()
        finish = dag.task_dict["finish"]
        assert finish.trigger_rule == "all_done"
        assert set(dag.task_dict) - {"finish"} <= finish.upstream_task_ids | {
            t for t in dag.task_dict if t.endswith(("nodes", "_targets", "_restart", "_new", "_membership", "_new_services"))
        }


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("delete", {"cluster"}),
        ("add_services", {"cluster", "services"}),
        ("start_services", {"cluster", "services"}),
        ("stop_services", {"cluster", "services"}),
        ("restart_services", {"cluster", "services"}),
        ("configure", {"cluster", "config", "restart"}),
        ("expand", {"cluster", "add_nodes"}),
        ("extend_lease", {"cluster", "lease"}),
    ],
)
def test_operation_params_match_the_contract(dags, operation, params):
    assert set(dags[f"dask.{operation}"].params) == params


def test_service_operations_are_gated_at_run_time(dags):
    assert dags["dask.start_services"].task_dict["dask-worker.nodes_targets"].gate == "targets"
    configure = dags["dask.configure"]
    assert configure.task_dict["dask-worker.nodes_restart"].gate == "restart"
    assert "dask-worker.nodes_restart" in configure.task_dict["dask-worker.stop"].upstream_task_ids
    expand = dags["dask.expand"]
    assert expand.task_dict["dask-worker.nodes_existing_membership"].where == "existing"
    assert expand.task_dict["node.create"].upstream_task_ids == {"plan"}


def test_janitor_runs_every_five_minutes_and_triggers_deletes(dags):
    from datetime import timedelta

    janitor = dags["loom.janitor"]
    assert janitor.schedule == timedelta(minutes=5) and janitor.is_paused_upon_creation is False
    assert set(janitor.task_dict) == {"expired_leases", "delete_expired", "stuck_operations", "orphans"}
    assert janitor.task_dict["delete_expired"].upstream_task_ids == {"expired_leases"}
