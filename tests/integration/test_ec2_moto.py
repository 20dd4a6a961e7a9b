"""The real libcloud EC2 driver, through Loom's CloudMachines, against moto's EC2 server on
127.0.0.1 (started here, stopped at the end). Throttling comes from a tiny real HTTP proxy in
front of moto. No traffic leaves 127.0.0.1; moto's instance IPs are fake and never contacted."""

from __future__ import annotations

import gzip
import http.client
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from loom.errors import ProviderError
from loom.providers.base import PENDING, RUNNING, TERMINATED, MachineRequest
from loom.providers.cloud import CloudMachines, ConnectionInfo, RetryPolicy, cloud_machines

pytestmark = pytest.mark.integration

LOCAL = "127.0.0.1"
SECRET = "moto-secret-access-key-0123456789"
FAST = RetryPolicy(attempts=3, first_wait=0.01, max_wait=0.05, budget=10)
LIVE = ["pending", "running", "stopping", "stopped"]
THROTTLED_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
    "<Message>Request limit exceeded.</Message></Error></Errors><RequestID>r-1</RequestID></Response>"
)


@pytest.fixture(scope="module")
def moto_port() -> Iterator[int]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=LOCAL, port=0, verbose=False)
    server.start()
    try:
        yield server.get_host_and_port()[1]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{raw} loom@t1"


@pytest.fixture(scope="module")
def ami(moto_port: int) -> str:
    """A Linux AMI that moto ships (and serves: checked through libcloud)."""
    with resources.files("moto").joinpath("ec2/resources/amis.json.gz").open("rb") as fh:
        amis = json.loads(gzip.decompress(fh.read()))
    image = next(a["ami_id"] for a in amis if not a.get("platform"))
    driver = machines_for(moto_port).driver
    assert [i.id for i in driver.list_images(ex_image_ids=[image])] == [image]
    return image


def connection(port: int, secret: str = SECRET) -> ConnectionInfo:
    return ConnectionInfo(
        "aws_moto", "aws", "AKIDLOOMTEST", secret, host=LOCAL, port=port,
        extra={"secure": False, "region": "us-east-1"},
    )


def machines_for(port: int, policy: RetryPolicy = FAST) -> CloudMachines:
    return cloud_machines("aws", "ec2", connection(port), {}, policy)


@pytest.fixture
def machines(moto_port: int) -> CloudMachines:
    return machines_for(moto_port)


@pytest.fixture
def make_request(public_key: str, ami: str) -> Any:
    def make(cluster_id: int, number: int = 1000, cluster: str = "t1") -> MachineRequest:
        return MachineRequest(
            provider="aws", cluster=cluster, cluster_id=cluster_id, hostname=f"{cluster}-{number}",
            number=number, flavor="t2.micro", image=ami, sshuser="admin", public_key=public_key,
        )

    return make


def live_nodes(machines: CloudMachines, cluster_id: int) -> list[Any]:
    return machines.driver.list_nodes(  # type: ignore[call-arg]
        ex_filters={"tag:loom-cluster-id": str(cluster_id), "instance-state-name": LIVE}
    )


def boto3_live(port: int, cluster_id: int) -> list[str]:
    import boto3  # moto's own dependency

    client = boto3.client(
        "ec2", endpoint_url=f"http://{LOCAL}:{port}", region_name="us-east-1",
        aws_access_key_id="AKIDLOOMTEST", aws_secret_access_key=SECRET,
    )
    answer = client.describe_instances(Filters=[
        {"Name": "tag:loom-cluster-id", "Values": [str(cluster_id)]},
        {"Name": "instance-state-name", "Values": LIVE},
    ])
    return [i["InstanceId"] for r in answer["Reservations"] for i in r["Instances"]]


# --- create, retry, list, destroy ---------------------------------------------------------------
def test_ensure_creates_tagged_instance_with_key_pair(machines: CloudMachines, make_request: Any) -> None:
    req = make_request(7)
    machine = machines.ensure(req)
    assert machine.name == "t1-1000-c7" and machine.state in (PENDING, RUNNING) and machine.ip
    assert machine.tags == {"loom-cluster": "t1", "loom-cluster-id": "7", "loom-node": "t1-1000"}
    [node] = machines.driver.list_nodes(ex_node_ids=[machine.id])  # type: ignore[call-arg]
    assert node.extra["tags"] == {"Name": "t1-1000-c7", **req.tags}
    assert node.extra["instance_type"] == "t2.micro" and node.extra["image_id"] == req.image
    assert node.extra["key_name"] == "loom-t1-7"
    assert "loom-t1-7" in [k.name for k in machines.driver.list_key_pairs()]
    machines.destroy(req)


def test_retried_ensure_returns_the_same_instance(machines: CloudMachines, make_request: Any, moto_port: int) -> None:
    req = make_request(8)
    first = machines.ensure(req)
    retried = machines_for(moto_port).ensure(req)  # a new task process: nothing shared but the cloud
    assert retried.id == first.id
    assert [n.id for n in live_nodes(machines, 8)] == [first.id]
    assert boto3_live(moto_port, 8) == [first.id]
    assert machines.get(req).id == first.id  # type: ignore[union-attr]
    machines.destroy(req)


def test_two_nodes_two_instances_listed_by_owned(machines: CloudMachines, make_request: Any) -> None:
    a, b = make_request(9, 1000), make_request(9, 1001)
    ma, mb = machines.ensure(a), machines.ensure(b)
    assert ma.id != mb.id and len(live_nodes(machines, 9)) == 2
    mine = {m.id: m for m in machines.owned() if m.tags.get("loom-cluster-id") == "9"}
    assert set(mine) == {ma.id, mb.id}
    assert {m.hostname for m in mine.values()} == {"t1-1000", "t1-1001"}
    assert all(m.tags["loom-cluster"] == "t1" for m in mine.values())
    machines.destroy(a)
    machines.destroy(b)


def test_destroy_is_idempotent(machines: CloudMachines, make_request: Any) -> None:
    req = make_request(10)
    made = machines.ensure(req)
    assert machines.destroy(req) is True
    assert machines.destroy(req) is False
    assert live_nodes(machines, 10) == []
    after = machines.get(req)
    assert after is None or (after.id == made.id and after.state == TERMINATED)
    assert made.id not in {m.id for m in machines.owned()}
    # the cluster's last machine is gone, so is its key pair
    assert "loom-t1-10" not in [k.name for k in machines.driver.list_key_pairs()]


def test_rollback_of_three_nodes_leaves_nothing(machines: CloudMachines, make_request: Any, moto_port: int) -> None:
    reqs = [make_request(11, n, cluster="roll") for n in (1000, 1001, 1002)]
    made = [machines.ensure(r) for r in reqs]
    assert len({m.id for m in made}) == 3 and len(boto3_live(moto_port, 11)) == 3
    assert [machines.destroy(r) for r in reqs] == [True, True, True]
    assert live_nodes(machines, 11) == []
    assert boto3_live(moto_port, 11) == []
    assert "loom-roll-11" not in [k.name for k in machines.driver.list_key_pairs()]


def test_recreated_cluster_gets_new_machines(machines: CloudMachines, make_request: Any) -> None:
    old, new = make_request(12, cluster="again"), make_request(13, cluster="again")
    first = machines.ensure(old)
    second = machines.ensure(new)
    assert second.id != first.id and second.name == "again-1000-c13"
    machines.destroy(old)
    machines.destroy(new)


# --- refused credentials ------------------------------------------------------------------------
def test_wrong_credentials_name_the_connection(moto_port: int) -> None:
    """moto's IAM mode (``/moto-api/reset-auth``) rejects keys it did not issue: real HTTP 401."""
    previous = requests.post(f"http://{LOCAL}:{moto_port}/moto-api/reset-auth", data=b"0", timeout=5).json()
    try:
        machines = cloud_machines("aws", "ec2", connection(moto_port, "wrong-" + SECRET), {}, FAST)
        with pytest.raises(ProviderError) as err:
            machines.owned()
    finally:
        requests.post(f"http://{LOCAL}:{moto_port}/moto-api/reset-auth",
                      data=str(previous["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]).encode(), timeout=5)
    text = str(err.value)
    assert text.startswith("provider 'aws': the cloud refused the credentials: check Airflow Connection 'aws_moto' (")
    assert "AuthFailure" in text and SECRET not in text


# --- throttling through a real HTTP proxy -------------------------------------------------------
class ThrottlingProxy:
    """Answers the first ``throttle`` requests with an EC2 throttling error, forwards the rest."""

    def __init__(self, upstream_port: int, throttle: int, status: int, code: str):
        self.throttle, self.seen, self.throttled = throttle, 0, 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.relay()

            def do_POST(self) -> None:  # noqa: N802
                self.relay()

            def relay(self) -> None:
                proxy.seen += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.throttled < proxy.throttle:
                    proxy.throttled += 1
                    self.answer(status, THROTTLED_XML.format(code=code).encode(), "text/xml")
                    return
                upstream = http.client.HTTPConnection(LOCAL, upstream_port, timeout=10)
                upstream.request(self.command, self.path, body=body or None, headers=dict(self.headers))
                reply = upstream.getresponse()
                self.answer(reply.status, reply.read(), reply.getheader("Content-Type") or "text/xml")
                upstream.close()

            def answer(self, code: int, data: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOCAL, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ThrottlingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.mark.parametrize(("status", "code"), [(503, "RequestLimitExceeded"), (429, "Throttling")])
def test_throttled_calls_succeed_after_retries(status: int, code: str, moto_port: int, make_request: Any) -> None:
    req = make_request(14 if status == 503 else 15)
    with ThrottlingProxy(moto_port, throttle=2, status=status, code=code) as proxy:
        machines = machines_for(proxy.port)
        machine = machines.ensure(req)
        assert proxy.throttled == 2 and proxy.seen > 2
        proxy.throttle += 2  # and again while destroying
        assert machines.destroy(req) is True
        assert proxy.throttled == 4
    assert machine.tags["loom-node"] == "t1-1000"
    assert live_nodes(machines_for(moto_port), req.cluster_id) == []


def test_throttled_forever_gives_up(moto_port: int) -> None:
    with ThrottlingProxy(moto_port, throttle=100, status=503, code="RequestLimitExceeded") as proxy:
        with pytest.raises(ProviderError, match="throttling or unavailable; gave up after 3 tries .*RequestLimitExceeded"):
            machines_for(proxy.port).owned()
        assert proxy.seen == 3
