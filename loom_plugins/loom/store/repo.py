"""Queries and state transitions of the cluster store. Returns plain dicts (JSON-ready views)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from datetime import datetime, timezone

from sqlalchemy import create_engine, event, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from loom.errors import ClusterError, ProviderError
from loom.layout import Layout, NodeSpec
from loom.store.models import (
    Base,
    Cluster,
    ClusterStatus,
    Node,
    NodeStatus,
    Operation,
    OperationState,
    PoolHost,
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
        _add_missing_columns(self.engine)
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

    @staticmethod
    def _live_for_update(session: Session, name: str) -> Cluster | None:
        return session.scalars(
            select(Cluster)
            .where(Cluster.name == name, Cluster.status != ClusterStatus.TERMINATED.value)
            .with_for_update()
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
    def begin_create(
        self,
        layout: Layout,
        dag_id: str,
        run_id: str,
        owner: str,
        lease_expires_at: datetime | None = None,
        template_snapshot: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
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
                    lease_expires_at=lease_expires_at,
                    template_snapshot=template_snapshot,
                    busy_dag_id=dag_id,
                    busy_run_id=run_id,
                    busy_since=utcnow(),
                )
                cluster.nodes = [_node_row(n, run_id) for n in layout.nodes]
                cluster.operations = [
                    Operation(operation="create", dag_id=dag_id, run_id=run_id, triggered_by=owner, params=params or {})
                ]
                s.add(cluster)
                s.flush()
                return _view(cluster)
        except IntegrityError:
            raise ClusterError(
                f"cluster {layout.cluster!r} was just created by another run: choose another name"
            ) from None

    def acquire(
        self,
        name: str,
        operation: str,
        dag_id: str,
        run_id: str,
        owner: str,
        allowed: frozenset[str] | set[str],
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Make this run the cluster's one running operation, or say why not (busy, wrong status).
        The same run asking again (a retried or resumed task) gets the cluster back."""
        with self.session() as s:
            cluster = self._live_for_update(s, name)
            if cluster is None:
                raise ClusterError(
                    f"cluster {name!r} does not exist or is already TERMINATED: `loom cluster list` shows the clusters"
                )
            mine = next((op for op in cluster.operations if op.dag_id == dag_id and op.run_id == run_id), None)
            if cluster.busy_run_id and (cluster.busy_dag_id, cluster.busy_run_id) != (dag_id, run_id):
                raise ClusterError(f"cluster {name!r} is busy with {cluster.busy_dag_id}/{cluster.busy_run_id}: wait for it to finish")
            if mine is None and cluster.status not in allowed:
                need = ", ".join(sorted(allowed))
                raise ClusterError(
                    f"cluster {name!r} is {cluster.status}; {operation} needs it to be {need}"
                    + (" (configure can repair an INCONSISTENT cluster; delete works from any state)" if "ACTIVE" in allowed else "")
                )
            if mine is None:
                s.add(Operation(cluster=cluster, operation=operation, dag_id=dag_id, run_id=run_id,
                                triggered_by=owner, params=params or {}))
            elif params is not None:
                mine.params = params
            cluster.busy_dag_id, cluster.busy_run_id, cluster.busy_since = dag_id, run_id, utcnow()
            s.flush()
            return _view(cluster)

    def hold(self, name: str, dag_id: str, run_id: str) -> None:
        """Each step of an operation checks it still holds the cluster (and takes it back when a
        failed run is resumed by clearing a task)."""
        with self.session() as s:
            cluster = self._live_for_update(s, name)
            if cluster is None:
                raise ClusterError(f"cluster {name!r} is not live")
            if cluster.busy_run_id and (cluster.busy_dag_id, cluster.busy_run_id) != (dag_id, run_id):
                raise ClusterError(f"cluster {name!r} is busy with {cluster.busy_dag_id}/{cluster.busy_run_id}: wait for it to finish")
            if not cluster.busy_run_id:
                op = next((o for o in cluster.operations if o.dag_id == dag_id and o.run_id == run_id), None)
                if op is not None and (op.params or {}).get("closed_outside"):
                    raise ClusterError(
                        f"{dag_id}/{run_id} was ended outside Loom ({op.message}); trigger a new operation"
                    )
                cluster.busy_dag_id, cluster.busy_run_id, cluster.busy_since = dag_id, run_id, utcnow()
                if op is not None and op.state != OperationState.RUNNING.value:
                    op.state, op.ended_at = OperationState.RUNNING.value, None  # resumed

    def release(self, name: str, dag_id: str, run_id: str) -> bool:
        """Free the cluster if this run holds it; True when it did."""
        with self.session() as s:
            cluster = self._latest(s, name)
            if cluster is None or (cluster.busy_dag_id, cluster.busy_run_id) != (dag_id, run_id):
                return False
            cluster.busy_dag_id = cluster.busy_run_id = cluster.busy_since = None
            return True

    def set_params(self, name: str, dag_id: str, run_id: str, params: dict[str, Any]) -> None:
        """Record what an operation run will do (targets, new nodes...) for its later steps."""
        with self.session() as s:
            cluster = self._latest(s, name)
            op = next((o for o in (cluster.operations if cluster else []) if o.dag_id == dag_id and o.run_id == run_id), None)
            if op is None:
                raise ClusterError(f"cluster {name!r} has no operation {dag_id}/{run_id}")
            op.params = {**(op.params or {}), **params}

    def operation(self, name: str, dag_id: str, run_id: str) -> dict[str, Any] | None:
        view = self.get(name)
        if view is None:
            return None
        return next((op for op in view["operations"] if op["dag_id"] == dag_id and op["run_id"] == run_id), None)

    def add_nodes(self, name: str, nodes: list[NodeSpec], run_id: str) -> None:
        with self.session() as s:
            cluster = self._live(s, name)
            if cluster is None:
                raise ClusterError(f"cluster {name!r} is not live")
            have = {n.hostname for n in cluster.nodes}
            for spec in nodes:
                if spec.hostname not in have:
                    cluster.nodes.append(_node_row(spec, run_id))

    def update_cluster(self, name: str, **fields: Any) -> None:
        with self.session() as s:
            cluster = self._live(s, name)
            if cluster is None:
                raise ClusterError(f"cluster {name!r} is not live")
            for key, value in fields.items():
                setattr(cluster, key, value)

    def busy(self) -> list[dict[str, Any]]:
        """Live clusters held by an operation, with the operation's record."""
        with self.session() as s:
            rows = s.scalars(select(Cluster).where(Cluster.busy_run_id.is_not(None)))
            return [_view(c) for c in rows]

    def expired(self, now: datetime) -> list[dict[str, Any]]:
        with self.session() as s:
            rows = s.scalars(
                select(Cluster).where(
                    Cluster.status != ClusterStatus.TERMINATED.value,
                    Cluster.lease_expires_at.is_not(None),
                    Cluster.lease_expires_at <= now,
                )
            )
            return [_view(c) for c in rows]

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
            if (cluster.busy_dag_id, cluster.busy_run_id) == (dag_id, run_id):
                cluster.busy_dag_id = cluster.busy_run_id = cluster.busy_since = None


    # --- static pools -------------------------------------------------------------------------
    def pool_allocate(self, provider: str, hosts: list[tuple[str, int]], cluster: str, cluster_id: int,
                      hostname: str) -> dict[str, Any]:
        """The pool host lent to this node: the one already lent (a retry), else the first free
        one in pool order. A unique constraint settles two allocators racing for a host."""
        for _ in range(len(hosts) + 1):
            with self.session() as s:
                mine = s.scalars(select(PoolHost).where(
                    PoolHost.provider == provider, PoolHost.cluster_id == cluster_id, PoolHost.hostname == hostname,
                )).first()
                if mine is not None:
                    return _pool_view(mine)
                taken = {(h.address, h.port): h.cluster for h in s.scalars(select(PoolHost).where(PoolHost.provider == provider))}
            free = [h for h in hosts if h not in taken]
            if not free:
                users = ", ".join(sorted(set(taken.values()))) or "none"
                raise ProviderError(
                    f"static provider {provider!r}: all {len(hosts)} pool host(s) are in use (by clusters: {users}); "
                    "add hosts to the provider's options.hosts or delete a cluster"
                )
            try:
                with self.session() as s:
                    row = PoolHost(provider=provider, address=free[0][0], port=free[0][1], cluster=cluster,
                                   cluster_id=cluster_id, hostname=hostname)
                    s.add(row)
                    s.flush()
                    return _pool_view(row)
            except IntegrityError:
                continue  # someone took that host (or this node) meanwhile: look again
        raise ProviderError(f"static provider {provider!r}: could not allocate a host for {hostname} (contention)")

    def pool_hosts(self, provider: str) -> list[dict[str, Any]]:
        with self.session() as s:
            return [_pool_view(h) for h in s.scalars(select(PoolHost).where(PoolHost.provider == provider).order_by(PoolHost.id))]

    def pool_get(self, provider: str, cluster_id: int, hostname: str) -> dict[str, Any] | None:
        return next((h for h in self.pool_hosts(provider) if (h["cluster_id"], h["hostname"]) == (cluster_id, hostname)), None)

    def pool_set_host_key(self, provider: str, address: str, port: int, host_key: str) -> None:
        with self.session() as s:
            for row in s.scalars(select(PoolHost).where(PoolHost.provider == provider, PoolHost.address == address,
                                                        PoolHost.port == port)):
                row.host_key = host_key

    def pool_release(self, provider: str, cluster_id: int, hostname: str) -> bool:
        with self.session() as s:
            rows = list(s.scalars(select(PoolHost).where(
                PoolHost.provider == provider, PoolHost.cluster_id == cluster_id, PoolHost.hostname == hostname)))
            for row in rows:
                s.delete(row)
            return bool(rows)


def _pool_view(row: PoolHost) -> dict[str, Any]:
    return {"provider": row.provider, "address": row.address, "port": row.port, "cluster": row.cluster,
            "cluster_id": row.cluster_id, "hostname": row.hostname, "host_key": row.host_key}


def _node_row(n: NodeSpec, run_id: str) -> Node:
    return Node(
        number=n.number,
        hostname=n.hostname,
        hardwaretype=n.hardwaretype,
        imagetype=n.imagetype,
        flavor=n.flavor,
        image=n.image,
        sshuser=n.sshuser,
        services=list(n.services),
        created_by_run=run_id,
    )


def _add_missing_columns(engine: Engine) -> None:
    """Additive schema upgrade: columns a newer Loom added are created (nullable) in an older
    store, so existing clusters keep working. Anything beyond adding columns needs a migration."""
    existing = inspect(engine)
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            have = {c["name"] for c in existing.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have:
                    ddl = column.type.compile(dialect=engine.dialect)
                    conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {ddl}'))


def _iso(value: Any) -> str | None:
    """ISO 8601 in UTC; SQLite hands back naive datetimes, which we always wrote as UTC."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


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
        "busy": f"{cluster.busy_dag_id}/{cluster.busy_run_id}" if cluster.busy_run_id else None,
        "template_snapshot": cluster.template_snapshot,
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
                "created_by_run": n.created_by_run,
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
                "params": op.params or {},
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
