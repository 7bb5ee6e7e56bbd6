"""`notify`: tell people what is happening (a webhook and/or the run's log,
see runbook/notifier.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drorch.policy.models import Model
from drorch.runbook.actions.base import Action, Manual, Outcome


class NotifyArgs(Model):
    message: str = Field(description="the text; ${role.field}, ${run} and ${mode} are filled in")
    severity: Literal["info", "warning", "critical"] = "info"
    webhook: str | None = Field(None, description="POST the event as JSON here (default: the runbook's "
                                                  "`notify.webhook`)")


class Notify(Action):
    name = "notify"
    title = "notify"
    Args = NotifyArgs

    def describe(self, args: NotifyArgs, view) -> list[Manual]:
        where = args.webhook or view.webhook or "the on-call channel"
        return [Manual("", "note", f"tell {where} ({args.severity}): {args.message}")]

    def run(self, args: NotifyArgs, ctx) -> Outcome:
        message = ctx.expand(args.message)
        delivered = ctx.notify(message, args.severity, args.webhook)
        return Outcome(True, f"notified ({', '.join(delivered)}): {message}")
