"""Policy loading and `drorch policy check|schema`.

Every error must name FILE:LINE:COL and the dotted key, exit 2, and never
show a traceback.
"""

from __future__ import annotations

import json
import re
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ConfigDict, ValidationError

from drorch.errors import DrorchError, PolicyError
from drorch.policy import load_policy
from drorch.policy.models import Model
from drorch.policy.types import Secret, SecretRef, parse_duration

GOOD = """\
repositories:
  local:
    type: posix
    path: /srv/repo
    compression: {level: 3}
sources:
  etc:
    kind: files
    repository: local
    paths: [/etc]
    retention:
      full: 2
      max_age: 35d
"""


def write(directory: Path, text: str, name: str = "policy.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, snippet: str) -> int:
    """1-based number of the first line of `path` that contains `snippet`."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if snippet in line:
            return number
    raise AssertionError(f"{snippet!r} not in {path}")


def failed(result, code: int = 2) -> str:
    """Assert a clean operator error and return stderr."""
    assert result.code == code, (result.code, result.out, result.err)
    for stream in (result.out, result.err):
        assert "Traceback" not in stream
        assert "internal error" not in stream
    return result.err


def problem(err: str, path: Path, line: int, key: str) -> str:
    """The one problem line for `path:line:COL: key:`; returns its message part."""
    pattern = rf"^{re.escape(str(path))}:{line}:\d+: {re.escape(key)}: (.*)$"
    found = re.findall(pattern, err, flags=re.MULTILINE)
    assert found, f"no problem `{path}:{line}:COL: {key}:` in:\n{err}"
    return found[0]


# --- valid policies -----------------------------------------------------------


def test_valid_policy_passes(drorch, tmp_path):
    path = write(tmp_path, GOOD)
    result = drorch("policy", "check", path)
    assert result.code == 0, result.err
    assert "policy OK: 1 file(s), 1 repositories, 1 sources" in result.out
    assert "source etc: files on local -> repository local" in result.out
    assert result.err == ""


def test_valid_policy_json(drorch, tmp_path):
    path = write(tmp_path, GOOD)
    result = drorch("policy", "check", "--json", path)
    assert result.code == 0, result.err
    assert result.json() == {"ok": True, "files": [str(path)], "repositories": ["local"],
                             "sources": ["etc"]}


def test_policy_option_and_environment(drorch, tmp_path):
    path = write(tmp_path, GOOD)
    assert drorch("policy", "check", "--policy", path).code == 0
    assert drorch("policy", "check", env={"DRORCH_POLICY": str(path)}).code == 0


def test_loaded_values(tmp_path):
    policy = load_policy(write(tmp_path, GOOD))
    source = policy.sources["etc"]
    assert source.paths == ["/etc"]
    assert source.retention.full == 2
    assert source.retention.diff is None
    assert source.retention.max_age == timedelta(days=35)
    assert policy.repositories["local"].compression.level == 3
    assert policy.where("sources", "etc", "repository") == f"{tmp_path / 'policy.yaml'}:9:5"


def test_directory_of_files_merges(drorch, tmp_path):
    write(tmp_path, """\
        repositories:
          local: {type: posix, path: /srv/repo}
          offsite: {type: posix, path: /mnt/offsite}
        """, "10-repositories.yaml")
    write(tmp_path, """\
        sources:
          etc: {kind: files, repository: local, paths: [/etc]}
        """, "20-etc.yaml")
    write(tmp_path, """\
        sources:
          www: {kind: files, repository: offsite, paths: [/var/www]}
        """, "30-www.yml")
    (tmp_path / "README.txt").write_text("not a policy: [")
    (tmp_path / ".editor-swap.yaml").write_text("not: [a policy")
    result = drorch("policy", "check", tmp_path)
    assert result.code == 0, result.err
    assert "policy OK: 3 file(s), 2 repositories, 2 sources" in result.out
    assert "source www: files on local -> repository offsite" in result.out
    policy = load_policy(tmp_path)
    assert [p.name for p in policy.files] == ["10-repositories.yaml", "20-etc.yaml", "30-www.yml"]
    assert policy.where("sources", "www") == f"{tmp_path / '30-www.yml'}:2:3"


def test_empty_directory(drorch, tmp_path):
    err = failed(drorch("policy", "check", tmp_path))
    assert f"{tmp_path}: no *.yaml or *.yml files in this policy directory" in err
    assert "hint:" in err


def test_empty_file_is_an_empty_policy(drorch, tmp_path):
    result = drorch("policy", "check", write(tmp_path, ""))
    assert result.code == 0, result.err
    assert "0 repositories, 0 sources" in result.out


# --- YAML syntax ----------------------------------------------------------------


def test_bad_indent(drorch, tmp_path):
    path = write(tmp_path, """\
        repositories:
          local:
            type: posix
             path: /srv/repo
        """)
    err = failed(drorch("policy", "check", path))
    message = problem(err, path, 4, "<yaml>")
    assert "mapping values are not allowed here" in message
    assert "1 problem(s) in the policy" in err


def test_unclosed_bracket(drorch, tmp_path):
    path = write(tmp_path, """\
        sources:
          etc:
            kind: files
            paths: [/etc, /var
            repository: local
        """)
    err = failed(drorch("policy", "check", path))
    # PyYAML notices the missing ']' where the next key starts.
    message = problem(err, path, line_of(path, "repository:"), "<yaml>")
    assert "expected ',' or ']'" in message
    assert "fix the YAML syntax" in message


def test_tab_indent(drorch, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("repositories:\n  local:\n\ttype: posix\n")
    err = failed(drorch("policy", "check", path))
    assert "'\\t'" in problem(err, path, 3, "<yaml>")


def test_two_documents_in_one_file(drorch, tmp_path):
    path = write(tmp_path, "repositories: {}\n---\nsources: {}\n")
    err = failed(drorch("policy", "check", path))
    assert "one document per file" in problem(err, path, 3, "<yaml>")


def test_top_level_must_be_a_mapping(drorch, tmp_path):
    path = write(tmp_path, "- repositories\n- sources\n")
    err = failed(drorch("policy", "check", path))
    assert "a policy file is a mapping of sections" in problem(err, path, 1, "<top>")


def test_not_utf8(drorch, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"\xff\xfe repositories")
    err = failed(drorch("policy", "check", path))
    assert "cannot read" in problem(err, path, 1, "<file>")


def test_unknown_scalar_tag(drorch, tmp_path):
    path = write(tmp_path, """\
        repositories:
          local:
            type: posix
            path: !secret /srv/repo
        """)
    err = failed(drorch("policy", "check", path))
    assert "!secret" in problem(err, path, 4, "<yaml>")


def test_unknown_tag_on_a_mapping(drorch, tmp_path):
    """A tag PyYAML's safe loader does not know is refused on a mapping too, not ignored."""
    path = write(tmp_path, """\
        repositories: !!python/object/apply:os.system
          local: {type: posix, path: /srv/repo}
        """)
    err = failed(drorch("policy", "check", path))
    assert "python/object" in err


def test_duplicate_key(drorch, tmp_path):
    path = write(tmp_path, """\
        repositories:
          local:
            type: posix
            path: /srv/repo
            path: /srv/other
        """)
    err = failed(drorch("policy", "check", path))
    message = problem(err, path, 5, "repositories.local.path")
    assert message == "duplicate key (first defined at line 4); remove one of them"


def test_duplicate_source_name(drorch, tmp_path):
    path = write(tmp_path, """\
        repositories:
          local: {type: posix, path: /srv/repo}
        sources:
          etc: {kind: files, repository: local, paths: [/etc]}
          etc: {kind: files, repository: local, paths: [/usr/local/etc]}
        """)
    err = failed(drorch("policy", "check", path))
    assert "duplicate key (first defined at line 4)" in problem(err, path, 5, "sources.etc")


def test_merge_key_may_be_overridden(drorch, tmp_path):
    """YAML merge keys (<<) are supported; a key written beside `<<` overrides the
    merged one (YAML 1.1 merge semantics) and is not a duplicate."""
    path = write(tmp_path, """\
        repositories:
          local: {type: posix, path: /srv/repo}
        sources:
          etc: &files
            kind: files
            repository: local
            paths: [/etc]
          www:
            <<: *files
            paths: [/var/www]
        """)
    result = drorch("policy", "check", path)
    assert result.code == 0, result.err
    assert load_policy(path).sources["www"].paths == ["/var/www"]


def test_merge_key_without_override(tmp_path):
    path = write(tmp_path, """\
        repositories:
          local: {type: posix, path: /srv/repo}
        sources:
          etc: &files
            kind: files
            repository: local
            paths: [/etc]
          etc2:
            <<: *files
        """)
    assert load_policy(path).sources["etc2"].paths == ["/etc"]


# --- keys and values ---------------------------------------------------------


def test_unknown_key_suggests_the_right_one(drorch, tmp_path):
    path = write(tmp_path, GOOD.replace("retention:", "retension:"))
    err = failed(drorch("policy", "check", path))
    message = problem(err, path, line_of(path, "retension:"), "sources.etc.retension")
    assert message == "unknown key; did you mean 'retention'?"
    assert re.search(rf"^{re.escape(str(path))}:\d+:5: sources\.etc\.retension:", err, re.MULTILINE)
    assert "drorch policy schema" in err  # the hint


@pytest.mark.parametrize("wrong, right, key", [
    ("compression:", "compresion:", "repositories.local.compresion"),
    ("max_age:", "max_aeg:", "sources.etc.retention.max_aeg"),
    ("repositories:", "repositorys:", "repositorys"),
    ("repositories:", "repository:", "repository"),
    ("    paths: [/etc]", "    path: [/etc]", "sources.etc.path"),
    ("path: /srv/repo", "paths: /srv/repo", "repositories.local.paths"),
], ids=["nested", "deep", "top", "top-singular", "source-path", "repository-paths"])
def test_unknown_key_anywhere(drorch, tmp_path, wrong, right, key):
    """The suggestion is a key that is valid where the typo is (never the typo itself)."""
    path = write(tmp_path, GOOD.replace(wrong, right))
    err = failed(drorch("policy", "check", path))
    message = problem(err, path, line_of(path, right), key)
    assert message == f"unknown key; did you mean {wrong.split(':')[0].strip()!r}?"


def test_unknown_key_far_from_any_word(drorch, tmp_path):
    path = write(tmp_path, GOOD.replace("    retention:", "    zzzqqq: 1\n    retention:"))
    err = failed(drorch("policy", "check", path))
    assert problem(err, path, line_of(path, "zzzqqq"), "sources.etc.zzzqqq") == "unknown key"


@pytest.mark.parametrize("old, new, key, words", [
    ("paths: [/etc]", "paths: /etc", "sources.etc.paths", "valid list"),
    ("full: 2", "full: two", "sources.etc.retention.full", "valid integer"),
    ("full: 2", "full: 0", "sources.etc.retention.full", "greater than or equal to 1"),
    ("{level: 3}", "{level: 99}", "repositories.local.compression.level", "less than or equal to 19"),
    ("max_age: 35d", "max_age: 30", "sources.etc.retention.max_age", "a duration is a string"),
    ("max_age: 35d", "max_age: 35 days", "sources.etc.retention.max_age", "is not a duration"),
    ("paths: [/etc]", "paths: []", "sources.etc.paths", "at least 1"),
    ("repository: local", "repository: [local]", "sources.etc.repository", "valid string"),
], ids=["paths-string", "full-word", "full-zero", "level-99", "bare-number-duration",
        "bad-duration", "no-paths", "repository-list"])
def test_wrong_types(drorch, tmp_path, old, new, key, words):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    err = failed(drorch("policy", "check", path))
    assert words in problem(err, path, line_of(path, new), key)


def test_all_problems_reported_at_once(drorch, tmp_path):
    path = write(tmp_path, GOOD.replace("paths: [/etc]", "paths: /etc")
                 .replace("full: 2", "full: two").replace("{level: 3}", "{level: 99}"))
    err = failed(drorch("policy", "check", path))
    assert "3 problem(s) in the policy" in err
    for key in ("sources.etc.paths", "sources.etc.retention.full",
                "repositories.local.compression.level"):
        problem(err, path, line_of(path, key.rsplit(".", 1)[1]), key)


def test_missing_required_key(drorch, tmp_path):
    path = write(tmp_path, GOOD.replace("    repository: local\n", ""))
    err = failed(drorch("policy", "check", path))
    # Points at the mapping that lacks the key.
    assert problem(err, path, line_of(path, "  etc:"), "sources.etc.repository") == \
        "required key is missing"


def test_unknown_kind_and_type(drorch, tmp_path):
    path = write(tmp_path, GOOD.replace("kind: files", "kind: file").replace("type: posix", "type: s4"))
    err = failed(drorch("policy", "check", path))
    assert "`kind` must be one of: files" in problem(err, path, line_of(path, "kind: file"), "sources.etc.kind")
    assert "`type` must be one of: posix" in problem(err, path, line_of(path, "type: s4"),
                                                     "repositories.local.type")


def test_invalid_name(drorch, tmp_path):
    path = write(tmp_path, GOOD.replace("  etc:", "  my etc:"))
    err = failed(drorch("policy", "check", path))
    assert "'my etc' is not a valid name" in err
    assert re.search(rf"^{re.escape(str(path))}:{line_of(path, 'my etc')}:\d+: sources\.my etc",
                     err, re.MULTILINE)


@pytest.mark.parametrize("old, new, key, relative", [
    ("path: /srv/repo", "path: srv/repo", "repositories.local.path", "srv/repo"),
    ("paths: [/etc]", "paths: [/etc, var/log]", "sources.etc.paths", "var/log"),
], ids=["repository-path", "source-path"])
def test_relative_path(drorch, tmp_path, old, new, key, relative):
    path = write(tmp_path, GOOD.replace(old, new))
    err = failed(drorch("policy", "check", path))
    assert problem(err, path, line_of(path, new), key) == f"{relative!r} must be an absolute path"


def test_dangling_repository_reference(drorch, tmp_path):
    path = write(tmp_path, GOOD.replace("repository: local", "repository: offsite"))
    err = failed(drorch("policy", "check", path))
    message = problem(err, path, line_of(path, "repository: offsite"), "sources.etc.repository")
    assert message == "no repository named 'offsite' (repositories: local)"


def test_dangling_reference_with_no_repositories(drorch, tmp_path):
    path = write(tmp_path, "sources:\n  etc: {kind: files, repository: local, paths: [/etc]}\n")
    err = failed(drorch("policy", "check", path))
    assert "no repository named 'local' (repositories: none defined)" in err


def test_reference_across_files(drorch, tmp_path):
    write(tmp_path, "repositories:\n  local: {type: posix, path: /srv/repo}\n", "a.yaml")
    write(tmp_path, "sources:\n  etc: {kind: files, repository: local, paths: [/etc]}\n", "b.yaml")
    assert drorch("policy", "check", tmp_path).code == 0


def test_unknown_host(drorch, tmp_path):
    path = write(tmp_path, GOOD.replace("    repository: local", "    host: db1\n    repository: local"))
    err = failed(drorch("policy", "check", path))
    assert "no host named 'db1'" in problem(err, path, line_of(path, "host: db1"), "sources.etc.host")


def test_same_source_in_two_files(drorch, tmp_path):
    first = write(tmp_path, GOOD, "a.yaml")
    second = write(tmp_path, "sources:\n  etc: {kind: files, repository: local, paths: [/opt]}\n",
                   "b.yaml")
    err = failed(drorch("policy", "check", tmp_path))
    message = problem(err, second, 2, "sources.etc")
    assert f"also at {first}:{line_of(first, '  etc:')}:" in message
    assert "defined twice" in message


def test_same_repository_in_two_files(drorch, tmp_path):
    write(tmp_path, GOOD, "a.yaml")
    second = write(tmp_path, "repositories:\n  local: {type: posix, path: /elsewhere}\n", "b.yaml")
    err = failed(drorch("policy", "check", tmp_path))
    assert f"also at {tmp_path / 'a.yaml'}:2:" in problem(err, second, 2, "repositories.local")


def test_problems_in_several_files(drorch, tmp_path):
    a = write(tmp_path, GOOD.replace("retention:", "retension:"), "a.yaml")
    b = write(tmp_path, "repositories:\n  far:\n    type: posix\n    path: relative\n", "b.yaml")
    err = failed(drorch("policy", "check", tmp_path))
    problem(err, a, line_of(a, "retension"), "sources.etc.retension")
    problem(err, b, 4, "repositories.far.path")
    assert "2 problem(s) in the policy" in err


def test_missing_policy_path(drorch, tmp_path):
    missing = tmp_path / "nope.yaml"
    err = failed(drorch("policy", "check", missing))
    assert f"{missing}: no such policy file or directory" in err
    assert re.search(r"^hint: pass --policy PATH", err, re.MULTILINE)


def test_load_policy_raises_policy_error(tmp_path):
    path = write(tmp_path, GOOD.replace("retention:", "retension:"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.exit_code == 2
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{path}:{line_of(path, 'retension')}:5: ")


# --- schema ---------------------------------------------------------------------


def test_schema_is_json(drorch):
    result = drorch("policy", "schema")
    assert result.code == 0, result.err
    schema = json.loads(result.out)
    assert {"repositories", "sources"} <= set(schema["properties"])
    assert schema["title"] == "drorch policy"
    assert schema["$schema"].startswith("https://json-schema.org/")
    text = json.dumps(schema)
    assert "max_age" in text and "compression" in text


# --- durations --------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("35d", 35 * 86400),
    ("1h30m", 5400),
    ("90s", 90),
    ("2w", 14 * 86400),
    ("15m", 900),
    ("1w2d3h4m5s", 604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5),
    (" 35d ", 35 * 86400),
    ("1h 30m", 5400),
    ("2H", 7200),
    ("0s", 0),
])
def test_duration_parses(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("value", [30, 30.0, "30", "", "d", "35x", "-5d", "1.5h", "h1", "35d!",
                                   True, None])
def test_duration_refused(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_duration_passthrough():
    assert parse_duration(timedelta(hours=2)) == timedelta(hours=2)


# --- secrets -------------------------------------------------------------------


def test_secret_ref_is_usable_in_a_policy_model():
    """SecretRef must work as a field type of a policy model as they are written
    (drorch.policy.models.Model: no arbitrary_types_allowed)."""

    class Conn(Model):
        password: SecretRef

    assert Conn(password="${env:X}").password == Secret("${env:X}")


def Conn(**fields):
    """A tiny model with a SecretRef field (no policy model uses SecretRef yet).
    arbitrary_types_allowed lets the behaviour of Secret be tested whether or not
    pydantic can build a schema for it on its own (see the test above)."""

    class Conn(Model):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        password: SecretRef

    return Conn(**fields) if fields else Conn


def test_inline_secret_refused():
    with pytest.raises(ValidationError) as caught:
        Conn(password="hunter2")
    errors = caught.value.errors()
    assert len(errors) == 1
    assert "never inline" in errors[0]["msg"]
    assert "hunter2" not in errors[0]["msg"]  # the loader prints msg: no echo of the secret


@pytest.mark.parametrize("value", ["${vault:x}", "${env:}", "$env:X", "{env:X}", 1234, None])
def test_malformed_secret_reference_refused(value):
    with pytest.raises(ValidationError):
        Conn(password=value)


def test_env_secret_resolves_and_never_shows(monkeypatch):
    monkeypatch.setenv("DRORCH_TEST_PASSWORD", "s3cr3t-value")
    conn = Conn(password="${env:DRORCH_TEST_PASSWORD}")
    assert isinstance(conn.password, Secret)
    assert conn.password.resolve() == "s3cr3t-value"
    for shown in (repr(conn), str(conn), repr(conn.password), str(conn.password),
                  conn.model_dump_json(), str(conn.model_dump())):
        assert "s3cr3t-value" not in shown
    assert conn.model_dump() == {"password": "${env:DRORCH_TEST_PASSWORD}"}


def test_env_secret_read_when_used(monkeypatch):
    monkeypatch.delenv("DRORCH_TEST_ABSENT", raising=False)
    conn = Conn(password="${env:DRORCH_TEST_ABSENT}")  # checking needs no secret
    with pytest.raises(DrorchError) as caught:
        conn.password.resolve()
    assert "DRORCH_TEST_ABSENT is not set" in caught.value.message
    assert caught.value.hint


def test_file_secret(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    conn = Conn(password=f"${{file:{secret}}}")
    assert conn.password.resolve() == "from-a-file"
    assert "from-a-file" not in repr(conn)


def test_file_secret_missing(tmp_path):
    conn = Conn(password=f"${{file:{tmp_path / 'absent'}}}")
    with pytest.raises(DrorchError) as caught:
        conn.password.resolve()
    assert "cannot read" in caught.value.message


def test_secret_reference_whitespace_and_equality():
    assert Conn(password="  ${env:X}  ").password == Secret("${env:X}")
    assert hash(Secret("${env:X}")) == hash(Secret("${env:X}"))


def test_secret_schema():
    schema = Conn().model_json_schema()
    assert schema["properties"]["password"]["type"] == "string"
    assert "env" in schema["properties"]["password"]["pattern"]
