"""`approval`: a person confirms before the run goes on (on the terminal, or
with `drorch runbook approve RUN STEP`); after `timeout` the explicit
`default` applies."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field

from drorch.policy.models import Model
from drorch.policy.types import Duration
from drorch.runbook.actions.base import Action, Manual, Outcome
from drorch.timefmt import format_duration


class ApprovalArgs(Model):
    prompt: str = Field(description="what the person confirms (say what happens and what is at risk)")
    timeout: Duration = Field(timedelta(minutes=15), description="how long to wait for an answer")
    default: Literal["approve", "reject"] = Field(description="what happens when nobody answers in time")


class Approval(Action):
    name = "approval"
    title = "ask a person"
    Args = ApprovalArgs

    def describe(self, args: ApprovalArgs, view) -> list[Manual]:
        return [Manual("", "note", f"CONFIRM: {args.prompt} (unanswered after {format_duration(args.timeout)}: "
                                   f"{args.default})")]

    def run(self, args: ApprovalArgs, ctx) -> Outcome:
        approved, why = ctx.ask(ctx.expand(args.prompt), args.timeout.total_seconds(), args.default)
        return Outcome(approved, why)
