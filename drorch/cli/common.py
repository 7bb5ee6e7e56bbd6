"""Options and helpers shared by the verbs."""

from __future__ import annotations

from pathlib import Path

import click

from drorch.policy import DEFAULT_POLICY_PATH, Policy, load_policy

policy_option = click.option(
    "--policy", "policy_path", type=click.Path(path_type=Path), envvar="DRORCH_POLICY",
    default=str(DEFAULT_POLICY_PATH), show_default=True,
    help="policy file or directory of policy files (env DRORCH_POLICY)")
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
source_option = click.option("--source", "source", metavar="NAME", help="a source named in the policy")
repository_option = click.option("--repository", "repository", metavar="NAME",
                                 help="read this repository instead of the source's own")


def load(policy_path: Path) -> Policy:
    return load_policy(policy_path)


def pick_source(policy: Policy, source: str | None) -> str:
    """--source, or the only source of the policy."""
    from drorch.errors import UsageError
    from drorch.factory import source_policy

    if source:
        source_policy(policy, source)
        return source
    if len(policy.sources) == 1:
        return next(iter(policy.sources))
    known = ", ".join(sorted(policy.sources)) or "none"
    raise UsageError(f"say which source with --source NAME (sources: {known})")
