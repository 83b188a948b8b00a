"""The job store fixtures (SQLite, and PostgreSQL where it runs), shared with tests/jobs."""

from tests.jobs.conftest import pg_url, store, store_url

__all__ = ["pg_url", "store", "store_url"]
