"""`drorch daemon`: run the schedules of the policies (see drorch/daemon/)."""

from __future__ import annotations

import logging

import click

from drorch.cli.common import policy_option


@click.command("daemon")
@policy_option
@click.option("--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True,
              help="json: one JSON object per line, for log shippers")
def daemon(policy_path, log_format: str) -> None:
    """Run backups, verification, copies and expire on the policies' schedules.

    Reload the policies with SIGHUP (a bad edit is reported and the old ones
    stay); stop with SIGTERM (running jobs get daemon.stop_grace to finish)."""
    from drorch.daemon import logs
    from drorch.daemon.main import run_daemon
    from drorch.errors import DrorchError, PolicyError

    logs.setup(log_format)
    try:
        code = run_daemon(policy_path, log_format)
    except DrorchError as exc:
        if log_format != "json":
            raise  # printed as usual: FILE:LINE lines, exit 2 (policy) or 1
        problems = exc.problems if isinstance(exc, PolicyError) else [exc.message]
        logging.getLogger("drorch.daemon").error(
            "drorch daemon did not start: %s", "; ".join(problems),
            extra={"fields": {"event": "start-failed", "problems": problems, "hint": exc.hint}})
        raise SystemExit(exc.exit_code) from None
    if code:
        raise SystemExit(code)


def register(cli: click.Group) -> None:
    cli.add_command(daemon)
