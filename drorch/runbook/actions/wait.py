"""`wait`: let time pass (e.g. for clients to notice a moved address)."""

from __future__ import annotations

import time

from pydantic import Field

from drorch.policy.models import Model
from drorch.policy.types import Duration
from drorch.runbook.actions.base import Action, Manual, Outcome
from drorch.timefmt import format_duration


class WaitArgs(Model):
    duration: Duration = Field(description="how long, e.g. 30s")


class Wait(Action):
    name = "wait"
    title = "wait"
    Args = WaitArgs
    read_only = True

    def describe(self, args: WaitArgs, view) -> list[Manual]:
        return [Manual("", "note", f"wait {format_duration(args.duration)}")]

    def run(self, args: WaitArgs, ctx) -> Outcome:
        seconds = args.duration.total_seconds()
        if ctx.plan:
            return Outcome(True, f"would wait {format_duration(args.duration)}")
        time.sleep(min(seconds, ctx.remaining()))
        return Outcome(True, f"waited {format_duration(args.duration)}")
