"""Named crash points for the crash-safety tests.

When DRORCH_FAULT names a point, the process kills itself with SIGKILL when
it gets there: the same as a power cut or an OOM kill at that instant, but
at a point a test can choose.  Unset (always, outside tests), it does nothing.
"""

from __future__ import annotations

import os
import signal

POINTS = ("after-run-record", "after-first-pack", "before-entries", "before-manifest", "after-manifest")
COPY_POINTS = ("copy-after-run-record", "copy-after-first-pack", "copy-before-entries", "copy-before-manifest",
               "copy-after-manifest")


def checkpoint(name: str) -> None:
    if os.environ.get("DRORCH_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
