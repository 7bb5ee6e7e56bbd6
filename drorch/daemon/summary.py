"""The one line each job ends with: what, result, size, duration, why."""

from __future__ import annotations

from drorch.units import human_bytes


def summary_line(job, result: dict) -> tuple[str, dict]:
    """(the log line, its facts for JSON logs)."""
    decision = job.decision
    outcome = result["result"]
    what = f"{decision.job} {decision.source}"
    fields = {"source": decision.source, "job": decision.job, "result": outcome,
              "seconds": result.get("seconds"), "slot": decision.slot.isoformat(), "pid": job.proc.pid}
    parts = [f"{what}: {outcome}"]
    if decision.job == "backup" and outcome == "ok":
        parts.append(f"{result['type']} {result['label']}, {human_bytes(result.get('stored_bytes'))} stored "
                     f"of {human_bytes(result.get('size_bytes'))}")
        fields.update(type=result["type"], label=result["label"], stored_bytes=result.get("stored_bytes"),
                      size_bytes=result.get("size_bytes"), requested=decision.requested)
    elif decision.job == "backup":
        fields.update(type=result.get("type") or decision.type, requested=decision.requested)
    parts.append(f"{result.get('seconds', 0):.1f}s")
    why = result.get("why") or decision.reason
    fields["why"] = why
    line = ", ".join(parts) + f"; why: {why}"
    if result.get("error"):
        line += f"; error: {result['error']}"
        fields["error"] = result["error"]
    hooks = [h for h in result.get("hooks") or [] if not h.get("ok")]
    if hooks:
        line += "; hooks failed: " + "; ".join(h.get("summary", "") for h in hooks)
        fields["hooks"] = hooks
    steps = result.get("steps") or []
    if steps:
        line += "; then " + ", ".join(f"{s['step']}: {s['result']}" + (f" ({s['detail']})" if s.get("detail")
                                                                         else "") for s in steps)
        fields["steps"] = steps
    return line, fields
