"""The dashboard's pages as HTML, from figures already read (no database access here).

Every page is a full document with the same layout; the overview's ``<main>`` can also be
rendered alone, which the page's script fetches to refresh itself without a full reload.
Actions are small POST forms, each with its own CSRF token; in read-only mode they are
not rendered at all (and the server refuses them anyway).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from pgtaskq.contrib.dashboard import charts, csrf
from pgtaskq.contrib.dashboard.markup import Safe, html, join, query
from pgtaskq.duration import format_age, format_ms
from pgtaskq.job import STATUSES, Job
from pgtaskq.operations import stats


@dataclass
class Context:
    """What every page needs to know about the request it answers."""

    base: str
    """The dashboard's URL prefix (``SCRIPT_NAME``), without a trailing slash."""
    secret: str
    read_only: bool
    refresh: float
    schema: str

    def url(self, path: str) -> str:
        return self.base + path

    def form(self, action: str, label: str, *, fields: dict[str, Any] | None = None,
             css: str = "", confirm: str | None = None) -> Safe:
        """A one-button POST form to ``action``, or nothing in read-only mode."""
        if self.read_only:
            return Safe("")
        hidden = join(html('<input type="hidden" name="{n}" value="{v}">', n=k, v=v)
                      for k, v in (fields or {}).items())
        return html(
            '<form method="post" action="{url}" class="action"{confirm}>'
            '<input type="hidden" name="{field}" value="{token}">{hidden}'
            '<button type="submit" class="{css}">{label}</button></form>',
            url=self.url(quote(action)), field=csrf.FIELD, token=csrf.token(self.secret, action),
            hidden=hidden, css=css, label=label,
            confirm=Safe("") if confirm is None else html(' data-confirm="{c}"', c=confirm))


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def layout(ctx: Context, title: str, body: Safe, *, current: str, notice: str = "",
           refresh_url: str | None = None) -> Safe:
    nav = join(
        html('<a href="{href}"{cls}>{name}</a>', href=ctx.url(path), name=name,
             cls=Safe(' class="current"') if current == name else Safe(""))
        for name, path in (("overview", "/"), ("jobs", "/jobs"), ("workers", "/workers"),
                           ("schedules", "/schedules")))
    return html(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<title>{title} · pgtaskq</title>'
        '<link rel="stylesheet" href="{css}"><script src="{js}" defer></script></head>'
        '<body data-refresh="{refresh}" data-refresh-url="{refresh_url}">'
        '<header><strong>pgtaskq</strong> <span class="schema">{schema}</span>'
        '<nav>{nav}</nav>{ro}</header>{notice}<main id="content">{body}</main></body></html>',
        title=title, css=ctx.url("/static/dashboard.css"), js=ctx.url("/static/dashboard.js"),
        refresh=ctx.refresh if refresh_url else 0, refresh_url=refresh_url or "",
        schema=f"schema {ctx.schema}", nav=nav,
        ro=Safe('<span class="badge">read-only</span>') if ctx.read_only else Safe(""),
        notice=html('<p class="notice" role="status">{n}</p>', n=notice) if notice else "",
        body=body)


def _n(value: int, estimated: bool) -> str:
    return ("~" if estimated and value else "") + f"{value:,}"


def _latency(row: stats.Row, which: str) -> str:
    p = row.percentiles(which)
    if p["p50"] is None:
        return "-"
    return " / ".join(format_ms(p[k]) for k in ("p50", "p95", "p99"))


def overview(ctx: Context, snap: stats.Snapshot) -> Safe:
    """Per queue: counts, charts and pause/resume; per task: the figures; then workers."""
    cards = []
    for q in snap.queues:
        name = q.queue or ""
        action = ctx.form(f"/queues/{name}/resume", "Resume", css="resume") if q.paused \
            else ctx.form(f"/queues/{name}/pause", "Pause", css="pause")
        cards.append(html(
            '<section class="queue{paused}" data-queue="{name}">'
            '<h2><a href="{jobs}">{name}</a>{badge}</h2>{action}'
            '<dl class="counts"><div><dt>ready</dt><dd class="ready">{ready}</dd></div>'
            '<div><dt>scheduled</dt><dd class="scheduled">{scheduled}</dd></div>'
            '<div><dt>running</dt><dd class="running">{running}</dd></div>'
            '<div><dt>jobs/s</dt><dd>{rate}</dd></div>'
            '<div><dt>oldest ready</dt><dd>{oldest}</dd></div></dl>'
            '{levels}<p class="caption">finished per minute, last hour</p>{bars}'
            '<p class="latency">wait p50/p95/p99 {wait}<br>run p50/p95/p99 {run}</p>'
            '</section>',
            paused=" paused" if q.paused else "", name=name,
            jobs=ctx.url("/jobs" + query(queue=name)),
            badge=Safe(' <span class="badge">paused</span>') if q.paused else Safe(""),
            action=action, ready=_n(q.ready, q.estimated),
            scheduled=_n(q.scheduled, q.estimated), running=f"{q.running:,}",
            rate=f"{q.throughput:,.1f}", oldest=format_age(q.oldest_ready_age) or "-",
            levels=charts.levels([("ready", q.ready, "ready"),
                                  ("scheduled", q.scheduled, "scheduled"),
                                  ("running", q.running, "running")],
                                 label=f"queue {name} depth"),
            bars=charts.bars(q.series, label=f"queue {name} finished per minute"),
            wait=_latency(q, "wait"), run=_latency(q, "run")))
    rows = []
    for t in snap.tasks:
        rows.append(html(
            '<tr><td>{queue}</td><td><a href="{jobs}">{task}</a></td><td>{ready}</td>'
            '<td>{scheduled}</td><td>{running}</td><td>{ok}</td><td>{failed}</td>'
            '<td>{rate}</td><td>{wait}</td><td>{run}</td><td>{oldest}</td><td>{retry}</td></tr>',
            queue=t.queue, task=t.task, jobs=ctx.url("/jobs" + query(task=t.task)),
            ready=_n(t.ready, t.estimated), scheduled=_n(t.scheduled, t.estimated),
            running=f"{t.running:,}", ok=f"{t.succeeded['1h']:,}",
            failed=f"{t.failed['1h']:,}", rate=f"{t.throughput:,.1f}",
            wait=_latency(t, "wait"), run=_latency(t, "run"),
            oldest=format_age(t.oldest_ready_age) or "-",
            retry=ctx.form("/tasks/retry-failed", "Retry failed", fields={"task": t.task},
                           confirm=f"Queue every failed job of {t.task} again?")
            if t.failed["1h"] else ""))
    alive = sum(1 for w in snap.workers if w.status == "alive")
    warning = Safe("") if alive else Safe(
        '<p class="warning">No worker is alive: queued jobs are not being run.</p>')
    estimate = Safe('<p class="caption">~ estimated from a table sample (the jobs table is '
                    'large); oldest ready per queue is exact.</p>') if snap.estimated else ""
    return html(
        '<p class="caption">as of {at} UTC, read in {ms} ms · {alive} of {workers} workers '
        'alive · 1h = current minute + 60 before; latency over 5 min</p>{warning}'
        '<div class="queues">{cards}</div>'
        '<h2>Tasks</h2><table class="tasks"><thead><tr><th>queue</th><th>task</th>'
        '<th>ready</th><th>sched</th><th>running</th><th>ok 1h</th><th>failed 1h</th>'
        '<th>jobs/s</th><th>wait p50/p95/p99</th><th>run p50/p95/p99</th>'
        '<th>oldest ready</th><th></th></tr></thead><tbody>{rows}</tbody></table>{estimate}'
        '<h2>Recent failures</h2>{failures}',
        at=when(snap.at), ms=f"{snap.elapsed_ms:.0f}", alive=alive,
        workers=len(snap.workers), warning=warning,
        cards=join(cards) or Safe('<p>No jobs yet.</p>'), rows=join(rows),
        estimate=estimate, failures=_failures(ctx, snap.failures))


def _failures(ctx: Context, failures: list[stats.Failure]) -> Safe:
    if not failures:
        return Safe("<p>None in the last day.</p>")
    rows = [html('<tr><td><a href="{href}">{id}</a></td><td>{task}</td><td>{queue}</td>'
                 '<td>{attempts}</td><td>{at}</td><td class="error">{error}</td></tr>',
                 href=ctx.url(f"/jobs/{f.job_id}"), id=f.job_id, task=f.task, queue=f.queue,
                 attempts=f"{f.attempts}/{f.max_attempts}", at=when(f.finished_at),
                 error=f.error) for f in failures]
    return html('<table><thead><tr><th>job</th><th>task</th><th>queue</th><th>attempts</th>'
                '<th>finished</th><th>error</th></tr></thead><tbody>{rows}</tbody></table>',
                rows=join(rows))


def _short(text: str | None, width: int = 80) -> str:
    if not text:
        return ""
    line = stats.error_summary(text)
    return line if len(line) <= width else line[: width - 1] + "…"


def jobs(ctx: Context, found: list[Job], filters: dict[str, str | None],
         older: int | None, scanned_to: int | None) -> Safe:
    """The job list with its filter form and the link to the next (older) page."""
    options = join(html('<option value="{s}"{sel}>{s}</option>', s=s,
                        sel=Safe(" selected") if filters.get("status") == s else Safe(""))
                   for s in ("", *STATUSES))
    form = html(
        '<form method="get" action="{url}" class="filters">'
        '<label>status <select name="status">{options}</select></label>'
        '<label>queue <input name="queue" value="{queue}"></label>'
        '<label>task <input name="task" value="{task}"></label>'
        '<label>text in args or error <input name="q" value="{q}"></label>'
        '<button type="submit">Filter</button></form>',
        url=ctx.url("/jobs"), options=options, queue=filters.get("queue") or "",
        task=filters.get("task") or "", q=filters.get("q") or "")
    rows = [html(
        '<tr class="{status}"><td><a href="{href}">{id}</a></td><td>{status}</td>'
        '<td>{task}</td><td>{queue}</td><td>{priority}</td><td>{attempts}</td>'
        '<td>{run_at}</td><td>{finished}</td><td class="args">{args}</td>'
        '<td class="error">{error}</td></tr>',
        status=j.status, href=ctx.url(f"/jobs/{j.id}"), id=j.id, task=j.task, queue=j.queue,
        priority=j.priority, attempts=f"{j.attempts}/{j.max_attempts}", run_at=when(j.run_at),
        finished=when(j.finished_at), args=_short(_call(j), 60), error=_short(j.last_error))
        for j in found]
    more = ""
    if older is not None:
        more = html('<p class="pager"><a rel="next" href="{href}">{label}</a></p>',
                    href=ctx.url("/jobs" + query(**filters, before=older)),
                    label="older jobs →" if scanned_to is None
                    else f"no more matches above id {scanned_to:,}: look further back →")
    return html(
        '{form}<table class="jobs"><thead><tr><th>id</th><th>status</th><th>task</th>'
        '<th>queue</th><th>prio</th><th>attempts</th><th>run at (UTC)</th>'
        '<th>finished (UTC)</th><th>args</th><th>error</th></tr></thead><tbody>{rows}'
        '</tbody></table>{empty}{more}',
        form=form, rows=join(rows), more=more,
        empty=Safe("<p>No job matches.</p>") if not found else "")


def _call(job: Job) -> str:
    args = [json.dumps(a) for a in job.args]
    args += [f"{k}={json.dumps(v)}" for k, v in (job.kwargs or {}).items()]
    return "(" + ", ".join(args) + ")"


def job(ctx: Context, j: Job) -> Safe:
    """One job: every field, arguments and result as JSON, the error with its traceback."""
    actions = []
    if j.status in ("failed", "cancelled"):
        actions.append(ctx.form(f"/jobs/{j.id}/retry", "Retry", css="retry"))
    if j.status in ("queued", "running"):
        actions.append(ctx.form(f"/jobs/{j.id}/cancel", "Cancel", css="cancel",
                                confirm=f"Cancel job {j.id}?"))
    if j.status == "queued" and j.run_at > datetime.now(timezone.utc):
        actions.append(ctx.form(f"/jobs/{j.id}/run-now", "Run now", css="run-now"))
    fields = [("status", j.status), ("task", j.task), ("queue", j.queue),
              ("priority", j.priority), ("attempts", f"{j.attempts} of {j.max_attempts}"),
              ("created", when(j.created_at)), ("run at", when(j.run_at)),
              ("started", when(j.started_at)), ("finished", when(j.finished_at)),
              ("worker", j.worker_id if j.worker_id is not None else ""),
              ("dedupe key", j.dedupe_key or ""),
              ("cancel requested", "yes" if j.cancel_requested else "")]
    table = join(html('<tr><th>{k}</th><td class="{c}">{v}</td></tr>', k=k,
                      c="field-" + k.replace(" ", "-"), v=v) for k, v in fields)
    return html(
        '<h1>Job {id} <span class="status {status}">{status}</span></h1>'
        '<div class="actions">{actions}</div><table class="fields">{table}</table>'
        '<h2>args</h2><pre class="args">{args}</pre>'
        '<h2>kwargs</h2><pre class="kwargs">{kwargs}</pre>'
        '<h2>result</h2><pre class="result">{result}</pre>'
        '<h2>error</h2><pre class="error">{error}</pre>',
        id=j.id, status=j.status, actions=join(actions), table=table,
        args=json.dumps(j.args, indent=2), kwargs=json.dumps(j.kwargs, indent=2),
        result=json.dumps(j.result, indent=2, default=str), error=j.last_error or "")


def workers(ctx: Context, snap: stats.Snapshot) -> Safe:
    rows = [html(
        '<tr class="{status}"><td>{id}</td><td>{host}</td><td>{pid}</td><td>{queues}</td>'
        '<td>{slots}</td><td>{busy}</td><td class="stuck">{stuck}</td><td>{beat}</td>'
        '<td>{status}</td><td>{done}</td><td>{started}</td></tr>',
        status=w.status, id=w.id, host=w.host, pid=w.pid,
        queues=", ".join(w.queues) if w.queues else "all", slots=w.concurrency, busy=w.busy,
        stuck=w.stuck, beat=format_age(w.heartbeat_age) + " ago", done=f"{w.finished_1m:,}",
        started=when(w.started_at)) for w in snap.workers]
    return html(
        '<h1>Workers</h1><table class="workers"><thead><tr><th>id</th><th>host</th>'
        '<th>pid</th><th>queues</th><th>slots</th><th>busy</th><th>stuck</th>'
        '<th>heartbeat</th><th>status</th><th>done 1m</th><th>started (UTC)</th></tr>'
        '</thead><tbody>{rows}</tbody></table>{empty}'
        '<p class="caption">stuck: slots still busy with a job past its timeout (a thread '
        'cannot be killed); lost: no heartbeat for several intervals.</p>',
        rows=join(rows), empty=Safe("<p>No worker registered.</p>") if not rows else "")


def schedules(ctx: Context, found: list[dict[str, Any]]) -> Safe:
    rows = [html(
        '<tr><td>{name}</td><td><code>{expr}</code></td><td>{tz}</td><td>{task}</td>'
        '<td>{queue}</td><td>{next}</td><td>{last}</td><td>{job}</td><td>{active}</td></tr>',
        name=s["name"], expr=s["expression"], tz=s["tz"], task=s["task"], queue=s["queue"],
        next=when(s["next_tick"]) if s["active"] else "", last=when(s["last_tick"]),
        job=html('<a href="{h}">{id}</a> {st}', h=ctx.url(f"/jobs/{s['last_job_id']}"),
                 id=s["last_job_id"], st=s["last_job_status"] or "purged")
        if s["last_job_id"] is not None else "",
        active="yes" if s["active"] else "no") for s in found]
    return html(
        '<h1>Cron schedules</h1><table class="schedules"><thead><tr><th>name</th>'
        '<th>expression</th><th>tz</th><th>task</th><th>queue</th><th>next run (UTC)</th>'
        '<th>last run (UTC)</th><th>last job</th><th>active</th></tr></thead>'
        '<tbody>{rows}</tbody></table>{empty}',
        rows=join(rows), empty=Safe("<p>No schedule registered.</p>") if not rows else "")
