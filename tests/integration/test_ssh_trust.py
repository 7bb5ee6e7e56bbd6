"""Safe by default: an unknown host key, a changed host key and a client key
the host does not accept are each refused with their own message, before
anything is written (no repository, no run record, no restore target)."""

from __future__ import annotations

import subprocess

import pytest

from tests.sshd import keygen, sshd, write_remote_policy  # noqa: F401  (fixture)


def _fingerprint(public_key) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(public_key)], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]  # "256 SHA256:... comment (ED25519)"


@pytest.fixture
def tree(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("hello\n")
    return data


def _policy(tmp_path, sshd, data, **host_options):
    return write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", sshd, [data],
                               host_options=host_options)


def _refused(drorch, policy, tmp_path, *needles):
    result = drorch("backup", "--policy", policy, "--type", "full")
    assert result.code == 1, result.err
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in result.err, result.err
    assert not (tmp_path / "repo").exists()  # nothing written, not even a new repository
    return result.err


def test_unknown_host_key_is_refused_with_its_fingerprint(sshd, drorch, tmp_path, tree):
    known = tmp_path / "known_hosts"
    known.write_text("[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdyb3VuZGhvZ2dvZ3JvdW5kaG9nZ29ncm91bmRo\n")
    before = sshd.server.logins()
    err = _refused(drorch, _policy(tmp_path, sshd, tree, known_hosts=known), tmp_path,
                   "is not in", "unknown host key", _fingerprint(sshd.server.host_key.with_suffix(".pub")),
                   "remote", "ssh-keyscan", str(known))
    assert "CHANGED" not in err
    assert sshd.server.logins() == before  # nothing was sent: no login happened


def test_changed_host_key_is_refused_as_changed(sshd, drorch, tmp_path, tree):
    other = keygen(tmp_path / "other_host_key")
    known = sshd.server.write_known_hosts(tmp_path / "known_hosts", other)
    before = sshd.server.logins()
    err = _refused(drorch, _policy(tmp_path, sshd, tree, known_hosts=known), tmp_path,
                   "HOST KEY CHANGED", _fingerprint(sshd.server.host_key.with_suffix(".pub")),
                   _fingerprint(other.with_suffix(".pub")), "ssh-keygen -R")
    assert "unknown host key" not in err
    assert sshd.server.logins() == before


def test_missing_known_hosts_file_is_refused(sshd, drorch, tmp_path, tree):
    _refused(drorch, _policy(tmp_path, sshd, tree, known_hosts=tmp_path / "nope"), tmp_path,
             "known_hosts file", "does not exist")


def test_wrong_client_key_is_refused_as_such(sshd, drorch, tmp_path, tree):
    stranger = keygen(tmp_path / "stranger")
    err = _refused(drorch, _policy(tmp_path, sshd, tree, key_file=stranger), tmp_path,
                   "refused our key", str(stranger), _fingerprint(stranger.with_suffix(".pub")),
                   "authorized_keys")
    assert "host key" not in err.lower()


def test_encrypted_key_needs_its_passphrase_by_reference(sshd, drorch, tmp_path, tree, monkeypatch):
    locked = keygen(tmp_path / "locked", passphrase="s3cret phrase")
    sshd.server.authorize(locked)
    _refused(drorch, _policy(tmp_path, sshd, tree, key_file=locked), tmp_path, "passphrase", "key_passphrase")
    monkeypatch.setenv("DRORCH_TEST_PASSPHRASE", "wrong")
    policy = _policy(tmp_path, sshd, tree, key_file=locked, key_passphrase='"${env:DRORCH_TEST_PASSPHRASE}"')
    _refused(drorch, policy, tmp_path, "wrong passphrase")
    monkeypatch.setenv("DRORCH_TEST_PASSPHRASE", "s3cret phrase")
    result = drorch("backup", "--policy", policy, "--type", "full")
    assert result.code == 0, result.err


def test_restore_onto_a_host_with_a_changed_key_writes_nothing(sshd, drorch, tmp_path, tree):
    good = _policy(tmp_path, sshd, tree)
    assert drorch("backup", "--policy", good, "--type", "full").code == 0
    other = keygen(tmp_path / "other_host_key")
    bad_known = sshd.server.write_known_hosts(tmp_path / "known_hosts_bad", other)
    bad = write_remote_policy(tmp_path / "policy-bad.yaml", tmp_path / "repo", sshd, [tree],
                              host_options={"known_hosts": bad_known})
    target = tmp_path / "target"
    result = drorch("restore", "--policy", bad, "--target", target, "--target-host", "remote")
    assert result.code == 1 and "HOST KEY CHANGED" in result.err, result.err
    assert not target.exists()


def test_unreachable_host_is_named_after_retries(sshd, drorch, tmp_path, tree):
    from tests.sshd import free_port
    policy = write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", sshd, [tree],
                                 host_options={"port": free_port(), "connect_timeout": "2s"})
    result = drorch("backup", "--policy", policy, "--type", "full")
    assert result.code == 1 and "cannot connect to host remote" in result.err, result.err
    assert "Connection refused" in result.err and not (tmp_path / "repo").exists()
