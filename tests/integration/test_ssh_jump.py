"""A jump host: the inner sshd listens on 127.0.0.2 and is reached through
the bastion's TCP forwarding (PermitOpen allows exactly that address)."""

from __future__ import annotations

import shutil

import pytest

from tests import treegen
from tests.sshd import SshSetup, free_port, keygen, scratch_dir, start_sshd


@pytest.fixture(scope="module")
def hosts():
    workdir = scratch_dir()
    servers = []
    try:
        inner_port = free_port("127.0.0.2")
        inner = start_sshd(workdir / "inner", address="127.0.0.2", port=inner_port)
        servers.append(inner)
        bastion = start_sshd(workdir / "bastion", extra_config=f"""\
            AllowTcpForwarding yes
            PermitOpen 127.0.0.2:{inner_port}
            """)
        servers.append(bastion)
        closed = start_sshd(workdir / "closed", extra_config="AllowTcpForwarding no\n")
        servers.append(closed)
        key = keygen(workdir / "client")
        known = workdir / "known_hosts"
        known.write_text("".join(s.known_hosts_line() for s in servers))
        for server in servers:
            server.authorize(key)
        yield {"inner": SshSetup(inner, key, known, workdir), "bastion": SshSetup(bastion, key, known, workdir),
               "closed": SshSetup(closed, key, known, workdir)}
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _policy(tmp_path, hosts, data, jump="bastion", bastion_options=None):
    text = ("hosts:\n" + hosts["bastion"].host_yaml("bastion", **(bastion_options or {}))
            + hosts["closed"].host_yaml("closed") + hosts["inner"].host_yaml("inner", jump=jump)
            + f"repositories:\n  local:\n    type: posix\n    path: {tmp_path / 'repo'}\n"
            + f"sources:\n  inner-files:\n    kind: files\n    host: inner\n    repository: local\n"
            + f"    paths: [{data}]\n")
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    treegen.generate(root, 41, files=30, big=1)
    return root


def test_backup_and_restore_through_a_jump_host(hosts, drorch, tmp_path, data):
    policy = _policy(tmp_path, hosts, data)
    through = hosts["bastion"].server.logins()
    result = drorch("backup", "--policy", policy, "--type", "full", "--json")
    assert result.code == 0, result.err
    assert hosts["bastion"].server.logins() > through  # the way in went through the bastion
    target = tmp_path / "there"
    restored = drorch("restore", "--policy", policy, "--target", target, "--target-host", "inner")
    assert restored.code == 0, restored.err
    assert treegen.diff(treegen.snapshot(data), treegen.snapshot(target / str(data).lstrip("/"))) == []


def test_a_bastion_that_does_not_forward_is_named(hosts, drorch, tmp_path, data):
    result = drorch("backup", "--policy", _policy(tmp_path, hosts, data, jump="closed"), "--type", "full")
    assert result.code == 1, result.err
    assert "jump host closed" in result.err and "refused to forward" in result.err, result.err
    assert "AllowTcpForwarding" in result.err and not (tmp_path / "repo").exists()


def test_the_bastions_own_host_key_is_checked(hosts, drorch, tmp_path, data):
    other = keygen(tmp_path / "other")
    wrong = tmp_path / "known_bastion"
    hosts["bastion"].server.write_known_hosts(wrong, other)
    policy = _policy(tmp_path, hosts, data, bastion_options={"known_hosts": wrong})
    result = drorch("backup", "--policy", policy, "--type", "full")
    assert result.code == 1 and "HOST KEY CHANGED for host bastion" in result.err, result.err
