"""Loom's Airflow plugin (the only plugin module here; the ``loom`` package beside it is
excluded from the plugin scan by .airflowignore)."""

from airflow.plugins_manager import AirflowPlugin

from loom import listener


class LoomPlugin(AirflowPlugin):
    name = "loom"
    listeners = [listener]
