-- Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d), as the
-- superuser POSTGRES_USER (airflow), who therefore owns both databases.
-- airflow: Airflow's metadata DB ([database] sql_alchemy_conn).
-- loom:    Loom's cluster store ([loom] store_sql_conn) -- its own DB, never Airflow's.
CREATE DATABASE airflow;
CREATE DATABASE loom;
