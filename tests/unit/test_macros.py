"""The macro language: every form, ordering by node number, errors, shell quoting, config walk."""

from __future__ import annotations

import shlex

import pytest

from loom.layout import Layout, NodeSpec
from loom.macros import MacroContext, MacroError, expand, expand_config, expand_for_shell


def node(number: int, *services: str, cluster: str = "demo") -> NodeSpec:
    return NodeSpec(
        number=number,
        hostname=f"{cluster}-{number}",
        hardwaretype="small",
        imagetype="debian",
        flavor="local-small",
        image="host",
        sshuser="root",
        services=tuple(sorted(services)),
    )


# Nodes deliberately out of order: expansion must order by node number, not by layout position.
NODES = (
    node(3, "base", "zookeeper", "kafka"),
    node(1, "base", "zookeeper", "namenode"),
    node(4, "base", "kafka"),
    node(2, "base", "zookeeper"),
)
IPS = {"demo-1": "10.0.0.11", "demo-2": "10.0.0.12", "demo-3": "10.0.0.13", "demo-4": "10.0.0.14"}


def layout(dns_suffix: str | None = None) -> Layout:
    return Layout(
        cluster="demo",
        template="t",
        provider="local",
        services=("base", "kafka", "namenode", "zookeeper"),
        nodes=NODES,
        dns_suffix=dns_suffix,
    )


def ctx(number: int = 3, dns_suffix: str | None = None, owner: str = "alice", ips=IPS) -> MacroContext:
    lay = layout(dns_suffix)
    me = next(n for n in lay.nodes if n.number == number)
    return MacroContext(layout=lay, node=me, ips=dict(ips), owner=owner)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("%host.self%", "demo-3"),
        ("%ip.self%", "10.0.0.13"),
        ("%cluster.name%", "demo"),
        ("%cluster.owner%", "alice"),
        ("%host.service.zookeeper%", "demo-1,demo-2,demo-3"),
        ("%ip.service.zookeeper%", "10.0.0.11,10.0.0.12,10.0.0.13"),
        ("%host.service.kafka%", "demo-3,demo-4"),
        ("%ip.service.namenode%", "10.0.0.11"),
        ("%host.service.zookeeper[0]%", "demo-1"),
        ("%host.service.zookeeper[2]%", "demo-3"),
        ("%ip.service.kafka[1]%", "10.0.0.14"),
        ("%num.service.zookeeper%", "3"),
        ("%num.service.base%", "4"),
        ("%instance.self.service.zookeeper%", "3"),
        ("%instance.self.service.kafka%", "1"),
        ("%join(map(host.service.zookeeper,'$:2181'),',')%", "demo-1:2181,demo-2:2181,demo-3:2181"),
        ("%join(map(ip.service.kafka,'PLAINTEXT://$:9092'),' ')%", "PLAINTEXT://10.0.0.13:9092 PLAINTEXT://10.0.0.14:9092"),
        ("%join(host.service.zookeeper,';')%", "demo-1;demo-2;demo-3"),
        ("%map(host.service.kafka,'$/x')%", "demo-3/x,demo-4/x"),
        ("%join(map(host.service.zookeeper[1],'$:2181'),',')%", "demo-2:2181"),
        ("% join( map( host.service.kafka , '[$]' ) , '+' ) %", "[demo-3]+[demo-4]"),
        ("100%%", "100%"),
        ("%%host.self%%", "%host.self%"),
        ("50%% of %num.service.kafka% nodes", "50% of 2 nodes"),
        ("zk=%host.service.zookeeper[0]%:2181/%cluster.name%", "zk=demo-1:2181/demo"),
        ("no macros here", "no macros here"),
        ("", ""),
    ],
)
def test_expand(text, expected):
    assert expand(text, ctx(3)) == expected


def test_instance_self_is_rank_by_node_number():
    ranks = [expand("%instance.self.service.zookeeper%", ctx(n)) for n in (1, 2, 3)]
    assert ranks == ["1", "2", "3"]
    assert expand("%instance.self.service.kafka%", ctx(4)) == "2"


def test_dns_suffix_makes_fully_qualified_names():
    c = ctx(1, dns_suffix="lab.example.com")
    assert expand("%host.self%", c) == "demo-1.lab.example.com"
    assert expand("%host.service.kafka%", c) == "demo-3.lab.example.com,demo-4.lab.example.com"
    assert expand("%host.service.zookeeper[1]%", c) == "demo-2.lab.example.com"
    assert expand("%ip.self%", c) == "10.0.0.11"
    assert expand("%cluster.name%", c) == "demo"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("%host.service.hbase%", ["no node of cluster 'demo' has service 'hbase'", "%host.service.hbase%"]),
        ("%ip.service.hbase[0]%", ["has service 'hbase'"]),
        ("%num.service.hbase%", ["has service 'hbase'"]),
        ("%host.service.kafka[2]%", ["'kafka' has 2 node(s); index 2 is past the last"]),
        ("%ip.service.namenode[1]%", ["'namenode' has 1 node(s); index 1"]),
        ("%instance.self.service.namenode%", ["node 'demo-3' does not have service 'namenode'"]),
        ("%host.other%", ["unknown macro %host.other%"]),
        ("%cluster.size%", ["unknown macro %cluster.size%"]),
        ("%host.service.Kafka%", []),  # service names are lowercase: any MacroError will do
        ("start %host.self", ["unterminated macro in 'start %host.self'"]),
        ("%frob(host.self)%", ["unknown function frob()"]),
        ("%join(host.service.kafka)%", ["unknown function join() or wrong arguments"]),
        ("%join(host.service.kafka,','%", ["join(host.service.kafka,','"]),
        ("%host.self host.self%", ["unexpected"]),
        ("%'a' 'b'%", ["unexpected"]),
        ("%%%", ["unterminated"]),
        ("%,%", ["unexpected ','"]),
    ],
)
def test_errors_name_the_problem(text, fragments):
    with pytest.raises(MacroError) as info:
        expand(text, ctx(3))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_unknown_address_is_an_error():
    c = ctx(3, ips={"demo-1": "10.0.0.11"})
    with pytest.raises(MacroError, match="address of node 'demo-3' is not known yet"):
        expand("%ip.self%", c)
    with pytest.raises(MacroError, match="'demo-2'"):
        expand("%ip.service.zookeeper%", c)
    assert expand("%host.service.zookeeper%", c) == "demo-1,demo-2,demo-3"


@pytest.mark.parametrize(
    "owner",
    [
        "alice",
        "bob smith",
        "x'; rm -rf / #",
        '$(reboot)',
        "`id`",
        "a\"b'c",
        "semi;colon|pipe&amp>redirect<in",
        "new\nline\ttab",
        "*glob?[x]",
        "",
    ],
)
def test_expand_for_shell_quotes_hostile_values(owner):
    c = ctx(3, owner=owner)
    quoted = expand_for_shell("%cluster.owner%", c)
    assert shlex.split(quoted) == [owner]
    mixed = expand_for_shell("--owner=%cluster.owner% on %host.self%", c)
    assert shlex.split(mixed) == [f"--owner={owner} on demo-3"]


def test_expand_for_shell_quotes_literal_text_too():
    assert shlex.split(expand_for_shell("a b; echo pwned", ctx(3))) == ["a b; echo pwned"]
    assert expand_for_shell("%host.self%", ctx(3)) == "demo-3"  # safe words stay readable


def test_expand_config_recurses():
    config = {
        "zk": {"connect": "%join(map(host.service.zookeeper,'$:2181'),',')%", "port": 2181},
        "hosts": ["%host.self%", {"ip": "%ip.self%"}, 7, None, True],
        "%host.self%": "keys are not expanded",
        "ratio": 0.5,
    }
    out = expand_config(config, ctx(3))
    assert out == {
        "zk": {"connect": "demo-1:2181,demo-2:2181,demo-3:2181", "port": 2181},
        "hosts": ["demo-3", {"ip": "10.0.0.13"}, 7, None, True],
        "%host.self%": "keys are not expanded",
        "ratio": 0.5,
    }
    assert config["hosts"][0] == "%host.self%"  # input untouched


def test_expand_config_reports_errors_inside_nested_values():
    with pytest.raises(MacroError, match="'hbase'"):
        expand_config({"a": [{"b": "%host.service.hbase%"}]}, ctx(3))


def test_expand_config_scalars_pass_through():
    assert expand_config(42, ctx(3)) == 42
    assert expand_config(None, ctx(3)) is None
    assert expand_config("%cluster.name%", ctx(3)) == "demo"


@pytest.mark.parametrize("text", ["%host.service.Kafka%", "%host.service.kafka-Foo%"])
def test_uppercase_service_names_are_named_in_full(text):
    node = NodeSpec(1, "c-1", "s", "d", "f", "i", "root", ("kafka",))
    ctx = MacroContext(Layout("c", "t", "local", ("kafka",), (node,)), node, {"c-1": "127.0.0.2"})
    with pytest.raises(MacroError) as err:
        expand(text, ctx)
    assert text in str(err.value) and "lowercase" in str(err.value)
