"""A process that takes a source's lock, holds it, and says what happened (lease tests).

    python -m tests.leaseholder POLICY SOURCE TTL HOLD WAIT LOG [HOSTNAME]

With HOSTNAME the test runs it in a UTS namespace of its own (`unshare
--uts`), so its lock records name another host.  Lines appended to LOG,
one write each: `acquired T`, `released T`, `locked MESSAGE`, `lost WHY`,
`lost-before-commit` (ensure_held refused at the end of the hold).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta


def note(log: str, text: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {text}\n".encode())
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    policy_path, source, ttl, hold, wait, log = argv[:6]
    from drorch.errors import LockedError
    from drorch.factory import open_repository, source_policy
    from drorch.policy import load_policy
    from drorch.repo.locks import SourceLock

    policy = load_policy(policy_path)
    repo = open_repository(policy, source_policy(policy, source).repository, create=True)
    SourceLock.on_lost = staticmethod(lambda lock, why: note(log, f"lost {why}"))
    lock = SourceLock(repo, source, "test", ttl=timedelta(seconds=float(ttl)))
    try:
        lock.acquire(wait=float(wait))
    except LockedError as exc:
        note(log, f"locked {exc.message}")
        return 3
    note(log, f"acquired {time.time():.6f}")
    deadline = time.monotonic() + float(hold)
    while time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        lock.ensure_held()
    except LockedError:
        note(log, "lost-before-commit")
        lock.release()
        return 4
    note(log, f"released {time.time():.6f}")
    lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
