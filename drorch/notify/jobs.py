"""Findings from the outcome of one daemon job (the JSON result line of
drorch/daemon/job.py): a failed backup (II), a failed copy (II), a failed
expire (III), a hook that failed after a good backup (III), a verification
that could not run (III), a DR drill that failed (II) — and, when the job went
well, that they are gone."""

from __future__ import annotations

from drorch.notify.findings import Finding, gone


def job_findings(source: str, job: str, result: dict) -> list[Finding]:
    outcome = result.get("result")
    found: list[Finding] = []
    if job == "backup":
        found += _backup(source, outcome, result)
    if job == "verify":
        found += _verify(source, outcome, result)
    if job == "drill":
        found += _drill(source, outcome, result)
    for step in result.get("steps") or []:
        if step.get("result") in ("ok", "failed"):  # an aborted step says nothing of the target
            found.append(_step(source, step))
    found += _hooks(source, job, outcome, result)
    return found


def _backup(source: str, outcome: str, result: dict) -> list[Finding]:
    key, title = f"backup/{source}", f"backup of {source} failed"
    if outcome == "failed":
        return [Finding(key, "backup", source, title, result.get("error") or "failed", occurrence=True,
                        facts={"type": result.get("type"), "hint": result.get("hint")})]
    if outcome == "ok":
        return [gone(key, "backup", source, title, f"{result.get('type')} backup {result.get('label')} committed "
                                                   f"at {result.get('finished')}")]
    return []  # skipped, locked, aborted: nothing learned about the source


def _verify(source: str, outcome: str, result: dict) -> list[Finding]:
    """A verification that ran records its result in the repository (objectives.py reads
    it); one that could not run at all leaves no record: that is said here."""
    key, title = f"verify-job/{source}", f"the verification of {source} could not run"
    if outcome == "failed" and not result.get("verification"):
        return [Finding(key, "verify-job", source, title, result.get("error") or "failed", occurrence=True)]
    if outcome in ("ok", "failed"):
        return [gone(key, "verify-job", source, title, "a verification ran")]
    return []


def _drill(source: str, outcome: str, result: dict) -> list[Finding]:
    """A drill that failed: the DR branch of a runbook would not bring the service back."""
    key, title = f"drill/{source}", f"the DR drill of {source} failed"
    runs = ", ".join(f"{r.get('runbook')} run {r.get('run')}" for r in result.get("runs") or [])
    if outcome == "failed":
        return [Finding(key, "drill", source, title, result.get("error") or "failed", occurrence=True,
                        facts={"runs": runs})]
    if outcome == "ok":
        return [gone(key, "drill", source, title, f"a drill passed ({runs})")]
    return []


def _step(source: str, step: dict) -> Finding:
    name = step.get("step", "")
    failed = step.get("result") == "failed"
    detail = step.get("detail") or ""
    if name.startswith("copy to "):
        target = name.removeprefix("copy to ")
        key, title = f"copy/{source}/{target}", f"copy of {source} to {target} failed"
        return Finding(key, "copy", source, title, detail, occurrence=True) if failed else \
            gone(key, "copy", source, title, detail)
    key, title = f"{name or 'step'}/{source}", f"{name} of {source} failed"
    return Finding(key, "expire", source, title, detail, occurrence=True) if failed else \
        gone(key, "expire", source, title, detail)


def _hooks(source: str, job: str, outcome: str, result: dict) -> list[Finding]:
    """Hooks that failed without failing the job (post_backup, on_failure, post_verify);
    a pre_backup hook that failed is the backup's failure."""
    event = "post_verify" if job == "verify" else "post_backup"
    key, title = f"hook/{source}/{event}", f"a {event} hook of {source} failed"
    failed = [h for h in result.get("hooks") or [] if not h.get("ok") and h.get("event") != "pre_backup"]
    if failed:
        return [Finding(key, "hook", source, title, "; ".join(h.get("summary", "") for h in failed), occurrence=True,
                        facts={"hooks": [h.get("path") for h in failed]})]
    if outcome == "ok" or (job == "verify" and outcome == "failed"):
        return [gone(key, "hook", source, title, "its hooks ran")]
    return []
