"""The `drorch` console script.  WAL push/get with --async take a fast path
that imports only the standard library (see walspool.py); everything else
goes to the click CLI."""

from __future__ import annotations

import sys


def main() -> None:
    from drorch import walspool

    parsed = walspool.parse(sys.argv[1:])
    if parsed is not None:
        sys.exit(walspool.run(parsed))
    from drorch.cli.main import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
