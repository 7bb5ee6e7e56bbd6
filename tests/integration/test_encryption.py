"""Encryption at rest through the CLI: round trip of a chain, wrong passphrases
refused cleanly, passphrase changes, nothing of the source readable in the
repository, and blobs that cannot be swapped unnoticed."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests import treegen
from tests.multirepo import SOURCE, every_byte, fast_kdf, run_cli, tree_state, write_policy  # noqa: F401

CHAIN = ["full", "incr", "diff", "incr"]
SECRET_CONTENT = b"XYZZY-distinctive-content-0451"


@pytest.fixture
def sealed(tmp_path, monkeypatch, fast_kdf):
    """A data tree, an encrypted repository and its policy (passphrase in $PW)."""
    monkeypatch.setenv("PW", "first passphrase")
    data = tmp_path / "data"
    data.mkdir()
    repo = tmp_path / "repo"
    policy = write_policy(tmp_path / "policy.yaml", data, {"main": (repo, "PW")}, main="main")
    return data, repo, policy


def backup_chain(drorch, policy, data, seed, chain=CHAIN) -> dict:
    expected = {}
    for step, btype in enumerate(chain):
        if step:
            treegen.mutate(data, seed * 100 + step)
        result = drorch("backup", "--policy", policy, "--type", btype, "--json")
        assert result.code == 0, result.err
        assert result.json()["type"] == btype
        expected[result.json()["label"]] = treegen.snapshot(data)
    return expected


def restores_exactly(drorch, policy, data, expected, target_root, *extra):
    for label, snap in expected.items():
        target = target_root / f"restore-{label}"
        result = drorch("restore", "--policy", policy, "--backup", label, "--target", target, *extra)
        assert result.code == 0, result.err
        assert treegen.diff(snap, treegen.snapshot(target / str(data).lstrip("/"))) == [], label


def test_every_backup_of_an_encrypted_chain_restores_exactly(sealed, drorch, tmp_path):
    data, repo, policy = sealed
    treegen.generate(data, seed=11)
    expected = backup_chain(drorch, policy, data, 11)
    listed = drorch("list", "--policy", policy, "--json").json()
    assert [(r["label"], r["type"]) for r in listed] == list(zip(expected, CHAIN))
    restores_exactly(drorch, policy, data, expected, tmp_path)
    shown = drorch("show", "--policy", policy, "--backup", listed[1]["label"], "--files", "--json")
    assert shown.code == 0 and shown.json()["manifest"]["parent"] == listed[0]["label"]
    config = json.loads((repo / "config").read_bytes())
    assert config["version"] == 2 and config["encryption"]["kdf"]["algorithm"] == "scrypt"


def test_the_default_kdf_cost_is_recorded_and_used(tmp_path, drorch, monkeypatch):
    monkeypatch.setenv("PW", "pw")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_text("x")
    policy = write_policy(tmp_path / "p.yaml", tmp_path / "data", {"main": (tmp_path / "repo", "PW")},
                          main="main")
    assert drorch("backup", "--policy", policy).code == 0
    kdf = json.loads((tmp_path / "repo" / "config").read_bytes())["encryption"]["kdf"]
    assert (kdf["n"], kdf["r"], kdf["p"]) == (1 << 17, 8, 1)
    assert drorch("list", "--policy", policy).code == 0


# -- nothing readable ------------------------------------------------------------------------


def needles(data) -> set[bytes]:
    """Names of the tree (every path component of 5 bytes or more) and known contents."""
    names = set()
    for dirpath, dirnames, filenames in os.walk(os.fsencode(data)):
        names |= {n for n in dirnames + filenames if len(n) >= 5}
    return names | {SECRET_CONTENT, os.fsencode(data)}


def _seed_secrets(data, drorch, policy, tmp_path):
    treegen.generate(data, seed=5)
    # the distinctive string amid random bytes: it would be stored as is without encryption
    (data / "plugh-secret-name.bin").write_bytes(os.urandom(3000) + SECRET_CONTENT + os.urandom(3000))
    expected = backup_chain(drorch, policy, data, 5, ["full", "incr"])
    label = next(iter(expected))
    pin = drorch("pin", "--policy", policy, "--backup", label, "--reason", "keep plugh-secret-name.bin")
    assert pin.code == 0, pin.err
    # a failed run whose error names a path of the source
    (data / "plugh-secret-name.bin").unlink()
    broken = tmp_path / "broken.yaml"
    broken.write_text(policy.read_text().replace(f"paths: [{data}]", f"paths: [{data}/plugh-secret-name.bin]"))
    failed = drorch("backup", "--policy", broken)
    assert failed.code == 1 and "plugh-secret-name.bin" in failed.err
    runs = drorch("list", "--policy", policy, "--all", "--json").json()
    assert any("plugh-secret-name.bin" in (r.get("error") or "") for r in runs)  # still readable with the key
    return needles(data) | {b"plugh-secret-name"}


def test_nothing_of_the_source_is_readable_in_an_encrypted_repository(sealed, drorch, tmp_path):
    data, repo, policy = sealed
    wanted = _seed_secrets(data, drorch, policy, tmp_path)
    assert len(wanted) > 30
    found = [(needle, path) for path, blob in every_byte(repo) for needle in wanted if needle in blob]
    assert found == []


def test_the_search_finds_the_source_in_an_unencrypted_repository(tmp_path, drorch):
    """The same search does find what it looks for when the repository is not encrypted."""
    data = tmp_path / "data"
    data.mkdir()
    repo = tmp_path / "repo"
    policy = write_policy(tmp_path / "policy.yaml", data, {"main": (repo, None)}, main="main")
    _seed_secrets(data, drorch, policy, tmp_path)
    blobs = b"".join(blob for _, blob in every_byte(repo))
    assert SECRET_CONTENT in blobs and b"plugh-secret-name" in blobs


# -- wrong passphrases --------------------------------------------------------------------


def test_a_wrong_passphrase_is_refused_clearly_and_writes_nothing(sealed, drorch, tmp_path, monkeypatch):
    data, repo, policy = sealed
    treegen.generate(data, seed=3, files=20, big=0)
    label = drorch("backup", "--policy", policy, "--type", "full", "--json").json()["label"]
    before = tree_state(repo)
    monkeypatch.setenv("PW", "not the passphrase")
    monkeypatch.setenv("NEW", "whatever")
    target = tmp_path / "restore"
    for args in (["list"], ["list", "--all", "--json"], ["show", "--backup", label, "--files"],
                 ["restore", "--target", target], ["backup", "--type", "full"], ["backup"], ["expire"],
                 ["pin", "--backup", label], ["repo", "init"],
                 ["repo", "passwd", "--new-passphrase-from", "env:NEW"]):
        result = drorch(*args[:1], "--policy", policy, *args[1:]) if args[0] != "repo" else \
            drorch("repo", args[1], "--policy", policy, *args[2:])
        assert result.code == 1, (args, result.out, result.err)
        assert "wrong passphrase" in result.err and "Traceback" not in result.err, args
        assert result.out == "", args
    assert tree_state(repo) == before
    assert not target.exists()


def test_a_missing_passphrase_secret_is_a_clear_error(sealed, drorch, monkeypatch):
    data, repo, policy = sealed
    (data / "f").write_text("x")
    assert drorch("backup", "--policy", policy).code == 0
    monkeypatch.delenv("PW")
    result = drorch("list", "--policy", policy)
    assert result.code == 1 and "PW is not set" in result.err and "Traceback" not in result.err


# -- passphrase changes ------------------------------------------------------------------


def test_a_passphrase_change_keeps_old_backups_and_retires_the_old_passphrase(sealed, drorch, tmp_path,
                                                                               monkeypatch):
    data, repo, policy = sealed
    treegen.generate(data, seed=8, files=30, big=1)
    expected = backup_chain(drorch, policy, data, 8, ["full", "incr"])
    data_objects = {k: v for k, v in tree_state(repo).items() if k != "config"}

    monkeypatch.setenv("NEW", "second passphrase")
    changed = drorch("repo", "passwd", "--policy", policy, "--new-passphrase-from", "env:NEW")
    assert changed.code == 0, changed.err
    assert "${env:PW}" in changed.out  # tells which secret to update
    assert {k: v for k, v in tree_state(repo).items() if k != "config"} == data_objects  # nothing rewritten

    old = drorch("list", "--policy", policy)
    assert old.code == 1 and "wrong passphrase" in old.err
    monkeypatch.setenv("PW", "second passphrase")
    restores_exactly(drorch, policy, data, expected, tmp_path)
    more = backup_chain(drorch, policy, data, 9, ["incr"])  # and backups go on
    restores_exactly(drorch, policy, data, more, tmp_path / "after")

    secret_file = tmp_path / "third"
    secret_file.write_text("third passphrase\n")
    again = drorch("repo", "passwd", "--policy", policy, "--new-passphrase-from", f"file:{secret_file}")
    assert again.code == 0, again.err
    assert drorch("list", "--policy", policy).code == 1
    monkeypatch.setenv("PW", "third passphrase")
    assert len(drorch("list", "--policy", policy, "--json").json()) == 3


def test_passwd_without_a_new_passphrase_or_a_terminal_is_a_usage_error(sealed, drorch):
    data, repo, policy = sealed
    (data / "f").write_text("x")
    assert drorch("backup", "--policy", policy).code == 0
    before = tree_state(repo)
    result = drorch("repo", "passwd", "--policy", policy)
    assert result.code == 2 and "--new-passphrase-from" in result.err
    bad = drorch("repo", "passwd", "--policy", policy, "--new-passphrase-from", "literal-secret")
    assert bad.code == 2 and "env:NAME or file:/path" in bad.err
    assert "literal-secret" not in bad.err  # a secret given by mistake is not echoed
    assert tree_state(repo) == before


def test_passwd_on_an_unencrypted_repository_is_refused(files_setup, drorch, monkeypatch):
    data, repo, policy = files_setup
    (data / "f").write_text("x")
    assert drorch("backup", "--policy", policy).code == 0
    monkeypatch.setenv("NEW", "n")
    result = drorch("repo", "passwd", "--policy", policy, "--new-passphrase-from", "env:NEW")
    assert result.code == 1 and "not encrypted" in result.err


# -- policy and repository must agree -------------------------------------------------


def test_encrypting_or_decrypting_an_existing_repository_is_refused(tmp_path, drorch, monkeypatch, fast_kdf):
    monkeypatch.setenv("PW", "pw")
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("x")
    plain = write_policy(tmp_path / "plain.yaml", data, {"main": (tmp_path / "repo", None)}, main="main")
    sealed = write_policy(tmp_path / "sealed.yaml", data, {"main": (tmp_path / "repo", "PW")}, main="main")
    assert drorch("backup", "--policy", plain).code == 0
    before = tree_state(tmp_path / "repo")
    for command in (["backup"], ["list"]):
        result = drorch(*command, "--policy", sealed)
        assert result.code == 1 and "is not encrypted, but the policy gives it a passphrase" in result.err
        assert "drorch copy" in result.err and "Traceback" not in result.err
    assert tree_state(tmp_path / "repo") == before

    shutil.rmtree(tmp_path / "repo")
    assert drorch("backup", "--policy", sealed).code == 0
    before = tree_state(tmp_path / "repo")
    for command in (["backup"], ["list"]):
        result = drorch(*command, "--policy", plain)
        assert result.code == 1 and "is encrypted, but the policy gives no passphrase" in result.err
    assert tree_state(tmp_path / "repo") == before


def test_an_unknown_encryption_algorithm_is_refused(sealed, drorch):
    data, repo, policy = sealed
    (data / "f").write_text("x")
    assert drorch("backup", "--policy", policy).code == 0
    config = json.loads((repo / "config").read_bytes())
    config["encryption"]["algorithm"] = "aes-512-future"
    (repo / "config").write_text(json.dumps(config))
    result = drorch("list", "--policy", policy)
    assert result.code == 1 and "aes-512-future" in result.err and "upgrade drorch" in result.err


# -- blobs bound to their place -------------------------------------------------------------


def test_swapped_manifests_are_detected_not_shown(sealed, drorch):
    data, repo, policy = sealed
    (data / "f").write_text("one")
    first = drorch("backup", "--policy", policy, "--type", "full", "--json").json()["label"]
    (data / "f").write_text("two")
    second = drorch("backup", "--policy", policy, "--type", "full", "--json").json()["label"]
    a, b = (repo / "manifests" / SOURCE / first), (repo / "manifests" / SOURCE / second)
    body_a, body_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(body_b)
    b.write_bytes(body_a)
    result = drorch("show", "--policy", policy, "--backup", first)
    assert result.code == 1 and "authentication check" in result.err and second not in result.out


def test_a_pack_moved_into_another_backup_fails_its_check(sealed, drorch, tmp_path):
    data, repo, policy = sealed
    (data / "f").write_bytes(os.urandom(5000))
    first = drorch("backup", "--policy", policy, "--type", "full", "--json").json()["label"]
    (data / "f").write_bytes(os.urandom(5000))
    second = drorch("backup", "--policy", policy, "--type", "full", "--json").json()["label"]
    pack_a = repo / "data" / SOURCE / first / "p000000"
    shutil.copyfile(repo / "data" / SOURCE / second / "p000000", pack_a)  # same size, other backup's bytes
    result = drorch("restore", "--policy", policy, "--backup", first, "--target", tmp_path / "r")
    assert result.code == 1 and "fails its checksum" in result.err


def test_a_killed_backup_in_an_encrypted_repository_is_cleaned_by_expire(sealed, drorch, tmp_path):
    data, repo, policy = sealed
    treegen.generate(data, seed=4, files=20, big=1)
    expected = backup_chain(drorch, policy, data, 4, ["full"])
    killed = run_cli("backup", "--policy", policy, "--type", "full", env={"DRORCH_FAULT": "before-manifest"})
    assert killed.returncode < 0, killed.stderr
    assert [r["status"] for r in drorch("list", "--policy", policy, "--all", "--json").json()] == \
        ["ok", "incomplete"]
    expired = drorch("expire", "--policy", policy, "--json")
    assert expired.code == 0, expired.err
    assert len(expired.json()[0]["leftovers"]) == 1
    assert [r["status"] for r in drorch("list", "--policy", policy, "--all", "--json").json()] == ["ok"]
    assert sorted(p.name for p in (repo / "data" / SOURCE).iterdir()) == list(expected)
    restores_exactly(drorch, policy, data, expected, tmp_path)
