"""The `hosts:` section: keys, defaults, and the references between hosts and sources."""

from __future__ import annotations

from datetime import timedelta

from drorch.factory import ssh_config
from drorch.policy import load_policy
from tests.unit.test_policy import failed, line_of, problem, write

HOSTS = """\
hosts:
  bastion:
    address: 10.0.0.1
    user: drorch
    key_file: /etc/drorch/id_ed25519
    known_hosts: /etc/drorch/known_hosts
  db1:
    address: 10.0.0.5
    port: 2222
    user: drorch
    key_file: /etc/drorch/id_ed25519
    key_passphrase: "${env:DRORCH_KEY_PASSPHRASE}"
    known_hosts: /etc/drorch/known_hosts
    jump: bastion
    become: postgres
    io_timeout: 2m
repositories:
  local:
    type: posix
    path: /srv/repo
sources:
  db1-etc:
    kind: files
    host: db1
    repository: local
    paths: [/etc/postgresql]
"""


def test_hosts_load_with_safe_defaults(drorch, tmp_path):
    path = write(tmp_path, HOSTS)
    assert drorch("policy", "check", path).code == 0
    policy = load_policy(path)
    db1 = policy.hosts["db1"]
    assert (db1.port, db1.jump, db1.become, db1.io_timeout) == (2222, "bastion", "postgres", timedelta(minutes=2))
    bastion = policy.hosts["bastion"]
    assert bastion.port == 22 and bastion.max_channels == 8 and bastion.keepalive == timedelta(seconds=15)
    config = ssh_config(policy, "db1")
    assert config.jump.name == "bastion" and config.jump.jump is None and config.io_timeout == 120
    assert config.passphrase is not None  # resolved only when the key is loaded


def test_a_source_on_an_unknown_host_lists_the_hosts(drorch, tmp_path):
    path = write(tmp_path, HOSTS.replace("    host: db1", "    host: db2"))
    message = problem(failed(drorch("policy", "check", path)), path, line_of(path, "host: db2"), "sources.db1-etc.host")
    assert "no host named 'db2' (hosts: local, bastion, db1)" in message


def test_jump_must_name_a_host(drorch, tmp_path):
    path = write(tmp_path, HOSTS.replace("jump: bastion", "jump: nowhere"))
    message = problem(failed(drorch("policy", "check", path)), path, line_of(path, "jump: nowhere"), "hosts.db1.jump")
    assert "no host named 'nowhere'" in message


def test_jump_loops_are_refused(drorch, tmp_path):
    text = HOSTS.replace("    known_hosts: /etc/drorch/known_hosts\n  db1:",
                         "    known_hosts: /etc/drorch/known_hosts\n    jump: db1\n  db1:")
    path = write(tmp_path, text)
    err = failed(drorch("policy", "check", path))
    assert "jump hosts loop (db1 -> bastion -> db1)" in problem(err, path, line_of(path, "jump: bastion"),
                                                                  "hosts.db1.jump")
    assert "jump hosts loop (bastion -> db1 -> bastion)" in problem(err, path, line_of(path, "jump: db1"),
                                                                      "hosts.bastion.jump")


def test_local_is_reserved(drorch, tmp_path):
    path = write(tmp_path, HOSTS.replace("  bastion:", "  local:").replace("jump: bastion", "jump: local"))
    err = failed(drorch("policy", "check", path))
    assert "cannot be redefined" in problem(err, path, line_of(path, "  local:"), "hosts.local")


def test_secrets_and_paths_are_checked(drorch, tmp_path):
    text = (HOSTS.replace('"${env:DRORCH_KEY_PASSPHRASE}"', "hunter2")
            .replace("key_file: /etc/drorch/id_ed25519\n    key_passphrase", "key_file: id_ed25519\n    key_passphrase"))
    path = write(tmp_path, text)
    err = failed(drorch("policy", "check", path))
    assert "by reference" in problem(err, path, line_of(path, "hunter2"), "hosts.db1.key_passphrase")
    assert "absolute" in problem(err, path, line_of(path, "key_file: id_ed25519"), "hosts.db1.key_file")


def test_unknown_host_key_names_are_typos(drorch, tmp_path):
    path = write(tmp_path, HOSTS.replace("    become: postgres", "    becmoe: postgres"))
    err = failed(drorch("policy", "check", path))
    assert "did you mean 'become'" in problem(err, path, line_of(path, "becmoe"), "hosts.db1.becmoe")


def test_bad_become_user_and_port(drorch, tmp_path):
    path = write(tmp_path, HOSTS.replace("become: postgres", "become: 'post gres'").replace("2222", "70000"))
    err = failed(drorch("policy", "check", path))
    problem(err, path, line_of(path, "post gres"), "hosts.db1.become")
    problem(err, path, line_of(path, "70000"), "hosts.db1.port")
