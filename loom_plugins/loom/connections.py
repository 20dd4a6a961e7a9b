"""Airflow Connections -> plain ``ConnectionInfo`` (the only place Loom reads credentials).

Providers and hooks name a Connection id; its values come from Airflow (metadata DB, the
``AIRFLOW_CONN_<ID>`` environment variable, or a configured secrets backend). Airflow masks the
Connection's password and secret extras in task logs once it has been read.
"""

from __future__ import annotations

from typing import Any

from loom.errors import ProviderError


def get_connection(conn_id: str, used_by: str) -> Any:
    """The Connection as a ``loom.providers.cloud.ConnectionInfo``; a clear error naming who
    needs it when it is not defined."""
    from airflow.sdk import Connection

    from loom.providers.cloud import ConnectionInfo

    try:
        conn = Connection.get(conn_id)
    except Exception as exc:  # AirflowNotFoundException or a backend error
        raise ProviderError(
            f"{used_by}: Airflow Connection {conn_id!r} is not available ({type(exc).__name__}): create it "
            f"(Admin -> Connections, `airflow connections add {conn_id} ...`, or AIRFLOW_CONN_{conn_id.upper()}); "
            "README 'Providers' shows one per driver"
        ) from None
    return info_of(conn, ConnectionInfo)


async def aget_connection(conn_id: str, used_by: str) -> Any:
    """``get_connection`` for triggers (the triggerer's event loop must not block)."""
    from airflow.sdk import Connection

    from loom.providers.cloud import ConnectionInfo

    try:
        conn = await Connection.async_get(conn_id)
    except Exception as exc:
        raise ProviderError(f"{used_by}: Airflow Connection {conn_id!r} is not available ({type(exc).__name__})") from None
    return info_of(conn, ConnectionInfo)


def info_of(conn: Any, cls: Any) -> Any:
    return cls(
        conn_id=conn.conn_id, conn_type=conn.conn_type, login=conn.login, password=conn.password, host=conn.host,
        port=conn.port, schema=conn.schema, extra=dict(conn.extra_dejson or {}),
    )
