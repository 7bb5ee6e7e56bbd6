"""Opening and creating a repository (FORMAT.md, "config"), in the library and via the CLI."""

from __future__ import annotations

import json
import multiprocessing
import os
import uuid
from datetime import datetime

import pytest

from drorch.errors import RepositoryError
from drorch.repo.repository import FORMAT_VERSION, Repository
from drorch.storage.posix import TMP_MARK, PosixStorage

CONFIG = "config"


def tree(path) -> list[str]:
    """Every file and directory under path (hidden and temporary ones too)."""
    if not os.path.exists(path):
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        rel = os.path.relpath(dirpath, path)
        found += [os.path.normpath(os.path.join(rel, n)) for n in dirnames + filenames]
    return sorted(found)


def foreign_dir(path):
    path.mkdir()
    (path / "notes.txt").write_text("someone else's file\n")
    (path / "sub").mkdir()
    (path / "sub" / "data.bin").write_bytes(b"\x00\x01")
    return path


def write_config(storage, **changes) -> bytes:
    config = {"format": "drorch", "version": 1, "id": str(uuid.uuid4()), "created": "2026-11-22T01:00:00Z",
              "compression": {"algorithm": "zstd", "level": 3},
              "chunking": {"block_size": 1048576, "pack_size": 16777216}, "encryption": None}
    config.update(changes)
    data = json.dumps(config).encode()
    storage.put(CONFIG, data)
    return data


def refusal(excinfo) -> str:
    error = excinfo.value
    return f"{error.message}\n{error.hint or ''}"


# -- open_or_init ------------------------------------------------------------------------


def test_first_open_or_init_creates_a_config(tmp_path):
    storage = PosixStorage(tmp_path / "repo")
    repo = Repository.open_or_init(storage)
    assert repo.created is True
    config = json.loads(storage.get(CONFIG))
    assert config["format"] == "drorch"
    assert config["version"] == 1
    assert config["id"] == repo.id
    assert uuid.UUID(config["id"]).version == 4
    assert datetime.fromisoformat(config["created"].replace("Z", "+00:00")).tzinfo is not None
    assert config["compression"]["algorithm"] == "zstd"
    assert config["chunking"]["block_size"] > 0 and config["chunking"]["pack_size"] > 0
    assert config["encryption"] is None
    assert repo.config == config
    assert tree(tmp_path / "repo") == ["config"]


def test_open_or_init_on_an_existing_empty_directory(tmp_path):
    (tmp_path / "repo").mkdir()
    repo = Repository.open_or_init(PosixStorage(tmp_path / "repo"))
    assert repo.created is True
    assert tree(tmp_path / "repo") == ["config"]


def test_second_open_or_init_returns_the_same_repository(tmp_path):
    first = Repository.open_or_init(PosixStorage(tmp_path / "repo"))
    config_bytes = (tmp_path / "repo" / CONFIG).read_bytes()
    second = Repository.open_or_init(PosixStorage(tmp_path / "repo"))
    assert second.id == first.id
    assert second.created is False
    assert (tmp_path / "repo" / CONFIG).read_bytes() == config_bytes  # not rewritten
    opened = Repository.open(PosixStorage(tmp_path / "repo"))
    assert opened.id == first.id
    assert opened.created is False


def _init_in_child(path, barrier, results) -> None:
    try:
        barrier.wait(timeout=10)
        repo = Repository.open_or_init(PosixStorage(path))
        results.put(("ok", repo.id, repo.created))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put(("error", f"{type(exc).__name__}: {exc}", None))


def test_two_processes_racing_open_or_init_end_with_one_repository(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for round_ in range(8):
        path = tmp_path / f"repo{round_}"
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_init_in_child, args=(path, barrier, results)) for _ in range(2)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=30) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        assert all(kind == "ok" for kind, _, _ in outcomes), f"round {round_}: {outcomes}"
        ids = {repo_id for _, repo_id, _ in outcomes}
        assert len(ids) == 1, f"round {round_}: two repositories {outcomes}"
        assert sorted(created for _, _, created in outcomes) == [False, True]
        assert json.loads((path / CONFIG).read_bytes())["id"] == ids.pop()
        assert tree(path) == ["config"]


class _OtherWriterFirst:
    """A storage through which one open_or_init sees another writer create the
    repository between its read of the config (none yet) and its look at the
    location: the losing side of the race, made to happen every time."""

    def __init__(self, inner):
        self.inner = inner
        self.location = inner.location
        self.other = None

    def is_empty(self):
        if self.other is None:
            self.other = Repository.open_or_init(self.inner)
        return self.inner.is_empty()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_open_or_init_that_loses_the_race_after_reading_no_config_uses_the_winners(tmp_path):
    # FORMAT.md: "a writer that loses the race reads the winner's config and
    # carries on, so racing writers end with one repository".
    storage = _OtherWriterFirst(PosixStorage(tmp_path / "repo"))
    repo = Repository.open_or_init(storage)
    assert storage.other is not None and storage.other.created is True
    assert repo.id == storage.other.id
    assert repo.created is False


def test_open_or_init_beside_a_writer_in_the_middle_of_its_put(tmp_path):
    # The winner's temporary config file is there, its config not yet: the
    # location is not foreign; both writers race put(if_absent) and one wins.
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / f".config{TMP_MARK}0123456789ab").write_bytes(b'{"format": "dr')
    repo = Repository.open_or_init(PosixStorage(tmp_path / "repo"))
    assert repo.created is True
    assert json.loads((tmp_path / "repo" / CONFIG).read_bytes())["id"] == repo.id


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("exists", [False, True], ids=["missing", "empty-dir"])
def test_open_without_a_repository_fails_clearly(tmp_path, exists):
    if exists:
        (tmp_path / "repo").mkdir()
    with pytest.raises(RepositoryError) as excinfo:
        Repository.open(PosixStorage(tmp_path / "repo"))
    assert "no repository at" in str(excinfo.value)
    assert str(tmp_path / "repo") in str(excinfo.value)
    assert os.path.exists(tmp_path / "repo") == exists  # a read creates nothing


def test_open_of_a_foreign_directory_fails(tmp_path):
    foreign = foreign_dir(tmp_path / "foreign")
    before = tree(foreign)
    with pytest.raises(RepositoryError) as excinfo:
        Repository.open(PosixStorage(foreign))
    assert "not a drorch repository" in str(excinfo.value)
    assert tree(foreign) == before


def test_open_or_init_refuses_a_non_empty_foreign_directory(tmp_path):
    foreign = foreign_dir(tmp_path / "foreign")
    before = tree(foreign)
    with pytest.raises(RepositoryError) as excinfo:
        Repository.open_or_init(PosixStorage(foreign))
    assert "refusing to initialise" in str(excinfo.value)
    assert str(foreign) in str(excinfo.value)
    assert tree(foreign) == before  # nothing written, not even a temporary file


@pytest.mark.parametrize("opener", ["open", "open_or_init"])
def test_newer_version_is_refused_with_upgrade_hint(tmp_path, opener):
    storage = PosixStorage(tmp_path / "repo")
    data = write_config(storage, version=999)
    with pytest.raises(RepositoryError) as excinfo:
        getattr(Repository, opener)(storage)
    text = refusal(excinfo)
    assert "999" in excinfo.value.message and str(FORMAT_VERSION) in excinfo.value.message  # both versions
    assert "upgrade" in text.lower()
    assert storage.get(CONFIG) == data
    assert tree(tmp_path / "repo") == ["config"]


@pytest.mark.parametrize("opener", ["open", "open_or_init"])
@pytest.mark.parametrize("fmt", ["restic", "", None])
def test_other_format_is_refused(tmp_path, opener, fmt):
    storage = PosixStorage(tmp_path / "repo")
    data = write_config(storage, format=fmt)
    with pytest.raises(RepositoryError) as excinfo:
        getattr(Repository, opener)(storage)
    assert "not a drorch repository" in str(excinfo.value)
    assert storage.get(CONFIG) == data
    assert tree(tmp_path / "repo") == ["config"]


@pytest.mark.parametrize("opener", ["open", "open_or_init"])
def test_damaged_config_is_refused(tmp_path, opener):
    storage = PosixStorage(tmp_path / "repo")
    storage.put(CONFIG, b"{not json")
    with pytest.raises(RepositoryError) as excinfo:
        getattr(Repository, opener)(storage)
    assert "not valid JSON" in str(excinfo.value)
    assert storage.get(CONFIG) == b"{not json"


def test_unknown_config_keys_are_ignored(tmp_path):
    storage = PosixStorage(tmp_path / "repo")
    write_config(storage, some_future_key={"x": 1})
    repo = Repository.open(storage)
    assert repo.config["some_future_key"] == {"x": 1}


# -- via the CLI ------------------------------------------------------------------------------


def test_cli_list_before_any_backup_fails(files_setup, drorch):
    _, repo_path, policy = files_setup
    for args in (["list"], ["list", "--json"]):
        result = drorch(*args, "--policy", policy)
        assert result.code == 1, result
        assert "no repository at" in result.err
        assert "no backups" not in result.out and "[]" not in result.out
    assert not repo_path.exists()  # a read command creates nothing


def test_cli_repo_init_then_list(files_setup, drorch):
    _, repo_path, policy = files_setup
    result = drorch("repo", "init", "--policy", policy)
    assert result.code == 0, result.err
    assert "initialised" in result.out
    repo_id = json.loads((repo_path / CONFIG).read_bytes())["id"]
    assert repo_id in result.out

    again = drorch("repo", "init", "--policy", policy)
    assert again.code == 0, again.err
    assert "already exists" in again.out
    assert repo_id in again.out
    assert json.loads((repo_path / CONFIG).read_bytes())["id"] == repo_id

    as_json = drorch("repo", "init", "--policy", policy, "--json")
    assert as_json.code == 0, as_json.err
    assert as_json.json()["id"] == repo_id and as_json.json()["created"] is False

    listed = drorch("list", "--policy", policy)
    assert listed.code == 0, listed.err
    assert "no backups" in listed.out
    listed = drorch("list", "--policy", policy, "--json")
    assert listed.code == 0, listed.err
    assert listed.json() == []


def test_cli_backup_into_a_foreign_directory_is_refused(files_setup, drorch):
    data, repo_path, policy = files_setup
    (data / "f.txt").write_text("x")
    foreign = foreign_dir(repo_path)  # the policy's repository path holds someone else's files
    before = tree(foreign)
    result = drorch("backup", "--policy", policy, "--type", "full")
    assert result.code == 1, result
    assert "refusing to initialise" in result.err
    assert tree(foreign) == before

    result = drorch("repo", "init", "--policy", policy)
    assert result.code == 1, result
    assert "refusing to initialise" in result.err
    result = drorch("list", "--policy", policy)
    assert result.code == 1, result
    assert "not a drorch repository" in result.err
    assert tree(foreign) == before


def test_cli_newer_repository_version_is_refused(files_setup, drorch):
    data, repo_path, policy = files_setup
    (data / "f.txt").write_text("x")
    write_config(PosixStorage(repo_path), version=999)
    before = tree(repo_path)
    for args in (["list"], ["backup", "--type", "full"], ["repo", "init"]):
        result = drorch(*args, "--policy", policy)
        assert result.code == 1, (args, result)
        assert "999" in result.err and "upgrade" in result.err.lower(), (args, result)
    assert tree(repo_path) == before
