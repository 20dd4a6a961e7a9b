"""Fixtures that build real local nodes (namespaced sshd on loopback) in a temporary state dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from libcloud.compute.base import NodeAuthSSHKey

from loom.keys import write_keypair
from loom.providers.local import LocalNodeDriver

TEST_SSH_PORT = 2322  # not the default 2222, so a developer's running demo is never touched


@pytest.fixture
def node_state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def driver(node_state: Path) -> Iterator[LocalNodeDriver]:
    drv = LocalNodeDriver(state_dir=node_state, ssh_port=TEST_SSH_PORT)
    yield drv
    for node in drv.list_nodes():  # never leak a node, whatever the test did
        drv.destroy_node(node)


@pytest.fixture
def cluster_key(node_state: Path) -> tuple[Path, str]:
    key = node_state / "keys" / "test.1" / "id_ed25519"
    return key, write_keypair(key, "loom@test")


@pytest.fixture
def auth(cluster_key: tuple[Path, str]) -> NodeAuthSSHKey:
    return NodeAuthSSHKey(cluster_key[1])
