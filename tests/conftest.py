"""Shared fixtures: run the CLI in-process, write policies."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from drorch.cli.main import cli
from drorch.cli.render import run_main


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def invoke(*args: str, env: dict | None = None) -> Result:
    runner = CliRunner()
    with runner.isolation(env=env) as (out, err, _):
        code = run_main(cli, [str(a) for a in args])
    return Result(code, out.getvalue().decode(errors="replace"), err.getvalue().decode(errors="replace"))


@pytest.fixture
def drorch():
    """drorch(*args) -> Result(code, out, err), run in this process."""
    return invoke


def write_policy(path: Path, repo: Path, paths: list, *, source: str = "files1",
                 retention: str = "", extra: str = "") -> Path:
    text = textwrap.dedent(f"""\
        repositories:
          local:
            type: posix
            path: {repo}
            compression: {{level: 3}}
        sources:
          {source}:
            kind: files
            repository: local
            paths: [{", ".join(str(p) for p in paths)}]
        """)
    if retention:
        text += f"    retention: {retention}\n"
    text += textwrap.dedent(extra)
    path.write_text(text)
    return path


@pytest.fixture
def files_setup(tmp_path):
    """A data directory, a repository path and a policy for them."""
    data = tmp_path / "data"
    data.mkdir()
    repo = tmp_path / "repo"
    policy = write_policy(tmp_path / "policy.yaml", repo, [data])
    return data, repo, policy


@pytest.fixture(scope="session")
def drorch_runtime():
    """A drorch executable that the postgres and mysql users can run."""
    from tests.runtime import drorch_runtime as build

    return build()


@pytest.fixture(scope="session")
def moto_server():
    """An S3 endpoint for the session: moto in server mode, its own process on 127.0.0.1."""
    from tests.s3server import MotoServer

    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()
