"""``pgtaskq enqueue | jobs | show | cancel | retry``: put jobs in and look at them.

Output is for people by default (tabulate tables, times in UTC) and for scripts with
``--json``; ``enqueue`` prints only the id so ``id=$(pgtaskq enqueue ...)`` works.
Commands that take several ids act on all of them and then fail, naming every id that
could not be handled, so one bad id in a list does not hide what happened to the others.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import click
from tabulate import tabulate

from pgtaskq.cli.group import pass_queue, user_errors
from pgtaskq.errors import JobNotFoundError, PgtaskqError, first_line
from pgtaskq.job import STATUSES, Job
from pgtaskq.printable import printable, printable_cells
from pgtaskq.queue import TaskQueue

LIST_COLUMNS = ("id", "status", "task", "queue", "priority", "attempts", "run_at",
                "finished_at", "last_error")


def _parse_json(expected: type, what: str) -> Any:
    """A click callback: parse an option's JSON text and check its top-level type."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"--{param.name} is not valid JSON: {exc}") from None
        if not isinstance(parsed, expected):
            raise click.ClickException(
                f"--{param.name} must be a JSON {what}, got {type(parsed).__name__}"
            )
        return parsed

    return callback


def _time(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str | None, width: int = 40) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[-1]  # a traceback's last line names the exception
    return line if len(line) <= width else line[: width - 1] + "…"


def _row(job: Job) -> list[Any]:
    return [job.id, job.status, job.task, job.queue, job.priority,
            f"{job.attempts}/{job.max_attempts}", _time(job.run_at), _time(job.finished_at),
            _short(job.last_error)]


def jobs_table(jobs: list[Job]) -> str:
    """The ``pgtaskq jobs`` table (also used by the demo)."""
    if not jobs:
        return "no jobs"
    return tabulate(printable_cells([_row(job) for job in jobs]), headers=LIST_COLUMNS)


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


@click.command("enqueue")
@click.argument("task")
@click.option("--args", "args", callback=_parse_json(list, "array"), metavar="JSON",
              help='Positional arguments as a JSON array, e.g. \'[1, "a"]\'.')
@click.option("--kwargs", "kwargs", callback=_parse_json(dict, "object"), metavar="JSON",
              help='Keyword arguments as a JSON object, e.g. \'{"to": "a@b.c"}\'.')
@click.option("--queue", "-q", help="Queue name (default: the queue's default).")
@click.option("--priority", "-p", type=int, help="Higher runs first (default 0).")
@click.option("--delay", type=float, metavar="SECONDS", help="Run no sooner than this.")
@click.option("--dedupe-key", help="Return the live job with this key instead of a new one.")
@click.option("--max-attempts", type=int, help="Attempts before the job fails for good.")
@pass_queue
def enqueue_command(
    tq: TaskQueue,
    task: str,
    args: list[Any] | None,
    kwargs: dict[str, Any] | None,
    **options: Any,
) -> None:
    """Enqueue a job of TASK (a task name; no worker needs to know it yet) and print its id."""
    with user_errors():
        job_id = tq.enqueue(task, args=args, kwargs=kwargs, **options)
    click.echo(job_id)


@click.command("jobs")
@click.option("--status", "-s", type=click.Choice(STATUSES), help="Only jobs in this status.")
@click.option("--task", "-t", help="Only jobs of this task.")
@click.option("--queue", "-q", "queue_name", help="Only jobs in this queue.")
@click.option("--limit", "-n", type=click.IntRange(1, 100_000), default=50, show_default=True,
              help="Show at most this many jobs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_queue
def jobs_command(
    tq: TaskQueue,
    status: str | None,
    task: str | None,
    queue_name: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List jobs, newest first."""
    found = tq.list_jobs(status=status, task=task, queue=queue_name, limit=limit)
    if as_json:
        click.echo(_dump([job.to_dict() for job in found]))
    else:
        click.echo(jobs_table(found))


@click.command("show")
@click.argument("job_id", type=int, metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_queue
def show_command(tq: TaskQueue, job_id: int, as_json: bool) -> None:
    """Show one job, with its arguments, result and last error."""
    job = tq.get_job(job_id)
    if job is None:
        raise JobNotFoundError(f"no job with id {job_id}")
    if as_json:
        click.echo(_dump(job.to_dict()))
        return
    fields = job.to_dict()
    last_error = fields.pop("last_error")
    undecodable = fields.pop("undecodable")
    for key in ("args", "kwargs", "result"):
        if key in undecodable:  # the stored text, as it is: Python's json refuses it
            fields[key] = f"(undecodable JSON, shown raw) {fields[key]}"
        else:
            fields[key] = json.dumps(fields[key])
    rows = [[key, value if isinstance(value, str) else str(value)]
            for key, value in fields.items()]
    click.echo(tabulate(printable_cells(rows), tablefmt="plain"))
    if last_error:
        click.echo("\nlast_error:\n" + printable(last_error.rstrip(), multiline=True))


def _act_on_each(tq: TaskQueue, job_ids: tuple[int, ...], verb: str) -> None:
    """Cancel or retry every id; then fail naming the ids that were unknown or refused."""
    action, done, past, why_not = {
        "cancel": (tq.cancel, "cancelled", "cancelled", "already finished"),
        "retry": (tq.retry, "queued again", "retried", "not failed or cancelled"),
    }[verb]
    unknown: list[str] = []
    refused: dict[str, list[str]] = {}  # reason -> ids
    for job_id in job_ids:
        try:
            ok = action(job_id)
        except PgtaskqError as exc:  # retry refused: its dedupe_key is taken again
            refused.setdefault(first_line(exc), []).append(str(job_id))
            continue
        if ok:
            state = done
            if verb == "cancel":  # a running job is only asked to stop
                job = tq.get_job(job_id)
                if job is not None and job.status == "running":
                    state = "cancel requested"
            click.echo(f"job {job_id}: {state}")
        elif tq.get_job(job_id) is None:
            unknown.append(str(job_id))
        else:
            refused.setdefault(why_not, []).append(str(job_id))
    problems = [f"unknown job id(s) {', '.join(unknown)}"] if unknown else []
    problems += [f"not {past} ({why}): {', '.join(ids)}" for why, ids in refused.items()]
    if problems:
        raise click.ClickException("; ".join(problems))


@click.command("cancel")
@click.argument("job_ids", type=int, nargs=-1, required=True, metavar="ID...")
@pass_queue
def cancel_command(tq: TaskQueue, job_ids: tuple[int, ...]) -> None:
    """Cancel jobs: queued ones at once, running ones are asked to stop."""
    _act_on_each(tq, job_ids, "cancel")


@click.command("retry")
@click.argument("job_ids", type=int, nargs=-1, required=True, metavar="ID...")
@pass_queue
def retry_command(tq: TaskQueue, job_ids: tuple[int, ...]) -> None:
    """Queue failed or cancelled jobs again."""
    _act_on_each(tq, job_ids, "retry")
