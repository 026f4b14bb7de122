"""Queue names and the Redis keys derived from them."""

from __future__ import annotations

IMPORTS = "imports"  # imports and seeding: long bulk loads
UPDATES = "updates"  # bulk status updates
MAINTENANCE = "maintenance"  # health checks and recovery: never behind a bulk job

QUEUES: tuple[str, ...] = (IMPORTS, UPDATES, MAINTENANCE)
