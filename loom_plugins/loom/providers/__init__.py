"""Compute providers: a libcloud NodeDriver per provider definition (libcloud imported lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loom.errors import ProviderError

if TYPE_CHECKING:
    from libcloud.compute.base import NodeDriver

    from loom.settings import Settings
    from loom.spec.models import Provider

LOCAL_DRIVER = "loom_local"


def compute_driver(provider: Provider, settings: Settings) -> NodeDriver:
    """Build the libcloud driver for a provider definition."""
    from libcloud.compute.providers import get_driver, set_driver

    if provider.driver == "local":
        try:
            set_driver(LOCAL_DRIVER, "loom.providers.local", "LocalNodeDriver")
        except AttributeError:
            pass  # already registered in this process
        cls: Any = get_driver(LOCAL_DRIVER)
        return cls(
            state_dir=settings.state_dir,
            ssh_port=settings.local_ssh_port,
            pip_cache=settings.local_pip_cache,
            **provider.options,
        )
    raise ProviderError(
        f"provider {provider.name!r}: driver {provider.driver!r} is not supported yet (only 'local')"
    )
