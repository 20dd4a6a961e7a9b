"""The ``chef-solo`` automator: upload cookbooks, write solo.rb and node.json, run chef-solo.

On the node (paths under the login's home):

- ``.loom/services/<service>/<cookbooks as in templates/services>/``: the cookbooks folder;
- ``.loom/run/<service>.<action>.solo.rb``: ``cookbook_path`` and ``file_cache_path``
  (``.loom/chef/cache``);
- ``.loom/run/<service>.<action>.node.json`` (0600): ``{"run_list": [...], "loom": {cluster,
  host, ip, service, action, config, nodes}, <the action's attributes, macro-expanded>}``;

then ``chef-solo -c <solo.rb> -j <node.json>`` (sudo when not root; ``~/.loom/bin``,
``/opt/chef/bin`` and ``/opt/cinc/bin`` first on PATH).
"""

from __future__ import annotations

import json
from typing import Any

from loom.automators import ActionContext, Automator, register
from loom.automators.remote import REMOTE_DIR, RemoteSession, env_exec
from loom.automators.ssh import NodeAccess
from loom.spec.actions import ChefSoloAction

CHEF_DIRS = ("/opt/chef/bin", "/opt/cinc/bin")


def ruby_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def solo_rb(cookbook_path: str, file_cache_path: str) -> str:
    return (
        "# Written by Loom for one chef-solo run.\n"
        f"cookbook_path [{ruby_str(cookbook_path)}]\n"
        f"file_cache_path {ruby_str(file_cache_path)}\n"
    )


def node_json(ctx: ActionContext) -> dict[str, Any]:
    spec = ctx.spec
    assert isinstance(spec, ChefSoloAction)
    return {**spec.attributes, "loom": ctx.loom_vars(), "run_list": list(spec.run_list)}


def solo_body(env_file: str, path_export: str, solo: str, attrs: str) -> str:
    words = ["chef-solo", "-c", solo, "-j", attrs]
    return env_exec(env_file, words, path_export)


@register
class ChefSoloAutomator(Automator):
    """``{type: chef-solo, run_list: ['recipe[app]'], cookbooks: chef/cookbooks, attributes: {...}}``."""

    name = "chef-solo"
    Action = ChefSoloAction

    def run(self, access: NodeAccess, ctx: ActionContext) -> str:
        spec = ctx.spec
        assert isinstance(spec, ChefSoloAction)
        with RemoteSession(access, ctx.service, ctx.action, spec.timeout) as node:
            cookbooks = f"{node.service_dir()}/{spec.cookbooks}"
            node.put_tree(ctx.path(spec.cookbooks), cookbooks)
            node.mkdirs(f"{REMOTE_DIR}/chef/cache")
            run = f"{REMOTE_DIR}/run/{ctx.service}.{ctx.action}"
            node.put_text(solo_rb(node.abs(cookbooks), node.abs(f"{REMOTE_DIR}/chef/cache")), f"{run}.solo.rb")
            node.put_text(json.dumps(node_json(ctx), indent=2, sort_keys=True), f"{run}.node.json")
            env_file = node.env_file(ctx.env())
            body = solo_body(node.abs(env_file), node.path_export(*CHEF_DIRS), node.abs(f"{run}.solo.rb"), node.abs(f"{run}.node.json"))
            _, out = node.run(body)
        return out
