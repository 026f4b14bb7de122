"""The ``bulkops`` command line.

Exit codes: 0 done (also with rejects), 1 the job failed or the system is
unhealthy, 2 usage or configuration error. ``--json`` prints one JSON object
on stdout and nothing else there; progress bars and messages go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)

from worker import client, seeding, targets
from worker.console import err, print_summary, wait_with_progress
from worker.errors import BulkopsError, JobNotFound, PermanentError, RetryableError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

app = typer.Typer(
    name="bulkops",
    help="Bulk data operations on PostgreSQL as Celery jobs: import, update, seed, health.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the job and print its summary.")]
KeyOpt = Annotated[
    str | None, typer.Option("--key", help="Idempotency key: the same key twice gives one job.")
]


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    err.print(f"[bold red]bulkops:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


@contextmanager
def cli_errors() -> Iterator[None]:
    """One line on stderr instead of a traceback, with the contract's exit code."""
    try:
        yield
    except typer.Exit:
        raise
    except JobNotFound as exc:
        fail(exc.message, EXIT_USAGE)
    except RetryableError as exc:
        fail(exc.message, EXIT_FAILED)
    except PermanentError as exc:
        fail(exc.message, EXIT_USAGE)
    except BulkopsError as exc:
        fail(exc.message, EXIT_FAILED)
    except TimeoutError as exc:
        fail(str(exc), EXIT_FAILED)


def emit(data: dict[str, Any] | list[Any]) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")


def finish_job(job_id: int, wait: bool, as_json: bool) -> None:
    """Print the submitted job, or wait and print its summary; exit by the contract."""
    if not wait:
        if as_json:
            emit({"id": job_id, "state": client.summary(job_id).state})
        else:
            typer.echo(f"job {job_id} queued (bulkops job {job_id} to follow it)")
        return
    summary = wait_with_progress(job_id, show=True)
    if as_json:
        emit(summary.to_dict())
    else:
        print_summary(summary)
    if summary.state == "failed":
        raise typer.Exit(EXIT_FAILED)


# --- commands ------------------------------------------------------------------------


@app.command()
def seed(
    table: Annotated[str | None, typer.Option(help="Any target (bulkops targets).")] = None,
    rows: Annotated[
        int | None, typer.Option(help="Rows of --table (parents: a tenth).", min=0)
    ] = None,
    users: Annotated[
        int | None, typer.Option(help=f"Example: users ({seeding.DEFAULT_USERS}).", min=0)
    ] = None,
    todos_per_user: Annotated[
        int | None,
        typer.Option(help=f"Example: todos each ({seeding.DEFAULT_TODOS_PER_USER}).", min=0),
    ] = None,
    random_seed: Annotated[
        int, typer.Option(help="The same seed gives the same rows.")
    ] = seeding.DEFAULT_RANDOM_SEED,
    key: KeyOpt = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Seed any target, parents first: deterministic, idempotent, loaded with COPY."""
    with cli_errors():
        job_id = client.submit_seed(users, todos_per_user, random_seed, key, table, rows)
        finish_job(job_id, wait, as_json)


@app.command("import")
def import_(
    path: Annotated[
        str,
        typer.Argument(
            help="File under BULKOPS_IMPORT_ROOT; with --upload a local file; - for standard input."
        ),
    ],
    table: Annotated[
        str, typer.Option(help="Any target (bulkops targets).")
    ] = targets.EXAMPLE_TABLE,
    format: Annotated[
        str | None, typer.Option("--format", help="csv or jsonl (default: by extension).")
    ] = None,
    mode: Annotated[
        str, typer.Option(help="insert (existing rows are rejects), upsert, or skip.")
    ] = "insert",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and detect conflicts; commit nothing.")
    ] = False,
    max_errors: Annotated[
        int | None, typer.Option(help="Fail the job once more rows than this are rejected.")
    ] = None,
    max_error_rate: Annotated[
        float | None, typer.Option(help="Fail the job once this share of rows is rejected.")
    ] = None,
    upload: Annotated[
        bool,
        typer.Option(
            "--upload",
            help="Stream the local file to the upload store (PostgreSQL, or BULKOPS_UPLOAD_STORE).",
        ),
    ] = False,
    name: Annotated[str | None, typer.Option(help="Name of the uploaded data.")] = None,
    key: KeyOpt = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Import a CSV or JSON Lines file into any target (bulkops targets)."""
    with cli_errors():
        options: dict[str, Any] = dict(table=table, format=format, mode=mode, dry_run=dry_run)
        options.update(key=key, max_errors=max_errors, max_error_rate=max_error_rate)
        if path == "-" or upload:
            job_id = upload_import(path, name, options)
        else:
            job_id = client.submit_import(path, **options)
        finish_job(job_id, wait, as_json)


def upload_import(path: str, name: str | None, options: dict[str, Any]) -> int:
    """Upload ``path`` (``-``: standard input) and submit it, with a bytes bar on stderr."""
    local = None if path == "-" else Path(path).expanduser()
    source: Any = sys.stdin.buffer if local is None else local
    label = name or ("stdin" if local is None else local.name)
    columns = (TextColumn("upload {task.fields[label]}"), BarColumn(), DownloadColumn())
    with Progress(*columns, TransferSpeedColumn(), console=err, disable=not err.is_terminal) as bar:
        total = local.stat().st_size if local is not None and local.is_file() else None
        task = bar.add_task("upload", total=total, label=label)
        return client.submit_import(
            source, upload=True, name=label, on_progress=lambda n: bar.advance(task, n), **options
        )


@app.command("update-status")
def update_status(
    to: Annotated[str, typer.Option("--to", help="The new status.")],
    from_: Annotated[
        list[str] | None, typer.Option("--from", help="Only rows in this status (repeatable).")
    ] = None,
    table: Annotated[
        str | None, typer.Option(help="A target with a status (default todos).")
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", help="Only rows with COLUMN=VALUE (a file column; repeatable)."),
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option("--owner", help="Short for --where owner_email=EMAIL.", metavar="EMAIL"),
    ] = None,
    ids_file: Annotated[
        str | None, typer.Option("--ids-file", help="Only these ids (one per line).")
    ] = None,
    created_before: Annotated[
        str | None,
        typer.Option("--created-before", help="Only rows created before (ISO 8601, or 30d)."),
    ] = None,
    updated_before: Annotated[
        str | None,
        typer.Option(
            "--updated-before", help="Only rows last changed before (ISO 8601, or 30d, 12h)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would change; commit nothing.")
    ] = False,
    key: KeyOpt = None,
    wait: WaitOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Change the status of many rows of a target, in short batches, by its transition rules."""
    with cli_errors():
        if any("=" not in w for w in where or ()):
            fail("--where takes COLUMN=VALUE")
        pairs = [(w.split("=", 1)[0], w.split("=", 1)[1]) for w in where or ()]
        job_id = client.submit_update_status(
            to, from_ or (), owner, ids_file, created_before, dry_run, key, table, pairs,
            updated_before=updated_before,
        )
        finish_job(job_id, wait, as_json)


@app.command()
def health(as_json: JsonOpt = False) -> None:
    """Check database, pool, Redis, queues and jobs now; exit 0 healthy, 1 not."""
    from worker import health as checks
    from worker.config import get_settings

    with cli_errors():
        settings = get_settings()
        report = checks.run_checks(settings=settings)
        if report.checks[0].ok:
            try:
                checks.record(report, settings.bulkops_health_retention_days)
            except BulkopsError as exc:
                err.print(f"health check not recorded: {exc.message}", highlight=False)
        if as_json:
            emit(report.to_dict())
        else:
            for c in report.checks:
                typer.echo(f"{'ok  ' if c.ok else 'FAIL'} {c.name:<9} {c.detail}")
            typer.echo("healthy" if report.healthy else "unhealthy")
        raise typer.Exit(EXIT_OK if report.healthy else EXIT_FAILED)


@app.command()
def metrics(
    port: Annotated[int, typer.Option(help="Port for /metrics.")] = 9808,
    address: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Serve Prometheus metrics (queue depths, jobs by state, latencies) until Ctrl-C."""
    from worker import metrics as exporter
    from worker.config import get_settings

    with cli_errors():
        get_settings()
        err.print(f"serving Prometheus metrics on http://{address}:{port}/metrics", highlight=False)
        try:
            exporter.serve(port, address)
        except KeyboardInterrupt:
            pass


@app.command("jobs")
def list_jobs(
    limit: Annotated[int, typer.Option(help="How many, newest first.", min=1)] = 20,
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    as_json: JsonOpt = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="A live table of queued and running jobs (Ctrl-C).")
    ] = False,
    once: Annotated[
        bool, typer.Option("--once", help="With --watch: one frame, then exit.")
    ] = False,
) -> None:
    """List recent jobs; --watch shows queued and running ones live."""
    with cli_errors():
        if watch or once:
            from worker import watch as view

            raise typer.Exit(view.run(Console(), limit=limit, once=once))
        found = client.jobs(limit, state)
        if as_json:
            emit([s.to_dict() for s in found])
            return
        if not found:
            typer.echo("no jobs")
        for s in found:
            print_summary(s)


@app.command()
def job(job_id: Annotated[int, typer.Argument(metavar="ID")], as_json: JsonOpt = False) -> None:
    """Show one job's summary."""
    with cli_errors():
        s = client.summary(job_id)
        if as_json:
            emit(s.to_dict())
        else:
            print_summary(s)


@app.command()
def cancel(job_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Stop a job after its current chunk; committed chunks stay."""
    with cli_errors():
        state = client.cancel(job_id)
        typer.echo(f"job {job_id}: {state}")


@app.command()
def rejects(
    job_id: Annotated[int, typer.Argument(metavar="ID")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write them in the input format, with _line and _error."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a job's rejected rows (line, column, reason), or export them to fix and re-import."""
    with cli_errors():
        if out is not None:
            from worker.rejects_export import export_rejects

            written = export_rejects(job_id, out)
            if as_json:
                emit({"id": job_id, "rejects": written, "out": str(out)})
            else:
                err.print(f"wrote {written} rejected rows to {out}", highlight=False)
            return
        rows = client.rejects(job_id)
        if as_json:
            emit([r.__dict__ for r in rows])
            return
        for r in rows:
            where = f"line {r.line}" + (f", column {r.column}" if r.column else "")
            typer.echo(f"{where}: {r.reason}")


@app.command("targets")
def list_targets(as_json: JsonOpt = False) -> None:
    """List the tables bulkops can import, update and seed (BULKOPS_TARGETS)."""
    from worker import targets

    with cli_errors():
        items = targets.view()
        emit(items) if as_json else typer.echo(targets.render(items))


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the latest migration."""
    from worker import migrate as migrations
    from worker.config import get_settings

    with cli_errors():
        get_settings()
        migrations.upgrade()
        typer.echo("database schema is at head")


@app.command()
def reset(
    seed: Annotated[bool, typer.Option("--seed", help="Then seed 10 users x 5 todos.")] = False,
    yes: Annotated[
        bool, typer.Option("--yes", help="Skip typing the database name (needs BULKOPS_ENV).")
    ] = False,
) -> None:
    """Drop bulkops's tables and migrate again: development only (BULKOPS_ENV=development)."""
    from worker import reset as resetting

    with cli_errors():
        typer.echo(resetting.run(seed, yes))


@app.command()
def demo(
    users: Annotated[int, typer.Option(help="Users to seed.", min=1)] = 200,
    todos_per_user: Annotated[int, typer.Option(help="Todos per user.", min=1)] = 50,
    data_dir: Annotated[Path, typer.Option(help="Where the embedded services keep data.")] = Path(
        ".bulkops"
    ),
) -> None:
    """Run the whole thing on embedded services, then stop everything."""
    from worker.demo import run_demo

    with cli_errors():
        raise typer.Exit(run_demo(data_dir, users, todos_per_user))


@app.command()
def dev(
    data_dir: Annotated[Path, typer.Option(help="Where the embedded services keep data.")] = Path(
        ".bulkops"
    ),
    flower_port: Annotated[int, typer.Option(help="Flower's port.")] = 5555,
) -> None:
    """Start embedded services, a worker, beat and Flower; stay up until Ctrl-C."""
    from worker.demo import run_dev

    with cli_errors():
        run_dev(data_dir, flower_port)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
