"""Validation of names that end up in hostnames, paths and shell commands."""

from __future__ import annotations

import re

from loom.errors import RequestError

CLUSTER_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")
ENTITY_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def check_cluster_name(name: object, field: str = "cluster") -> str:
    if not isinstance(name, str) or not CLUSTER_NAME_RE.fullmatch(name):
        raise RequestError(
            f"{field}: {name!r} is not a valid cluster name: use 2-40 characters, lowercase letters, "
            "digits and '-', starting with a letter and not ending with '-' "
            f"(pattern {CLUSTER_NAME_RE.pattern})"
        )
    return name
