"""drorch vs pgBackRest on one PostgreSQL 15 cluster, in one run (see bench/postgres).

Data: pgbench at --scale (default 100, about 1.5 GB) plus --random-mb of
incompressible rows.  Both tools archive every WAL segment (one archive_command
calls both), back up the same cluster with zstd level 3 and 2 processes, and
restore into fresh directories.  Two change workloads between backups: uniform
(pgbench's own, touching most pages) and skewed (zipfian updates plus
time-ordered inserts).  Prints wall seconds, stored bytes, peak RSS and ratios
drorch/pgBackRest.  Run as root on a machine like CI's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.pg import BIN, Cluster, as_postgres, shared_tmpdir  # noqa: E402
from tests.runtime import drorch_runtime  # noqa: E402

SKEWED = """\
\\set aid random_zipfian(1, 100000 * :scale, 1.1)
\\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
INSERT INTO events (at, payload) VALUES (clock_timestamp(), md5(random()::text));
"""


def measure_rss(argv, user=None) -> tuple[float, int, subprocess.CompletedProcess]:
    """Wall seconds and peak RSS (KiB) of one command, via GNU time."""
    start = time.monotonic()
    kwargs = {"user": user, "group": user, "extra_groups": []} if user else {}
    result = subprocess.run(["/usr/bin/time", "-f", "%M", *[str(a) for a in argv]], capture_output=True,
                            text=True, env={**os.environ, "HOME": "/var/lib/postgresql" if user else "/root"},
                            **kwargs)
    wall = time.monotonic() - start
    if result.returncode:
        raise SystemExit(f"failed: {' '.join(map(str, argv))}\n{result.stdout}\n{result.stderr}")
    rss = int(result.stderr.strip().splitlines()[-1])
    return wall, rss, result


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Bench:
    def __init__(self, args):
        self.args = args
        self.base = shared_tmpdir("drorch-bench-pg-")
        self.runtime = drorch_runtime()
        self.drorch = [str(REPO / ".venv" / "bin" / "drorch")]
        self.cluster = Cluster(self.base, "pgdata")
        self.policy = self.base / "policy.yaml"
        self.pgbr_conf = self.base / "pgbackrest.conf"
        self.pgbr_repo = self.base / "pgbackrest-repo"
        self.rows: list[tuple] = []

    def setup(self) -> None:
        self.pgbr_repo.mkdir()
        shutil.chown(self.pgbr_repo, "postgres", "postgres")
        self.pgbr_conf.write_text(
            f"[global]\nrepo1-path={self.pgbr_repo}\ncompress-type=zst\ncompress-level=3\nprocess-max=2\n"
            f"log-level-console=warn\nlog-path={self.base}\nlock-path={self.base}\nstart-fast=y\n"
            f"repo1-retention-full=10\narchive-check=y\n\n"
            f"[bench]\npg1-path={self.cluster.pgdata}\npg1-port={self.cluster.port}\npg1-socket-path={self.cluster.pgdata}\n")
        self.policy.write_text(
            f"repositories:\n  local: {{type: posix, path: {self.base / 'drorch-repo'}, group: postgres, "
            f"compression: {{level: 3}}}}\n"
            f"sources:\n  bench:\n    kind: postgres\n    repository: local\n    pgdata: {self.cluster.pgdata}\n"
            f"    connection: {{host: 127.0.0.1, port: {self.cluster.port}, user: postgres}}\n"
            f"    drorch_command: {self.runtime}\n    archive: {{timeout: 300s}}\n")
        archive = (f"'pgbackrest --config={self.pgbr_conf} --stanza=bench archive-push %p && "
                   f"{self.runtime} wal-push --policy {self.policy} --source bench %p'")
        self.cluster.init(archive_mode="on", archive_command=archive, max_wal_size="4GB",
                          checkpoint_timeout="30min", shared_buffers="256MB")
        self.cluster.start()
        print(f"loading pgbench scale {self.args.scale} and {self.args.random_mb} MB of random rows ...", flush=True)
        self.cluster.pgbench("-i", "-s", str(self.args.scale), "-q")
        rows = self.args.random_mb * 1024 * 1024 // 512
        self.cluster.sql("CREATE TABLE noise (id int, payload bytea)")
        self.cluster.sql("ALTER TABLE noise ALTER payload SET STORAGE EXTERNAL")  # no pglz on random bytes
        for start in range(0, rows, 200_000):
            self.cluster.sql("INSERT INTO noise SELECT g, decode(string_agg(md5(g::text || random()::text), ''), "
                             "'hex') FROM generate_series(%s, %s) g, generate_series(1, 16) s GROUP BY g",
                             start + 1, min(rows, start + 200_000))
        self.cluster.sql("CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz, payload text)")
        # Settle hint bits and the visibility map now: otherwise whichever tool backs up
        # first sees pages that change again right after, and the comparison is unfair.
        self.cluster.sql("VACUUM (FREEZE, ANALYZE)")
        self.cluster.sql("CHECKPOINT")
        size = self.cluster.scalar("SELECT pg_database_size('postgres')")
        print(f"database size {size / 1e9:.2f} GB", flush=True)
        as_postgres(["pgbackrest", f"--config={self.pgbr_conf}", "--stanza=bench", "stanza-create"])

    # -- the two tools ---------------------------------------------------------

    def drorch_backup(self, btype: str) -> tuple[float, int, int]:
        wall, rss, result = measure_rss([*self.drorch, "backup", "--policy", self.policy, "--source", "bench",
                                         "--type", btype, "--json"])
        return wall, rss, json.loads(result.stdout)["stats"]["stored_bytes"]

    def pgbr_backup(self, btype: str) -> tuple[float, int, int]:
        before = set(p.name for p in (self.pgbr_repo / "backup" / "bench").glob("2*"))
        wall, rss, _ = measure_rss(["pgbackrest", f"--config={self.pgbr_conf}", "--stanza=bench",
                                    f"--type={btype}", "backup"], user="postgres")
        new = [p for p in (self.pgbr_repo / "backup" / "bench").glob("2*") if p.name not in before]
        return wall, rss, du(new[0])

    def drain_archive(self) -> None:
        """Wait until every WAL segment so far is archived (by both tools): a backup
        must not pay for a backlog the workload left behind."""
        self.cluster.sql("SELECT pg_switch_wal()")
        status = self.cluster.pgdata / "pg_wal" / "archive_status"
        while any(status.glob("*.ready")):
            time.sleep(0.5)

    def compare(self, what: str, btype: str) -> None:
        self.drain_archive()
        d = self.drorch_backup(btype)
        self.drain_archive()
        p = self.pgbr_backup(btype)
        self.rows.append((what, d, p))
        print(f"  {what}: drorch {d[0]:.1f}s {d[2] / 1e6:.0f} MB | pgBackRest {p[0]:.1f}s {p[2] / 1e6:.0f} MB",
              flush=True)

    def restore(self) -> None:
        target = self.base / "restore-drorch"
        d = measure_rss([*self.drorch, "restore", "--policy", self.policy, "--source", "bench", "--target", target])
        target2 = self.base / "restore-pgbr"
        target2.mkdir(mode=0o700)
        shutil.chown(target2, "postgres", "postgres")
        p = measure_rss(["pgbackrest", f"--config={self.pgbr_conf}", "--stanza=bench", f"--pg1-path={target2}",
                         "restore"], user="postgres")
        self.rows.append(("restore (latest)", (d[0], d[1], du(target)), (p[0], p[1], du(target2))))
        print(f"  restore: drorch {d[0]:.1f}s | pgBackRest {p[0]:.1f}s", flush=True)

    def workload(self, kind: str) -> None:
        if kind == "uniform":
            self.cluster.pgbench("-n", "-c", "2", "-T", str(self.args.seconds))
        else:
            script = self.base / "skewed.sql"
            script.write_text(SKEWED)
            shutil.chown(script, "postgres", "postgres")
            self.cluster.pgbench("-n", "-c", "2", "-T", str(self.args.seconds), "-f", script)

    def wal_latency(self) -> None:
        """Per-segment archive-push / archive-get, one process per segment (as PostgreSQL
        calls them), into fresh archives: drorch synchronous and --async, pgBackRest."""
        pg_wal = self.base / "scratch-pg_wal"
        (pg_wal / "archive_status").mkdir(parents=True)
        for segment in sorted(p for p in (self.cluster.pgdata / "pg_wal").glob("0*")
                              if len(p.name) == 24)[: self.args.segments]:
            shutil.copy(segment, pg_wal / segment.name)
            (pg_wal / "archive_status" / f"{segment.name}.ready").touch()
        subprocess.run(["chown", "-R", "postgres:postgres", str(pg_wal)], check=True)
        segments = sorted(p for p in pg_wal.glob("0*"))
        scratch = self.base / "scratch"
        scratch.mkdir()
        shutil.chown(scratch, "postgres", "postgres")
        policy = scratch / "policy.yaml"
        text = self.policy.read_text().replace(str(self.base / "drorch-repo"), str(scratch / "drorch"))
        policy.write_text(text + text[text.index("  bench:"):].replace("  bench:", "  abench:"))
        conf = scratch / "pgbackrest.conf"
        conf.write_text(self.pgbr_conf.read_text().replace(str(self.pgbr_repo), str(scratch / "pgbr")))
        as_postgres(["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"])
        out = scratch / "got"
        out.mkdir()
        shutil.chown(out, "postgres", "postgres")
        spool = scratch / "spool"
        spool.mkdir()
        shutil.chown(spool, "postgres", "postgres")
        results = {}
        for tool, push, get in (
            ("drorch --async", lambda s: [self.runtime, "wal-push", "--async", "--spool", spool, "--policy", policy,
                                          "--source", "abench", s],
             lambda n: [self.runtime, "wal-get", "--async", "--spool", spool, "--policy", policy, "--source",
                        "abench", n, out / n]),
            ("drorch", lambda s: [self.runtime, "wal-push", "--policy", policy, "--source", "bench", s],
             lambda n: [self.runtime, "wal-get", "--policy", policy, "--source", "bench", n, out / n]),
            ("pgBackRest", lambda s: ["pgbackrest", f"--config={conf}", "--stanza=bench", "archive-push", s],
             lambda n: ["pgbackrest", f"--config={conf}", "--stanza=bench", "archive-get", n, out / n]),
        ):
            for ready in (pg_wal / "archive_status").glob("*.done"):
                ready.rename(ready.with_suffix(".ready"))
            start = time.monotonic()
            for segment in segments:  # as PostgreSQL's archiver: one call after another, .ready -> .done
                as_postgres(push(segment), cwd=pg_wal)
                status = pg_wal / "archive_status" / f"{segment.name}.ready"
                status.rename(status.with_suffix(".done"))
            pushed = (time.monotonic() - start) / len(segments)
            start = time.monotonic()
            for segment in segments:
                as_postgres(get(segment.name))
            got = (time.monotonic() - start) / len(segments)
            results[tool] = (pushed, got)
        d, a, p = results["drorch"], results["drorch --async"], results["pgBackRest"]
        self.rows.append(("wal-push per segment", (d[0], 0, 0), (p[0], 0, 0)))
        self.rows.append(("wal-push --async per seg", (a[0], 0, 0), (p[0], 0, 0)))
        self.rows.append(("wal-get per segment", (d[1], 0, 0), (p[1], 0, 0)))
        self.rows.append(("wal-get --async per seg", (a[1], 0, 0), (p[1], 0, 0)))

    # -- report ------------------------------------------------------------------

    def report(self) -> None:
        print()
        print(f"{'operation':<26} {'drorch s':>9} {'pgBR s':>8} {'time':>6}   {'drorch MB':>10} {'pgBR MB':>9} "
              f"{'bytes':>6}   {'drorch RSS':>10} {'pgBR RSS':>9}")
        for what, d, p in self.rows:
            t = d[0] / p[0] if p[0] else float("nan")
            b = f"{d[2] / p[2]:.2f}x" if p[2] else "-"
            print(f"{what:<26} {d[0]:>9.3f} {p[0]:>8.3f} {t:>5.2f}x   {d[2] / 1e6:>10.1f} {p[2] / 1e6:>9.1f} "
                  f"{b:>6}   {d[1] / 1024:>8.0f}MB {p[1] / 1024:>7.0f}MB")
        print("\ntime and bytes are drorch/pgBackRest: below 1.00x drorch is faster / smaller.")

    def run(self) -> None:
        try:
            self.setup()
            print("full backups ...", flush=True)
            self.compare("full", "full")
            print(f"uniform workload (pgbench -T {self.args.seconds}) ...", flush=True)
            self.workload("uniform")
            self.compare("incr after uniform", "incr")
            print(f"skewed workload (zipfian, {self.args.seconds}s) ...", flush=True)
            self.workload("skewed")
            self.compare("incr after skewed", "incr")
            self.compare("diff", "diff")
            self.restore()
            self.wal_latency()
            self.report()
        finally:
            self.cluster.kill()
            if not self.args.keep:
                shutil.rmtree(self.base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=100, help="pgbench scale (100: about 1.5 GB)")
    parser.add_argument("--random-mb", type=int, default=512, help="MB of incompressible rows")
    parser.add_argument("--seconds", type=int, default=30, help="length of each change workload")
    parser.add_argument("--segments", type=int, default=20, help="WAL segments for the push/get latency")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (it starts PostgreSQL as the postgres user)")
    if not shutil.which("pgbackrest"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "pgbackrest"], check=True)
    Bench(args).run()


if __name__ == "__main__":
    main()
