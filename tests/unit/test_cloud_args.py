"""Cloud provider arguments: Connection -> driver constructor, request -> create_node kwargs,
names, tags, and the retrying call wrapper. Real libcloud driver objects with fake credentials;
a socket guard proves that constructing them makes no network call."""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.common.types import InvalidCredsError
from libcloud.compute.base import KeyPair, Node, NodeAuthSSHKey, NodeDriver, NodeImage, NodeLocation, NodeSize
from libcloud.compute.types import NodeState

from loom.errors import ProviderError
from loom.providers import cloud
from loom.providers.base import PENDING, RUNNING, STOPPED, TERMINATED, MachineRequest
from loom.providers.cloud import (
    CLOUD_DRIVERS,
    CONNECTION_FIELDS,
    CallContext,
    CloudMachines,
    ConnectionInfo,
    RetryPolicy,
    create_kwargs,
    driver_args,
    driver_for,
    guarded_call,
    machine_name,
)

PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBcGv0pNoKF2ZuZfL9rQOHdDk1Y0dZ2Hm1a4cNxC1xQ7 loom@t1"
SECRET = "S3cr3t-very-secret-value"
FAST = RetryPolicy(attempts=4, first_wait=0.001, max_wait=0.005, budget=5)
NAME_RE = re.compile(r"^[a-z](?:[a-z0-9]|-(?=[a-z0-9])){0,62}$")  # no '--', no trailing '-'

CONNS: dict[str, ConnectionInfo] = {
    "ec2": ConnectionInfo("aws_loom", "aws", "AKIDEXAMPLE", SECRET, extra={"region": "eu-west-1"}),
    "gce": ConnectionInfo(
        "gcp_loom", "google_cloud_platform", "loom@proj.iam.gserviceaccount.com",
        extra={"key": json.dumps({"private_key": SECRET, "client_email": "x"}), "project": "proj",
               "zone": "europe-west1-b"},
    ),
    "openstack": ConnectionInfo(
        "os_loom", "openstack", "alice", SECRET, host="keystone.example.com", port=5000,
        extra={"tenant": "demo", "region": "RegionOne", "domain": "Users"},
    ),
    "digitalocean": ConnectionInfo("do_loom", "digitalocean", password=SECRET),
    "azure_arm": ConnectionInfo(
        "az_loom", "azure", "client-id", SECRET, extra={"tenant_id": "tid", "subscription_id": "sid"},
    ),
    "linode": ConnectionInfo("linode_loom", "linode", password=SECRET),
}
OPTIONS: dict[str, dict[str, Any]] = {
    "ec2": {"security_groups": ["loom"], "subnet": "subnet-1", "security_group_ids": "sg-1",
            "availability_zone": "eu-west-1a"},
    "gce": {"zone": "europe-west1-c", "network": "loom-net", "network_tags": ["ssh"]},
    "openstack": {"networks": ["net-uuid"], "security_groups": ["default"], "availability_zone": "nova"},
    "digitalocean": {"region": "ams3", "private_networking": True},
    "azure_arm": {"resource_group": "loom-rg", "location": "westeurope", "network": "loom-vnet",
                  "subnet": "nodes"},
    "linode": {"region": "eu-central"},
}


def request(**changes: Any) -> MachineRequest:
    values: dict[str, Any] = dict(
        provider="cloud", cluster="t1", cluster_id=7, hostname="t1-1000", number=1000,
        flavor="t2.micro", image="ami-12345678", sshuser="admin", public_key=PUBKEY,
    )
    values.update(changes)
    return MachineRequest(**values)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network call attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def build(driver_name: str) -> NodeDriver:
    return driver_for("cloud", driver_name, CONNS[driver_name])


# --- Connection data ---------------------------------------------------------------------------
def test_connection_repr_hides_secrets() -> None:
    conn = ConnectionInfo(
        "aws_loom", "aws", "AKIDEXAMPLE", SECRET, host="h", port=1, schema="s",
        extra={"region": "eu-west-1", "session_token": "tok-" + SECRET, "key": SECRET,
               "client_secret": SECRET, "key_path": "/etc/k.json"},
    )
    for text in (repr(conn), str(conn), f"{conn}"):
        assert SECRET not in text
        assert "password=***" in text
        assert "AKIDEXAMPLE" in text and "eu-west-1" in text and "/etc/k.json" in text
    assert set(conn.secrets()) >= {SECRET, "tok-" + SECRET}


def test_secrets_inside_json_key_are_known() -> None:
    assert SECRET in CONNS["gce"].secrets()
    assert "x" not in CONNS["gce"].secrets()  # the client email is not a secret


def test_connection_table_covers_every_driver() -> None:
    assert set(CONNECTION_FIELDS) == set(CLOUD_DRIVERS)
    assert CLOUD_DRIVERS == ("ec2", "gce", "openstack", "digitalocean", "azure_arm", "linode")


# --- constructor arguments ----------------------------------------------------------------------
def test_ec2_args() -> None:
    args, kwargs = driver_args("cloud", "ec2", CONNS["ec2"])
    assert args == ["AKIDEXAMPLE"]
    assert kwargs == {"secret": SECRET, "region": "eu-west-1", "signature_version": "4", "secure": True}


def test_ec2_custom_endpoint_args() -> None:
    conn = ConnectionInfo("moto", "aws", "a", "b", host="127.0.0.1", port=5000,
                          extra={"secure": "false", "region_name": "us-west-2", "session_token": "t0k3n"})
    assert driver_args("cloud", "ec2", conn)[1] == {
        "secret": "b", "region": "us-west-2", "signature_version": "4", "secure": False,
        "host": "127.0.0.1", "port": 5000, "token": "t0k3n",
    }
    url = ConnectionInfo("moto", "aws", "a", "b", extra={"endpoint_url": "http://127.0.0.1:5001"})
    kwargs = driver_args("cloud", "ec2", url)[1]
    assert (kwargs["host"], kwargs["port"], kwargs["secure"]) == ("127.0.0.1", 5001, False)


def test_gce_args() -> None:
    args, kwargs = driver_args("cloud", "gce", CONNS["gce"])
    assert args == ["loom@proj.iam.gserviceaccount.com"]
    assert kwargs == {"key": CONNS["gce"].extra["key"], "project": "proj", "auth_type": "SA",
                      "datacenter": "europe-west1-b"}
    by_path = ConnectionInfo("g", login="sa@x", extra={"key_path": "/k.json", "project_id": "p"})
    assert driver_args("cloud", "gce", by_path)[1]["key"] == "/k.json"


def test_openstack_args() -> None:
    args, kwargs = driver_args("cloud", "openstack", CONNS["openstack"])
    assert args == ["alice"]
    assert kwargs == {
        "secret": SECRET, "ex_force_auth_url": "https://keystone.example.com:5000",
        "ex_force_auth_version": "3.x_password", "ex_tenant_name": "demo", "ex_domain_name": "Users",
        "ex_tenant_domain_id": "default", "api_version": "2.0", "ex_force_service_region": "RegionOne",
    }


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("http://10.0.0.5:5000/v3", None, "http://10.0.0.5:5000"),
        ("https://keystone.example.com/v2.0/", 443, "https://keystone.example.com:443"),
        ("keystone.example.com", None, "https://keystone.example.com"),
    ],
)
def test_openstack_auth_url(host: str, port: int | None, expected: str) -> None:
    conn = ConnectionInfo("os", login="u", password="p", host=host, port=port, extra={"project": "x"})
    assert driver_args("cloud", "openstack", conn)[1]["ex_force_auth_url"] == expected


def test_token_drivers_and_azure_args() -> None:
    assert driver_args("cloud", "digitalocean", CONNS["digitalocean"]) == ([SECRET], {"api_version": "v2"})
    assert driver_args("cloud", "linode", CONNS["linode"]) == ([SECRET], {"api_version": "4.0"})
    assert driver_args("cloud", "azure_arm", CONNS["azure_arm"]) == (
        [], {"tenant_id": "tid", "subscription_id": "sid", "key": "client-id", "secret": SECRET}
    )


# GCE and Azure fetch an OAuth token while constructing: their arguments are tested above.
@pytest.mark.parametrize("driver_name", ["ec2", "openstack", "digitalocean", "linode"])
def test_real_drivers_build_without_network(driver_name: str, no_network: None) -> None:
    driver = build(driver_name)
    assert isinstance(driver, NodeDriver)
    assert SECRET in (getattr(driver, "secret", None), getattr(driver, "key", None))


def test_ec2_driver_classes_and_namespace(no_network: None) -> None:
    from libcloud.compute.drivers import ec2

    plain = build("ec2")
    assert type(plain) is ec2.EC2NodeDriver and plain.region_name == "eu-west-1"
    emulated = driver_for("cloud", "ec2", ConnectionInfo("m", login="a", password="b", host="127.0.0.1",
                                                         port=5999, extra={"secure": False}))
    assert isinstance(emulated, ec2.EC2NodeDriver) and type(emulated) is not ec2.EC2NodeDriver
    assert (emulated.connection.host, emulated.connection.port, emulated.connection.secure) == ("127.0.0.1", 5999, False)
    assert ec2.NAMESPACE.endswith("/")  # real EC2 parsing is never changed


def test_unknown_driver_names_provider_and_choices() -> None:
    with pytest.raises(ProviderError) as err:
        driver_for("mycloud", "vsphere", CONNS["ec2"])
    text = str(err.value)
    assert "'mycloud'" in text and "'vsphere'" in text
    for name in CLOUD_DRIVERS:
        assert name in text


@pytest.mark.parametrize(
    ("driver_name", "conn", "field", "what"),
    [
        ("ec2", ConnectionInfo("c1", password="x"), "login", "the access key id"),
        ("ec2", ConnectionInfo("c1", login="x"), "password", "the secret access key"),
        ("gce", ConnectionInfo("c1", login="x", extra={"project": "p"}), "extra.key or extra.key_path", "the service account's JSON key"),
        ("gce", ConnectionInfo("c1", login="x", extra={"key": "k"}), "extra.project", "the project id"),
        ("openstack", ConnectionInfo("c1", login="x", password="y", extra={"tenant": "t"}), "host", "the Keystone auth URL"),
        ("openstack", ConnectionInfo("c1", login="x", password="y", host="h"), "extra.tenant (or extra.project)", "the project (tenant) name"),
        ("digitalocean", ConnectionInfo("c1", login="x"), "password", "the API token"),
        ("azure_arm", ConnectionInfo("c1", login="x", password="y", extra={"tenant_id": "t"}), "extra.subscription_id", "the subscription id"),
        ("linode", ConnectionInfo("c1"), "password", "the API token"),
    ],
)
def test_missing_connection_field(driver_name: str, conn: ConnectionInfo, field: str, what: str) -> None:
    with pytest.raises(ProviderError) as err:
        driver_args("p1", driver_name, conn)
    assert str(err.value) == (
        f"provider 'p1': Airflow Connection 'c1' has no {field} (needed by driver {driver_name} as {what})"
    )


# --- names and tags -----------------------------------------------------------------------------
def test_machine_name_example() -> None:
    assert machine_name(request()) == "t1-1000-c7"
    assert machine_name(request(cluster_id=8)) != machine_name(request())


HOSTNAMES = st.from_regex(r"[a-z][a-z0-9-]{0,38}[a-z0-9]-[1-9][0-9]{0,4}", fullmatch=True)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(hostname=st.text(max_size=120), cluster_id=st.integers(min_value=0, max_value=10**15))
def test_machine_name_always_valid(hostname: str, cluster_id: int) -> None:
    name = machine_name(request(hostname=hostname, cluster_id=cluster_id))
    assert NAME_RE.fullmatch(name), name
    assert name == machine_name(request(hostname=hostname, cluster_id=cluster_id))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(a=HOSTNAMES, b=HOSTNAMES, ida=st.integers(1, 10**9), idb=st.integers(1, 10**9))
def test_machine_names_distinct(a: str, b: str, ida: int, idb: int) -> None:
    if (a, ida) != (b, idb):
        assert machine_name(request(hostname=a, cluster_id=ida)) != machine_name(request(hostname=b, cluster_id=idb))


def test_string_tags_roundtrip() -> None:
    tags = request().tags
    assert cloud.string_tags(tags) == ["loom-cluster:t1", "loom-cluster-id:7", "loom-node:t1-1000"]
    assert cloud.parse_string_tags([*cloud.string_tags(tags), "unrelated"]) == tags


# --- create_node arguments ----------------------------------------------------------------------
def test_ec2_create_kwargs(no_network: None) -> None:
    driver = build("ec2")
    kw = create_kwargs("ec2", driver, request(), OPTIONS["ec2"])
    assert kw["name"] == "t1-1000-c7" and kw["ex_keyname"] == "loom-t1-7"
    assert isinstance(kw["size"], NodeSize) and kw["size"].id == "t2.micro"
    assert isinstance(kw["image"], NodeImage) and kw["image"].id == "ami-12345678"
    assert kw["ex_metadata"] == {"loom-cluster": "t1", "loom-cluster-id": "7", "loom-node": "t1-1000"}
    assert kw["ex_security_groups"] == ["loom"] and kw["ex_security_group_ids"] == ["sg-1"]
    assert kw["ex_subnet"].id == "subnet-1"
    assert kw["location"].availability_zone.name == "eu-west-1a"
    assert kw["location"].availability_zone.region_name == "eu-west-1"
    assert create_kwargs("ec2", driver, request(), {}, {"key_name": "other"})["ex_keyname"] == "other"


def test_openstack_create_kwargs(no_network: None) -> None:
    driver = build("openstack")
    kw = create_kwargs("openstack", driver, request(flavor="42", image="img-uuid"), OPTIONS["openstack"])
    assert (kw["size"].id, kw["image"].id, kw["ex_keyname"]) == ("42", "img-uuid", "loom-t1-7")
    assert kw["ex_metadata"] == request().tags
    assert [n.id for n in kw["networks"]] == ["net-uuid"]
    assert [g.name for g in kw["ex_security_groups"]] == ["default"]
    assert kw["ex_availability_zone"] == "nova"


def test_gce_create_kwargs() -> None:
    kw = create_kwargs("gce", None, request(flavor="e2-small", image="debian-12", hostname="T1_x"), OPTIONS["gce"])
    assert kw["size"] == "e2-small" and kw["image"] == "debian-12"  # GCE resolves names itself
    assert kw["ex_metadata"] == {"ssh-keys": f"admin:{PUBKEY}"}
    assert kw["ex_labels"] == {"loom-cluster": "t1", "loom-cluster-id": "7", "loom-node": "t1_x"}
    for key, value in kw["ex_labels"].items():
        assert re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key) and re.fullmatch(r"[a-z0-9_-]{0,63}", value)
    assert (kw["location"], kw["ex_network"], kw["ex_tags"]) == ("europe-west1-c", "loom-net", ["ssh"])


def test_digitalocean_create_kwargs(no_network: None) -> None:
    driver = build("digitalocean")
    kw = create_kwargs("digitalocean", driver, request(flavor="s-1vcpu-1gb", image="debian-12-x64"),
                       OPTIONS["digitalocean"], {"ssh_key_id": 123})
    assert kw["size"].name == "s-1vcpu-1gb" and kw["image"].id == "debian-12-x64"
    assert isinstance(kw["location"], NodeLocation) and kw["location"].id == "ams3"
    assert kw["ex_create_attr"] == {
        "ssh_keys": [123], "private_networking": True,
        "tags": ["loom-cluster:t1", "loom-cluster-id:7", "loom-node:t1-1000"],
    }


def test_azure_create_kwargs() -> None:
    from libcloud.compute.drivers.azure_arm import AzureImage

    driver = None  # constructing AzureNodeDriver fetches a token; the kwargs only reference it
    urn = "Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest"
    kw = create_kwargs("azure_arm", driver, request(flavor="Standard_B1s", image=urn), OPTIONS["azure_arm"])
    assert isinstance(kw["auth"], NodeAuthSSHKey) and kw["auth"].pubkey == PUBKEY
    assert kw["ex_user_name"] == "admin" and kw["size"].id == "Standard_B1s"
    assert isinstance(kw["image"], AzureImage) and (kw["image"].publisher, kw["image"].sku) == ("Canonical", "22_04-lts-gen2")
    assert (kw["ex_resource_group"], kw["location"].id, kw["ex_network"], kw["ex_subnet"]) == (
        "loom-rg", "westeurope", "loom-vnet", "nodes")
    assert kw["ex_tags"] == request().tags and kw["ex_use_managed_disks"] is True
    with pytest.raises(ProviderError, match="'root'"):
        create_kwargs("azure_arm", driver, request(image=urn, sshuser="root"), OPTIONS["azure_arm"])
    with pytest.raises(ProviderError, match="URN"):
        create_kwargs("azure_arm", driver, request(image="ubuntu"), OPTIONS["azure_arm"])


def test_linode_create_kwargs(no_network: None) -> None:
    driver = build("linode")
    kw = create_kwargs("linode", driver, request(flavor="g6-nanode-1", image="linode/debian12"), OPTIONS["linode"])
    assert (kw["size"].id, kw["image"].id, kw["location"].id) == ("g6-nanode-1", "linode/debian12", "eu-central")
    assert kw["ex_authorized_keys"] == [PUBKEY] and len(kw["root_pass"]) >= 32
    assert kw["ex_tags"] == ["loom-cluster:t1", "loom-cluster-id:7", "loom-node:t1-1000"]
    assert "--" not in kw["name"]


def test_options_checked() -> None:
    with pytest.raises(ProviderError, match="unknown option.*secret_key"):
        cloud.check_options("p", "ec2", {"secret_key": "x"})
    with pytest.raises(ProviderError, match="provider 'p': driver digitalocean needs the option 'region'"):
        cloud.check_options("p", "digitalocean", {})
    for name in CLOUD_DRIVERS:
        cloud.check_options("p", name, OPTIONS[name])


# --- reading nodes back -------------------------------------------------------------------------
def test_to_machine_per_cloud_tag_style() -> None:
    tags = request().tags
    cases = {
        "ec2": {"tags": {**tags, "Name": "t1-1000-c7"}},
        "openstack": {"metadata": tags},
        "gce": {"labels": tags},
        "azure_arm": {"tags": tags},
        "digitalocean": {"tags": cloud.string_tags(tags)},
        "linode": {"tags": cloud.string_tags(tags)},
    }
    for driver_name, extra in cases.items():
        node = Node("i-1", "t1-1000-c7", NodeState.RUNNING, ["203.0.113.9"], ["10.0.0.9"], None, extra=extra)
        machine = cloud.to_machine(driver_name, node)
        assert (machine.id, machine.state, machine.ip, machine.tags) == ("i-1", RUNNING, "203.0.113.9", tags), driver_name
        assert machine.hostname == "t1-1000"
    private = Node("i-2", "n", NodeState.PENDING, [], ["10.0.0.2"], None)
    assert cloud.to_machine("ec2", private).ip == "10.0.0.2"
    assert [cloud.machine_state(s) for s in (NodeState.STOPPING, NodeState.TERMINATED, NodeState.STARTING)] == [
        STOPPED, TERMINATED, PENDING]


# --- the retrying wrapper -----------------------------------------------------------------------
class Flaky:
    """Raises the given exceptions in turn, then returns 'ok'."""

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


CTX = CallContext("cloud", "aws_loom", FAST, (SECRET,))


@pytest.mark.parametrize(
    "error",
    [
        RateLimitReachedError(headers={"retry-after": "0"}),
        BaseHTTPError(503, "RequestLimitExceeded: Request limit exceeded."),
        BaseHTTPError(500, "InternalError"),
        BaseHTTPError(400, "Throttling: Rate exceeded"),
        ConnectionResetError("reset by peer"),
    ],
)
def test_transient_errors_are_retried(error: BaseException) -> None:
    fn = Flaky(error, error)
    assert guarded_call(CTX, "list", None, fn) == "ok"
    assert fn.calls == 3


def test_requests_connection_errors_are_retried() -> None:
    import requests

    fn = Flaky(requests.ConnectionError("refused"))
    assert guarded_call(CTX, "list", None, fn) == "ok" and fn.calls == 2


@pytest.mark.parametrize(
    "error",
    [
        InvalidCredsError("AuthFailure: AWS was not able to validate the provided access credentials"),
        BaseHTTPError(403, "Forbidden"),
        BaseHTTPError(400, "SignatureDoesNotMatch: nope"),
    ],
)
def test_auth_errors_fail_at_once(error: BaseException) -> None:
    fn = Flaky(error)
    with pytest.raises(ProviderError) as err:
        guarded_call(CTX, "create", "t1-1000-c7", fn)
    assert fn.calls == 1
    assert str(err.value).startswith(
        "provider 'cloud': the cloud refused the credentials: check Airflow Connection 'aws_loom' (")


def test_other_errors_name_operation_and_node_without_secrets() -> None:
    fn = Flaky(ValueError(f"bad thing with {SECRET} inside"))
    with pytest.raises(ProviderError) as err:
        guarded_call(CTX, "create", "t1-1000-c7", fn)
    assert fn.calls == 1
    text = str(err.value)
    assert text.startswith("provider 'cloud': create 't1-1000-c7' failed: bad thing with *** inside")
    assert SECRET not in text


def test_throttled_forever_gives_up_with_budget() -> None:
    fn = Flaky(*[RateLimitReachedError() for _ in range(10)])
    with pytest.raises(ProviderError, match="throttling or unavailable; gave up after 4 tries"):
        guarded_call(CTX, "list", None, fn)
    assert fn.calls == 4


def test_secret_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    fn = Flaky(BaseHTTPError(503, f"overloaded {SECRET}"))
    with caplog.at_level("DEBUG", logger="loom.providers.cloud"):
        guarded_call(CTX, "list", None, fn)
    assert caplog.records and all(SECRET not in r.getMessage() for r in caplog.records)


def test_driver_construction_errors_are_provider_errors(no_network: None) -> None:
    bad_region = ConnectionInfo("aws_loom", login="a", password=SECRET, extra={"region": "mars-1"})
    with pytest.raises(ProviderError, match="connect \\(ec2\\) failed: Invalid region: mars-1"):
        driver_for("cloud", "ec2", bad_region)


# --- CloudMachines over a small in-memory DigitalOcean-style driver ------------------------------
class MemoryDODriver(NodeDriver):
    """Just enough of DigitalOcean's driver surface (string tags, keys refused twice)."""

    name = "memory"

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.keys: list[KeyPair] = []
        self.created = 0

    def list_nodes(self) -> list[Node]:
        return list(self.nodes)

    def list_key_pairs(self) -> list[KeyPair]:
        return list(self.keys)

    def create_key_pair(self, name: str, public_key: str = "") -> KeyPair:
        if any(k.public_key == public_key for k in self.keys):
            raise BaseHTTPError(422, "SSH Key is already in use on your account")
        self.keys.append(KeyPair(name, public_key, "fp", self, extra={"id": len(self.keys) + 100}))
        return self.keys[-1]

    def delete_key_pair(self, key_pair: KeyPair) -> bool:
        self.keys.remove(key_pair)
        return True

    def create_node(self, name: str, size: Any, image: Any, location: Any, ex_create_attr: Any = None) -> Node:
        self.created += 1
        node = Node(str(self.created), name, NodeState.RUNNING, ["198.51.100.1"], [], self,
                    extra={"tags": ex_create_attr["tags"], "ssh_keys": ex_create_attr["ssh_keys"]})
        self.nodes.append(node)
        return node

    def destroy_node(self, node: Node) -> bool:
        self.nodes = [n for n in self.nodes if n.id != node.id]
        return True


def test_cloud_machines_generic_flow() -> None:
    driver = MemoryDODriver()
    machines = CloudMachines("do", "digitalocean", "do_loom", driver, OPTIONS["digitalocean"], policy=FAST)
    first = machines.ensure(request())
    again = machines.ensure(request())
    assert first == again and driver.created == 1 and len(driver.keys) == 1
    assert driver.nodes[0].extra["ssh_keys"] == [100]
    other = machines.ensure(request(hostname="t1-1001", number=1001))
    assert other.id != first.id and len(driver.keys) == 1
    assert {m.hostname for m in machines.owned()} == {"t1-1000", "t1-1001"}
    assert machines.get(request()) == first
    assert machines.destroy(request()) is True and machines.destroy(request()) is False
    assert len(driver.keys) == 1  # t1-1001 still uses it
    assert machines.destroy(request(hostname="t1-1001", number=1001)) is True
    assert driver.keys == [] and machines.owned() == [] and machines.get(request()) is None


def test_cloud_machines_scrub_the_drivers_secrets_by_default() -> None:
    """Built without the Connection's secrets (as ``machines_for`` does), messages still hide them."""
    driver = MemoryDODriver()
    driver.key = SECRET  # DigitalOcean's API token lives in the driver's key

    def leaky() -> list[Node]:
        raise ValueError(f"token {SECRET} rejected")

    driver.list_nodes = leaky  # type: ignore[method-assign]
    machines = CloudMachines("do", "digitalocean", "do_loom", driver, OPTIONS["digitalocean"], policy=FAST)
    with pytest.raises(ProviderError) as err:
        machines.owned()
    assert SECRET not in str(err.value) and "token *** rejected" in str(err.value)
