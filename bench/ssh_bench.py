"""bench/ssh: drorch's SSH layer beside OpenSSH (see bench/ssh)."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drorch.engine.memory import gc_paused  # noqa: E402
from drorch.factory import close_hosts, make_host, ssh_config  # noqa: E402
from drorch.hosts.remote import SshHost  # noqa: E402
from drorch.policy import load_policy  # noqa: E402
from tests.conftest import invoke  # noqa: E402
from tests.sshd import make_setup, scratch_dir, write_remote_policy  # noqa: E402

MiB = 1 << 20
BENCH_USER = "drorch-bench"


def login_user(name: str) -> bool:
    """Make the account both tools log in as, if missing: by default a plain one
    for the bench (bash with Debian's default rc files, as a service account
    has).  The machine's root runs `pyenv init` in its .bashrc, which bash reads
    for every SSH session (≈ 0.1 s of CPU each): one for `ssh host tar`, one
    per shell drorch opens (2-3), which would measure root's rc file, not the
    tools.  True if it was made here (then removed at the end)."""
    if subprocess.run(["id", name], capture_output=True).returncode == 0:
        return False
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    subprocess.run(["usermod", "-p", "*", name], check=True)  # not locked; no password: key login only
    return True


def best(repeat: int, run) -> float:
    """The fastest of `repeat` runs, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def make_data(root: Path, large_mb: int, files: int) -> tuple[Path, Path, int]:
    large = root / "large.bin"
    with open(large, "wb") as handle:
        for _ in range(large_mb):
            handle.write(os.urandom(MiB))
    tree = root / "tree"
    rng = random.Random(1)
    total = 0
    for i in range(files):
        directory = tree / f"d{i // 200:03}"
        directory.mkdir(parents=True, exist_ok=True)
        size = rng.randrange(0, 8192)
        (directory / f"f{i:06}").write_bytes(rng.randbytes(size))
        total += size
    return large, tree, total


def openssh(setup, command: str) -> None:
    server = setup.server
    subprocess.run(f"ssh -q -i {setup.client_key} -o UserKnownHostsFile={setup.known_hosts} "
                   f"-o BatchMode=yes -p {server.port} {server.user}@{server.address} {command} "
                   "2>/dev/null | cat > /dev/null", shell=True, check=True)


def read_large(host, path: Path, size: int) -> None:
    """As the backup pipeline reads a large file: read_unit requests from several threads."""
    unit = host.read_unit
    with gc_paused(), ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as pool:
        got = sum(pool.map(lambda off: len(host.read(str(path), off, min(unit, size - off))),
                           range(0, size, unit)))
    assert got == size, (got, size)


def read_tree(host, tree: Path, files: int) -> None:
    """As the pipeline reads small files: a walk, then batches of host.read_batch
    (files, bytes), each sent to the host as soon as it is known (start_read_many);
    with the GIL switch interval and GC setting a backup runs with (gc_paused).
    `files`: how many the tree has (counted before, outside the time taken)."""
    with gc_paused():
        got = _read_tree(host, tree)
    assert got == files, (got, files)


def login_and_read_tree(policy, tree: Path, files: int) -> None:
    """read_tree on a new connection (log in, start a shell, then read), as
    OpenSSH's `ssh host tar` logs in for its one command."""
    host = SshHost(ssh_config(load_policy(policy), "remote"))
    try:
        host.connect()
        read_tree(host, tree, files)
    finally:
        host.close()


def _read_tree(host, tree: Path) -> int:
    most_files, most_bytes = host.read_batch
    pending, batch, nbytes = [], [], 0
    for path, st, _ in host.walk(str(tree), lambda p, d: False):
        if st.st_mode & 0o170000 == 0o100000:
            batch.append(path)
            nbytes += st.st_size
            if len(batch) >= most_files or nbytes >= most_bytes:
                pending.append(host.start_read_many(batch, MiB + 1))
                batch, nbytes = [], 0
    if batch:
        pending.append(host.start_read_many(batch, MiB + 1))
    return sum(len(answer()) for answer in pending)


def backup(policy: Path, source: str) -> None:
    result = invoke("backup", "--policy", policy, "--source", source, "--type", "full", "--json")
    assert result.code == 0, result.err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--large-mb", type=int, default=512)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--login-user", default=BENCH_USER,
                        help=f"log in as this user (default {BENCH_USER}, made if missing; the data is world-readable)")
    args = parser.parse_args()
    made_user = login_user(args.login_user)
    work = scratch_dir("drorch-bench-ssh-")
    setup = make_setup(work / "ssh")
    setup.server.user = args.login_user
    try:
        large, tree, tree_bytes = make_data(work, args.large_mb, args.files)
        size = large.stat().st_size
        repo = work / "repo"
        policy = write_remote_policy(work / "policy.yaml", repo, setup, [large], source="large-ssh",
                                     more_sources=f"""\
            tree-ssh: {{kind: files, host: remote, repository: local, paths: [{tree}]}}
            large-local: {{kind: files, repository: local, paths: [{large}]}}
            tree-local: {{kind: files, repository: local, paths: [{tree}]}}
            """)
        host = make_host(load_policy(policy), "remote")
        host.connect()
        rows = []

        def row(what, seconds, nbytes, files=None, openssh_seconds=None):
            rate = f"{nbytes / MiB / seconds:8.1f} MiB/s" if nbytes else " " * 13
            ratio = f"  {seconds / openssh_seconds:4.2f}x OpenSSH's time" if openssh_seconds else ""
            rows.append((what, f"{seconds:7.2f} s", rate,
                         (f"{files / seconds:8.0f} files/s" if files else "") + ratio))

        row(f"OpenSSH: ssh host cat FILE ({args.large_mb} MiB)",
            best(args.repeat, lambda: openssh(setup, f"cat {large}")), size)
        row("drorch SSH host: read FILE as the pipeline does",
            best(args.repeat, lambda: read_large(host, large, size)), size)
        row("drorch backup (full) of FILE over SSH", best(args.repeat, lambda: backup(policy, "large-ssh")), size)
        row("drorch backup (full) of FILE, local (no SSH)",
            best(args.repeat, lambda: backup(policy, "large-local")), size)
        tar = best(args.repeat, lambda: openssh(setup, f"tar -cf - {tree}"))
        row(f"OpenSSH: ssh host tar -cf - DIR | cat ({args.files} files)", tar, tree_bytes, args.files)
        login = best(args.repeat, lambda: openssh(setup, "true"))
        row("  (of which OpenSSH login: ssh host true)", login, 0)
        row("drorch SSH host: log in, walk + batched reads of DIR",
            best(args.repeat, lambda: login_and_read_tree(policy, tree, args.files)), tree_bytes, args.files, tar)
        row("  the same, logged in already (beside OpenSSH's time less its login)",
            best(args.repeat, lambda: read_tree(host, tree, args.files)), tree_bytes, args.files, tar - login)
        row("drorch backup (full) of DIR over SSH", best(args.repeat, lambda: backup(policy, "tree-ssh")),
            tree_bytes, args.files, tar)
        row("drorch backup (full) of DIR, local (no SSH)",
            best(args.repeat, lambda: backup(policy, "tree-local")), tree_bytes, args.files, tar)
        close_hosts()
        width = max(len(r[0]) for r in rows)
        print(f"sshd on 127.0.0.1, {os.cpu_count()} cores, best of {args.repeat}, login as {setup.server.user}; "
              f"tree: {args.files} files, {tree_bytes / MiB:.1f} MiB")
        for what, seconds, rate, files in rows:
            print(f"  {what.ljust(width)}  {seconds}  {rate}  {files}")
    finally:
        close_hosts()
        setup.server.stop()
        shutil.rmtree(work, ignore_errors=True)
        if made_user:
            subprocess.run(["userdel", "--remove", args.login_user], capture_output=True)


if __name__ == "__main__":
    main()
