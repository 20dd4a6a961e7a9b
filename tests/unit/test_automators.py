"""Automators without nodes: the registry, template validation of every action type, and the
exact commands and files each automator hands to a node (or to ansible-playbook)."""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import pytest
from helpers import cluster_template, write_templates

from loom import engine
from loom.automators import ActionContext, Automator, NodeView, automator_for, register, unregister
from loom.automators import ansible as ans
from loom.automators.chef_solo import node_json, ruby_str, solo_body, solo_rb
from loom.automators.puppet import apply_body, facts
from loom.automators.remote import RemoteSession, wrap_command
from loom.automators.shell import ShellInvocation, remote_command
from loom.automators.ssh import NodeAccess
from loom.errors import ActionError
from loom.settings import load_settings
from loom.spec.actions import (
    ActionModel,
    AnsibleAction,
    ChefSoloAction,
    Macros,
    PuppetAction,
    ShellAction,
    action_types,
)
from loom.store import Store

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa host@a"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb host@b"
NODES = (
    NodeView("c-1", "10.0.0.1", 22, "root", KEY_A, ("db",)),
    NodeView("c-2", "10.0.0.2", 2222, "admin", KEY_B, ("web", "dask-worker")),
)
SERVICES = Path("/srv/templates/services")
FILES = {  # what the valid actions below point at
    "services/ansible/site.yml": "- hosts: all\n  tasks: []\n",
    "services/roles/web/tasks/main.yml": "[]\n",
    "services/puppet/site.pp": "notice('hi')\n",
    "services/puppet/modules/m/manifests/init.pp": "class m {}\n",
    "services/chef/cookbooks/app/recipes/default.rb": "log 'hi'\n",
}
VALID = {
    "shell": {"type": "shell", "script": "scripts/noop.sh", "args": ["%host.self%"]},
    "ansible": {"type": "ansible", "playbook": "ansible/site.yml", "extra_vars": {"x": "%ip.self%"}, "tags": ["setup"]},
    "ansible-role": {"type": "ansible", "role": "web"},
    "puppet": {"type": "puppet", "manifest": "puppet/site.pp", "modulepath": "puppet/modules", "timeout": 60},
    "chef-solo": {"type": "chef-solo", "run_list": ["recipe[app]"], "cookbooks": "chef/cookbooks", "attributes": {"a": 1}},
}


def ctx_for(spec: ActionModel, hostname: str = "c-2", config: dict | None = None) -> ActionContext:
    node = next(n for n in NODES if n.hostname == hostname)
    return ActionContext(
        cluster="c", hostname=hostname, ip=node.ip, service="web", action="install", spec=spec,
        config=config or {"port": 80}, nodes=NODES, services_dir=SERVICES, key_file=Path("/keys/c.1/id_ed25519"),
        owner="alice",
    )


def load_action(tmp_path: Path, action: dict, files: dict | None = None):
    catalog = write_templates(tmp_path, {**(files or {}), "services/app.yaml": {"name": "app", "actions": {"install": action}}})
    catalog.problems = service_problems(catalog.problems)
    return catalog


def service_problems(problems: list[str]) -> list[str]:
    """Only the services' problems (the shared BASICS files are other tests' business)."""
    return [p for p in problems if p.startswith("templates/services/")]


# --- registry ------------------------------------------------------------------------------
def test_builtin_types_are_registered_and_their_runners_load_lazily():
    assert set(action_types()) >= {"shell", "ansible", "puppet", "chef-solo"}
    for name in ("shell", "ansible", "puppet", "chef-solo"):
        runner = automator_for(name)
        assert runner.name == name and type_name_of(runner) == name
    with pytest.raises(ActionError, match="no automator for action type 'nope'"):
        automator_for("nope")


def type_name_of(runner: Automator) -> str:
    return runner.Action.model_fields["type"].annotation.__args__[0]


def test_core_spec_loads_every_action_type_without_airflow_paramiko_or_ansible(tmp_path):
    """Template validation is core: it must not import Airflow, paramiko, ansible or a runner."""
    write_templates(tmp_path, {**FILES, **{f"services/s{i}.yaml": {"name": f"s{i}", "actions": {"install": a}} for i, a in enumerate(VALID.values())}})
    code = f"""
import sys
for banned in ("airflow", "paramiko", "ansible"):
    sys.modules[banned] = None  # any import of them now fails
from loom.spec.loader import load_catalog
catalog = load_catalog({str(tmp_path / 'templates')!r})
problems = [p for p in catalog.problems if p.startswith("templates/services/")]
assert problems == [], problems
assert len(catalog.services) == {len(VALID)}, catalog.services
loaded = sorted(m for m in sys.modules if m.startswith("loom.automators."))
assert loaded == [], loaded
from loom.automators import automator_for
print(sorted(automator_for(t).name for t in ("shell", "ansible", "puppet", "chef-solo")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['ansible', 'chef-solo', 'puppet', 'shell']"


class TinyAction(ActionModel):
    type: Literal["tiny"]
    text: Annotated[str, Macros]
    note: str = "%not.expanded%"  # no Macros marker: left as written


@pytest.fixture
def tiny():
    """An automator defined right here: one class, one registration line."""

    @register
    class TinyAutomator(Automator):
        name = "tiny"
        Action = TinyAction

        def run(self, access: NodeAccess, ctx: ActionContext) -> str:
            spec = ctx.spec
            assert isinstance(spec, TinyAction)
            return f"{access.hostname}@{access.ip}: {spec.text} / {spec.note} / {ctx.config['greeting']} / {len(ctx.nodes)} nodes"

    yield TinyAutomator
    unregister("tiny")


HI = cluster_template("hi", ["hello"])
HI["defaults"]["config"] = {"greeting": "hi %cluster.name%"}


def test_an_automator_registered_in_a_test_loads_and_runs(tmp_path, monkeypatch, tiny):
    catalog = write_templates(
        tmp_path,
        {
            "services/hello.yaml": {"name": "hello", "actions": {"start": {"type": "tiny", "text": "I am %host.self%, 1 of %num.service.hello%"}}},
            "clustertemplates/hi.yaml": HI,
        },
    )
    assert [p for p in catalog.problems if "hello" in p or "hi.yaml" in p] == []
    assert isinstance(catalog.services["hello"].actions["start"], TinyAction)
    monkeypatch.setenv("AIRFLOW__LOOM__STATE_DIR", str(tmp_path / "state"))
    env = engine.Env(load_settings(), catalog, Store(f"sqlite:///{tmp_path / 'loom.db'}"))
    view = engine.begin_create(env, "hi", {"cluster": "tc", "size": 2}, "hi.create", "r1", "alice")
    for i, node in enumerate(view["nodes"], 1):
        env.store.update_node("tc", node["hostname"], ip=f"10.9.0.{i}", port=22, host_key=KEY_A)
    out = engine.run_service_action(env, "tc", "tc-1", "hello", "start")
    assert out == "tc-1@10.9.0.1: I am tc-1, 1 of 2 / %not.expanded% / hi tc / 2 nodes"


def test_an_unregistered_type_is_a_template_problem(tmp_path, tiny):
    unregister("tiny")
    catalog = load_action(tmp_path, {"type": "tiny", "text": "x"})
    assert catalog.problems == [
        "templates/services/app.yaml: actions.install: unknown action type 'tiny': use one of ansible, chef-solo, puppet, shell"
    ]


NEW_AUTOMATOR_FILE = """
from typing import Annotated, Literal

from loom.automators import ActionContext, Automator, register
from loom.spec.actions import ActionModel, Macros, ServiceFile


@register
class FileDropAutomator(Automator):
    name = "file-drop"

    class Action(ActionModel):
        type: Literal["file-drop"]
        source: ServiceFile
        target: Annotated[str, Macros]

    def run(self, access, ctx: ActionContext) -> str:
        return f"would copy {ctx.spec.source} to {access.hostname}:{ctx.spec.target}"
"""


def test_a_new_automator_file_is_found_by_its_type_name(tmp_path, monkeypatch):
    """The documented recipe: one file loom/automators/<type>.py, one class, one @register."""
    import loom.automators

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "file_drop.py").write_text(NEW_AUTOMATOR_FILE)
    monkeypatch.setattr(loom.automators, "__path__", [*loom.automators.__path__, str(package)])
    try:
        catalog = load_action(tmp_path, {"type": "file-drop", "source": "scripts/noop.sh", "target": "/opt/%cluster.name%"})
        assert catalog.problems == []
        assert "file-drop" in action_types()
        bad = load_action(tmp_path / "bad", {"type": "file-drop", "source": "scripts/none", "target": "x"})
        assert bad.problems[0].startswith("templates/services/app.yaml: actions.install.source: 'scripts/none' not found")
        runner = automator_for("file-drop")
        access = NodeAccess("n-1", "10.0.0.9", 22, "root", Path("/k"), KEY_A)
        spec = catalog.services["app"].actions["install"].expanded(lambda v: v.replace("%cluster.name%", "c"))
        assert runner.run(access, ctx_for(spec)) == "would copy scripts/noop.sh to n-1:/opt/c"
    finally:
        unregister("file-drop")
        sys.modules.pop("loom.automators.file_drop", None)


def test_register_checks_the_name_against_the_action_type():
    class Wrong(Automator):
        name = "wrong"
        Action = TinyAction

    with pytest.raises(TypeError, match="Literal\\['tiny'\\]"):
        register(Wrong)


# --- template validation -----------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(VALID))
def test_every_action_type_is_accepted(tmp_path, kind):
    catalog = load_action(tmp_path, VALID[kind], FILES)
    assert catalog.problems == []
    assert catalog.services["app"].actions["install"].type == VALID[kind]["type"]


P = "templates/services/app.yaml: actions.install"


@pytest.mark.parametrize(
    ("action", "problem"),
    [
        ({"type": "ansible", "playbook": "ansible/none.yml"}, f"{P}.playbook: 'ansible/none.yml' not found in "),
        ({"type": "ansible", "playbok": "ansible/site.yml"}, f"{P}.playbok: Extra inputs are not permitted"),
        ({"type": "ansible", "playbook": "ansible/site.yml", "role": "web"}, f"{P}: Value error, give exactly one of playbook"),
        ({"type": "ansible"}, f"{P}: Value error, give exactly one of playbook (a file) or role"),
        ({"type": "ansible", "role": "ghost"}, f"{P}.role: 'roles/ghost' not found in "),
        ({"type": "ansible", "role": "web", "roles_path": "nowhere"}, f"{P}.roles_path: 'nowhere' not found in "),
        ({"type": "ansible", "playbook": "../site.yml"}, f"{P}: Value error, playbook '../site.yml' must be a relative path inside templates/services/"),
        ({"type": "ansible", "playbook": "ansible/site.yml", "tags": ["a b"]}, f"{P}.tags[0]: String should match pattern"),
        ({"type": "ansible", "playbook": "ansible/site.yml", "extra_vars": []}, f"{P}.extra_vars: Input should be a valid dictionary"),
        ({"type": "puppet", "manifest": "puppet/none.pp"}, f"{P}.manifest: 'puppet/none.pp' not found in "),
        ({"type": "puppet", "manifest": "puppet/site.pp", "modulepath": "puppet/site.pp"}, f"{P}.modulepath: 'puppet/site.pp' not found in "),
        ({"type": "puppet", "manifest": "/etc/site.pp"}, f"{P}: Value error, manifest '/etc/site.pp' must be a relative path"),
        ({"type": "puppet"}, f"{P}.manifest: Field required"),
        ({"type": "puppet", "manifest": "puppet/site.pp", "timeout": 0}, f"{P}.timeout: Input should be greater than 0"),
        ({"type": "chef-solo", "run_list": ["recipe[app]"], "cookbooks": "chef/none"}, f"{P}.cookbooks: 'chef/none' not found in "),
        ({"type": "chef-solo", "run_list": ["app"], "cookbooks": "chef/cookbooks"}, f"{P}.run_list[0]: String should match pattern"),
        ({"type": "chef-solo", "run_list": [], "cookbooks": "chef/cookbooks"}, f"{P}.run_list: List should have at least 1 item"),
        ({"type": "chef-solo", "run_list": ["recipe[a]"], "cookbooks": "chef/cookbooks", "attributes": {"run_list": []}},
         f"{P}: Value error, attributes may not set run_list"),
        ({"type": "shell", "scrip": "scripts/noop.sh"}, f"{P}.scrip: Extra inputs are not permitted"),
        ({"type": "shell", "script": "scripts/none.sh"}, f"{P}.script: 'scripts/none.sh' not found in "),
        ({"type": "docker-x", "image": "x"}, f"{P}: unknown action type 'docker-x': use one of ansible, chef-solo, puppet, shell"),
        ("shell scripts/noop.sh", f"{P}: an action is a mapping like {{type: shell, script: ...}}"),
    ],
)
def test_bad_action_fields_are_named(tmp_path, action, problem):
    catalog = load_action(tmp_path, action, FILES)
    assert any(p.startswith(problem) for p in catalog.problems), catalog.problems
    assert "app" not in catalog.services


def test_an_action_without_type_is_still_shell(tmp_path):
    catalog = load_action(tmp_path, {"script": "scripts/noop.sh"})
    assert catalog.problems == [] and isinstance(catalog.services["app"].actions["install"], ShellAction)


def test_macros_expand_only_marked_fields():
    spec = AnsibleAction(type="ansible", playbook="p.yml", extra_vars={"a": "%x%", "n": 3, "deep": {"l": ["%x%"]}})
    done = spec.expanded(lambda v: json.loads(json.dumps(v).replace("%x%", "X")))
    assert done.extra_vars == {"a": "X", "n": 3, "deep": {"l": ["X"]}} and done.playbook == "p.yml"
    chef = ChefSoloAction(type="chef-solo", run_list=["recipe[a]"], cookbooks="c", attributes={"k": "%x%"})
    assert chef.expanded(lambda v: {"k": "X"}).attributes == {"k": "X"}


# --- sudo and the remote command ---------------------------------------------------------
def test_shell_command_exact_with_and_without_sudo():
    inv = ShellInvocation("svc", "start", Path("/t/scripts/run.sh"), ["a b", "$(id)"], timeout=60)
    body = "set -a; . .loom/run/svc.start.env; set +a; exec bash .loom/services/svc/run.sh 'a b' '$(id)'"
    assert remote_command(inv, sudo=False) == f"cd ~ && timeout -k 10 60 bash -c {shlex.quote(body)}"
    assert remote_command(inv, sudo=True) == f"cd ~ && sudo -n -H timeout -k 10 60 bash -c {shlex.quote(body)}"


@pytest.mark.parametrize(("user", "sudo"), [("root", False), ("admin", True), ("ubuntu", True)])
def test_every_ssh_automator_uses_sudo_when_not_root(user, sudo):
    access = NodeAccess("c-2", "10.0.0.2", 22, user, Path("/k"), KEY_B)
    assert RemoteSession(access, "web", "install", 30).sudo is sudo  # shell, puppet, chef-solo
    cmd = ans.command(ctx_for(AnsibleAction(type="ansible", playbook="p.yml")), Path("/w"), sudo=access.user != "root")
    assert ("--become" in cmd) is sudo
    assert wrap_command("true", sudo, 5).startswith("cd ~ && sudo -n -H timeout" if sudo else "cd ~ && timeout")


# --- puppet --------------------------------------------------------------------------------
def test_puppet_command_and_facts_exact():
    body = apply_body("/h/.loom/run/web.install.env", "export PATH=/h/.loom/bin:/opt/puppetlabs/bin:\"$PATH\"; ",
                      "/h/.loom/services/web/puppet/site.pp", "/h/.loom/services/web/puppet/modules")
    assert body == (
        "set -a; . /h/.loom/run/web.install.env; set +a; export PATH=/h/.loom/bin:/opt/puppetlabs/bin:\"$PATH\"; "
        "exec puppet apply --detailed-exitcodes --color=false --modulepath /h/.loom/services/web/puppet/modules "
        "/h/.loom/services/web/puppet/site.pp"
    )
    assert "--modulepath" not in apply_body("/e", "", "/m.pp", None)
    assert wrap_command(body, sudo=True, timeout=60) == f"cd ~ && sudo -n -H timeout -k 10 60 bash -c {shlex.quote(body)}"
    spec = PuppetAction(type="puppet", manifest="puppet/site.pp")
    assert facts(ctx_for(spec), "/home/admin") == {
        "FACTER_loom_cluster": "c",
        "FACTER_loom_host": "c-2",
        "FACTER_loom_ip": "10.0.0.2",
        "FACTER_loom_service": "web",
        "FACTER_loom_action": "install",
        "FACTER_loom_home": "/home/admin",
        "FACTER_loom_config": '{"port": 80}',
        "FACTER_loom_nodes": json.dumps([
            {"hostname": "c-1", "ip": "10.0.0.1", "services": ["db"]},
            {"hostname": "c-2", "ip": "10.0.0.2", "services": ["web", "dask-worker"]},
        ]),
    }


# --- chef-solo -----------------------------------------------------------------------------
def test_chef_solo_files_and_command_exact():
    assert solo_rb("/home/a/.loom/services/web/chef/cookbooks", "/home/a/.loom/chef/cache") == (
        "# Written by Loom for one chef-solo run.\n"
        "cookbook_path ['/home/a/.loom/services/web/chef/cookbooks']\n"
        "file_cache_path '/home/a/.loom/chef/cache'\n"
    )
    assert ruby_str("it's a \\ path") == "'it\\'s a \\\\ path'"
    spec = ChefSoloAction(type="chef-solo", run_list=["recipe[app]", "role[web]"], cookbooks="chef/cookbooks",
                          attributes={"app": {"peers": "10.0.0.1:7000"}})
    assert node_json(ctx_for(spec)) == {
        "run_list": ["recipe[app]", "role[web]"],
        "app": {"peers": "10.0.0.1:7000"},
        "loom": {
            "cluster": "c", "host": "c-2", "ip": "10.0.0.2", "service": "web", "action": "install",
            "config": {"port": 80},
            "nodes": [
                {"hostname": "c-1", "ip": "10.0.0.1", "services": ["db"]},
                {"hostname": "c-2", "ip": "10.0.0.2", "services": ["web", "dask-worker"]},
            ],
        },
    }
    body = solo_body("/h/.loom/run/web.install.env", "export PATH=/h/.loom/bin:/opt/chef/bin:/opt/cinc/bin:\"$PATH\"; ",
                     "/h/.loom/run/web.install.solo.rb", "/h/.loom/run/web.install.node.json")
    assert body == (
        "set -a; . /h/.loom/run/web.install.env; set +a; export PATH=/h/.loom/bin:/opt/chef/bin:/opt/cinc/bin:\"$PATH\"; "
        "exec chef-solo -c /h/.loom/run/web.install.solo.rb -j /h/.loom/run/web.install.node.json"
    )
    assert wrap_command(body, sudo=True, timeout=900).startswith("cd ~ && sudo -n -H timeout -k 10 900 bash -c ")


# --- ansible -------------------------------------------------------------------------------
def test_ansible_inventory_groups_and_known_hosts_exact():
    ctx = ctx_for(AnsibleAction(type="ansible", playbook="ansible/site.yml"))
    assert ans.inventory(ctx) == {
        "all": {
            "hosts": {
                "c-1": {"ansible_host": "10.0.0.1", "ansible_port": 22, "ansible_user": "root",
                        "ansible_ssh_private_key_file": "/keys/c.1/id_ed25519"},
                "c-2": {"ansible_host": "10.0.0.2", "ansible_port": 2222, "ansible_user": "admin",
                        "ansible_ssh_private_key_file": "/keys/c.1/id_ed25519"},
            },
            "children": {"dask-worker": {"hosts": {"c-2": None}}, "db": {"hosts": {"c-1": None}}, "web": {"hosts": {"c-2": None}}},
        }
    }
    assert [ans.known_hosts_line(n) for n in NODES] == [
        f"10.0.0.1 {KEY_A.split()[0]} {KEY_A.split()[1]}\n",
        f"[10.0.0.2]:2222 {KEY_B.split()[0]} {KEY_B.split()[1]}\n",
    ]


def test_ansible_command_vars_and_files(tmp_path):
    spec = AnsibleAction(type="ansible", playbook="ansible/site.yml", tags=["setup", "conf"], extra_vars={"peer": "10.0.0.1"})
    ctx = ctx_for(spec)
    assert ans.command(ctx, tmp_path, sudo=True)[1:] == [
        "-i", f"{tmp_path}/inventory.json", "--limit", "c-2", "-e", f"@{tmp_path}/vars.json",
        "--become", "--tags", "setup,conf", str(SERVICES / "ansible/site.yml"),
    ]
    assert Path(ans.command(ctx, tmp_path, sudo=False)[0]).name == "ansible-playbook"
    assert ans.extra_vars(ctx) == {
        "loom_cluster": "c", "loom_host": "c-2", "loom_ip": "10.0.0.2", "loom_service": "web",
        "loom_action": "install", "loom_config": {"port": 80},
        "loom_nodes": [n.as_dict() for n in NODES], "peer": "10.0.0.1",
    }
    ans.write_workdir(ctx, tmp_path)
    assert os.stat(tmp_path / "vars.json").st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "vars.json").read_text()) == ans.extra_vars(ctx)
    assert json.loads((tmp_path / "inventory.json").read_text()) == ans.inventory(ctx)
    assert (tmp_path / "known_hosts").read_text().count("ssh-ed25519") == 2
    role = ctx_for(AnsibleAction(type="ansible", role="web"))
    assert ans.command(role, tmp_path, sudo=False)[-1] == f"{tmp_path}/role.json"
    assert ans.role_playbook("web") == [{"name": "role web", "hosts": "all", "roles": [{"role": "web"}]}]


def test_ansible_environment_is_pinned(tmp_path, monkeypatch):
    monkeypatch.setenv("ANSIBLE_STRATEGY", "free")  # a worker's stray setting must not leak in
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent")
    env = ans.ansible_env(ctx_for(AnsibleAction(type="ansible", role="web", roles_path="my/roles")), tmp_path)
    assert "ANSIBLE_STRATEGY" not in env and "SSH_AUTH_SOCK" not in env
    assert env["ANSIBLE_CONFIG"] == f"{tmp_path}/ansible.cfg"
    assert env["ANSIBLE_LOCAL_TEMP"] == f"{tmp_path}/tmp" and env["ANSIBLE_REMOTE_TEMP"] == "~/.loom/ansible-tmp"
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True" and env["ANSIBLE_RETRY_FILES_ENABLED"] == "False"
    assert env["ANSIBLE_NOCOLOR"] == "1" and env["ANSIBLE_PYTHON_INTERPRETER"] == "python3"
    assert env["ANSIBLE_ROLES_PATH"] == str(SERVICES / "my/roles")
    ssh = env["ANSIBLE_SSH_ARGS"]
    assert "-F /dev/null" in ssh and "StrictHostKeyChecking=yes" in ssh and f"UserKnownHostsFile={tmp_path}/known_hosts" in ssh


ANSIBLE_FAILURE = """\
PLAY [app] *********************************************************************

TASK [write config] ************************************************************
ok: [c-2]

TASK [start it] ****************************************************************
[ERROR]: Task failed: Module failed: port 80 is taken
fatal: [c-2]: FAILED! => {"changed": false, "msg": "port 80 is taken"}

PLAY RECAP *********************************************************************
c-2                        : ok=1    changed=0    unreachable=0    failed=1
""".splitlines()


def test_ansible_error_summary_names_the_task_and_its_error():
    assert ans.error_summary(ANSIBLE_FAILURE) == ["TASK [start it]", "fatal: [c-2]: FAILED! port 80 is taken"]
    syntax = ["[ERROR]: the playbook: x.yml could not be found", "", "usage..."]
    assert ans.error_summary(syntax) == ["[ERROR]: the playbook: x.yml could not be found"]
    assert ans.error_summary(["a", "b"]) == ["a", "b"]


def test_run_streaming_logs_lines_and_enforces_the_timeout(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="loom.automators.ansible"):
        status, lines = ans.run_streaming(["bash", "-c", "echo one; echo two >&2; exit 3"], dict(os.environ), tmp_path, 10)
    assert (status, lines) == (3, ["one", "two"])
    assert [r.getMessage() for r in caplog.records if r.name == "loom.automators.ansible"] == ["one", "two"]
    started = time.monotonic()
    status, lines = ans.run_streaming(["bash", "-c", "echo start; sleep 30 & sleep 30; echo never"], dict(os.environ), tmp_path, 1)
    assert status is None and lines == ["start"] and time.monotonic() - started < 10
