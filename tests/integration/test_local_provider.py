"""The local provider against real sshd processes: nodes are real, pinned, and leave nothing."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import paramiko
import pytest
from libcloud.compute.types import NodeState

from loom.automators.ssh import NodeAccess, ssh_hook
from loom.errors import ProviderError
from loom.procs import port_open, process_alive
from loom.keys import generate_keypair

pytestmark = pytest.mark.integration


def _access(node, key: Path, host_key: str | None = None) -> NodeAccess:
    return NodeAccess(node.name, node.public_ips[0], node.extra["ssh_port"], "root", key, host_key or node.extra["host_key"])


def _run(access: NodeAccess, command: str) -> tuple[int, str, str]:
    hook = ssh_hook(access, cmd_timeout=30)
    client = hook.get_conn()
    try:
        status, out, err = hook.exec_ssh_client_command(client, command, get_pty=False, environment=None)
    finally:
        client.close()
    return status, out.decode(), err.decode()


def test_node_is_a_real_machine_with_its_own_address_hostname_and_home(driver, auth, cluster_key):
    node = driver.create_node("itest-1", auth=auth)
    assert node.state == NodeState.RUNNING
    ip = node.public_ips[0]
    assert ip.startswith("127.0.0.") and ip != "127.0.0.1"
    status, out, _ = _run(_access(node, cluster_key[0]), 'hostname; echo "$HOME"; pwd; ps -e -o pid= | wc -l')
    hostname, home, cwd, nprocs = out.split()
    assert status == 0
    assert hostname == "itest-1"
    assert home == cwd == node.extra["home"]
    assert int(nprocs) < 10  # its own PID namespace: only the node's processes are visible


def test_two_nodes_get_distinct_addresses(driver, auth):
    a = driver.create_node("itest-a", auth=auth)
    b = driver.create_node("itest-b", auth=auth)
    assert a.public_ips != b.public_ips
    assert {n.name for n in driver.list_nodes()} == {"itest-a", "itest-b"}


def test_create_is_idempotent_for_a_running_node(driver, auth):
    first = driver.create_node("itest-1", auth=auth)
    again = driver.create_node("itest-1", auth=auth)
    assert again.public_ips == first.public_ips
    assert again.extra["pid"] == first.extra["pid"]
    assert len(driver.list_nodes()) == 1


def test_list_nodes_reflects_a_dead_sshd_and_create_rebuilds_it(driver, auth):
    node = driver.create_node("itest-1", auth=auth)
    subprocess.run(["kill", "-9", str(node.extra["pid"])], check=True)
    deadline = time.monotonic() + 5
    while process_alive(node.extra["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    [listed] = driver.list_nodes()
    assert listed.state != NodeState.RUNNING
    rebuilt = driver.create_node("itest-1", auth=auth)
    assert rebuilt.state == NodeState.RUNNING
    assert rebuilt.extra["pid"] != node.extra["pid"]
    assert len(driver.list_nodes()) == 1


def test_destroy_leaves_no_process_port_or_file(driver, auth, cluster_key):
    node = driver.create_node("itest-1", auth=auth)
    access = _access(node, cluster_key[0])
    status, out, _ = _run(access, "setsid sleep 600 >/dev/null 2>&1 </dev/null & echo started")
    assert status == 0 and "started" in out
    folder = Path(node.extra["home"]).parent
    assert folder.is_dir()
    ns_pids = subprocess.run(["pgrep", "-f", "^sleep 600$"], capture_output=True, text=True).stdout.split()
    assert ns_pids, "the daemon started on the node should be running"
    assert driver.destroy_node(node)
    assert not folder.exists()
    assert not port_open(node.public_ips[0], node.extra["ssh_port"])
    assert not process_alive(node.extra["pid"])
    for pid in ns_pids:
        assert not process_alive(int(pid)), "a process started on the node outlived it"
    assert driver.list_nodes() == []
    assert driver.destroy_node(node)  # idempotent


def test_host_key_is_pinned(driver, auth, cluster_key):
    node = driver.create_node("itest-1", auth=auth)
    _, other_host_key = generate_keypair("impostor")
    with pytest.raises(paramiko.SSHException):
        _run(_access(node, cluster_key[0], host_key=other_host_key), "true")


def test_only_the_cluster_key_logs_in(driver, auth, node_state):
    node = driver.create_node("itest-1", auth=auth)
    from loom.keys import write_keypair

    stranger = node_state / "stranger" / "id_ed25519"
    write_keypair(stranger, "stranger")
    with pytest.raises(paramiko.AuthenticationException):
        _run(_access(node, stranger), "true")


def test_create_without_a_key_is_refused(driver):
    with pytest.raises(ProviderError, match="NodeAuthSSHKey"):
        driver.create_node("itest-1")


def test_bad_node_name_is_refused(driver, auth):
    with pytest.raises(ProviderError, match="not a valid hostname"):
        driver.create_node("../../etc", auth=auth)


def test_an_address_something_else_listens_on_is_never_given_out(driver, auth):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.2", 45678))  # e.g. a service of another Loom's node, on another port
    taken.listen()
    try:
        node = driver.create_node("itest-1", auth=auth)
        assert node.public_ips[0] != "127.0.0.2"
    finally:
        taken.close()
