"""`become:`: commands and file access on a host run as another OS user
through `sudo -n -u USER`.  The test logs in as a throwaway unprivileged
user, and grants it sudo to `nobody` with a sudoers.d file of its own
(removed afterwards, as is the user)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time

import pytest

from drorch.factory import close_hosts, make_host
from drorch.policy import load_policy
from tests import treegen
from tests.sshd import scratch_dir, sshd, write_remote_policy  # noqa: F401  (fixture)

NOBODY = 65534


@pytest.fixture(scope="module")
def login_user(sshd):
    """An unprivileged login user for the module's sshd (key: the client key)."""
    name = "drorch-t" + secrets.token_hex(3)
    home = scratch_dir("drorch-home-")
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", name], check=True)
    try:
        subprocess.run(["usermod", "-p", "*", name], check=True)  # no password, but not locked
        yield name
    finally:
        close_hosts()
        for _ in range(50):  # its sessions end with the connections (stopped by PID if slow)
            if subprocess.run(["userdel", name], capture_output=True).returncode == 0:
                break
            sshd.server.kill_sessions()
            time.sleep(0.1)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def sudo_rule(login_user):
    path = f"/etc/sudoers.d/{login_user}"
    with open(path, "w") as handle:
        handle.write(f"{login_user} ALL=(nobody) NOPASSWD: ALL\n")
    os.chmod(path, 0o440)
    subprocess.run(["visudo", "-cf", path], check=True, capture_output=True)
    try:
        yield path
    finally:
        os.unlink(path)


@pytest.fixture
def private_tree():
    """A tree only `nobody` may read."""
    base = scratch_dir("drorch-become-")
    data = base / "data"
    data.mkdir()
    treegen.generate(data, 51, files=25, big=1)
    for root, dirs, files in os.walk(data):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), NOBODY, NOBODY)
    os.chown(data, NOBODY, NOBODY)
    data.chmod(0o700)
    try:
        yield base, data
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _policy(tmp_path, sshd, login_user, data, **options):
    return write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", sshd, [data],
                               host_options={"user": login_user, **options})


def test_become_reads_what_only_that_user_may_read(sshd, login_user, sudo_rule, private_tree, drorch, tmp_path):
    base, data = private_tree
    snap = treegen.snapshot(data)
    refused = drorch("backup", "--policy", _policy(tmp_path, sshd, login_user, data), "--type", "full")
    assert refused.code == 1 and "cannot list" in refused.err, refused.err  # the login user alone may not
    policy = _policy(tmp_path, sshd, login_user, data, become="nobody")
    result = drorch("backup", "--policy", policy, "--type", "full", "--json")
    assert result.code == 0, result.err
    target = tmp_path / "restore"
    assert drorch("restore", "--policy", policy, "--target", target).code == 0
    assert treegen.diff(snap, treegen.snapshot(target / str(data).lstrip("/"))) == []


def test_become_runs_commands_as_that_user(sshd, login_user, sudo_rule, tmp_path):
    policy = load_policy(_policy(tmp_path, sshd, login_user, "/tmp", become="nobody"))
    host = make_host(policy, "remote")
    try:
        assert host.run(["id", "-un"]).stdout == b"nobody\n"
        assert host.run(["id", "-un"], user=login_user).stdout == login_user.encode() + b"\n"
        assert host.run("echo $0 $(id -u)", shell=True).stdout == f"sh {NOBODY}\n".encode()
        denied = host.run(["id", "-un"], user="root")
        assert denied.exit_status != 0 and b"sudo" in denied.stderr
        assert not host.is_root
    finally:
        close_hosts()


def test_become_without_sudo_rights_says_so(sshd, login_user, private_tree, drorch, tmp_path):
    base, data = private_tree
    result = drorch("backup", "--policy", _policy(tmp_path, sshd, login_user, data, become="nobody"),
                    "--type", "full")
    assert result.code == 1, result.err
    assert "become: nobody failed" in result.err and "sudo: a password is required" in result.err, result.err
    assert "NOPASSWD" in result.err
    assert not (tmp_path / "repo").exists()
