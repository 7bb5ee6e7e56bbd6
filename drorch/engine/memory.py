"""Keep the resident size of a backup or restore near what it really holds.

glibc gives each thread that allocates under contention an arena of its own,
and the megabyte buffers the workers read, compress and write are freed into
those arenas and stay there: a 100,000-file backup held about 100 MB more
than it used.  One arena keeps them reused instead.  Python's GIL already
serialises almost every allocation, so the shared arena costs no parallelism.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys

log = logging.getLogger(__name__)
M_ARENA_MAX = -8  # glibc's mallopt() parameter
SWITCH_INTERVAL = 0.0005  # seconds: how long a thread may hold the GIL while others wait for it
_done = False


def one_malloc_arena() -> None:
    """Once per process, before the worker threads start; a no-op without glibc."""
    global _done
    if _done:
        return
    _done = True
    import ctypes  # here: commands that never start workers (wal-push) need not load it
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    if not mallopt(M_ARENA_MAX, 1):
        log.debug("mallopt(M_ARENA_MAX, 1) refused; memory use may be higher")


@contextlib.contextmanager
def gc_paused():
    """Hold Python's cyclic garbage collector while a job builds or reads a
    hundred thousand entries: every few hundred allocations it would walk all
    of them again (40 % of decoding a large manifest).  The data path makes no
    reference cycles to speak of; whatever it made is collected afterwards.

    Also shorten the GIL's switch interval: the workers release the GIL for
    every system call, compression and hash of every small file, and a thread
    that wants it back waited up to the default 5 ms while another ran Python
    code (the convoy effect).  0.5 ms made backups and restores of many small
    files 15–30 % faster here (bench/files)."""
    was_enabled, interval = gc.isenabled(), sys.getswitchinterval()
    gc.disable()
    sys.setswitchinterval(min(interval, SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        if was_enabled:
            gc.enable()
