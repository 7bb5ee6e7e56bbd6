"""drorch vs restic on one generated file tree, in one run (see bench/files).

The tree: --files small files (log-normal sizes, median 4 KiB, at most 1 MiB)
in directories of about 50, plus --big large files of --big-mb MB; by bytes
about 40 % text-like, 30 % binary-like and 30 % incompressible content, every
file distinct (no duplicate data that one tool could deduplicate and the other
not).  Operations, each timed as one command: the initial backup, a re-backup
after --changed (1 %) of the files were modified, and a full restore; plus the
limit `tar -cf - TREE | zstd -3 -T2 >/dev/null`.  drorch to a posix directory
and to S3 (a moto server on 127.0.0.1), restic (zstd, --compression auto) to
a local repository and to the same moto endpoint.

drorch confirms files modified in the last 2 s by reading them twice (a file
changed within the file system's timestamp granularity must not be missed):
the tree settles for --settle seconds after each change, before any tool is
timed, so neither tool's figure includes that rule.  The page cache is warm for
every tool (the tree fits in memory); `sync` runs before each measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, MotoServer  # noqa: E402

MiB = 1 << 20
PASSWORD = "bench-password-not-secret"


# -- the tree --------------------------------------------------------------------------

class Content:
    """Distinct content of three kinds, made fast enough for a few GB."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        words = [rng.randbytes(rng.randint(1, 5)).hex().encode() for _ in range(256)]
        words[10] = b"\n"
        self.text_pool = b" ".join([words[b] for b in rng.randbytes(12 * MiB)])  # ~64 MB of "text"
        self.zeroing = bytes(b if b < 64 else 0 for b in range(256))

    def text(self, size: int) -> bytes:
        """Slices of a word pool at random offsets (zstd: about 0.3 of the size)."""
        parts, left = [], size
        while left > 0:
            n = min(left, self.rng.randint(4096, 65536))
            start = self.rng.randrange(len(self.text_pool) - n)
            parts.append(self.text_pool[start:start + n])
            left -= n
        return b"".join(parts)

    def binary(self, size: int) -> bytes:
        """Random bytes, three in four of them zero (zstd: about 0.4)."""
        return self.rng.randbytes(size).translate(self.zeroing)

    def random(self, size: int) -> bytes:
        return self.rng.randbytes(size)

    def any(self, size: int) -> bytes:
        kind = self.rng.random()
        return self.text(size) if kind < 0.4 else self.binary(size) if kind < 0.7 else self.random(size)


def small_size(rng: random.Random) -> int:
    return min(MiB, int(rng.lognormvariate(math.log(4096), 1.3)))


def generate(root: Path, files: int, big: int, big_mb: int, seed: int) -> tuple[int, int]:
    """Write the tree; returns (files, bytes)."""
    rng = random.Random(seed)
    content = Content(rng)
    per_dir = 50
    dirs = []
    for i in range(max(1, files // per_dir)):
        d = root / f"d{i // 40:03d}" / f"s{i % 40:02d}"
        d.mkdir(parents=True, exist_ok=True)
        dirs.append(d)
    total = 0
    for i in range(files):
        size = small_size(rng)
        (dirs[i % len(dirs)] / f"f{i:06d}.dat").write_bytes(content.any(size))
        total += size
    makers = [content.text, content.binary, content.random]
    for i in range(big):
        path = root / "big" / f"large{i}.bin"
        path.parent.mkdir(exist_ok=True)
        with open(path, "wb") as handle:
            for _ in range(big_mb):
                handle.write(makers[i % 3](MiB))
        total += big_mb * MiB
    return files + big, total


def mutate(root: Path, fraction: float, seed: int) -> int:
    """Modify about `fraction` of the files: rewrite small ones, overwrite 4 MiB
    in the middle of one large one.  Returns how many changed."""
    rng = random.Random(seed)
    content = Content(rng)
    paths = sorted(str(p) for p in root.rglob("*.dat"))
    bigs = sorted(root.glob("big/*.bin"))
    count = max(1, round(fraction * (len(paths) + len(bigs))))
    changed = 0
    if bigs:
        with open(bigs[0], "r+b") as handle:
            handle.seek(bigs[0].stat().st_size // 2)
            handle.write(content.binary(4 * MiB))
        changed += 1
    for path in rng.sample(paths, min(len(paths), count - changed)):
        Path(path).write_bytes(content.any(small_size(rng)))
        changed += 1
    return changed


def tree_stats(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(dirpath, name)).st_size
    return files, size


def settle(seconds: float) -> None:
    """Let every file age past drorch's 2 s "racily clean" window, and flush dirty pages."""
    subprocess.run(["sync"], check=True)
    time.sleep(seconds)


# -- measuring ----------------------------------------------------------------------------

class Run:
    """What one command cost: wall and CPU seconds, peak RSS in KiB."""

    def __init__(self, wall: float, cpu: float, rss: int):
        self.wall, self.cpu, self.rss = wall, cpu, rss


def measure(argv: list, env: dict | None = None) -> Run:
    """One command, timed by GNU time (peak RSS, user + system CPU seconds)."""
    subprocess.run(["sync"], check=True)
    start = time.monotonic()
    result = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", *map(str, argv)], capture_output=True,
                            text=True, env={**os.environ, **(env or {})})
    wall = time.monotonic() - start
    if result.returncode:
        raise SystemExit(f"failed: {' '.join(map(str, argv))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    rss, user, system = result.stderr.strip().splitlines()[-1].split()
    return Run(wall, float(user) + float(system), int(rss))


def du(path: Path) -> int:
    return sum(os.lstat(os.path.join(d, n)).st_size for d, _, names in os.walk(path) for n in names)


class Drorch:
    def __init__(self, name: str, work: Path, tree: Path, repo_yaml: str, stored):
        self.name, self.work, self.tree = name, work, tree
        self.exe = REPO / ".venv" / "bin" / "drorch"
        self.policy = work / f"{name}.yaml"
        self.policy.write_text(f"repositories:\n  bench: {repo_yaml}\n"
                               f"sources:\n  tree:\n    kind: files\n    repository: bench\n"
                               f"    paths: [{tree}]\n")
        self.stored = stored
        self.env = {"BENCH_S3_KEY": ACCESS_KEY, "BENCH_S3_SECRET": SECRET_KEY,
                    "DRORCH_BENCH_PASSPHRASE": PASSWORD}

    def backup(self, btype: str) -> Run:
        return measure([self.exe, "backup", "--policy", self.policy, "--source", "tree", "--type", btype,
                        "--json"], self.env)

    def restore(self, target: Path) -> Run:
        return measure([self.exe, "restore", "--policy", self.policy, "--source", "tree", "--target",
                        target, "--json"], self.env)


class Restic:
    def __init__(self, name: str, work: Path, tree: Path, repository: str, stored):
        self.name, self.work, self.tree = name, work, tree
        self.env = {"RESTIC_REPOSITORY": repository, "RESTIC_PASSWORD": PASSWORD,
                    "RESTIC_CACHE_DIR": str(work / f"{name}-cache"), "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}
        self.stored = stored
        measure(["restic", "init", "--repository-version", "2"], self.env)

    def backup(self, btype: str) -> Run:
        return measure(["restic", "backup", "--compression", "auto", "--quiet", self.tree], self.env)

    def restore(self, target: Path) -> Run:
        return measure(["restic", "restore", "latest", "--quiet", "--target", target], self.env)


def s3_stored(client, bucket: str, prefix: str):
    def stored() -> int:
        total = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            total += sum(obj["Size"] for obj in page.get("Contents", []))
        return total
    return stored


def check_restore(source: Path, restored: Path, expected: tuple[int, int], sample: int = 300) -> None:
    """Same count and bytes as the tree, and a sample of files identical."""
    got = tree_stats(restored)
    if got != expected:
        raise SystemExit(f"restore into {restored} holds {got} (files, bytes), the tree {expected}")
    rng = random.Random(7)
    paths = [p for p in source.rglob("*") if p.is_file()]
    for path in rng.sample(paths, min(sample, len(paths))) + list(source.glob("big/*")):
        if path.read_bytes() != (restored / path.relative_to(source)).read_bytes():
            raise SystemExit(f"restored {path} differs from the tree")


# -- the run ------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="drorch-bench-files-", dir=args.workdir))
        self.tree = self.work / "tree"
        self.runs: dict[tuple[str, str], list[dict]] = {}  # (operation, tool) -> one record per round
        self.moto: MotoServer | None = None

    def tools(self, round_: int) -> list:
        """Fresh repositories for one round, drorch and restic side by side per storage."""
        tools = []
        enc = ", encryption: {passphrase: \"${env:DRORCH_BENCH_PASSPHRASE}\"}"
        for variant in self.args.variants:
            if variant in ("posix", "posix-enc"):
                path = self.work / f"repo-drorch-{variant}-{round_}"
                extra = enc if variant == "posix-enc" else ""
                tools.append(Drorch(f"drorch {variant}", self.work, self.tree, f"{{type: posix, path: {path}{extra}}}",
                                    lambda p=path: du(p) if p.exists() else 0))
            elif variant == "s3":
                client, bucket = self.moto.client(), self.moto.bucket()
                tools.append(Drorch("drorch s3", self.work, self.tree,
                                    f"{{type: s3, bucket: {bucket}, prefix: drorch/, endpoint_url: '{self.moto.url}', "
                                    f"path_style: true, region: {REGION}, access_key_id: \"${{env:BENCH_S3_KEY}}\", "
                                    f"secret_access_key: \"${{env:BENCH_S3_SECRET}}\"}}",
                                    s3_stored(client, bucket, "drorch/")))
            if self.args.no_restic or variant not in ("posix", "s3"):
                continue
            if variant == "posix":
                path = self.work / f"repo-restic-{round_}"
                tools.append(Restic("restic posix", self.work, self.tree, str(path), lambda p=path: du(p)))
            else:
                client, bucket = self.moto.client(), self.moto.bucket()
                tools.append(Restic("restic s3", self.work, self.tree, f"s3:{self.moto.url}/{bucket}/restic",
                                    s3_stored(client, bucket, "restic/")))
        return tools

    def record(self, operation: str, tool: str, run: Run, stored: int = 0) -> None:
        self.runs.setdefault((operation, tool), []).append(
            {"seconds": run.wall, "cpu": run.cpu, "rss_kib": run.rss, "stored": stored,
             "mb_s": self.size / 1e6 / run.wall})
        print(f"  {operation:<15} {tool:<17} {run.wall:7.2f}s  cpu {run.cpu:6.2f}s  {run.rss / 1024:5.0f} MB RSS  "
              f"{stored / 1e6:8.1f} MB stored", flush=True)

    def limit(self) -> None:
        self.record("limit", "tar|zstd -3 -T2", measure(
            ["bash", "-c", f"set -o pipefail; tar -cf - -C {self.tree.parent} {self.tree.name} | zstd -3 -T2 >/dev/null"]))

    def backups(self, operation: str, btype: str, tools: list) -> None:
        for tool in tools:
            before = tool.stored()
            run = tool.backup(btype)
            self.record(operation, tool.name, run, tool.stored() - before)

    def restores(self, tools: list) -> None:
        # Restored trees are removed only after the last restore: ext4 skips inodes
        # freed in the last minutes when it creates files, so removing 100,000 files
        # just before a restore makes that restore pay for it.
        targets = []
        for tool in tools:
            target = self.work / f"restore-{tool.name.replace(' ', '-')}"
            self.record("restore", tool.name, tool.restore(target))
            check_restore(self.tree, target / str(self.tree).lstrip("/"), (self.files, self.size))
            targets.append(target)
        for target in targets:
            shutil.rmtree(target)

    def round(self, number: int) -> None:
        """Initial backup, re-backup after a change, restore: every tool, fresh repositories.
        Odd rounds take the tools in reverse order, so neither always goes first."""
        if "s3" in self.args.variants:
            self.moto = MotoServer().start()
        try:
            tools = self.tools(number)
            if number % 2:
                tools.reverse()
            print(f"round {number + 1} of {self.args.rounds}", flush=True)
            self.files, self.size = tree_stats(self.tree)
            self.limit()
            self.backups("initial backup", "full", tools)
            changed = mutate(self.tree, self.args.changed, self.args.seed + 1 + number)
            self.files, self.size = tree_stats(self.tree)
            print(f"changed {changed} files", flush=True)
            settle(self.args.settle)
            self.backups("re-backup", "incr", tools)
            self.restores(tools)
        finally:
            if self.moto:
                self.moto.stop()
                self.moto = None
            for repo in self.work.glob("repo-*"):
                shutil.rmtree(repo)
        settle(self.args.settle)

    def run(self) -> None:
        try:
            print(f"generating {self.args.files} small + {self.args.big} x {self.args.big_mb} MB files in "
                  f"{self.tree} ...", flush=True)
            generate(self.tree, self.args.files, self.args.big, self.args.big_mb, self.args.seed)
            settle(self.args.settle)
            for number in range(self.args.rounds):
                self.round(number)
            self.report()
        finally:
            if self.moto:
                self.moto.stop()
            if not self.args.keep:
                shutil.rmtree(self.work, ignore_errors=True)

    # -- the report -------------------------------------------------------------------------

    def best(self) -> dict[tuple[str, str], dict]:
        """Per operation and tool, the fastest round (peak RSS: the highest of all rounds)."""
        rows = {}
        for key, records in self.runs.items():
            rows[key] = {**min(records, key=lambda r: r["seconds"]), "rss_kib": max(r["rss_kib"] for r in records),
                         "rounds": [r["seconds"] for r in records]}
        return rows

    def report(self) -> None:
        rows = self.best()
        print(f"\ntree: {self.files} files, {self.size / 1e6:.0f} MB; re-backup after {self.args.changed:.0%} of the "
              f"files changed; best of {self.args.rounds} round(s); MB/s = tree size / seconds\n")
        print(f"{'operation':<15} {'tool':<17} {'seconds':>8} {'CPU s':>7} {'MB/s':>6} {'stored MB':>10} "
              f"{'peak RSS':>9} {'time vs restic':>15} {'CPU vs restic':>14} {'vs limit':>9}")
        limit = rows.get(("limit", "tar|zstd -3 -T2"))
        for (operation, tool), row in sorted(rows.items(), key=lambda kv: OPERATIONS.index(kv[0][0])):
            ratio = cpu_ratio = vs_limit = ""
            restic = rows.get((operation, f"restic {'s3' if tool.endswith('s3') else 'posix'}"))
            if tool.startswith("drorch") and restic:
                ratio = f"{row['seconds'] / restic['seconds']:.2f}x"
                cpu_ratio = f"{row['cpu'] / restic['cpu']:.2f}x"
            if limit and operation == "initial backup":
                vs_limit = f"{row['mb_s'] / limit['mb_s']:.0%}"
            stored = f"{row['stored'] / 1e6:.1f}" if row["stored"] else "-"
            rss = f"{row['rss_kib'] / 1024:.0f} MB" if tool != "tar|zstd -3 -T2" else "-"
            print(f"{operation:<15} {tool:<17} {row['seconds']:>8.2f} {row['cpu']:>7.1f} {row['mb_s']:>6.0f} "
                  f"{stored:>10} {rss:>9} {ratio:>15} {cpu_ratio:>14} {vs_limit:>9}")
        print("\ntime (CPU) vs restic: drorch's wall (user + system CPU) seconds / restic's: below 1.00x drorch is"
              "\nfaster (uses less CPU); vs limit: drorch MB/s as a share of tar|zstd's (same round's best).")
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(
                {"files": self.files, "bytes": self.size, "args": vars(self.args),
                 "rows": [{"operation": o, "tool": t, **r} for (o, t), r in rows.items()]}, indent=1))


OPERATIONS = ["limit", "initial backup", "re-backup", "restore"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000, help="small files (default 100000)")
    parser.add_argument("--big", type=int, default=4, help="large files (default 4)")
    parser.add_argument("--big-mb", type=int, default=160, help="size of each large file in MB (default 160)")
    parser.add_argument("--quick", action="store_true", help="a small tree: 10000 files, 2 x 32 MB")
    parser.add_argument("--changed", type=float, default=0.01, help="share of files changed (default 0.01)")
    parser.add_argument("--variants", default="posix,s3",
                        help="comma-separated: posix, posix-enc (drorch encrypted), s3 (default posix,s3)")
    parser.add_argument("--no-restic", action="store_true", help="drorch only (while tuning)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat everything with fresh repositories; the fastest round counts (default 1)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds the tree rests after each change")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="where the tree and repositories go (default: $TMPDIR)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if args.quick:
        args.files, args.big, args.big_mb = 10_000, 2, 32
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not args.no_restic and not shutil.which("restic"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "restic"], check=True)
    for tool in ("zstd", "tar"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install {tool}")
    Bench(args).run()


if __name__ == "__main__":
    main()
