"""Storage models. Never Airflow's metadata DB: Airflow 3 forbids tasks from touching it."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ClusterStatus(str, enum.Enum):
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    INCOMPLETE = "INCOMPLETE"
    INCONSISTENT = "INCONSISTENT"
    TERMINATED = "TERMINATED"


class NodeStatus(str, enum.Enum):
    PLANNED = "PLANNED"
    CREATING = "CREATING"
    RUNNING = "RUNNING"
    FAILED = "FAILED"
    DELETED = "DELETED"


class OperationState(str, enum.Enum):
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Cluster(Base):
    __tablename__ = "loom_cluster"
    __table_args__ = (
        # A name is unique among live clusters; a TERMINATED cluster frees its name.
        Index(
            "uq_loom_cluster_live_name",
            "name",
            unique=True,
            sqlite_where=text("status != 'TERMINATED'"),
            postgresql_where=text("status != 'TERMINATED'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    template: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=ClusterStatus.PENDING.value)
    owner: Mapped[str] = mapped_column(String(128), default="")
    services: Mapped[list[Any]] = mapped_column(default=list)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dns_suffix: Mapped[str | None] = mapped_column(String(255), nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The operation that holds the cluster (one at a time); NULL when idle.
    busy_dag_id: Mapped[str | None] = mapped_column(String(250), nullable=True)
    busy_run_id: Mapped[str | None] = mapped_column(String(250), nullable=True)
    busy_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The template as it was when the cluster was made or last synced (for ``sync``).
    template_snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    nodes: Mapped[list[Node]] = relationship(back_populates="cluster", order_by="Node.number")
    operations: Mapped[list[Operation]] = relationship(back_populates="cluster", order_by="Operation.id")


class Node(Base):
    __tablename__ = "loom_node"
    __table_args__ = (UniqueConstraint("cluster_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("loom_cluster.id"))
    number: Mapped[int] = mapped_column(Integer)
    hostname: Mapped[str] = mapped_column(String(255))
    hardwaretype: Mapped[str] = mapped_column(String(64))
    imagetype: Mapped[str] = mapped_column(String(64))
    flavor: Mapped[str] = mapped_column(String(128))
    image: Mapped[str] = mapped_column(String(255))
    sshuser: Mapped[str] = mapped_column(String(64))
    services: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default=NodeStatus.PLANNED.value)
    provider_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    host_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    created_by_run: Mapped[str | None] = mapped_column(String(250), nullable=True)

    cluster: Mapped[Cluster] = relationship(back_populates="nodes")


class Operation(Base):
    __tablename__ = "loom_operation"
    __table_args__ = (UniqueConstraint("dag_id", "run_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("loom_cluster.id"))
    operation: Mapped[str] = mapped_column(String(32))
    dag_id: Mapped[str] = mapped_column(String(250))
    run_id: Mapped[str] = mapped_column(String(250))
    state: Mapped[str] = mapped_column(String(16), default=OperationState.RUNNING.value)
    triggered_by: Mapped[str] = mapped_column(String(128), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    cluster: Mapped[Cluster] = relationship(back_populates="operations")


class PoolHost(Base):
    """A host of a ``static`` provider's pool lent to one cluster's node. The unique
    (provider, address, port) is what keeps two clusters off the same host."""

    __tablename__ = "loom_pool_host"
    __table_args__ = (
        UniqueConstraint("provider", "address", "port", name="uq_loom_pool_host"),
        UniqueConstraint("provider", "cluster_id", "hostname", name="uq_loom_pool_node"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    cluster: Mapped[str] = mapped_column(String(40))
    cluster_id: Mapped[int] = mapped_column(Integer)
    hostname: Mapped[str] = mapped_column(String(255))
    host_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    allocated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
