"""The runner's rules, with shell steps on this machine (no database needed):
on_failure (continue, goto, abort), guards, retries, approvals (timeout and
default, the approve command), resume after SIGKILL (idempotent steps run
again, others are asked about), the lease, the journal in an encrypted
repository, notifications to a webhook."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from drorch.policy import load_policy
from drorch.runbook import runs as runner

REPO_ROOT = Path(__file__).resolve().parents[2]


class Env:
    def __init__(self, base: Path, steps: list[dict], encrypted: bool = False):
        self.base = base
        self.policies = base / "policies"
        self.policies.mkdir()
        self.state = base / "state"
        self.repo = base / "repo"
        self.marks = base / "marks"
        encryption = "    encryption: {passphrase: \"${env:RB_PASS}\"}\n" if encrypted else ""
        (self.policies / "policy.yaml").write_text(f"repositories:\n  r:\n    type: posix\n    path: {self.repo}\n"
                                                   + encryption)
        book = {"runbook": {
            "id": "local", "title": "Local steps", "owners": ["tests"], "summary": "shell steps on this machine",
            "topology": {"nodes": {"p": {"pgdata": "/srv/p", "connection": {"port": 1}},
                                   "d": {"pgdata": "/srv/d", "connection": {"port": 2}}},
                         "primary": "p", "dr": ["d"], "repository": "r"},
            "modes": ["dr-activate"], "lease": "3s", "dr_branch": {"steps": steps}}}
        (self.policies / "runbook.yaml").write_text(yaml.safe_dump(book, sort_keys=False))

    def run(self, drorch, *extra):
        return drorch("runbook", "run", "--policy", self.policies, "local", "--mode", "dr-activate",
                      "--state-dir", self.state, "--json", *extra)

    def journal(self, run_id: str) -> dict:
        return json.loads((self.state / "runs" / run_id / "journal.json").read_text())

    def run_ids(self) -> list[str]:
        return sorted(p.name for p in (self.state / "runs").iterdir())

    def subprocess(self, *args, fault: str | None = None) -> subprocess.CompletedProcess:
        environ = {**os.environ, **({"DRORCH_FAULT": fault} if fault else {})}
        return subprocess.run([sys.executable, "-m", "drorch.cli.main", "runbook", *args, "--policy",
                               str(self.policies), "--state-dir", str(self.state)], cwd=REPO_ROOT, env=environ,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)


def shell(step_id: str, command: str, **more) -> dict:
    args = {"command": command}
    if "idempotent" in more:
        args["idempotent"] = more.pop("idempotent")
    return {"id": step_id, "title": f"step {step_id}", "action": "shell", "args": args, **more}


def test_continue_goto_and_abort(tmp_path, drorch):
    marks, flag = tmp_path / "marks", tmp_path / "flag"
    env = Env(tmp_path, [
        shell("s1", f"echo one >> {marks}"),
        shell("s2", "exit 3", on_failure="continue"),
        shell("s3", f"test -e {flag} || {{ touch {flag}; exit 1; }}", on_failure="goto:s1"),
        shell("s4", "echo broken >&2; exit 1"),
        shell("s5", f"echo never >> {marks}")])
    result = env.run(drorch)
    assert result.code == 1
    report = result.json()
    assert report["status"] == "failed" and report["error"].startswith("step s4 failed")
    assert marks.read_text() == "one\none\n"  # s1 ran again after the goto; s5 never ran
    states = {s["id"]: s["state"] for s in report["steps"]}
    assert states == {"s1": "succeeded", "s2": "failed", "s3": "succeeded", "s4": "failed"}
    journal = env.journal(report["run"])
    assert "broken" in journal["steps"]["s4"]["output"]
    assert (env.repo / "runbooks" / "runs" / report["run"]).exists()  # the repository has the journal too


def test_guards_skip_and_retries_repeat(tmp_path, drorch):
    flag = tmp_path / "once"
    closed = {"action": "tcp.check", "args": {"host": "127.0.0.1", "port": 9}, "otherwise": "skip"}
    env = Env(tmp_path, [
        shell("guarded", f"echo ran >> {tmp_path}/guarded", guard=closed),
        shell("flaky", f"test -e {flag} || {{ touch {flag}; exit 1; }}", retries=2, retry_delay="0s")])
    result = env.run(drorch)
    assert result.code == 0, result.out + result.err
    steps = {s["id"]: s for s in result.json()["steps"]}
    assert steps["guarded"]["state"] == "skipped" and "guard not met" in steps["guarded"]["summary"]
    assert not (tmp_path / "guarded").exists()
    assert steps["flaky"]["state"] == "succeeded" and steps["flaky"]["attempts"] == 2


def test_an_unanswered_approval_takes_its_explicit_default(tmp_path, drorch):
    env = Env(tmp_path, [
        {"id": "ok-by-default", "title": "yes", "action": "approval",
         "args": {"prompt": "go on?", "timeout": "1s", "default": "approve"}},
        shell("guarded-by-approval", "true", approval={"prompt": "really?", "timeout": "1s", "default": "reject"})])
    result = env.run(drorch)
    assert result.code == 1
    report = result.json()
    steps = {s["id"]: s for s in report["steps"]}
    assert steps["ok-by-default"]["state"] == "succeeded"
    assert steps["guarded-by-approval"]["state"] == "failed"
    assert "not approved: rejected by nobody (no answer within 1s" in steps["guarded-by-approval"]["summary"]
    assert report["approvals"]["guarded-by-approval"]["decision"] == "reject"


def test_the_approve_command_answers_a_waiting_run(tmp_path, drorch):
    env = Env(tmp_path, [shell("risky", f"touch {tmp_path}/done",
                               approval={"prompt": "drop the old site?", "timeout": "60s", "default": "reject"})])
    policy = load_policy(env.policies)
    box = {}
    thread = threading.Thread(target=lambda: box.update(journal=runner.start(
        policy, policy.runbooks["local"], "dr-activate", runner.RunOptions(state_dir=env.state))))
    thread.start()
    deadline = time.monotonic() + 30
    while True:
        ids = env.run_ids() if env.state.exists() else []
        if ids and env.journal(ids[0]).get("waiting"):
            break
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.1)
    wrong = drorch("runbook", "approve", "--policy", env.policies, ids[0], "other", "--state-dir", env.state)
    assert wrong.code == 2 and "is not waiting for an approval of step other" in wrong.err
    ok = drorch("runbook", "approve", "--policy", env.policies, ids[0], "risky", "--state-dir", env.state)
    assert ok.code == 0 and "approved step risky" in ok.out and "drop the old site?" in ok.out
    thread.join(30)
    journal = box["journal"].data
    assert journal["status"] == "succeeded" and (tmp_path / "done").exists()
    assert journal["approvals"]["risky"]["how"] == "drorch runbook approve"


def test_resume_after_sigkill_repeats_only_what_is_safe_to_repeat(tmp_path, drorch):
    marks = tmp_path / "marks"
    env = Env(tmp_path, [shell("safe", f"echo safe >> {marks}", idempotent=True),
                         shell("unsafe", f"echo unsafe >> {marks}"),
                         shell("last", f"echo last >> {marks}")])
    killed = env.subprocess("run", "local", "--mode", "dr-activate", fault="runbook-after-action-safe")
    assert killed.returncode == -signal.SIGKILL
    run_id = env.run_ids()[-1]
    assert env.journal(run_id)["steps"]["safe"]["state"] == "running"
    # the lease of the dead runner (this host, pid gone) is taken over
    killed_again = env.subprocess("resume", run_id, fault="runbook-after-action-unsafe")
    assert killed_again.returncode == -signal.SIGKILL, killed_again.stderr
    assert marks.read_text() == "safe\nsafe\nunsafe\n"  # the idempotent step ran again, without asking
    policy = load_policy(env.policies)
    box = {}
    thread = threading.Thread(target=lambda: box.update(journal=runner.resume(
        policy, run_id, runner.RunOptions(state_dir=env.state))))
    thread.start()
    deadline = time.monotonic() + 30
    while not (env.journal(run_id).get("waiting") or {}).get("question") == "unsafe.repeat":
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.1)
    assert "cannot tell whether it took effect" in env.journal(run_id)["waiting"]["prompt"]
    answer = drorch("runbook", "approve", "--policy", env.policies, run_id, "unsafe", "--reject",
                    "--state-dir", env.state)
    assert answer.code == 0, answer.err
    thread.join(30)
    journal = box["journal"].data
    assert journal["status"] == "failed" and "not run again" in journal["steps"]["unsafe"]["summary"]
    assert marks.read_text() == "safe\nsafe\nunsafe\n"  # not repeated, and the run stopped there
    assert len(journal["resumed"]) == 2


def test_one_runner_at_a_time_holds_the_lease(tmp_path, drorch):
    env = Env(tmp_path, [shell("s1", "true")])
    assert env.run(drorch).code == 0  # creates the repository
    lease_path = env.repo / "runbooks" / "leases" / "local"
    holder = subprocess.Popen(["sleep", "60"])
    try:
        record = {"topology": "local", "run": "other.20260101T000000Z", "host": os.uname().nodename,
                  "pid": holder.pid, "token": "x", "renewed": "2099-01-01T00:00:00Z",
                  "expires": "2099-01-01T00:00:00Z"}
        lease_path.parent.mkdir(parents=True, exist_ok=True)
        lease_path.write_text(json.dumps(record))
        busy = env.run(drorch)
        assert busy.code == 1 and "is being acted on by run other.20260101T000000Z" in busy.err
    finally:
        holder.kill()
        holder.wait()
    lease_path.parent.mkdir(parents=True, exist_ok=True)
    lease_path.write_text(json.dumps({**record, "host": "elsewhere", "expires": "2020-01-01T00:00:00Z"}))
    taken = env.run(drorch)  # expired: taken over
    assert taken.code == 0, taken.err
    assert not lease_path.exists()  # released at the end


def test_the_journal_is_sealed_in_an_encrypted_repository_and_read_back_from_it(tmp_path, drorch, monkeypatch):
    monkeypatch.setenv("RB_PASS", "correct horse battery staple")
    env = Env(tmp_path, [shell("s1", "echo secret-output")], encrypted=True)
    result = env.run(drorch)
    assert result.code == 0, result.err
    run_id = result.json()["run"]
    stored = (env.repo / "runbooks" / "runs" / run_id).read_bytes()
    assert b"secret-output" not in stored and b"s1" not in stored
    fresh_state = tmp_path / "another-host-state"
    report = drorch("runbook", "report", "--policy", env.policies, run_id, "--state-dir", fresh_state)
    assert report.code == 0, report.err
    assert f"run `{run_id}`" in report.out and "| s1 |" in report.out


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Hook.received
    finally:
        server.shutdown()
        server.server_close()


def test_notify_posts_to_the_webhook_and_writes_the_log(tmp_path, drorch, webhook):
    url, received = webhook
    env = Env(tmp_path, [{"id": "tell", "title": "tell", "action": "notify",
                          "args": {"message": "DR on ${dr} (run ${run})", "severity": "critical", "webhook": url}}])
    result = env.run(drorch)
    assert result.code == 0, result.err
    run_id = result.json()["run"]
    assert received == [{**received[0], "severity": "critical", "message": f"DR on d (run {run_id})",
                         "run": run_id}]
    logged = [json.loads(line) for line in (env.state / "notifications.log").read_text().splitlines()]
    assert logged[-1]["message"] == f"DR on d (run {run_id})"


def _ghost_env(tmp_path: Path, then: list[dict]) -> Env:
    """A node whose host cannot be reached (nothing listens on its SSH port) and has no fence command."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = Env(tmp_path, [{"id": "fence", "title": "fence the old primary", "action": "pg.fence",
                          "modes": ["dr-activate"], "args": {"nodes": ["primary"], "approval_timeout": "2s"}},
                         *then])
    policy = env.policies / "policy.yaml"
    policy.write_text(policy.read_text() + f"hosts:\n  ghost: {{address: 127.0.0.1, port: {port}, user: root, "
                      f"key_file: {tmp_path}/no-key, known_hosts: {tmp_path}/no-known-hosts}}\n")
    book = env.policies / "runbook.yaml"
    book.write_text(book.read_text().replace("p:\n        pgdata: /srv/p", "p:\n        host: ghost\n        "
                                                                           "pgdata: /srv/p"))
    return env


def test_an_unreachable_server_is_not_fenced_the_run_stops_at_a_split_brain_question(tmp_path, drorch):
    marker = tmp_path / "promoted"
    env = _ghost_env(tmp_path, [shell("take-over", f"touch {marker}")])
    result = env.run(drorch)
    assert result.code == 1, result.out + result.err
    report = result.json()
    fence = report["steps"][0]
    assert fence["state"] == "failed" and "p NOT fenced: host ghost not reachable" in fence["summary"]
    assert "no fence_command" in fence["summary"] and "rejected by nobody" in fence["summary"]
    question = report["approvals"]["split-brain-p"]
    assert question["decision"] == "reject" and "SPLIT-BRAIN RISK" in question["prompt"]
    assert "fenced" not in report["milestones"] and not marker.exists()  # nothing went on


def test_a_person_who_made_sure_the_server_is_down_lets_the_run_go_on(tmp_path, drorch):
    marker = tmp_path / "promoted"
    env = _ghost_env(tmp_path, [shell("take-over", f"touch {marker}")])
    book = env.policies / "runbook.yaml"
    book.write_text(book.read_text().replace("approval_timeout: 2s", "approval_timeout: 60s"))
    policy = load_policy(env.policies)
    box = {}
    thread = threading.Thread(target=lambda: box.update(journal=runner.start(
        policy, policy.runbooks["local"], "dr-activate", runner.RunOptions(state_dir=env.state))))
    thread.start()
    deadline = time.monotonic() + 60
    while True:
        ids = env.run_ids() if (env.state / "runs").exists() else []
        waiting = env.journal(ids[0]).get("waiting") if ids else None
        if waiting:
            break
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.1)
    assert waiting["step"] == "fence" and "SPLIT-BRAIN RISK: p could not be fenced" in waiting["prompt"]
    assert drorch("runbook", "approve", "--policy", env.policies, ids[0], "fence", "--state-dir", env.state).code == 0
    thread.join(60)
    journal = box["journal"].data
    assert journal["status"] == "succeeded" and marker.exists()
    assert "a person confirmed that p is down" in journal["steps"]["fence"]["summary"]
    assert "not observed by drorch" in journal["steps"]["fence"]["summary"]


def test_a_failed_step_rolls_back_and_a_rollback_interrupted_is_resumed_not_the_failed_step(tmp_path, drorch):
    marks = tmp_path / "marks"
    env = Env(tmp_path, [shell("change", f"echo change >> {marks}", idempotent=True),
                         shell("breaks", f"echo breaks >> {marks}; exit 1", on_failure="rollback")])
    book = env.policies / "runbook.yaml"
    text = yaml.safe_load(book.read_text())
    text["runbook"]["rollback"] = [shell("undo-1", f"echo undo-1 >> {marks}", idempotent=True),
                                   shell("undo-2", f"echo undo-2 >> {marks}", idempotent=True)]
    book.write_text(yaml.safe_dump(text, sort_keys=False))
    killed = env.subprocess("run", "local", "--mode", "dr-activate", fault="runbook-after-action-undo-1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_id = env.run_ids()[-1]
    resumed = drorch("runbook", "resume", "--policy", env.policies, run_id, "--state-dir", env.state, "--json")
    assert resumed.code == 1, resumed.out + resumed.err
    report = resumed.json()
    assert report["status"] == "rolled-back" and report["error"].startswith("step breaks failed")
    assert marks.read_text() == "change\nbreaks\nundo-1\nundo-1\nundo-2\n"  # the failed step was not run again
    again = drorch("runbook", "resume", "--policy", env.policies, run_id, "--state-dir", env.state)
    assert again.code == 2 and "has ended (rolled-back)" in again.err


def test_post_step_hooks_and_the_policy_channels_hear_steps_and_the_end(tmp_path, drorch, webhook):
    url, received = webhook
    log = tmp_path / "hook.log"
    hook = tmp_path / "policies" / "post-step.sh"
    env = Env(tmp_path, [shell("one", "true"),
                         shell("two", "false", on_failure="continue"),
                         {"id": "tell", "title": "tell", "action": "notify",
                          "args": {"message": "half way on ${dr}", "severity": "warning"}},
                         shell("three", "false")])
    hook.write_text(f'#!/bin/sh\necho "$DRORCH_RUNBOOK $DRORCH_RUN $DRORCH_STEP $DRORCH_STEP_STATE" >> {log}\n'
                    '[ "$DRORCH_STEP" != one ] || { echo "hook says no"; exit 3; }\n')
    hook.chmod(0o755)
    book = env.policies / "runbook.yaml"
    book.write_text(book.read_text().replace('  modes:', '  hooks: {post_step: [post-step.sh], timeout: 10s}\n'
                                                         '  modes:'))
    policy = env.policies / "policy.yaml"
    policy.write_text(policy.read_text() + f"notify:\n  - {{type: webhook, name: chat, url: '{url}', "
                                           "min_severity: IV}\n")
    result = env.run(drorch)
    assert result.code != 0  # step three failed: the run failed
    run_id = result.json()["run"]
    lines = log.read_text().splitlines()
    assert lines == [f"local {run_id} one succeeded", f"local {run_id} two failed", f"local {run_id} tell succeeded",
                     f"local {run_id} three failed"]
    journal = env.journal(run_id)
    steps = journal["steps"]
    assert steps["one"]["state"] == "succeeded"  # a failing hook never fails its step
    assert steps["one"]["hooks"][0]["ok"] is False and "hook says no" in steps["one"]["hooks"][0]["summary"]
    assert steps["two"]["hooks"][0]["ok"] is True
    told = [(m["drorch"]["severity"], m["drorch"]["title"]) for m in received]
    assert told == [("III", "runbook local: half way on d"), ("I", f"runbook run {run_id} failed")]
    assert "error:" in received[-1]["text"] and f"drorch runbook report {run_id}" in received[-1]["text"]
    assert journal["notified"] == ["chat ok"]
    # the incident report reads the run's journal from the repository: a failed run is an incident of severity I
    report = drorch("report", "incident", "--policy", env.policies, "--since", "1h", "--json")
    assert report.code == 0, report.err
    (incident,) = [i for i in report.json()["incidents"] if i["kind"] == "runbook"]
    assert incident["severity"] == "I" and incident["cause"] == journal["error"]
    assert [(a["what"], a["result"]) for a in incident["actions"]] == [
        ("step one: step one", "succeeded"), ("step two: step two", "failed"), ("step tell: tell", "succeeded"),
        ("step three: step three", "failed")]
    # and the run's own report is that incident: severity, the O&M targets
    own = drorch("runbook", "report", run_id, "--policy", env.policies, "--state-dir", env.state, "--json")
    assert own.code == 0, own.err
    assert own.json()["incident"]["severity"] == "I" and own.json()["incident"]["status"] == "open"
    assert own.json()["incident"]["targets"]["respond_by"] == incident["targets"]["respond_by"]
    text = drorch("runbook", "report", run_id, "--policy", env.policies, "--state-dir", env.state).out
    assert "Severity **I** (critical)" in text and "respond by" in text
