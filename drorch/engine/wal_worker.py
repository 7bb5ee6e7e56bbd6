"""The background worker of asynchronous WAL push/get (see drorch/walspool.py).

Started on demand by the fast path, holds <spool>/<source>/<mode>.lock, does
the work in threads, and exits after IDLE seconds without any.

    python -m drorch.engine.wal_worker push --policy P --source S --spool D --pg-wal W
    python -m drorch.engine.wal_worker get  --policy P --source S --spool D --prefetch N
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

IDLE = 10.0
POLL = 0.01
THREADS = 4


def _write(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)


class Worker:
    def __init__(self, args):
        self.args = args
        self.base = os.path.join(args.spool, args.source)
        self.dir = os.path.join(self.base, args.mode)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.busy: set[str] = set()
        self.pool = ThreadPoolExecutor(THREADS, thread_name_prefix=f"wal-{args.mode}")

    def open(self) -> None:
        from drorch.factory import open_repository, source_policy
        from drorch.policy import load_policy

        policy = load_policy(self.args.policy)
        model = source_policy(policy, self.args.source)
        self.repo = open_repository(policy, model.repository, create=self.args.mode == "push")

    def loop(self) -> None:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < IDLE:
            if self.tick():
                idle_since = time.monotonic()
            time.sleep(POLL)
        self.pool.shutdown(wait=True)
        if self.args.mode == "get":  # what nobody asked for goes: it is cheap to fetch again
            for name in os.listdir(self.dir):
                if "." not in name:
                    os.unlink(os.path.join(self.dir, name))

    def submit(self, name: str, fn, *args) -> None:
        self.busy.add(name)
        future = self.pool.submit(fn, *args)
        future.add_done_callback(lambda _: self.busy.discard(name))

    # -- push ---------------------------------------------------------------------

    def tick(self) -> bool:
        return self.tick_push() if self.args.mode == "push" else self.tick_get()

    def tick_push(self) -> bool:
        todo: dict[str, str] = {}
        for entry in os.listdir(self.dir):
            if entry.endswith(".want"):
                name = entry[:-5]
                try:
                    with open(os.path.join(self.dir, entry)) as handle:
                        todo[name] = handle.read().strip()
                except FileNotFoundError:
                    continue
        status = os.path.join(self.args.pg_wal, "archive_status")
        try:  # look ahead: segments PostgreSQL has not asked for yet
            ready = sorted(n[:-6] for n in os.listdir(status) if n.endswith(".ready"))
        except FileNotFoundError:
            ready = []
        for name in ready[: THREADS * 4]:
            todo.setdefault(name, os.path.join(self.args.pg_wal, name))
        started = False
        for name, path in todo.items():
            if name in self.busy or os.path.exists(os.path.join(self.dir, name + ".ok")):
                continue
            self.submit(name, self.push_one, name, path)
            started = True
        return started or bool(self.busy)

    def push_one(self, name: str, path: str) -> None:
        from drorch.engine import wal
        from drorch.errors import DrorchError

        try:
            wal.push(self.repo, self.args.source, path)
            _write(os.path.join(self.dir, name + ".ok"), "")
        except DrorchError as exc:
            _write(os.path.join(self.dir, name + ".error"), exc.message + (f" ({exc.hint})" if exc.hint else ""))
        except Exception as exc:  # noqa: BLE001 - reported to PostgreSQL through the spool
            _write(os.path.join(self.dir, name + ".error"), f"{type(exc).__name__}: {exc}")
        finally:
            try:
                os.unlink(os.path.join(self.dir, name + ".want"))
            except FileNotFoundError:
                pass

    # -- get ----------------------------------------------------------------------

    def tick_get(self) -> bool:
        from drorch.sources import pg_wal

        wants = [e[:-5] for e in os.listdir(self.dir) if e.endswith(".want")]
        started = False
        for name in wants:
            names = [name]
            if pg_wal.kind_of(name) == "segment":
                names += _following(name, self.args.prefetch)
            for index, candidate in enumerate(names):
                if candidate in self.busy or os.path.exists(os.path.join(self.dir, candidate)):
                    continue
                self.submit(candidate, self.get_one, candidate, index == 0)
                started = True
        return started or bool(self.busy)

    def get_one(self, name: str, asked: bool) -> None:
        from drorch.engine import wal
        from drorch.errors import NotFoundError

        target = os.path.join(self.dir, name)
        try:
            wal.get(self.repo, self.args.source, name, target)
        except NotFoundError:
            if asked:
                _write(target + ".missing", "")
        finally:
            if asked:
                try:
                    os.unlink(target + ".want")
                except FileNotFoundError:
                    pass


def _following(name: str, count: int) -> list[str]:
    """The next `count` segment names on the same timeline (16 MiB segments)."""
    timeline, log, seg = int(name[:8], 16), int(name[8:16], 16), int(name[16:24], 16)
    out = []
    for _ in range(count):
        seg += 1
        if seg > 0xFF:
            log, seg = log + 1, 0
        out.append(f"{timeline:08X}{log:08X}{seg:08X}")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="drorch-wal-worker")
    parser.add_argument("mode", choices=["push", "get"])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--pg-wal", default="")
    parser.add_argument("--prefetch", type=int, default=8)
    args = parser.parse_args(argv)
    base = os.path.join(args.spool, args.source)
    os.makedirs(base, mode=0o700, exist_ok=True)
    with open(os.path.join(base, f"{args.mode}.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # another worker is running
        worker = Worker(args)
        try:
            worker.open()
        except Exception as exc:  # noqa: BLE001 - the fast path reports it to PostgreSQL
            message = getattr(exc, "message", None) or str(exc)
            _write(os.path.join(base, f"{args.mode}.fatal"), f"drorch wal worker cannot start: {message}")
            return 1
        worker.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
