"""`drorch runbook check|render|plan|run|resume|approve|report`."""

from __future__ import annotations

import getpass
import select
import socket
import sys
import time
from pathlib import Path

import click

from drorch.cli.common import json_option, load, policy_option
from drorch.cli.render import emit_json, say, warn
from drorch.errors import UsageError
from drorch.policy import load_runbook_file
from drorch.runbook.journal import DEFAULT_STATE_DIR, Journal, StateDir, runbook_of
from drorch.timefmt import iso, parse_iso, utcnow

state_dir_option = click.option("--state-dir", type=click.Path(path_type=Path), envvar="DRORCH_STATE_DIR",
                                default=str(DEFAULT_STATE_DIR), show_default=True,
                                help="local journals, approvals and notifications (env DRORCH_STATE_DIR)")
mode_option = click.option("--mode", required=True,
                           type=click.Choice(["switchover", "failover", "dr-activate", "drill"]))


@click.group("runbook")
def runbook_group() -> None:
    """Failover runbooks: one YAML that is both the document and the program."""


def _book(policy_path: Path, ref: str, explicit_policy: bool):
    """(runbook, its file, policy or None): a runbook file path, or an id in the policy."""
    if Path(ref).is_file() and not explicit_policy:
        book, doc = load_runbook_file(ref)
        return book, str(doc.path), None
    policy = load(policy_path)
    if ref in policy.runbooks:
        return policy.runbooks[ref], str(policy.runbook_docs[ref].path), policy
    if Path(ref).is_file():
        for name, doc in policy.runbook_docs.items():
            if Path(doc.path).resolve() == Path(ref).resolve():
                return policy.runbooks[name], str(doc.path), policy
        book, doc = load_runbook_file(ref)
        return book, str(doc.path), None
    known = ", ".join(sorted(policy.runbooks)) or "none"
    raise UsageError(f"no runbook {ref!r} in {policy.path} (runbooks: {known})",
                     "give a runbook id of the policy, or the path of a runbook file")


def _explicit(ctx: click.Context) -> bool:
    return ctx.get_parameter_source("policy_path") != click.core.ParameterSource.DEFAULT


@runbook_group.command("check")
@click.argument("ref", required=False)
@policy_option
@json_option
@click.pass_context
def check(ctx, ref, policy_path, as_json) -> None:
    """Validate runbooks (an id of the policy, or a runbook file; default: all of the policy)."""
    if ref:
        book, path, _ = _book(policy_path, ref, _explicit(ctx))
        books = {book.id: (book, path)}
    else:
        policy = load(policy_path)
        books = {name: (book, str(policy.runbook_docs[name].path)) for name, book in policy.runbooks.items()}
    if as_json:
        emit_json([{"id": b.id, "file": p, "modes": b.modes, "steps": len(b.steps), "rollback": len(b.rollback),
                    "dr_steps": len(b.dr_branch.steps) if b.dr_branch else 0} for b, p in books.values()])
        return
    if not books:
        say("no runbooks in this policy")
    for book, path in books.values():
        dr = f", DR branch {len(book.dr_branch.steps)}" if book.dr_branch else ""
        say(f"runbook {book.id} OK ({path}): modes {', '.join(book.modes)}; steps {len(book.steps)}, rollback "
            f"{len(book.rollback)}{dr}")


@runbook_group.command("render")
@click.argument("ref")
@policy_option
@click.option("--html", "as_html", is_flag=True, help="one self-contained HTML page instead of Markdown")
@click.pass_context
def render_cmd(ctx, ref, policy_path, as_html) -> None:
    """Print the runbook as a document a person can follow by hand (Markdown, or --html)."""
    from drorch.runbook import render

    book, path, policy = _book(policy_path, ref, _explicit(ctx))
    where = str(policy.path) if policy else str(policy_path)
    click.echo((render.html if as_html else render.markdown)(book, path, where), nl=False)


@runbook_group.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of a runbook file (for editors)."""
    import json

    from drorch.runbook.model import RunbookDocument

    document = RunbookDocument.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "drorch runbook"
    click.echo(json.dumps(document, indent=2))


@runbook_group.command("plan")
@click.argument("ref")
@policy_option
@mode_option
@click.option("--candidate", metavar="NODE", help="consider only this standby")
@state_dir_option
@json_option
def plan_cmd(ref, policy_path, mode, candidate, state_dir, as_json) -> None:
    """What a run would do now, read-only: the nodes, the standby it would choose and why not
    the others, every guard, the commands it would run."""
    from drorch.runbook.plan import plan

    policy = load(policy_path)
    book, _, _ = _book(policy_path, ref, True)
    result = plan(policy, book, mode, state_dir, candidate)
    if as_json:
        emit_json(result)
    else:
        _say_plan(result)
    if not result["ok"]:
        sys.exit(1)


def _say_plan(result: dict) -> None:
    say(f"plan of runbook {result['runbook']}, mode {result['mode']} (read-only: nothing was changed)")
    for name, node in result["nodes"].items():
        say(f"  {node['text']}")
    choice = result.get("choice")
    if choice:
        say(f"primary: {choice['primary']} ({choice['primary_why']})")
        say(f"candidate: {choice['candidate'] or 'NONE'}")
        for name, why in choice["reasons"].items():
            say(f"  {name}: {why}")
    for name, why in (result.get("dr_choice") or {}).get("reasons", {}).items():
        say(f"DR {name}: {why}")
    for key in ("blocked", "escalation"):
        if result.get(key):
            say(f"{key}: {result[key]}")
    for item in result["steps"]:
        if "skipped" in item:
            say(f"  [skip]  {item['id']}: {item['skipped']}")
            continue
        if "guard" in item:
            guard = item["guard"]
            say(f"  [{'ok' if guard['ok'] else 'FAIL':5}] {item['id']}: guard: {guard['summary']}")
        if "now" in item:
            say(f"  [{'ok' if item['now']['ok'] else 'FAIL':5}] {item['id']}: {item['now']['summary']}")
        if "would" in item:
            say(f"  [would] {item['id']}: {item['title']} ({item['action']})")
            for line in item["would"]:
                say("          " + line.replace("\n", "\n          "))
            if item.get("preview"):
                say(f"          now: {item['preview']}")
        if item.get("approval"):
            say(f"          asks first: {item['approval']}")
    say("plan: OK" if result["ok"] else "plan: the run would not get through as things are now (see above)")


def _emitter(to_stderr: bool):
    marks = {"step": ">>", "step-succeeded": "ok", "step-failed": "!!", "step-skipped": "--", "warn": "!!",
             "approval": "??", "end": "==", "info": "==", "note": "  "}

    def emit(kind: str, text: str) -> None:
        click.echo(f"{time.strftime('%H:%M:%S')} {marks.get(kind, '  ')} {text}", err=to_stderr)
    return emit


def _asker():
    if not sys.stdin.isatty():
        return None

    def ask(prompt: str, deadline: float, elsewhere):
        click.echo("approve? [y/N] ", nl=False)
        while time.monotonic() < deadline:
            answer = elsewhere()
            if answer:
                click.echo(f"\nanswered with `drorch runbook approve`: {answer['decision']} by {answer['by']}")
                return answer
            ready, _, _ = select.select([sys.stdin], [], [], min(1.0, max(0.0, deadline - time.monotonic())))
            if ready:
                line = sys.stdin.readline().strip().lower()
                return {"decision": "approve" if line in ("y", "yes") else "reject", "at": iso(utcnow()),
                        "by": f"{getpass.getuser()}@{socket.gethostname()}", "how": "on the runner's terminal"}
        click.echo("")
        return None
    return ask


def _options(state_dir, as_json, **kwargs):
    from drorch.runbook.runs import RunOptions

    return RunOptions(state_dir=state_dir, asker=_asker(), emit=_emitter(as_json), **kwargs)


def _finish(journal: Journal, as_json: bool) -> None:
    from drorch.runbook import report

    built = report.build(journal.data)
    if as_json:
        emit_json(built)
    else:
        rto, rpo = built["rto"], built["rpo"]
        if rto["seconds"] is not None:
            say(f"RTO: {rto['seconds']:.1f}s until {rto['until']}" +
                ("" if "met" not in rto else f" (objective {'met' if rto['met'] else 'MISSED'})"))
        if rpo:
            say(f"RPO: {rpo['text']}" + ("" if "met" not in rpo else f" (objective {'met' if rpo['met'] else 'MISSED'})"))
        say(f"report: drorch runbook report {journal.run_id}")
    if journal.data["status"] != "succeeded":
        sys.exit(1)


@runbook_group.command("run")
@click.argument("ref")
@policy_option
@mode_option
@click.option("--candidate", metavar="NODE", help="promote this standby (it must qualify)")
@click.option("--detected-at", metavar="T", help="when the failure was noticed (default: now); RTO counts from it")
@click.option("--failed-at", metavar="T", help="when the failure happened, if known (DR data loss counts to it)")
@state_dir_option
@json_option
def run_cmd(ref, policy_path, mode, candidate, detected_at, failed_at, state_dir, as_json) -> None:
    """Run a runbook in a mode (journaled; resume it if the runner dies)."""
    from drorch.runbook.runs import start

    policy = load(policy_path)
    book, _, _ = _book(policy_path, ref, True)
    options = _options(state_dir, as_json, candidate=candidate,
                       detected_at=parse_iso(detected_at) if detected_at else None,
                       failed_at=parse_iso(failed_at) if failed_at else None)
    _finish(start(policy, book, mode, options), as_json)


@runbook_group.command("resume")
@click.argument("run_id", metavar="RUN")
@policy_option
@state_dir_option
@json_option
def resume_cmd(run_id, policy_path, state_dir, as_json) -> None:
    """Carry on with a run whose runner died (or that failed), from the step it was at."""
    from drorch.runbook.runs import resume

    _finish(resume(load(policy_path), run_id, _options(state_dir, as_json)), as_json)


@runbook_group.command("approve")
@click.argument("run_id", metavar="RUN")
@click.argument("step")
@click.option("--reject", is_flag=True, help="answer no")
@policy_option
@state_dir_option
@json_option
def approve_cmd(run_id, step, reject, policy_path, state_dir, as_json) -> None:
    """Answer the approval a run waits for at STEP (`escalate` for the DR branch)."""
    from drorch.runbook.approvals import Approvals, approve_waiting

    journal, repo = _journal(policy_path, run_id, state_dir)
    answer = approve_waiting(journal, Approvals(StateDir(state_dir), repo), step, "reject" if reject else "approve")
    if as_json:
        emit_json(answer)
        return
    say(f"{answer['decision']}d step {step} of run {run_id}: {answer['prompt']}")


@runbook_group.command("report")
@click.argument("run_id", metavar="RUN")
@policy_option
@state_dir_option
@click.option("--refresh", is_flag=True, help="read the old primary's end of WAL now (it must be stopped) "
              "and recompute the data loss exactly")
@json_option
def report_cmd(run_id, policy_path, state_dir, refresh, as_json) -> None:
    """The incident report of a run: steps and timings, RTO/RPO against objectives, data checks."""
    from drorch.runbook import report

    if refresh:
        from drorch.runbook.runs import refresh_rpo

        journal = refresh_rpo(load(policy_path), run_id, state_dir)
    else:
        journal, _ = _journal(policy_path, run_id, state_dir)
    if as_json:
        emit_json(report.build(journal.data))
    else:
        click.echo(report.markdown(journal.data), nl=False)


def _journal(policy_path, run_id: str, state_dir: Path):
    from drorch.runbook.runs import journal_repository

    repo = None
    try:
        policy = load(policy_path)
        book = policy.runbooks.get(runbook_of(run_id))
        if book is not None:
            repo = journal_repository(policy, book)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the local state dir may be all there is
        warn(f"cannot open the runbook's repository ({exc}); reading the local state directory only")
    return Journal.load(run_id, StateDir(state_dir), repo), repo


def register(cli: click.Group) -> None:
    cli.add_command(runbook_group)
