# Loom's Airflow image: the official Apache Airflow 3.3.2 image plus the `loom` package (the
# DAG factory, operators, plugin and the `loom` CLI) and an SSH client for the automators.
# Built by docker-compose.yml (see its header); not used by the embedded default (`make run`).
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

USER airflow
# The project's source distribution (README.md is the package's readme; uv.lock travels with
# pyproject.toml). Inside the image pip installs against the pre-installed Airflow, pinning
# apache-airflow so no dependency can up- or downgrade it.
COPY --chown=airflow:0 pyproject.toml uv.lock README.md /tmp/loom-src/
COPY --chown=airflow:0 loom_plugins/ /tmp/loom-src/loom_plugins/
RUN pip install --no-cache-dir "apache-airflow==3.3.2" /tmp/loom-src \
    && rm -rf /tmp/loom-src \
    && mkdir -p /opt/airflow/state
# /opt/airflow/state exists (owned by airflow) so the named volume compose mounts there starts
# out writable by the airflow user.
