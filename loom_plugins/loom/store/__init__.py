"""The cluster store: Loom's own database of clusters, nodes and operations (SQLAlchemy 2)."""

from loom.store.models import ClusterStatus, NodeStatus, OperationState
from loom.store.repo import Store, open_store

__all__ = ["ClusterStatus", "NodeStatus", "OperationState", "Store", "open_store"]
