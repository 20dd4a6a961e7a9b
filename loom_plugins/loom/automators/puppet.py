"""The ``puppet`` automator: upload a manifest (and modules) and ``puppet apply`` it on the node.

Files go to ``~/.loom/services/<service>/<path as in templates/services>``. Facts come from the
action's context through the env file (``FACTER_*`` variables are facts for facter):
``loom_cluster, loom_host, loom_ip, loom_service, loom_action, loom_home`` (the ssh login's
home) as strings and
``loom_config, loom_nodes`` as JSON strings. ``--detailed-exitcodes``: 0 (no change) and 2
(changes) succeed; 4/6 (failed resources) and anything else raise ActionError.
"""

from __future__ import annotations

import json

from loom.automators import ActionContext, Automator, register
from loom.automators.remote import RemoteSession, env_exec
from loom.automators.ssh import NodeAccess
from loom.spec.actions import PuppetAction

SUCCESS = (0, 2)
PUPPET_DIRS = ("/opt/puppetlabs/bin",)  # the Puppet AIO packages install here


def facts(ctx: ActionContext, home: str) -> dict[str, str]:
    """``FACTER_loom_*`` variables; ``home`` is the ssh login's home (where Loom's files are)."""
    data = {**ctx.loom_vars(), "home": home}
    out = {f"FACTER_loom_{k}": v for k, v in data.items() if isinstance(v, str)}
    out["FACTER_loom_config"] = json.dumps(data["config"], sort_keys=True)
    out["FACTER_loom_nodes"] = json.dumps(data["nodes"])
    return out


def apply_body(env_file: str, path_export: str, manifest: str, modulepath: str | None) -> str:
    """The bash run on the node (inside sudo/timeout, see remote.wrap_command)."""
    words = ["puppet", "apply", "--detailed-exitcodes", "--color=false"]
    if modulepath:
        words += ["--modulepath", modulepath]
    words.append(manifest)
    return env_exec(env_file, words, path_export)


@register
class PuppetAutomator(Automator):
    """``{type: puppet, manifest: puppet/site.pp, modulepath: puppet/modules}``."""

    name = "puppet"
    Action = PuppetAction

    def run(self, access: NodeAccess, ctx: ActionContext) -> str:
        spec = ctx.spec
        assert isinstance(spec, PuppetAction)
        with RemoteSession(access, ctx.service, ctx.action, spec.timeout) as node:
            folder = node.service_dir()
            manifest = f"{folder}/{spec.manifest}"
            node.mkdirs(manifest.rsplit("/", 1)[0])
            node.put_file(ctx.path(spec.manifest), manifest)
            modulepath = None
            if spec.modulepath:
                modulepath = f"{folder}/{spec.modulepath}"
                node.put_tree(ctx.path(spec.modulepath), modulepath)
            env_file = node.env_file({**ctx.env(), **facts(ctx, node.home)})
            body = apply_body(
                node.abs(env_file), node.path_export(*PUPPET_DIRS), node.abs(manifest),
                node.abs(modulepath) if modulepath else None,
            )
            _, out = node.run(body, ok=SUCCESS)
        return out
