"""`drorch policy check|schema`."""

from __future__ import annotations

import json

import click

from drorch.cli.common import json_option, load, policy_option
from drorch.cli.render import emit_json, say
from drorch.cli.schedule_cmd import schedule_lines
from drorch.policy.models import PolicyDocument
from drorch.policy.object_lock import lock_period


@click.group("policy")
def policy_group() -> None:
    """Check policies, print their JSON Schema."""


@policy_group.command("check")
@click.argument("path", required=False, type=click.Path())
@policy_option
@json_option
def check(path: str | None, policy_path, as_json: bool) -> None:
    """Validate a policy file or directory; every problem as FILE:LINE:COL: key: message (exit 2)."""
    policy = load(path or policy_path)
    locks = {name: (repo.object_lock.mode, lock_period(policy, name))
             for name, repo in sorted(policy.repositories.items()) if getattr(repo, "object_lock", None)}
    summary = {"ok": True, "files": [str(f) for f in policy.files],
               "repositories": sorted(policy.repositories), "sources": sorted(policy.sources)}
    if policy.runbooks:
        summary["runbooks"] = sorted(policy.runbooks)
    if locks:
        summary["object_lock"] = {name: {"mode": mode, "period_seconds": int(period.period.total_seconds()),
                                         "why": period.why} for name, (mode, period) in locks.items()}
    if any(getattr(s, "schedule", None) for s in policy.sources.values()):
        summary["schedules"] = schedule_lines(policy, sorted(policy.sources), 1)[1]
    notify = notify_lines(policy)
    if notify:
        summary["notify"] = notify
    if as_json:
        emit_json(summary)
        return
    say(f"policy OK: {len(policy.files)} file(s), {len(policy.repositories)} repositories, "
        f"{len(policy.sources)} sources" + (f", {len(policy.runbooks)} runbooks" if policy.runbooks else ""))
    for name, (mode, period) in locks.items():
        say(f"  repository {name}: Object Lock {mode}, each object locked {period.why}")
    for name, source in sorted(policy.sources.items()):
        copies = f" (copies: {', '.join(source.copy_to)})" if source.copy_to else ""
        say(f"  source {name}: {source.kind} on {source.host} -> repository {source.repository}{copies}")
    for name, repo in sorted(policy.repositories.items()):
        if repo.encryption is not None:
            say(f"  repository {name}: encrypted, passphrase from {repo.encryption.passphrase.ref}")
    for line in notify:
        say(f"  {line}")
    scheduled = sorted(n for n, s in policy.sources.items() if getattr(s, "schedule", None))
    if scheduled:
        say("schedules (`drorch schedule` shows more runs):")
        for line in schedule_lines(policy, scheduled, 1)[0]:
            say(f"  {line}")


def notify_lines(policy) -> list[str]:
    """Where notifications and the daily report go (secrets shown as their references)."""
    from drorch.notify.channels import make_channels

    lines = []
    for channel in make_channels(policy.notify):
        model = channel.model
        where = f"{model.smtp} to {', '.join(model.to)}" if model.type == "email" else \
            getattr(model.url, "ref", None) or "a fixed URL"
        lines.append(f"notify {channel.name}: {model.type} ({where}), severity {model.min_severity} and worse"
                     + ("" if model.daily_report else ", no daily report"))
    daily = policy.reports.daily
    if daily is not None:
        lines.append(f"daily report at {daily.at} {daily.timezone}"
                     + (" (sent to the channels)" if daily.notify else " (not sent: notify false)"))
    return lines


@policy_group.command("schema")
def schema() -> None:
    """Print the JSON Schema of a policy file (for editors)."""
    document = PolicyDocument.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "drorch policy"
    click.echo(json.dumps(document, indent=2))


def register(cli: click.Group) -> None:
    cli.add_command(policy_group)
