"""Loom: the Airflow DAGs of every cluster template (``<template>.create``, ``<template>.delete``).

Generated from the template files in ``[loom] templates_dir``; admins edit those, not this file.
"""

from loom.dag_factory import build_dags

globals().update(build_dags())
