"""`drorch notify test`: send a test message to every notify: channel (or one)."""

from __future__ import annotations

import click

from drorch.cli.common import load, policy_option
from drorch.cli.render import say, warn
from drorch.errors import UsageError


@click.group("notify")
def notify() -> None:
    """Notification channels (webhooks, e-mail)."""


@notify.command("test")
@policy_option
@click.option("--channel", metavar="NAME", help="only this channel (its name:, or e.g. webhook#1)")
@click.option("--severity", type=click.Choice(["I", "II", "III", "IV"]), default="IV", show_default=True,
              help="the severity the test message claims (it is sent regardless of min_severity)")
def test(policy_path, channel: str | None, severity: str) -> None:
    """Send a test message, to see that a channel works (exit 1 when one failed)."""
    from drorch.notify.findings import Notice
    from drorch.notify.notifier import Notifier

    policy = load(policy_path)
    notifier = Notifier.from_policy(policy)
    notifier.ledger.path = notifier.journal.path = None  # a test changes no daemon state
    channels = [c for c in notifier.channels if channel in (None, c.name)]
    if not channels:
        known = ", ".join(c.name for c in notifier.channels) or "none"
        raise UsageError(f"no notify channel {channel!r} (channels: {known})" if channel else
                         "the policy has no notify: channels", "add webhook or email entries under notify:")
    notice = Notice("test", severity, f"test message (severity {severity})",
                    f"This is a test of drorch's notifications, sent with `drorch notify test` from "
                    f"{policy.path}. Nothing is wrong.")
    failed = 0
    for outcome in notifier.send(notice, channels):
        if outcome["ok"]:
            say(f"{outcome['channel']}: sent")
        else:
            failed += 1
            warn(f"{outcome['channel']}: {outcome['error']}")
    if failed:
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    cli.add_command(notify)
