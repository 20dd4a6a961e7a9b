"""Loom's macro language, expanded per node: ``%host.service.X%``, ``%join(map(...),',')%``...

Grammar inside ``%...%`` (``%%`` is a literal percent)::

    expr  := func "(" arg ("," arg)* ")" | ref
    arg   := expr | 'quoted string'
    ref   := host.self | ip.self | cluster.name | cluster.owner
           | (host|ip).service.X ["[" i "]"] | num.service.X | instance.self.service.X

A reference to a service with no nodes, or an index past the last node, is a MacroError that
names it. ``expand_for_shell`` quotes the expanded value so it reaches a shell as one word.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from loom.errors import LoomError
from loom.layout import Layout, NodeSpec


class MacroError(LoomError):
    pass


@dataclass(frozen=True)
class MacroContext:
    layout: Layout
    node: NodeSpec
    ips: dict[str, str]  # hostname -> ip
    owner: str = ""

    def ip(self, node: NodeSpec) -> str:
        try:
            return self.ips[node.hostname]
        except KeyError:
            raise MacroError(f"the address of node {node.hostname!r} is not known yet") from None

    def fqdn(self, node: NodeSpec) -> str:
        suffix = self.layout.dns_suffix
        return f"{node.hostname}.{suffix}" if suffix else node.hostname


_REF = re.compile(r"^(host|ip|num|instance\.self)\.service\.([a-z][a-z0-9_-]*)(?:\[(\d+)\])?$")
_TOKEN = re.compile(r"\s*(?:(?P<str>'[^']*')|(?P<name>[A-Za-z_][A-Za-z0-9_.\-\[\]]*)\s*(?P<call>\()?|(?P<punct>[,)]))")


def _nodes_with(ctx: MacroContext, service: str, macro: str) -> list[NodeSpec]:
    nodes = sorted(ctx.layout.nodes_with(service), key=lambda n: n.number)
    if not nodes:
        raise MacroError(f"macro %{macro}%: no node of cluster {ctx.layout.cluster!r} has service {service!r}")
    return nodes


def _ref(ctx: MacroContext, name: str) -> str | list[str]:
    simple = {
        "host.self": lambda: ctx.fqdn(ctx.node),
        "ip.self": lambda: ctx.ip(ctx.node),
        "cluster.name": lambda: ctx.layout.cluster,
        "cluster.owner": lambda: ctx.owner,
    }
    if name in simple:
        return simple[name]()
    m = _REF.match(name)
    if not m:
        raise MacroError(
            f"unknown macro %{name}%: use host.self, ip.self, cluster.name, cluster.owner, "
            "(host|ip).service.<service>[i], num.service.<service> or instance.self.service.<service> "
            "(service names are lowercase)"
        )
    kind, service, index = m.group(1), m.group(2), m.group(3)
    nodes = _nodes_with(ctx, service, name)
    if kind == "num":
        return str(len(nodes))
    if kind == "instance.self":
        if ctx.node not in nodes:
            raise MacroError(f"macro %{name}%: node {ctx.node.hostname!r} does not have service {service!r}")
        return str(nodes.index(ctx.node) + 1)
    values = [ctx.fqdn(n) if kind == "host" else ctx.ip(n) for n in nodes]
    if index is not None:
        i = int(index)
        if i >= len(values):
            raise MacroError(
                f"macro %{name}%: service {service!r} has {len(values)} node(s); index {i} is past the last"
            )
        return values[i]
    return values


class _Parser:
    def __init__(self, ctx: MacroContext, text: str):
        self.ctx, self.text, self.pos = ctx, text, 0

    def _next(self) -> re.Match[str]:
        m = _TOKEN.match(self.text, self.pos)
        if not m or m.end() == self.pos:
            raise MacroError(f"macro %{self.text}%: cannot parse at {self.text[self.pos:]!r}")
        self.pos = m.end()
        return m

    def parse(self) -> str | list[str]:
        value = self.expr()
        if self.text[self.pos:].strip():
            raise MacroError(f"macro %{self.text}%: unexpected {self.text[self.pos:]!r}")
        return value

    def expr(self) -> Any:
        m = self._next()
        if m.group("str") is not None:
            return m.group("str")[1:-1]
        if m.group("name") is None:
            raise MacroError(f"macro %{self.text}%: unexpected {m.group(0).strip()!r}")
        if not m.group("call"):
            return _ref(self.ctx, m.group("name"))
        args = [self.expr()]
        while True:
            p = self._next()
            if p.group("punct") == ")":
                break
            if p.group("punct") != ",":
                raise MacroError(f"macro %{self.text}%: expected ',' or ')'")
            args.append(self.expr())
        return _call(self.text, m.group("name"), args)


def _as_list(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


def _call(text: str, func: str, args: list[Any]) -> Any:
    if func == "map" and len(args) == 2 and isinstance(args[1], str):
        return [args[1].replace("$", v) for v in _as_list(args[0])]
    if func == "join" and len(args) == 2 and isinstance(args[1], str):
        return args[1].join(_as_list(args[0]))
    raise MacroError(f"macro %{text}%: unknown function {func}() or wrong arguments (map(list,'fmt'), join(list,'sep'))")


def expand(text: str, ctx: MacroContext) -> str:
    """Expand every macro in ``text``; lists are comma-joined."""
    out = []
    i = 0
    while i < len(text):
        j = text.find("%", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        if text.startswith("%%", j):
            out.append("%")
            i = j + 2
            continue
        k = text.find("%", j + 1)
        if k < 0:
            raise MacroError(f"unterminated macro in {text!r}: close it with '%' or write '%%' for a percent")
        value = _Parser(ctx, text[j + 1 : k]).parse()
        out.append(",".join(_as_list(value)))
        i = k + 1
    return "".join(out)


def expand_for_shell(text: str, ctx: MacroContext) -> str:
    return shlex.quote(expand(text, ctx))


def expand_config(value: Any, ctx: MacroContext) -> Any:
    """Expand macros in every string inside a config structure."""
    if isinstance(value, str):
        return expand(value, ctx)
    if isinstance(value, list):
        return [expand_config(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: expand_config(v, ctx) for k, v in value.items()}
    return value
