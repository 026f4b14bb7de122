"""``bulkops demo`` and ``bulkops dev``: the whole system on embedded services.

The demo starts an embedded PostgreSQL and Redis, migrates, starts a real
``celery -A worker worker`` and ``celery -A worker beat`` as subprocesses,
runs jobs through the public API, prints what happened and stops everything
it started (whole process groups, so no pool child is left behind).
"""

from __future__ import annotations

import contextlib
import csv
import os
import time
from collections.abc import Iterator
from pathlib import Path

import typer

from worker import client, db, health, migrate
from worker.app import using
from worker.config import load_settings
from worker.console import print_summary, wait_with_progress
from worker.embedded import Services, embedded_services
from worker.rejects_export import export_rejects
from worker.supervisor import background, celery_command, worker_command


@contextlib.contextmanager
def on_services(
    data_dir: Path, import_root: Path, fresh: bool = False, extra: dict[str, str] | None = None
) -> Iterator[tuple[Services, dict[str, str]]]:
    """Embedded services, this process on them (``using``), and the environment for children."""
    with embedded_services(data_dir, fresh=fresh) as services:
        env = {
            **os.environ,
            "DATABASE_URL": services.database_url,
            "REDIS_URL": services.redis_url,
            "BULKOPS_IMPORT_ROOT": str(import_root),
            **(extra or {}),
        }
        with using(load_settings(env)):
            yield services, env


HEALTH_EVERY_5_S = {"BULKOPS_HEALTH_INTERVAL": "5"}  # the demo waits for beat's health check


def _say(message: str) -> None:
    typer.secho(message, fg=typer.colors.CYAN, err=True)


def run_demo(data_dir: Path, users: int, todos_per_user: int) -> int:
    """The demo; returns the process exit code (0 when every step did what it should)."""
    data_dir = data_dir.resolve()
    imports = data_dir / "imports"
    imports.mkdir(parents=True, exist_ok=True)
    _say(f"starting embedded PostgreSQL and Redis (data in {data_dir}) ...")
    with on_services(data_dir, imports, fresh=True, extra=HEALTH_EVERY_5_S) as (_, env):
        migrate.upgrade()
        _say("schema migrated; starting a worker (2 processes) and beat ...")
        commands = [
            worker_command("demo"),
            celery_command("beat", "--loglevel=INFO", "-s", str(data_dir / "celerybeat-schedule")),
        ]
        with background(commands, env, data_dir / "logs"):
            ok = True
            _say(f"seeding {users} users x {todos_per_user} todos (random seed 7) ...")
            first = wait_with_progress(client.submit_seed(users, todos_per_user, 7))
            print_summary(first, "seed")
            ok &= first.state == "succeeded" and first.rows_inserted == users * (todos_per_user + 1)
            _say("the same seed again: idempotent, adds nothing ...")
            again = wait_with_progress(client.submit_seed(users, todos_per_user, 7))
            print_summary(again, "seed again")
            ok &= again.state == "succeeded" and again.rows_inserted == 0
            ok &= _demo_import(imports)
            _say("completing every in_progress todo (bulk status update, keyset batches) ...")
            update = wait_with_progress(client.submit_update_status("completed", ["in_progress"]))
            print_summary(update, "update-status")
            typer.echo(f"{'':<16} longest batch transaction: {update.longest_batch_s:.3f} s")
            ok &= update.state == "succeeded" and update.rows_updated > 0
            report = health.run_checks()
            typer.echo("health:")
            for c in report.checks:
                typer.echo(f"  {'ok  ' if c.ok else 'FAIL'} {c.name:<9} {c.detail}")
            ok &= report.healthy
            ok &= _beat_recorded_health()
    typer.echo("demo finished: " + ("all steps as expected" if ok else "SOMETHING WENT WRONG"))
    return 0 if ok else 1


# A sample import: good rows and one bad row of each common kind.
SAMPLE_BAD_ROWS = [
    ("Renew passport", "active", "nobody@example.invalid"),  # unknown owner
    ("Water plants", "someday", None),  # status not allowed
    ("", "active", None),  # empty title
    ("x" * 201, "active", None),  # title too long
    ("Call the bank", "active", None),  # duplicate of a good row
]


def _demo_import(imports: Path) -> bool:
    """Import a sample CSV with bad rows, show the rejects and export them."""
    from sqlalchemy import text

    with db.session_scope() as session:
        owner = session.execute(text("SELECT email FROM users ORDER BY id LIMIT 1")).scalar_one()
    path = imports / "sample-todos.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["title", "status", "owner_email"])
        for i, title in enumerate(("Call the bank", "Book dentist", "File taxes", "Fix fence")):
            writer.writerow([title, ("active", "in_progress")[i % 2], owner])
        for title, status, email in SAMPLE_BAD_ROWS:
            writer.writerow([title, status, email or owner])
    _say(f"importing {path.name}: 4 good rows, {len(SAMPLE_BAD_ROWS)} bad ones ...")
    summary = wait_with_progress(client.submit_import(path.name))
    print_summary(summary, "import")
    for r in client.rejects(summary.id):
        typer.echo(f"{'':<16} rejected line {r.line} ({r.column}): {r.reason[:70]}")
    out = imports / f"rejects-{summary.id}.csv"
    export_rejects(summary.id, out)
    typer.echo(f"{'':<16} rejects exported to {out} (fix them and import that file as it is)")
    return bool(
        summary.state == "partially_succeeded"
        and summary.rows_inserted == 4
        and summary.rows_rejected == len(SAMPLE_BAD_ROWS)
    )


def _beat_recorded_health(timeout_s: float = 30.0) -> bool:
    """Wait until beat's periodic health check has written a row (it runs every 5 s here)."""
    from sqlalchemy import text

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with db.session_scope() as session:
            count = session.execute(
                text("SELECT count(*) FROM bulkops_ledger.health_checks")
            ).scalar_one()
        if count:
            typer.echo(f"beat's periodic health check has recorded {count} row(s)")
            return True
        time.sleep(1)
    typer.echo("beat's periodic health check recorded nothing")
    return False


def run_dev(data_dir: Path, flower_port: int) -> None:
    data_dir = data_dir.resolve()
    imports = data_dir / "imports"
    imports.mkdir(parents=True, exist_ok=True)
    with on_services(data_dir, imports) as (services, env):
        migrate.upgrade()
        commands = [
            worker_command("dev"),
            celery_command("beat", "--loglevel=INFO", "-s", str(data_dir / "celerybeat-schedule")),
            celery_command("flower", f"--port={flower_port}", "--address=127.0.0.1"),
        ]
        with background(commands, env, data_dir / "logs"):
            typer.echo("bulkops dev is up. In another shell:")
            typer.echo(f"  export DATABASE_URL='{services.database_url}'")
            typer.echo(f"  export REDIS_URL='{services.redis_url}'")
            typer.echo(f"  export BULKOPS_IMPORT_ROOT='{imports}'")
            typer.echo(f"Flower: http://127.0.0.1:{flower_port}   logs: {data_dir / 'logs'}")
            typer.echo("Ctrl-C stops everything.")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(1)
