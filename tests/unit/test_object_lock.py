"""How long Object Lock retains each object: derived from the policy (policy/object_lock.py)."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest

from drorch.errors import PolicyError
from drorch.policy import load_policy
from drorch.policy.object_lock import lock_period


def policy_with(tmp_path, lock: str, sources: dict[str, str]):
    text = textwrap.dedent(f"""\
        repositories:
          offsite:
            type: s3
            bucket: bkt
            object_lock: {lock}
          local:
            type: posix
            path: /tmp/x
        sources:
        """)
    for name, retention in sources.items():
        repository = "local" if name.startswith("local") else "offsite"
        text += (f"  {name}:\n    kind: files\n    repository: {repository}\n    paths: [/etc]\n"
                 + (f"    retention: {retention}\n" if retention else ""))
    path = tmp_path / "p.yaml"
    path.write_text(text if sources else text.replace("sources:", "sources: {}"))
    return load_policy(path)


@pytest.mark.parametrize("lock,sources,days,why", [
    ("{mode: COMPLIANCE, period: 90d}", {"a": ""}, 90, "90d (object_lock.period)"),
    ("{mode: COMPLIANCE}", {"a": "{max_age: 30d}"}, 37, "37d = 30d (max_age of a) + 7d (margin)"),
    ("{mode: GOVERNANCE, full_every: 7d, margin: 1d}", {"a": "{full: 3, max_age: 10d}"}, 29,
     "29d = 21d (3 fulls of a, full_every 7d) + 7d (one chain: full_every) + 1d (margin)"),
    # the source that keeps backups longest decides; sources of other repositories do not count
    ("{mode: COMPLIANCE, margin: 0s}", {"a": "{max_age: 30d}", "b": "{max_age: 60d}", "local1": "{max_age: 900d}"},
     60, "60d = 60d (max_age of b) + 0s (margin)"),
])
def test_lock_period_is_derived_from_retention(tmp_path, lock, sources, days, why):
    period = lock_period(policy_with(tmp_path, lock, sources), "offsite")
    assert period.period == timedelta(days=days)
    assert period.why == why


@pytest.mark.parametrize("sources,words", [
    ({}, "no source uses this repository"),
    ({"a": ""}, "source a has no retention rules"),
    ({"a": "{full: 2}"}, "set object_lock.full_every"),
])
def test_underivable_lock_period_is_a_policy_error_at_the_key(tmp_path, sources, words):
    with pytest.raises(PolicyError) as excinfo:
        policy_with(tmp_path, "{mode: COMPLIANCE}", sources)
    [problem] = excinfo.value.problems
    assert problem.startswith(f"{tmp_path / 'p.yaml'}:5:")  # the line of object_lock
    assert "repositories.offsite.object_lock: " in problem and words in problem
