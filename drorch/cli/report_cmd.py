"""`drorch report daily` and `drorch report incident`: Markdown (default) or JSON,
printed, and with --send delivered to the policy's `notify:` channels."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import click

from drorch.cli.common import json_option, load, policy_option
from drorch.cli.render import emit_json, say, warn
from drorch.errors import UsageError
from drorch.policy.types import parse_duration
from drorch.timefmt import parse_iso, utcnow

state_dir_option = click.option("--state-dir", type=click.Path(path_type=Path), default=None,
                                help="the daemon's state directory, for the jobs, problems and notices it saw "
                                     "(default: daemon.state_dir of the policy, when readable)")
source_multi = click.option("--source", "sources", multiple=True, metavar="NAME",
                            help="only these sources (repeat the option; default: all)")
send_option = click.option("--send", is_flag=True, help="also deliver it to the policy's notify: channels")


def when(text: str | None, now: datetime, what: str) -> datetime | None:
    """An ISO time, or a duration back from now (24h, 3d)."""
    if text is None:
        return None
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    if re.fullmatch(r"\d+", text.strip()):
        raise UsageError(f"{what} {text!r}: a bare number is ambiguous", "write e.g. 24h, 3d or an ISO time")
    return parse_iso(text)


def context(policy, sources, state_dir: Path | None, now: datetime, timezone: str | None):
    from drorch.factory import open_repository, source_policy
    from drorch.notify.facts import RepoCache
    from drorch.notify.journal import Journal
    from drorch.notify.ledger import Ledger
    from drorch.notify.report import Context

    for name in sources:
        source_policy(policy, name)
    root = (state_dir or Path(policy.daemon.state_dir)) / "notify"
    readable = root.is_dir()
    daily = policy.reports.daily
    zone = timezone or (daily.timezone if daily else "UTC")
    return Context(policy, RepoCache(lambda name: open_repository(policy, name)), now=now, timezone=zone,
                   sources=list(sources) or None,
                   journal=Journal(root / "events.jsonl") if readable else None,
                   ledger=Ledger(root / "ledger.json") if readable and (root / "ledger.json").exists() else None,
                   next_runs=lambda name: next_runs(policy, name, now))


def next_runs(policy, name: str, now: datetime) -> dict[str, datetime]:
    from drorch.daemon.planner import rules_for

    rules = rules_for(policy.sources[name], policy.daemon.catchup_grace)
    if rules is None:
        return {}
    return {job: at for job, cron in rules.crons.items() if (at := cron.next_after(now)) is not None}


def show(report, as_json: bool, send: bool, policy, daily: bool) -> None:
    if as_json:
        emit_json(report.as_json())
    else:
        say(report.markdown().rstrip())
    if send:
        deliver(report, policy, daily)


def deliver(report, policy, daily: bool) -> None:
    from drorch.notify.notifier import Notifier

    notifier = Notifier.from_policy(policy, state_dir=None)
    notifier.ledger.path = notifier.journal.path = None  # a manual send changes no daemon state
    channels = [c for c in notifier.channels if c.daily_report or not daily]
    if not channels:
        raise UsageError("no notify: channel to send it to" + (" (with daily_report: true)" if daily else ""),
                         "add a webhook or email entry under notify: in the policy")
    for outcome in notifier.send(report.notice(), channels):
        if outcome["ok"]:
            click.echo(f"sent to {outcome['channel']}", err=True)
        else:
            warn(f"not sent to {outcome['channel']}: {outcome['error']}")


@click.group("report")
def report() -> None:
    """Daily and incident reports (Markdown, or JSON with --json)."""


@report.command("daily")
@policy_option
@source_multi
@click.option("--until", "until", metavar="TIME", help="the end of the 24 hours (default: now)")
@click.option("--hours", type=click.FloatRange(1, 24 * 31), default=24, show_default=True,
              help="how far back the report looks")
@click.option("--timezone", metavar="ZONE", help="zone of the times shown (default: reports.daily.timezone)")
@state_dir_option
@send_option
@json_option
def daily(policy_path, sources, until, hours, timezone, state_dir, send, as_json) -> None:
    """What ran in the last 24 hours per source: results, sizes, durations, RPO/RTO, warnings, next runs."""
    from drorch.notify.daily import daily_report

    policy = load(policy_path)
    now = when(until, utcnow(), "--until") or utcnow()
    ctx = context(policy, sources, state_dir, now, _zone(timezone))
    show(daily_report(ctx, hours), as_json, send, policy, daily=True)


@report.command("incident")
@policy_option
@source_multi
@click.option("--since", "since", metavar="TIME", required=True,
              help="from when: an ISO time (2026-11-22T01:00:00Z) or a duration back from now (24h)")
@click.option("--until", "until", metavar="TIME", help="until when (default: now)")
@click.option("--timezone", metavar="ZONE", help="zone of the times shown (default: reports.daily.timezone)")
@state_dir_option
@send_option
@json_option
def incident(policy_path, sources, since, until, timezone, state_dir, send, as_json) -> None:
    """The fault report: what failed since T, severity, impact, what was done, the state now."""
    from drorch.notify.incidents import incident_report

    policy = load(policy_path)
    now = utcnow()
    end = when(until, now, "--until") or now
    start = when(since, now, "--since")
    if start >= end:
        raise UsageError(f"--since {since} is not before --until", "give an earlier --since")
    ctx = context(policy, sources, state_dir, end, _zone(timezone))
    show(incident_report(ctx, start, end), as_json, send, policy, daily=False)


def _zone(name: str | None) -> str | None:
    if name is None:
        return None
    from drorch.policy import cron

    try:
        cron.zone(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return name


def register(cli: click.Group) -> None:
    cli.add_command(report)
