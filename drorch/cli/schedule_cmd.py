"""`drorch schedule`: the next runs of every schedule, as the daemon will see them."""

from __future__ import annotations

import click

from drorch.cli.common import json_option, load, policy_option, source_option
from drorch.cli.render import emit_json, say
from drorch.daemon.schedule import Cron
from drorch.timefmt import iso, utcnow

JOBS = ("full", "diff", "incr", "verify", "drill", "expire", "copy")


def schedule_lines(policy, names: list[str], count: int) -> tuple[list[str], dict]:
    """(lines for people, the same for --json) of each source's schedules and next runs."""
    now = utcnow()
    lines, data = [], {}
    for name in names:
        model = policy.sources[name]
        schedule = getattr(model, "schedule", None)
        if schedule is None:
            lines.append(f"source {name}: no schedule (the daemon leaves it alone)")
            data[name] = None
            continue
        lines.append(f"source {name} (times in {schedule.timezone}):")
        entry = {"timezone": schedule.timezone, "schedules": {}}
        for job in JOBS:
            value = schedule.copy_ if job == "copy" else getattr(schedule, job)
            if not value or value == "off" or (job == "copy" and not model.copy_to):
                continue
            if value == "after_backup":
                target = f" to {', '.join(model.copy_to)}" if job == "copy" else ""
                lines.append(f"  {job:7} after each successful backup{target}")
                entry["schedules"][job] = {"when": "after_backup"}
                continue
            cron = Cron(value, schedule.timezone)
            runs = cron.next_runs(now, count)
            lines.append(f"  {job:7} \"{value}\"  next: " + "; ".join(cron.local(t) for t in runs))
            lines += [f"          note: {note}" for note in cron.notes()]
            entry["schedules"][job] = {"cron": value, "next": [iso(t) for t in runs], "notes": cron.notes()}
        for key, text in (("max_full_interval", "an incr or diff runs as a full when the last full is older "
                                                "than"),
                          ("max_diff_interval", "an incr runs as a diff when the last diff or full is older "
                                                "than")):
            value = getattr(schedule, key)
            if value is not None:
                from drorch.timefmt import format_duration

                lines.append(f"  {key}: {text} {format_duration(value)}")
                entry[key] = format_duration(value)
        data[name] = entry
    return lines, data


@click.command("schedule")
@policy_option
@source_option
@click.option("--count", default=3, show_default=True, type=click.IntRange(1, 100),
              help="next runs shown per schedule")
@json_option
def schedule(policy_path, source: str | None, count: int, as_json: bool) -> None:
    """Print the next runs of every schedule (so you see what a cron expression means)."""
    policy = load(policy_path)
    names = [source] if source else sorted(policy.sources)
    if source:
        from drorch.factory import source_policy

        source_policy(policy, source)
    lines, data = schedule_lines(policy, names, count)
    if as_json:
        emit_json(data)
        return
    for line in lines:
        say(line)


def register(cli: click.Group) -> None:
    cli.add_command(schedule)
