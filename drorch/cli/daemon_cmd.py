"""`drorch daemon`: run the schedules of the policies (see drorch/daemon/)."""

from __future__ import annotations

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

    logs.setup(log_format)
    code = run_daemon(policy_path, log_format)
    if code:
        raise SystemExit(code)


def register(cli: click.Group) -> None:
    cli.add_command(daemon)
