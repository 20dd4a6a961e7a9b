"""Deferrable waits: the triggerer polls a booting machine so no worker slot is held meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class NodeReadyTrigger(BaseTrigger):
    """Fires when the node's machine runs and its SSH port answers with an SSH banner, or when
    ``deadline`` (epoch seconds) passes. Reads the cluster store and the provider (its Airflow
    Connection through the triggerer's async API); carries no secret in its own arguments."""

    def __init__(self, cluster: str, hostname: str, deadline: float, poll: float = 2.0):
        super().__init__()
        self.cluster, self.hostname, self.deadline, self.poll = cluster, hostname, float(deadline), float(poll)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "loom.triggers.NodeReadyTrigger",
            {"cluster": self.cluster, "hostname": self.hostname, "deadline": self.deadline, "poll": self.poll},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from loom import engine
        from loom.errors import LoomError

        env = await asyncio.to_thread(engine.Env.load)
        provider = None
        last = "not checked yet"
        polls = 0
        while True:
            try:
                if provider is None:
                    provider = await self._provider(env)
                probe = await asyncio.to_thread(engine.probe_node, env, self.cluster, self.hostname, provider)
                polls += 1
                if probe["ready"]:
                    yield TriggerEvent({"status": "ready", "detail": probe["detail"], "polls": polls})
                    return
                last = probe["detail"]
            except LoomError as exc:
                yield TriggerEvent({"status": "error", "message": str(exc)})
                return
            except Exception as exc:  # a provider hiccup: keep polling until the deadline
                last = f"{type(exc).__name__}: {exc}"
                self.log.warning("node %s: probe failed: %s", self.hostname, last)
            if time.time() >= self.deadline:
                yield TriggerEvent({"status": "timeout", "message": last, "polls": polls})
                return
            await asyncio.sleep(self.poll)

    async def _provider(self, env: Any) -> Any:
        """The cluster's provider (``Machines``), built once per trigger; its Connection is read
        through the triggerer's async API."""
        from loom import engine
        from loom.connections import aget_connection
        from loom.providers import needs_connection

        view = await asyncio.to_thread(env.store.require, self.cluster)
        spec = env.catalog.providers.get(view["provider"])
        conn = None
        if spec is not None and needs_connection(spec) and spec.connection:
            conn = await aget_connection(spec.connection, f"provider {spec.name!r}")
        return await asyncio.to_thread(engine.machines, env, view, conn)
