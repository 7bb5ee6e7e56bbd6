"""`drorch`: the command line.  One module per verb; nothing imports cli."""

from __future__ import annotations

import importlib
import sys

import click

from drorch import __version__
from drorch.cli.render import run_main, setup_logging

EPILOG = """Exit codes: 0 success, 1 the operation failed, 2 bad usage or bad policy."""

#: command -> the drorch.cli module that registers it.  Modules are imported only for the
#: command that runs: `drorch wal-push`, run once per WAL segment, does not load the daemon,
#: runbooks, notifications or verification (a third of the start-up time and memory).
COMMANDS = {
    "policy": "policy_cmd", "repo": "repo_cmd", "backup": "backup", "list": "listing", "show": "show",
    "restore": "restore", "expire": "expire", "pin": "pin", "unpin": "pin", "wal-push": "wal_cmd",
    "wal-get": "wal_cmd", "check": "check", "copy": "copy_cmd", "binlog-archive": "binlog_cmd",
    "schedule": "schedule_cmd", "daemon": "daemon_cmd", "runbook": "runbook_cmd", "verify": "verify",
    "notify": "notify_cmd", "report": "report_cmd",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMANDS.get(name)
        if module is None:
            return None
        holder = click.Group()
        importlib.import_module(f"drorch.cli.{module}").register(holder)
        return holder.commands[name]


def close_hosts() -> None:
    from drorch.factory import close_hosts as close

    close()


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="drorch")
@click.option("-v", "--verbose", count=True, help="more log output (-vv for debug)")
def cli(verbose: int) -> None:
    """Backups of files and databases, verified restores, failover runbooks."""
    setup_logging(verbose)
    click.get_current_context().call_on_close(close_hosts)  # SSH connections end with the command



def main() -> None:
    sys.exit(run_main(cli))


if __name__ == "__main__":
    main()
