"""The ``loom`` command: templates, plan preview, cluster state, the local stack and its demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from loom.errors import LoomError, TemplateError


def _catalog(args: argparse.Namespace, folder: str | None = None):
    from loom.settings import load_settings
    from loom.spec.loader import load_catalog

    return load_catalog(folder or args.templates or load_settings().templates_dir)


def cmd_validate(args: argparse.Namespace) -> int:
    catalog = _catalog(args, args.dir)
    for problem in catalog.problems:
        print(problem, file=sys.stderr)
    counts = ", ".join(f"{len(getattr(catalog, k))} {k}" for k in ("providers", "hardwaretypes", "imagetypes", "services", "clustertemplates"))
    if catalog.problems:
        print(f"{len(catalog.problems)} problem(s) in {catalog.root}; valid: {counts}", file=sys.stderr)
        return 1
    print(f"{catalog.root}: OK ({counts})")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from loom.settings import load_settings
    from loom.spec.schema import SCHEMA_DIR_NAME, write_schemas

    folder = Path(args.out) if args.out else Path(args.templates or load_settings().templates_dir) / SCHEMA_DIR_NAME
    for path in write_schemas(folder):
        print(path)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from loom.planner import plan
    from loom.solver import solve
    from loom.spec.models import CreateRequest

    catalog = _catalog(args)
    template = catalog.template(args.template)
    request = CreateRequest(
        cluster=args.cluster,
        size=args.size,
        provider=args.provider,
        services=args.services.split(",") if args.services else None,
        hardwaretype=args.hardwaretype,
        imagetype=args.imagetype,
    )
    layout = solve(template, request, catalog)
    the_plan = plan("create", catalog, layout.services)
    out = {
        "nodes": [
            {"hostname": n.hostname, "hardwaretype": n.hardwaretype, "imagetype": n.imagetype, "services": list(n.services)}
            for n in layout.nodes
        ],
        "steps": [
            {
                "id": s.id,
                "action": s.action,
                "service": s.service,
                "after": list(s.after),
                "nodes": [n.hostname for n in layout.nodes if s.service is None or s.service in n.services],
            }
            for s in the_plan.steps
        ],
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{template.name}: {len(layout.nodes)} node(s) on provider {layout.provider}")
    for n in out["nodes"]:
        print(f"  {n['hostname']:<24} {n['hardwaretype']:<10} {n['imagetype']:<10} {', '.join(n['services'])}")
    print("steps:")
    for i, s in enumerate(out["steps"], 1):
        print(f"  {i:>2}. {s['id']:<28} on {', '.join(s['nodes'])}")
    return 0


def _store():
    from loom.store import open_store

    return open_store()


def _print_cluster(view: dict[str, Any]) -> None:
    print(f"cluster {view['name']}: {view['status']}  (template {view['template']}, provider {view['provider']}, owner {view['owner'] or '-'})")
    print(f"  created {view['created_at']}, lease expires {view['lease_expires_at'] or 'never'}")
    if view["message"]:
        print(f"  last error: {view['message']}")
    print("  nodes:")
    for n in view["nodes"]:
        addr = f"{n['ip']}:{n['port']}" if n["ip"] else "-"
        print(f"    {n['hostname']:<20} {addr:<22} {n['status']:<9} {', '.join(n['services'])}")
    print("  operations:")
    for op in view["operations"]:
        print(f"    {op['operation']:<8} {op['state']:<9} {op['dag_id']} / {op['run_id']}  by {op['triggered_by'] or '-'}  {op['started_at']}")


def cmd_cluster_list(args: argparse.Namespace) -> int:
    views = _store().list(include_terminated=args.all)
    if args.json:
        print(json.dumps(views, indent=2))
        return 0
    if not views:
        print("no clusters")
    for v in views:
        print(f"{v['name']:<24} {v['status']:<12} {v['template']:<16} {len(v['nodes'])} node(s)")
    return 0


def cmd_cluster_show(args: argparse.Namespace) -> int:
    view = _store().require(args.name)
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        _print_cluster(view)
    return 0


def cmd_cluster_operation(args: argparse.Namespace) -> int:
    """Trigger ``<template>.<operation>`` through Airflow's REST API and follow the run."""
    from loom.demo import trigger, wait_for_run
    from loom.stack import Stack

    stack = Stack()
    if args.sub == "create":
        dag_id, conf = f"{args.template}.create", {"cluster": args.name}
        if args.size is not None:
            conf["size"] = args.size
        if args.services:
            conf["services"] = args.services.split(",")
    else:
        dag_id, conf = f"{_store().require(args.name)['template']}.delete", {"cluster": args.name}
    token = stack.token()
    run_id = trigger(stack, dag_id, conf, token)
    print(f"triggered {dag_id} run {run_id}")
    if args.no_wait:
        return 0
    state = wait_for_run(stack, dag_id, run_id, token)
    view = _store().get(args.name)
    print(f"{dag_id} {state}; cluster {args.name}: {view['status'] if view else 'not created'}")
    return 0 if state == "success" else 1


def cmd_token(args: argparse.Namespace) -> int:
    from loom.stack import Stack

    print(Stack().token())
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from loom.stack import Stack

    stack = Stack()
    if args.action == "up":
        stack.start()
    elif args.action == "down":
        stack.stop()
    else:
        for component, pid in stack.running().items():
            print(f"{component:<14} {'running pid ' + str(pid) if pid else 'stopped'}")
        print(f"API {stack.api}: {'healthy' if stack.healthy() else 'not healthy'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from loom.demo import run_demo

    return run_demo(cluster=args.cluster, size=args.size, template=args.template)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loom", description="Loom: self-service clusters on Apache Airflow")
    parser.add_argument("--templates", metavar="DIR", help="templates folder (default: [loom] templates_dir)")
    sub = parser.add_subparsers(dest="command", required=True)

    templates = sub.add_parser("templates", help="work with template files").add_subparsers(dest="sub", required=True)
    validate = templates.add_parser("validate", help="check every template file; exit 1 on any problem")
    validate.add_argument("dir", nargs="?")
    validate.set_defaults(func=cmd_validate)
    schema = templates.add_parser("schema", help="write a JSON Schema per entity kind (for editors)")
    schema.add_argument("--out", metavar="DIR", help="default: <templates>/schemas")
    schema.set_defaults(func=cmd_schema)
    from loom.spec.import_cli import add_import_command

    add_import_command(templates)

    plan = sub.add_parser("plan", help="preview a cluster's layout and steps; creates nothing")
    plan.add_argument("template")
    plan.add_argument("--cluster", default="preview")
    plan.add_argument("--size", type=int)
    plan.add_argument("--services", help="comma-separated")
    plan.add_argument("--provider")
    plan.add_argument("--hardwaretype")
    plan.add_argument("--imagetype")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=cmd_plan)

    cluster = sub.add_parser("cluster", help="cluster state").add_subparsers(dest="sub", required=True)
    lst = cluster.add_parser("list")
    lst.add_argument("--json", action="store_true")
    lst.add_argument("--all", action="store_true", default=True, help=argparse.SUPPRESS)
    lst.set_defaults(func=cmd_cluster_list)
    show = cluster.add_parser("show")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_cluster_show)

    create = cluster.add_parser("create", help="trigger <template>.create through the REST API and follow it")
    create.add_argument("template")
    create.add_argument("name")
    create.add_argument("--size", type=int)
    create.add_argument("--services", help="comma-separated")
    create.add_argument("--no-wait", action="store_true")
    create.set_defaults(func=cmd_cluster_operation)
    delete = cluster.add_parser("delete", help="trigger <template>.delete through the REST API and follow it")
    delete.add_argument("name")
    delete.add_argument("--no-wait", action="store_true")
    delete.set_defaults(func=cmd_cluster_operation)

    sub.add_parser("token", help="print a bearer token for the local stack's admin").set_defaults(func=cmd_token)

    stack = sub.add_parser("stack", help="the local Airflow stack")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.set_defaults(func=cmd_stack)

    demo = sub.add_parser("demo", help="start the stack and create the demo cluster through the REST API")
    demo.add_argument("--cluster", default="demo")
    demo.add_argument("--size", type=int, default=3)
    demo.add_argument("--template", default="dask")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TemplateError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    except LoomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
