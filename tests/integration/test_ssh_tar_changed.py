"""A file that changes while the host's tar reads it (batched reads over SSH):
tar's own warning names it ("file changed as we read it", "File shrank by N
bytes; padding with zeros"), the batch's answer leaves it out, and the backup
reads it again one by one, so what is stored is whole.  The change is made
from inside tar's read, deterministically: the sshd's PATH starts with a
`tar` that runs the real one with a checkpoint hook, and the hook, armed by
the test, grows or truncates the target file after tar's first 10 KiB."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

from drorch.factory import close_hosts, make_host
from drorch.hosts.tarstream import named_in_warnings
from drorch.policy import load_policy
from tests.sshd import make_setup, scratch_dir, write_remote_policy

ODD = os.fsdecode(b"odd \xff\xfe name\nwith \"quotes\"\tand tab")
REAL_TAR = shutil.which("tar")


@pytest.fixture(scope="module")
def hooked():
    """(sshd setup, hook dir): an sshd whose sessions find the hooked tar first."""
    workdir = scratch_dir("drorch-ssh-tarhook-")
    hooks = workdir / "hooks"
    (hooks / "bin").mkdir(parents=True)
    _script(hooks / "bin" / "tar", f'exec {REAL_TAR} --checkpoint=1 --checkpoint-action=exec={hooks}/hook "$@"')
    _script(hooks / "hook", f"""\
        # once per arming: change the file named (NUL-terminated) in target
        mv {hooks}/armed {hooks}/fired 2>/dev/null || exit 0
        xargs -0 sh -c "$(cat {hooks}/action)" sh < {hooks}/target""")
    setup = make_setup(workdir / "ssh", extra_config=f"SetEnv PATH={hooks}/bin:/usr/bin:/bin\n")
    try:
        yield setup, hooks
    finally:
        setup.server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _close():
    yield
    close_hosts()


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body) + "\n")
    path.chmod(0o755)


def _arm(hooks: Path, target: Path, action: str) -> None:
    (hooks / "target").write_bytes(os.fsencode(target) + b"\0")
    (hooks / "action").write_text(action)
    (hooks / "armed").touch()


def _tree(root: Path) -> tuple[Path, list[str]]:
    """A tree whose first file (in tar's order) is big enough to be mid-read at a checkpoint."""
    root.mkdir(parents=True)
    target = root / ODD
    target.write_bytes(os.urandom(200_000))
    others = []
    for i, name in enumerate(["plain", os.fsdecode(b"raw\xff"), "new\nline", "sp ace"]):
        (root / name).write_bytes(os.urandom(1000 + i))
        others.append(str(root / name))
    return target, others


@pytest.mark.parametrize("action, warning", [('printf "grown" >> "$1"', "file changed as we read it"),
                                             ('truncate -s 10 "$1"', "File shrank")])
def test_a_file_changed_during_the_tar_read_is_left_out_of_the_batch(hooked, tmp_path, action, warning):
    setup, hooks = hooked
    target, others = _tree(Path(scratch_dir()) / "t")
    try:
        policy = write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", setup, ["/tmp"])
        host = make_host(load_policy(policy), "remote")
        _arm(hooks, target, action)
        line, listing, parse = host._batch_request([str(target), *others], 1 << 20)

        def request(shell):
            reply = shell.request(line, listing)
            return reply, parse(reply)
        reply, got = host.call(request)
        assert (hooks / "fired").exists() and not (hooks / "armed").exists()
        assert warning in reply.error_text() and reply.status == 1
        assert named_in_warnings(reply.stderr) == {str(target)}  # the odd name, decoded exactly
        assert sorted(got) == sorted(others)  # the changed file is left out: read again one by one
        for path in others:
            assert got[path][0] == open(path, "rb").read()
    finally:
        shutil.rmtree(target.parent.parent, ignore_errors=True)
        (hooks / "fired").unlink(missing_ok=True)


def test_a_backup_stores_the_file_as_it_is_after_tar_saw_it_change(hooked, drorch, tmp_path):
    setup, hooks = hooked
    target, others = _tree(Path(scratch_dir()) / "t")
    try:
        policy = write_remote_policy(tmp_path / "policy.yaml", tmp_path / "repo", setup, [target.parent])
        _arm(hooks, target, 'printf "grown" >> "$1"')
        result = drorch("backup", "--policy", policy, "--source", "remote1", "--type", "full", "--json")
        assert result.code == 0, result.err
        assert result.json()["warnings"] == []  # read again whole, not flagged torn
        assert (hooks / "fired").exists()
        restored = tmp_path / "restored"
        result = drorch("restore", "--policy", policy, "--backup", result.json()["label"], "--target", restored)
        assert result.code == 0, result.err
        inside = restored / str(target.parent).lstrip("/")
        assert (inside / ODD).read_bytes() == target.read_bytes()  # the whole file, as it is now
        assert (inside / ODD).stat().st_size == 200_005
        for path in others:
            assert (inside / os.path.basename(path)).read_bytes() == open(path, "rb").read()
    finally:
        shutil.rmtree(target.parent.parent, ignore_errors=True)
        (hooks / "fired").unlink(missing_ok=True)


def test_tar_warnings_name_files_exactly():
    raw = (b'tar: "/d/odd \\377\\376 name\\nwith \\"quotes\\"\\tand tab": file changed as we read it\n'
           b'tar: "/d/a\\\\b": File shrank by 5 bytes; padding with zeros\n'
           b'tar: "/d/gone": Cannot stat: No such file or directory\n'
           b'tar: Exiting with failure status due to previous errors\n')
    assert named_in_warnings(raw) == {"/d/" + ODD, "/d/a\\b", "/d/gone"}
    assert named_in_warnings(b"") == set()
    assert named_in_warnings(b"tar: something about no file\n") is None  # then nothing is trusted
