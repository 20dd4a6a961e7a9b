"""Queries and state transitions of the cluster store. Returns plain dicts (JSON-ready views)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from loom.errors import ClusterError
from loom.layout import Layout
from loom.store.models import (
    Base,
    Cluster,
    ClusterStatus,
    Node,
    NodeStatus,
    Operation,
    OperationState,
    utcnow,
)


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    def __init__(self, url: str):
        self.url = url
        self.engine = _make_engine(url)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # --- lookups -------------------------------------------------------------------------
    @staticmethod
    def _live(session: Session, name: str) -> Cluster | None:
        return session.scalars(
            select(Cluster).where(Cluster.name == name, Cluster.status != ClusterStatus.TERMINATED.value)
        ).first()

    def _latest(self, session: Session, name: str) -> Cluster | None:
        return self._live(session, name) or session.scalars(
            select(Cluster).where(Cluster.name == name).order_by(Cluster.id.desc())
        ).first()

    def get(self, name: str) -> dict[str, Any] | None:
        """The live cluster of that name, else the most recent terminated one, else None."""
        with self.session() as s:
            cluster = self._latest(s, name)
            return _view(cluster) if cluster else None

    def require(self, name: str) -> dict[str, Any]:
        view = self.get(name)
        if view is None:
            raise ClusterError(f"cluster {name!r} does not exist: `loom cluster list` shows the clusters")
        return view

    def list(self, include_terminated: bool = True) -> list[dict[str, Any]]:
        with self.session() as s:
            query = select(Cluster).order_by(Cluster.id)
            if not include_terminated:
                query = query.where(Cluster.status != ClusterStatus.TERMINATED.value)
            return [_view(c) for c in s.scalars(query)]

    # --- operations ----------------------------------------------------------------------
    def begin_create(self, layout: Layout, dag_id: str, run_id: str, owner: str) -> dict[str, Any]:
        """Record a new PENDING cluster with its planned nodes; a retry of the same run is a no-op."""
        try:
            with self.session() as s:
                existing = self._live(s, layout.cluster)
                if existing is not None:
                    mine = any(op.dag_id == dag_id and op.run_id == run_id for op in existing.operations)
                    if mine:
                        return _view(existing)
                    busy = existing.operations[-1] if existing.operations else None
                    raise ClusterError(
                        f"cluster {layout.cluster!r} already exists (status {existing.status}, template "
                        f"{existing.template}, created by {busy.dag_id + '/' + busy.run_id if busy else '?'}): "
                        "choose another name, or delete it first"
                    )
                cluster = Cluster(
                    name=layout.cluster,
                    template=layout.template,
                    provider=layout.provider,
                    status=ClusterStatus.PENDING.value,
                    owner=owner,
                    services=list(layout.services),
                    config=layout.config,
                    dns_suffix=layout.dns_suffix,
                )
                cluster.nodes = [
                    Node(
                        number=n.number,
                        hostname=n.hostname,
                        hardwaretype=n.hardwaretype,
                        imagetype=n.imagetype,
                        flavor=n.flavor,
                        image=n.image,
                        sshuser=n.sshuser,
                        services=list(n.services),
                    )
                    for n in layout.nodes
                ]
                cluster.operations = [
                    Operation(operation="create", dag_id=dag_id, run_id=run_id, triggered_by=owner)
                ]
                s.add(cluster)
                s.flush()
                return _view(cluster)
        except IntegrityError:
            raise ClusterError(
                f"cluster {layout.cluster!r} was just created by another run: choose another name"
            ) from None

    def begin_operation(
        self, name: str, operation: str, dag_id: str, run_id: str, owner: str
    ) -> dict[str, Any]:
        with self.session() as s:
            cluster = self._live(s, name)
            if cluster is None:
                raise ClusterError(
                    f"cluster {name!r} does not exist or is already TERMINATED: `loom cluster list` shows the clusters"
                )
            if not any(op.dag_id == dag_id and op.run_id == run_id for op in cluster.operations):
                s.add(Operation(cluster=cluster, operation=operation, dag_id=dag_id, run_id=run_id, triggered_by=owner))
                s.flush()
            return _view(cluster)

    def update_node(self, name: str, hostname: str, **fields: Any) -> None:
        with self.session() as s:
            cluster = self._live(s, name)
            if cluster is None:
                raise ClusterError(f"cluster {name!r} is not live")
            node = next((n for n in cluster.nodes if n.hostname == hostname), None)
            if node is None:
                raise ClusterError(f"cluster {name!r} has no node {hostname!r}")
            for key, value in fields.items():
                setattr(node, key, value)

    def finish(
        self,
        name: str,
        dag_id: str,
        run_id: str,
        *,
        status: ClusterStatus | None,
        state: OperationState,
        message: str = "",
    ) -> None:
        """End an operation and, when given, move the cluster to ``status``."""
        with self.session() as s:
            cluster = self._latest(s, name)
            op = next(
                (o for o in (cluster.operations if cluster else []) if o.dag_id == dag_id and o.run_id == run_id),
                None,
            )
            if cluster is None or op is None:
                return  # this run never got to own the cluster (e.g. its name was taken)
            if status is not None:
                cluster.status = status.value
                cluster.message = message
            op.state = state.value
            op.message = message
            op.ended_at = utcnow()


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _view(cluster: Cluster) -> dict[str, Any]:
    return {
        "id": cluster.id,
        "name": cluster.name,
        "status": cluster.status,
        "template": cluster.template,
        "provider": cluster.provider,
        "owner": cluster.owner,
        "services": list(cluster.services or []),
        "config": cluster.config or {},
        "dns_suffix": cluster.dns_suffix,
        "message": cluster.message,
        "created_at": _iso(cluster.created_at),
        "lease_expires_at": _iso(cluster.lease_expires_at),
        "nodes": [
            {
                "number": n.number,
                "hostname": n.hostname,
                "ip": n.ip,
                "port": n.port,
                "services": list(n.services or []),
                "status": n.status,
                "hardwaretype": n.hardwaretype,
                "imagetype": n.imagetype,
                "flavor": n.flavor,
                "image": n.image,
                "sshuser": n.sshuser,
                "provider_id": n.provider_id,
                "host_key": n.host_key,
                "message": n.message,
            }
            for n in cluster.nodes
        ],
        "operations": [
            {
                "operation": op.operation,
                "dag_id": op.dag_id,
                "run_id": op.run_id,
                "state": op.state,
                "triggered_by": op.triggered_by,
                "started_at": _iso(op.started_at),
                "ended_at": _iso(op.ended_at),
                "message": op.message,
            }
            for op in cluster.operations
        ],
    }


@lru_cache(maxsize=4)
def open_store(url: str | None = None) -> Store:
    if url is None:
        from loom.settings import load_settings

        url = load_settings().store_url
    return Store(url)


__all__ = ["NodeStatus", "Store", "open_store"]
