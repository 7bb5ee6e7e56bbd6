"""Named crash points for the crash-safety tests.

When DRORCH_FAULT names a point, the process kills itself with SIGKILL when
it gets there: the same as a power cut or an OOM kill at that instant, but
at a point a test can choose.  `DRORCH_FAULT=pause:POINT` stops there
instead (sleeping until a signal ends the process: a run caught mid-way, for
the tests of the daemon's shutdown).  Unset (always, outside tests), it does
nothing.
"""

from __future__ import annotations

import os
import signal
import time

POINTS = ("after-run-record", "after-first-pack", "before-entries", "before-manifest", "after-manifest")
COPY_POINTS = ("copy-after-run-record", "copy-after-first-pack", "copy-before-entries", "copy-before-manifest",
               "copy-after-manifest")


def checkpoint(name: str) -> None:
    if os.environ.get("DRORCH_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("DRORCH_FAULT") == f"pause:{name}":
        while True:
            time.sleep(0.05)
