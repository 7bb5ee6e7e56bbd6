"""Policies with several repositories (encrypted or not) for one files source,
and helpers to look at every byte a repository holds."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drorch.repo import crypto

SOURCE = "files1"


def write_policy(path: Path, data: Path, repos: dict[str, tuple[Path, str | None]], *, main: str,
                 copy_to: list[str] = (), extra_sources: str = "") -> Path:
    """repos: name -> (directory, env var holding its passphrase, or None: not encrypted)."""
    lines = ["repositories:"]
    for name, (directory, env) in repos.items():
        lines += [f"  {name}:", "    type: posix", f"    path: {directory}"]
        if env:
            lines.append(f'    encryption: {{passphrase: "${{env:{env}}}"}}')
    lines += ["sources:", f"  {SOURCE}:", "    kind: files", f"    repository: {main}", f"    paths: [{data}]"]
    if copy_to:
        lines.append(f"    copy_to: [{', '.join(copy_to)}]")
    path.write_text("\n".join(lines) + "\n" + extra_sources)
    return path


@pytest.fixture
def fast_kdf(monkeypatch):
    """New repositories wrap their key with a cheap scrypt (the cost is recorded in
    the config, so every reader, in-process or not, uses what was written)."""
    monkeypatch.setattr(crypto, "DEFAULT_KDF", crypto.ScryptParams(n=1 << 12))


def tree_state(root: Path) -> dict[str, tuple[int, int, str]]:
    """relative path -> (size, mtime_ns, sha256) of every file under root."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns,
                                                hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def every_byte(root: Path) -> list[tuple[str, bytes]]:
    """(relative path, bytes) of every file under root, names included as bytes."""
    out = []
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, os.fsencode(root))
            body = b"" if os.path.isdir(full) else open(full, "rb").read()
            out.append((rel.decode(errors="replace"), rel + b"\0" + body))
    return out


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "drorch.cli.main", *map(str, args)],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True)
