"""The core: pure decisions, discovery, the lock lease and the runner. No Airflow, no driver."""
