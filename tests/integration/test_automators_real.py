"""Automators against real local sshd nodes: ansible and puppet for real, chef-solo through a
recording stand-in (Debian has no chef package), a test-registered automator end to end.

The services used live in tests/integration/automator_templates/ (see its README.md).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Annotated, Literal

import pytest

from loom import engine
from loom.automators import ActionContext, Automator, register, unregister
from loom.automators.remote import RemoteSession
from loom.automators.ssh import NodeAccess
from loom.errors import ActionError
from loom.keys import write_keypair
from loom.spec.actions import ActionModel, Macros
from loom.spec.loader import load_catalog

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parent / "automator_templates"


@pytest.fixture
def aenv(env: engine.Env) -> engine.Env:
    """The integration ``env`` plus the automator example services and cluster template."""
    for part in ("services", "clustertemplates"):
        shutil.copytree(EXAMPLES / part, env.catalog.root / part, dirs_exist_ok=True)
    env.catalog = load_catalog(env.catalog.root)
    assert env.catalog.problems == []
    return env


def home(env: engine.Env, hostname: str) -> Path:
    """A local node's $HOME, as seen from the host (nodes share the host's filesystem)."""
    return env.settings.nodes_dir / hostname / "home"


def hostnames(view: dict) -> list[str]:
    return [n["hostname"] for n in sorted(view["nodes"], key=lambda n: n["number"])]


def test_ansible_playbook_and_role_on_two_nodes(aenv, make_cluster):
    started = time.monotonic()
    view = make_cluster("ans", 2, template="automators")  # create runs ansible-app.install on both
    print(f"2-node cluster with ansible install: {time.monotonic() - started:.1f} s")
    assert view["status"] == "ACTIVE", view.get("message")
    hosts = hostnames(view)
    ips = [n["ip"] for n in sorted(view["nodes"], key=lambda n: n["number"])]
    peers = ",".join(f"{ip}:7000" for ip in ips)
    for rank, host in enumerate(hosts, 1):
        text = (home(aenv, host) / "out" / "ansible-app.txt").read_text()
        assert text == (
            f"host={host} rank={rank}/2 peers={peers}\n"
            "greeting=hello from ans\n"
            f"group={','.join(hosts)} service=ansible-app.install\n"
        )
    out = engine.run_service_action(aenv, "ans", hosts[1], "ansible-role", "install")
    assert (home(aenv, hosts[1]) / "out" / "greeter.txt").read_text() == f"greeter role says hi to {hosts[1]}\n"
    assert not (home(aenv, hosts[0]) / "out" / "greeter.txt").exists()  # --limit: only that node
    assert "PLAY RECAP" in out


def test_failing_playbook_names_node_and_task_error(aenv, make_cluster):
    view = make_cluster("anf", 1, template="automators-lean")
    host = hostnames(view)[0]
    with pytest.raises(ActionError) as err:
        engine.run_service_action(aenv, "anf", host, "ansible-broken", "install")
    message = str(err.value)
    assert message.startswith(f"ansible-broken.install failed on {host} (ansible-playbook exit 2)")
    assert "TASK [give up on purpose]" in message and f"loom-test-boom on {host}" in message


def test_ansible_checks_the_pinned_host_key(aenv, make_cluster, tmp_path):
    view = make_cluster("ank", 1, template="automators")  # ran ansible-app.install: the right key works
    host = hostnames(view)[0]
    wrong = write_keypair(tmp_path / "impostor", "impostor")
    aenv.store.update_node("ank", host, host_key=wrong)
    with pytest.raises(ActionError) as err:
        engine.run_service_action(aenv, "ank", host, "ansible-app", "install")
    message = str(err.value)
    assert f"failed on {host}" in message and "UNREACHABLE" in message
    assert "Host key verification failed" in message


def test_puppet_apply_for_real(aenv, make_cluster):
    # `make test` installs puppet (test-os-deps); without it this is a failure, not a skip.
    assert shutil.which("puppet"), "puppet is not installed: run `make test-os-deps` (apt-get install -y puppet)"
    view = make_cluster("pup", 1, template="automators-lean")
    host = hostnames(view)[0]
    started = time.monotonic()
    engine.run_service_action(aenv, "pup", host, "puppet-app", "install")
    print(f"puppet apply: {time.monotonic() - started:.1f} s")
    out = home(aenv, host) / "out"
    assert (out / "puppet-app.txt").read_text() == (
        f"host={host} cluster=pup action=puppet-app.install\n"
        'config={"greeting": "hello from pup"}\n'
    )
    assert (out / "puppet-module.txt").read_text() == f"module loomtest on {host}\n"  # --modulepath
    engine.run_service_action(aenv, "pup", host, "puppet-app", "install")  # no changes: exit 0 is fine too
    with pytest.raises(ActionError) as err:
        engine.run_service_action(aenv, "pup", host, "puppet-broken", "install")
    message = str(err.value)
    assert re.match(rf"puppet-broken.install failed on {host} \(exit [46]\): ", message), message  # 4/6: failures
    assert "Exec[loom-puppet-boom]" in message and "\x1b[" not in message


def test_chef_solo_receives_command_and_files(aenv, make_cluster):
    view = make_cluster("chf", 2, template="automators-lean")
    host = hostnames(view)[0]
    node_home = home(aenv, host)
    (node_home / ".loom" / "bin").mkdir(parents=True)
    shutil.copy2(EXAMPLES / "standin" / "chef-solo", node_home / ".loom" / "bin" / "chef-solo")
    out = engine.run_service_action(aenv, "chf", host, "chef-app", "install")
    assert "chef-solo stand-in: recorded" in out
    record = node_home / "chef-record"
    run = f"{node_home}/.loom/run/chef-app.install"
    assert (record / "argv").read_text().splitlines() == ["-c", f"{run}.solo.rb", "-j", f"{run}.node.json"]
    assert (record / "user").read_text().strip() == "root"
    assert (record / "solo.rb").read_text() == (
        "# Written by Loom for one chef-solo run.\n"
        f"cookbook_path ['{node_home}/.loom/services/chef-app/chef/cookbooks']\n"
        f"file_cache_path '{node_home}/.loom/chef/cache'\n"
    )
    ips = [n["ip"] for n in sorted(view["nodes"], key=lambda n: n["number"])]
    nodes = [{"hostname": n["hostname"], "ip": n["ip"], "services": n["services"]} for n in view["nodes"]]
    assert json.loads((record / "node.json").read_text()) == {
        "run_list": ["recipe[app]", "recipe[app::config]"],
        "app": {"port": 7000, "peers": ",".join(f"{ip}:7000" for ip in ips), "owner": "alice"},
        "loom": {
            "cluster": "chf", "host": host, "ip": ips[0], "service": "chef-app", "action": "install",
            "config": {"greeting": "hello from chf"}, "nodes": nodes,
        },
    }
    src = EXAMPLES / "services" / "chef" / "cookbooks"
    for f in src.rglob("*"):
        if f.is_file():
            assert (record / "cookbooks" / f.relative_to(src)).read_bytes() == f.read_bytes()
    assert oct((Path(f"{run}.node.json")).stat().st_mode & 0o777) == "0o600"


class EchoFileAction(ActionModel):
    type: Literal["echo-file"]
    text: Annotated[str, Macros]


@pytest.fixture
def echo_file_automator():
    @register
    class EchoFileAutomator(Automator):
        """A tiny automator defined in a test: write ``text`` to ~/echo-file.txt over SSH."""

        name = "echo-file"
        Action = EchoFileAction

        def run(self, access: NodeAccess, ctx: ActionContext) -> str:
            with RemoteSession(access, ctx.service, ctx.action, ctx.spec.timeout) as node:
                node.put_text(ctx.spec.text + "\n", "echo-file.txt", mode=0o644)
                return node.run("cat echo-file.txt")[1]

    yield EchoFileAutomator
    unregister("echo-file")


def test_an_automator_registered_in_a_test_runs_on_a_node(aenv, make_cluster, echo_file_automator):
    svc = aenv.catalog.root / "services" / "echoer.yaml"
    svc.write_text("name: echoer\nactions:\n  install: {type: echo-file, text: 'I am %host.self% of %cluster.name%'}\n")
    aenv.catalog = load_catalog(aenv.catalog.root)
    assert aenv.catalog.problems == []
    view = make_cluster("ech", 1, template="automators-lean")
    host = hostnames(view)[0]
    out = engine.run_service_action(aenv, "ech", host, "echoer", "install")
    assert out == f"I am {host} of ech\n"
    assert (home(aenv, host) / "echo-file.txt").read_text() == out
