"""The fencing rules every engine shares: fence a server on its host when it
can be reached (the engine's way), else run the node's `fence_command`
elsewhere (its success is the proof); being unreachable is never proof (a
network partition looks the same), so without proof the run stops at an
approval that names the split-brain risk (unanswered: not fenced)."""

from __future__ import annotations

from typing import Callable

from drorch.errors import DrorchError, HostError, HostUnreachableError
from drorch.runbook.actions.base import Outcome, tail

SPLIT_BRAIN = ("SPLIT-BRAIN RISK: {node} could not be fenced ({why}). drorch cannot tell a dead server from "
               "one it cannot reach: if {node} still runs and its clients still reach it, promoting another "
               "server makes two writable primaries and committed data diverges. Approve ONLY after you have "
               "made sure {node} is down or cut off (power off, network, storage).")

#: (node, output lines) -> (proof or None, why not); raises HostError when the host fails it
OnHost = Callable[[object, list], tuple]


def fence_nodes(nodes: list, on_host: OnHost, ctx, approval_timeout: float) -> Outcome:
    """Fence each node; the step succeeds only when every one has a proof."""
    proofs, failures, output = {}, {}, []
    for node in nodes:
        proof, why, out = fence_one(node, on_host, ctx, approval_timeout)
        output += out
        if proof:
            proofs[node.name] = proof
        else:
            failures[node.name] = why
    data = {"proofs": proofs, "failures": failures}
    if failures:
        return Outcome(False, "; ".join(f"{name} NOT fenced: {why}" for name, why in failures.items()), data,
                       tail("\n".join(output)))
    ctx.milestone("fenced")
    return Outcome(True, "; ".join(f"{name} fenced: {proof}" for name, proof in proofs.items()) or
                   "no server to fence", data, tail("\n".join(output)))


def fence_one(node, on_host: OnHost, ctx, approval_timeout: float) -> tuple[str | None, str, list[str]]:
    """(proof or None, why not, command output) for one server."""
    output: list[str] = []
    try:
        proof, why = on_host(node, output)
        if proof:
            return proof, "", output
    except HostUnreachableError as exc:
        why = f"host {node.spec.host} not reachable: {exc.message}"
    except HostError as exc:  # reached, but the commands failed (sudo, pg_ctl): no proof either
        why = f"on host {node.spec.host}: {exc.message}"
    fence = ctx.fence_command(node.name)
    if fence is not None:
        command = ctx.expand(fence.command)
        try:
            result = ctx.host(fence.host).run(command, shell=True, timeout=ctx.remaining())
            output.append(tail(result.stdout + result.stderr))
            if result.ok:
                return f"fence command succeeded on host {fence.host}: {command}", "", output
            why += f"; the fence command exited {result.exit_status}"
        except DrorchError as exc:
            why += f"; the fence command failed: {exc.message}"
    else:
        why += "; no fence_command is configured for it"
    approved, answer = ctx.ask(SPLIT_BRAIN.format(node=node.name, why=why), approval_timeout, "reject",
                               question=f"split-brain-{node.name}")
    if approved:
        return f"a person confirmed that {node.name} is down ({answer}); not observed by drorch", "", output
    return None, f"{why}; {answer}", output


def preview_fence(nodes: list, looks: Callable[[object], str], ctx) -> str:
    """Plan mode: what fencing would find on each node (read-only)."""
    parts = []
    for node in nodes:
        try:
            parts.append(f"{node.name}: host reachable, {looks(node)}")
        except DrorchError as exc:
            how = "its fence command would run" if ctx.fence_command(node.name) else \
                "no fence command: the run would stop at an approval (split-brain risk)"
            parts.append(f"{node.name}: host NOT reachable ({exc.message}); {how}")
    return "; ".join(parts) or "no server to fence"


def refuse_second_primary(node, ctx, what: str) -> Outcome | None:
    """Never two writable primaries: a failed Outcome when another node takes writes."""
    for other in ctx.production_nodes():
        if other.name != node.name and ctx.observe(other).role == "primary":
            return Outcome(False, f"refusing to {what} {node.name}: {other.name} is a writable primary; "
                                  "fence it first (never two writable primaries)")
    return None
