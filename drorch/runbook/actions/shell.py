"""`shell`: a command on a host (the step's `host:`, default this machine),
through the hosts layer: an unknown host key is refused, never added."""

from __future__ import annotations

from pydantic import Field

from drorch.policy.models import Model
from drorch.runbook.actions.base import Action, Manual, Outcome, tail


class ShellArgs(Model):
    command: str = Field(description="a shell command (sh -c); ${role.field} placeholders are filled in")
    user: str | None = Field(None, description="run it as this OS user (sudo -n -u); default: the login user")
    ok_exit: list[int] = Field(default_factory=lambda: [0], description="exit statuses that mean success")
    idempotent: bool = Field(False, description="safe to run again when the runner died while it ran "
                                                "(otherwise resume asks before running it again)")


class Shell(Action):
    name = "shell"
    title = "run a command"
    Args = ShellArgs
    idempotent = False
    uses_host = True

    def describe(self, args: ShellArgs, view) -> list[Manual]:
        who = f" as {args.user}" if args.user else ""
        where = "on the orchestrator (host local)" if view.step_host == "local" else f"on host {view.step_host}"
        return [Manual(f"{where}{who}", "shell", args.command)]

    def run(self, args: ShellArgs, ctx) -> Outcome:
        command = ctx.expand(args.command)
        host = ctx.host(ctx.step_host)
        result = host.run(command, shell=True, user=args.user, timeout=ctx.remaining())
        output = tail(result.stdout + (b"\n" + result.stderr if result.stderr else b""))
        if result.exit_status in args.ok_exit:
            return Outcome(True, f"exit {result.exit_status} on {host.name}", {"exit": result.exit_status}, output)
        return Outcome(False, f"`{command}` exited {result.exit_status} on {host.name}",
                       {"exit": result.exit_status}, output)

    def is_idempotent(self, args: ShellArgs) -> bool:
        return args.idempotent
