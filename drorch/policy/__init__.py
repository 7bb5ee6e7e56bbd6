"""Policies: what to back up, where to, when, and how long to keep it."""

from drorch.policy.loader import DEFAULT_POLICY_PATH, Policy, load_policy

__all__ = ["DEFAULT_POLICY_PATH", "Policy", "load_policy"]
