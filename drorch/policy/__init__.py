"""Policies: what to back up, where to, when, and how long to keep it."""

from drorch.policy.loader import DEFAULT_POLICY_PATH, Policy, load_policy, load_runbook_file

__all__ = ["DEFAULT_POLICY_PATH", "Policy", "load_policy", "load_runbook_file"]
