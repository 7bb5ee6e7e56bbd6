"""`drorch`: the command line.  One module per verb; nothing imports cli."""

from __future__ import annotations

import sys

import click

from drorch import __version__
from drorch.cli import (backup, binlog_cmd, check, copy_cmd, daemon_cmd, expire, listing, pin, policy_cmd, repo_cmd,
                        restore, runbook_cmd, schedule_cmd, show, wal_cmd)
from drorch.cli import notify_cmd, report_cmd
from drorch.cli import verify as verify_cmd
from drorch.cli.render import run_main, setup_logging
from drorch.factory import close_hosts

EPILOG = """Exit codes: 0 success, 1 the operation failed, 2 bad usage or bad policy."""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="drorch")
@click.option("-v", "--verbose", count=True, help="more log output (-vv for debug)")
def cli(verbose: int) -> None:
    """Backups of files and databases, verified restores, failover runbooks."""
    setup_logging(verbose)
    click.get_current_context().call_on_close(close_hosts)  # SSH connections end with the command


for module in (policy_cmd, repo_cmd, backup, listing, show, restore, expire, pin, wal_cmd, check, copy_cmd, binlog_cmd,
               schedule_cmd, daemon_cmd, runbook_cmd):
    module.register(cli)
notify_cmd.register(cli)
report_cmd.register(cli)
verify_cmd.register(cli)


def main() -> None:
    sys.exit(run_main(cli))


if __name__ == "__main__":
    main()
