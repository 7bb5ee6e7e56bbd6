"""The CLI contract later issues build on: list --json fields, show, exit
codes, pin/unpin and expire through the CLI."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime

from tests.conftest import write_policy

LIST_FIELDS = {"label", "source", "type", "parent", "status", "started", "finished", "files",
               "size_bytes", "stored_bytes"}


def _iso(text):
    assert text.endswith("Z")
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_list_json_fields(files_setup, drorch):
    data, repo, policy = files_setup
    (data / "a").write_bytes(b"a" * 10_000)
    (data / "sub").mkdir()
    (data / "sub" / "b").write_bytes(b"b" * 500)
    full = drorch("backup", "--policy", policy, "--type", "full", "--json").json()
    (data / "a").write_bytes(b"c" * 10_000)
    incr = drorch("backup", "--policy", policy, "--type", "incr", "--json").json()
    rows = drorch("list", "--policy", policy, "--json").json()
    assert len(rows) == 2
    for row in rows:
        assert LIST_FIELDS <= set(row)
        assert row["status"] == "ok" and row["source"] == "files1"
        assert _iso(row["started"]) <= _iso(row["finished"])
    first, second = rows
    assert (first["label"], first["type"], first["parent"]) == (full["label"], "full", None)
    assert (second["label"], second["type"], second["parent"]) == (incr["label"], "incr", full["label"])
    assert first["files"] == second["files"] == 2  # a and sub/b (directories are not files)
    assert first["size_bytes"] == second["size_bytes"] == 10_500
    assert first["stored_bytes"] > second["stored_bytes"] > 0


def test_show_human_and_json(files_setup, drorch):
    data, repo, policy = files_setup
    (data / "a").write_text("a")
    label = drorch("backup", "--policy", policy, "--type", "full", "--json").json()["label"]
    human = drorch("show", "--policy", policy, "--backup", label, "--files")
    assert human.code == 0 and label in human.out and "/a" in human.out
    shown = drorch("show", "--policy", policy, "--backup", label, "--json").json()
    assert shown["label"] == label and shown["manifest"]["kind"] == "files"
    missing = drorch("show", "--policy", policy, "--backup", "20000101T000000Z-F")
    assert missing.code == 1 and "no backup" in missing.err


def test_exit_codes(files_setup, drorch, tmp_path):
    data, repo, policy = files_setup
    assert drorch("backup", "--policy", policy, "--type", "weekly").code == 2  # bad usage
    unknown = drorch("backup", "--policy", policy, "--source", "nope")
    assert unknown.code == 2 and "no source named 'nope'" in unknown.err
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [oops\n")
    result = drorch("list", "--policy", bad)
    assert result.code == 2 and f"{bad}:" in result.err and "Traceback" not in result.err
    missing_path = write_policy(tmp_path / "p2.yaml", tmp_path / "repo2", [tmp_path / "does-not-exist"])
    failed = drorch("backup", "--policy", missing_path, "--type", "full")
    assert failed.code == 1 and "does not exist" in failed.err
    rows = drorch("list", "--policy", missing_path, "--all", "--json").json()
    assert rows[0]["status"] == "failed" and rows[0]["phase"] == "copy"


def test_console_script_runs_and_prints_help():
    result = subprocess.run([sys.executable, "-m", "drorch.cli.main", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Exit codes" in result.stdout


def test_expire_pin_and_dry_run(files_setup, drorch, tmp_path):
    data, repo, _ = files_setup
    policy = write_policy(tmp_path / "ret.yaml", repo, [data], retention="{full: 1}")
    labels = []
    for i, btype in enumerate(["full", "incr", "full", "incr"]):
        (data / "v").write_text(str(i))
        labels.append(drorch("backup", "--policy", policy, "--type", btype, "--json").json()["label"])
    f1, i1, f2, i2 = labels
    assert drorch("pin", "--policy", policy, "--backup", i1, "--reason", "audit").code == 0

    dry = drorch("expire", "--policy", policy, "--dry-run", "--json").json()[0]
    assert dry["expired"] == [] and {d["label"]: d["keep"] for d in dry["decisions"]} == dict.fromkeys(labels, True)
    assert drorch("unpin", "--policy", policy, "--backup", i1).code == 0
    dry = drorch("expire", "--policy", policy, "--dry-run", "--json").json()[0]
    assert dry["expired"] == [f1, i1]
    assert [r["label"] for r in drorch("list", "--policy", policy, "--json").json()] == labels  # dry: nothing gone

    human = drorch("expire", "--policy", policy)
    assert human.code == 0 and "removed 2 backup(s)" in human.out
    assert [r["label"] for r in drorch("list", "--policy", policy, "--json").json()] == [f2, i2]
    assert not (repo / "data" / "files1" / f1).exists()
    target = tmp_path / "t"
    assert drorch("restore", "--policy", policy, "--target", target).code == 0
    assert (target / str(data).lstrip("/") / "v").read_text() == "3"
