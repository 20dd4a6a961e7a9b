"""A cluster's config: service defaults, then the template's, then the request's, deep-merged.

(Loom had a bug where a layer overwrote instead of merging; here mappings always merge.) Keys
fixed by an immutable partial template cannot be changed by the request.
"""

from __future__ import annotations

from typing import Any

from loom.errors import RequestError
from loom.merge import check_immutable, deep_merge
from loom.spec.loader import Catalog
from loom.spec.models import ClusterTemplate


def cluster_config(
    template: ClusterTemplate, services: list[str] | tuple[str, ...] | set[str], request_config: dict[str, Any] | None,
    catalog: Catalog,
) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for svc in sorted(services):
        config = deep_merge(config, catalog.services[svc].config)
    config = deep_merge(config, template.defaults.config)
    if request_config:
        problems = check_immutable(request_config, config, template.immutable_config, "config")
        if problems:
            raise RequestError("; ".join(problems))
        config = deep_merge(config, request_config)
    return config
