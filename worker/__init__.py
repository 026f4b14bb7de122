"""bulkops: bulk data operations on PostgreSQL as Celery tasks on Redis.

``celery -A worker ...`` finds the Celery application as ``worker.app``.
"""

from worker.app import app

__all__ = ["app"]
