"""Runbook files: validation with FILE:LINE:COL errors, the rendered document,
the choice of a standby, RTO/RPO arithmetic."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from drorch.errors import PolicyError
from drorch.policy import load_policy, load_runbook_file
from drorch.runbook import metrics, render
from drorch.runbook.pgnode import NodeStatus, waldump_end
from drorch.runbook.topology import SplitBrain, choose_candidate, current_primary
from drorch.sources.pg_wal import parse_lsn

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_MD = ROOT / "examples" / "pg-failover.md"
SHOWN_POLICY = "/etc/drorch/policies"

MINIMAL = """\
runbook:
  id: small
  title: Small
  owners: [me]
  summary: a test
  topology:
    nodes:
      a: {pgdata: /srv/a, connection: {port: 5432}}
      b: {pgdata: /srv/b, connection: {port: 5433}}
    primary: a
    standbys: [b]
    repository: r
  modes: [switchover]
  steps:
    - id: promote
      title: Promote
      action: pg.promote
"""


def write(tmp_path: Path, text: str, name: str = "rb.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_runbook_file(path)
    return caught.value.problems


def test_a_minimal_runbook_loads(tmp_path):
    book, doc = load_runbook_file(write(tmp_path, MINIMAL))
    assert book.id == "small" and book.steps[0].args.node == "candidate"
    assert book.steps[0].on_failure == "abort" and book.topology.max_lag == 16 << 20


@pytest.mark.parametrize("change, where, message", [
    (("action: pg.promote", "action: pg.promot"), ":17:7: runbook.steps[0].action:", "must be one of"),
    (("      action: pg.promote", "      action: pg.promote\n      args: {node: b, nonsense: 1}"),
     ":18:23: runbook.steps[0].args.nonsense:", "unknown key"),
    (("      action: pg.promote", "      action: pg.promote\n      args: {node: c}"),
     ":18:14: runbook.steps[0].args.node:", "no node or role named 'c'"),
    (("      action: pg.promote", "      action: pg.promote\n      on_failure: goto:nowhere"),
     ":18:7: runbook.steps[0].on_failure:", "no step 'nowhere'"),
    (("      action: pg.promote", "      action: pg.promote\n      timeout: 5"),
     ":18:7: runbook.steps[0].timeout:", "a duration"),
    (("    - id: promote\n      title: Promote", "    - title: Promote\n      id: promote"),
     ":15:7: runbook.steps[0]:", "starts with `id:`"),
    (("standbys: [b]", "standbys: [b, z]"), ":11:19: runbook.topology.standbys[1]:", "no node named 'z'"),
    (("      action: pg.promote", "      action: pg.promote\n      host: db9"),
     ":18:7: runbook.steps[0].host:", "acts on `args.node`"),
    (("      action: pg.promote", "      action: shell\n      args: {command: 'echo ${nobody.pgdata}'}"),
     ":18:14: runbook.steps[0].args.command:", "no role or node named 'nobody'"),
    (("      action: pg.promote", "      action: approval\n      args: {prompt: \"sure\"}"),
     ":18:7: runbook.steps[0].args.default:", "required key is missing"),
])
def test_problems_name_the_file_line_and_key(tmp_path, change, where, message):
    path = write(tmp_path, MINIMAL.replace(*change))
    found = problems(path)
    assert any(where in p and message in p for p in found), found
    assert all(p.startswith(str(path) + ":") for p in found)


def test_step_ids_are_unique_and_a_drill_never_touches_production(tmp_path):
    text = MINIMAL.replace("modes: [switchover]", "modes: [switchover, drill]").replace(
        "    repository: r", "    repository: r\n    dr: [c]").replace(
        "      b: {pgdata: /srv/b, connection: {port: 5433}}",
        "      b: {pgdata: /srv/b, connection: {port: 5433}}\n      c: {pgdata: /srv/c, connection: {port: 5434}}")
    text += textwrap.indent(textwrap.dedent("""\
        dr_branch:
          steps:
            - id: promote
              title: again
              action: pg.fence
            - id: restore
              title: restore
              action: pg.restore
              args: {node: candidate}
        """), "  ")
    found = "\n".join(problems(write(tmp_path, text)))
    assert "step id 'promote' is used twice" in found
    assert "pg.fence changes production servers and must not run in a drill" in found
    assert "there is no `candidate` there" in found
    assert "pg.restore / pg.rebuild / mariadb.restore restore the backups of `source:`" in found


def test_runbooks_live_in_the_policy_directory_and_name_what_it_has(tmp_path):
    (tmp_path / "policy.yaml").write_text("repositories:\n  r: {type: posix, path: /srv/repo}\n")
    write(tmp_path, MINIMAL.replace("{pgdata: /srv/a,", "{host: nowhere, pgdata: /srv/a,"))
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path)
    assert any("runbook.topology.nodes.a.host: no host named 'nowhere'" in p for p in caught.value.problems)
    write(tmp_path, MINIMAL)
    policy = load_policy(tmp_path)
    assert list(policy.runbooks) == ["small"] and list(policy.repositories) == ["r"]


def example_policy(into: Path | None = None) -> Path:
    """The example runbook with the policy file it names (policies/ holds other examples too)."""
    import shutil
    import tempfile

    into = into or Path(tempfile.mkdtemp(prefix="drorch-example-"))
    for name in ("pg-cluster.yaml", "pg-failover.yaml"):
        shutil.copy(ROOT / "policies" / name, into / name)
    return into


def test_the_example_validates_and_its_rendered_document_is_up_to_date(tmp_path):
    policy = load_policy(example_policy(tmp_path))
    book = policy.runbooks["pg-failover"]
    text = render.markdown(book, "policies/pg-failover.yaml", SHOWN_POLICY)
    assert EXAMPLE_MD.read_text() == text, (
        "examples/pg-failover.md is not the rendering of policies/pg-failover.yaml; regenerate it: "
        "python -c \"from tests.unit.test_runbook_model import regenerate; regenerate()\"")


def regenerate() -> None:
    book = load_policy(example_policy()).runbooks["pg-failover"]
    EXAMPLE_MD.write_text(render.markdown(book, "policies/pg-failover.yaml", SHOWN_POLICY))


def test_render_has_every_step_with_its_text_and_command(drorch, tmp_path):
    policies = example_policy(tmp_path)
    result = drorch("runbook", "render", "--policy", policies, "pg-failover")
    assert result.code == 0, result.err
    book = load_policy(policies).runbooks["pg-failover"]
    for step in [*book.steps, *book.rollback, *book.dr_branch.steps]:
        assert f"`{step.id}`: {step.title}" in result.out
        for line in step.text.strip().splitlines():
            assert line in result.out, line
        for key in ("command", "query", "message", "prompt"):
            value = getattr(step.args, key, None)
            if value:
                assert value.replace('"', '\\"') in result.out or value in result.out, value
    assert "pg_ctl -D ${primary.pgdata} stop -m fast" in result.out  # the fence, by hand
    assert "SELECT pg_promote(true, 60)" in result.out
    assert "drorch restore --policy" in result.out and "--target-host" in result.out
    html = drorch("runbook", "render", "--policy", policies, "pg-failover", "--html")
    assert html.code == 0 and html.out.startswith("<!DOCTYPE html>") and 'id="fence-old-primary"' in html.out
    assert "&lt;" in html.out or "<pre><code>" in html.out


def status(name, role, *, flush=None, receive=None, replay=None, paused=False, error=None):
    lsn = lambda v: None if v is None else parse_lsn(v)  # noqa: E731
    if role == "down":
        return NodeStatus(name, False, error=error or "connection refused")
    return NodeStatus(name, True, in_recovery=role == "standby", flush_lsn=lsn(flush), receive_lsn=lsn(receive),
                      replay_lsn=lsn(replay), replay_paused=paused, timeline=1)


def test_the_furthest_standby_within_the_bound_is_chosen_and_the_others_say_why_not():
    statuses = {"p": status("p", "primary", flush="0/9000000"),
                "s1": status("s1", "standby", receive="0/8F00000", replay="0/8F00000"),
                "s2": status("s2", "standby", receive="0/9000000", replay="0/9000000"),
                "s3": status("s3", "standby", receive="0/9000000", replay="0/2000000", paused=True),
                "s4": status("s4", "down")}
    order = ["p", "s1", "s2", "s3", "s4"]
    choice = choose_candidate("p", order, statuses, 4 << 20)
    assert choice.candidate == "s2"
    assert "further ahead by 1.0 MB" in choice.reasons["s1"]
    assert "lags 112.0 MB" in choice.reasons["s3"] and "replay is paused" in choice.reasons["s3"]
    assert choice.reasons["s4"].startswith("not reachable")
    even = {**statuses, "s1": status("s1", "standby", receive="0/9000000", replay="0/9000000")}
    tie = choose_candidate("p", ["p", "s1", "s2"], even, 4 << 20)
    assert tie.candidate == "s1" and "comes first in the standbys list" in tie.reasons["s2"]
    forced = choose_candidate("p", order, statuses, 4 << 20, forced="s1")
    assert forced.candidate == "s1" and "not the standby asked for" in forced.reasons["s2"]


def test_with_the_primary_gone_the_reference_is_the_last_known_position():
    statuses = {"p": status("p", "down"), "s1": status("s1", "standby", receive="0/5000000", replay="0/5000000")}
    known = (parse_lsn("0/5800000"), "the last WAL position seen on p")
    choice = choose_candidate("p", ["p", "s1"], statuses, 16 << 20, known)
    assert choice.candidate == "s1" and choice.reference["basis"] == known[1]
    assert choose_candidate("p", ["p", "s1"], statuses, 1 << 20, known).candidate is None
    assert current_primary(["p", "s1"], statuses, "s1", "p") == ("s1", current_primary(
        ["p", "s1"], statuses, "s1", "p")[1])
    with pytest.raises(SplitBrain):
        current_primary(["a", "b"], {"a": status("a", "primary", flush="0/1"),
                                     "b": status("b", "primary", flush="0/1")}, None, "a")


def test_pg_waldump_complaints_give_the_end_of_wal():
    seg = 16 << 20
    assert waldump_end("pg_waldump: error: error in WAL record at 0/1526058: invalid record length at "
                       "0/15261F0: wanted 24, got 0", seg) == parse_lsn("0/15261F0")
    assert waldump_end("pg_waldump: error: error in WAL record at 0/2FFFFA0: invalid magic number 0000 in "
                       "WAL segment 000000010000000000000003, LSN 0/3000000, offset 0", seg) == parse_lsn("0/3000000")
    assert waldump_end('pg_waldump: error: could not find file "000000020000000000000005": No such file', seg) \
        == parse_lsn("0/5000000")
    assert waldump_end("nothing useful", seg) is None


def test_rto_and_rpo_from_a_journal():
    data = {"milestones": {"detected": "2026-01-01T00:00:00Z", "promoted": "2026-01-01T00:00:20Z",
                           "writable": "2026-01-01T00:00:21Z", "verified": "2026-01-01T00:00:30Z"},
            "objectives": {"rto": 60, "rpo_bytes": 1000},
            "facts": {"promotion": {"node": "s", "switchpoint": "0/5000000"},
                      "old_primary_end": {"node": "p", "lsn": "0/5000800", "basis": "pg_waldump"}}}
    rto = metrics.rto(data)
    assert rto == {**rto, "seconds": 30.0, "until": "verified", "met": True}
    rpo = metrics.rpo(data)
    assert rpo["bytes"] == 0x800 and rpo["estimate"] is False and rpo["met"] is False
    data["facts"]["old_primary_end"] = {"node": "p", "lsn": None, "basis": "host unreachable"}
    data["facts"]["last_seen"] = {"node": "p", "lsn": "0/5000100", "at": "2026-01-01T00:00:00Z"}
    estimate = metrics.rpo(data)
    assert estimate["bytes"] == 0x100 and estimate["estimate"] is True and "estimate" in estimate["text"]
    dr = {"milestones": {"detected": "2026-01-01T00:10:00Z"}, "objectives": {"rpo": 300},
          "facts": {"dr_restore": {"last_commit": "2026-01-01T00:08:00Z", "backup": "B", "end_lsn": "0/9"}}}
    assert metrics.rpo(dr)["seconds"] == 120.0 and metrics.rpo(dr)["met"] is True


def test_the_docs_describe_every_action_and_argument():
    from drorch.runbook.actions import ACTIONS

    text = (ROOT / "docs" / "runbooks.md").read_text().split("### Actions", 1)[1]
    for action in ACTIONS.values():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{action.name}` |")), None)
        assert row is not None, f"docs/runbooks.md has no row for {action.name}"
        for name in action.Args.model_fields:
            assert f"`{name}`" in row, f"docs/runbooks.md: {action.name} does not mention `{name}`"


def test_the_runners_measurements_read_as_sentences_in_reports():
    from drorch.notify.runbooks import outcome_lines

    outcome = {"rto": {"seconds": 42.25, "until": "verified", "objective_seconds": 300, "met": True},
               "rpo": {"kind": "promotion", "bytes": 8192, "text": "8.0 KiB of WAL", "basis": "exact", "met": False}}
    assert outcome_lines(outcome) == ["service back after 42.2 s (until verified), objective 300 s: met",
                                      "data lost: 8.0 KiB of WAL (exact); objective MISSED"]
    assert outcome_lines({"rto": {"seconds": None}, "rpo": None}) == []
    assert outcome_lines(["as it was"]) == ["as it was"]


MDB_EXAMPLE_MD = ROOT / "examples" / "mariadb-failover.md"


def mariadb_example(into: Path) -> Path:
    import shutil

    for name in ("mariadb-cluster.yaml", "mariadb-failover.yaml"):
        shutil.copy(ROOT / "policies" / name, into / name)
    return into


def test_the_mariadb_example_validates_and_its_rendered_document_is_up_to_date(tmp_path):
    book = load_policy(mariadb_example(tmp_path)).runbooks["mariadb-failover"]
    text = render.markdown(book, "policies/mariadb-failover.yaml", SHOWN_POLICY)
    assert MDB_EXAMPLE_MD.read_text() == text, (
        "examples/mariadb-failover.md is not the rendering of policies/mariadb-failover.yaml; regenerate it: "
        "python -c \"from tests.unit.test_runbook_model import regenerate_mariadb; regenerate_mariadb()\"")
    for step in book.steps + book.dr_branch.steps:
        assert step.title in text and f"`{step.id}`" in text
    assert "SET GLOBAL read_only = ON" in text and "MASTER_USE_GTID = slave_pos" in text
    assert "RESET SLAVE ALL" in text and "1000 transactions" in text


def regenerate_mariadb() -> None:
    import tempfile

    book = load_policy(mariadb_example(Path(tempfile.mkdtemp()))).runbooks["mariadb-failover"]
    MDB_EXAMPLE_MD.write_text(render.markdown(book, "policies/mariadb-failover.yaml", SHOWN_POLICY))


def test_a_mariadb_runbook_refuses_pg_actions_and_postgres_node_keys(tmp_path):
    text = MINIMAL.replace("    nodes:\n      a: {pgdata: /srv/a, connection: {port: 5432}}\n"
                           "      b: {pgdata: /srv/b, connection: {port: 5433}}",
                           "    engine: mariadb\n    nodes:\n      a: {datadir: /srv/a, connection: {port: 3306}}\n"
                           "      b: {pgdata: /srv/b, connection: {port: 3307}}")
    found = problems(write(tmp_path, text))
    assert any(":10:11: runbook.topology.nodes.b.pgdata: unknown key; did you mean 'datadir'?" in p for p in found), found
    fixed = text.replace("b: {pgdata: /srv/b", "b: {datadir: /srv/b")
    found = problems(write(tmp_path, fixed))
    assert any(":18:7: runbook.steps[0].action: pg.promote acts on postgres servers; this topology's engine is "
               "mariadb" in p for p in found), found
    book, _ = load_runbook_file(write(tmp_path, fixed.replace("pg.promote", "mariadb.promote")))
    assert book.topology.engine == "mariadb" and book.topology.max_lag == 1000
    wrong = problems(write(tmp_path, fixed.replace("engine: mariadb", "engine: oracle")))
    assert any(":7:5: runbook.topology.engine: `engine` must be one of: postgres, mariadb" in p for p in wrong), wrong


def test_gtid_arithmetic_and_the_end_of_a_binlog():
    from drorch.runbook.mdbnode import binlog_distance, gtid_lag, gtid_seq, last_gtid

    assert gtid_seq("0-1-42,1-2-7") == 49 and gtid_lag("0-1-42,1-2-7", "0-1-40") == 9
    assert gtid_lag("0-2-43", "0-1-50") == 0
    assert binlog_distance(("binlog.000002", 100), ("binlog.000003", 50),
                           {"binlog.000002": 400, "binlog.000003": 50}) == 350
    dump = "# Gtid list [0-1-40]\n#260101  1:02:03 server id 1  end_log_pos 9 GTID 0-1-41 trans\n" \
           "#260101  1:02:03 server id 1  end_log_pos 9 GTID 0-1-42 trans\n"
    assert last_gtid(dump) == "0-1-42" and last_gtid("# Gtid list [0-1-40]") == "0-1-40"
