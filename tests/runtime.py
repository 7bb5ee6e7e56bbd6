"""A drorch that other OS users (postgres, mysql) can run.

The test process's interpreter may live where those users cannot go (pyenv
under /root), so archive_command / restore_command in tests use a runtime in
/var/tmp built from Debian's python3: a venv with drorch's dependencies
(cached by the hash of pyproject.toml) and a copy of the drorch package
(refreshed on every test session).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE = Path("/var/tmp/drorch-test-runtime")
SYSTEM_PYTHON = "/usr/bin/python3"


def _deps_venv() -> Path:
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    venv = BASE / f"deps-{digest}"
    if (venv / ".ready").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(venv.parent, 0o755)
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
    # Install drorch's runtime dependencies (not drorch itself: copied below).
    import tomllib
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    result = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *deps], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"cannot build the test runtime in {venv}:\n{result.stdout}\n{result.stderr}")
    (venv / ".ready").write_text("ok")
    return venv


def drorch_runtime() -> Path:
    """Path of a `drorch` executable any user can run, with this checkout's code."""
    venv = _deps_venv()
    site = next((venv / "lib").glob("python3*/site-packages"))
    shutil.rmtree(site / "drorch", ignore_errors=True)  # an older way kept the code here
    # The code goes in its own directory named by its hash: test sessions running
    # side by side (or an older one still running) never see it change under them.
    digest = hashlib.sha256()
    for path in sorted((REPO / "drorch").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    code = BASE / f"code-{digest.hexdigest()[:16]}"
    if not code.exists():
        tmp = BASE / f".code-new-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(REPO / "drorch", tmp / "drorch", ignore=shutil.ignore_patterns("__pycache__"))
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        try:
            os.rename(tmp, code)
        except OSError:  # another session made the same one meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    exe = code / "drorch-run"
    if not exe.exists():
        tmp_exe = code / f".drorch-run-{os.getpid()}"
        tmp_exe.write_text(f"#!{venv}/bin/python3\nimport sys\nsys.path.insert(0, {str(code)!r})\n"
                           "from drorch.entry import main\nsys.exit(main())\n")
        tmp_exe.chmod(0o755)
        os.replace(tmp_exe, exe)
    for path in [venv, *venv.rglob("*")]:
        mode = path.lstat().st_mode
        if not path.is_symlink():
            path.chmod(mode | 0o444 | (0o111 if path.is_dir() or mode & 0o100 else 0))
    return exe

if __name__ == "__main__":
    print(drorch_runtime())
    sys.exit(0)
