"""Golden tests for the pure retention function `decide(backups, rules, now)`.

Backups are written in a compact notation: "F1 I2 D3 I4* F5" is a full on
day 1, an incr on day 2, a diff on day 3, a *pinned* incr on day 4 and a full
on day 5.  Each backup finished at 01:00 UTC on its day.  Parents follow the
chain rules: an incr hangs on the previous backup of any type, a diff on the
previous full, a full on nothing.

Rules are written like the policy: "full:2 diff:1 max_age:7d" ("" = no rules).
`now` is a day number (01:00 UTC that day) or a datetime.

Results are compared as sets of tokens ("F1 I2"), and reasons are shown with
labels turned back into tokens ("needed by I4").
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from drorch.engine.retention import BackupRef, Decision, Rules, decide
from drorch.policy.types import parse_duration

DAY1 = datetime(2026, 3, 1, 1, 0, tzinfo=timezone.utc)  # day 1, 01:00 UTC
TYPES = {"F": "full", "D": "diff", "I": "incr"}


def at(day: int) -> datetime:
    return DAY1 + timedelta(days=day - 1)


def label_of(letter: str, day: int) -> str:
    return f"{at(day):%Y%m%dT%H%M%SZ}-{letter}"


def chain(spec: str) -> tuple[list[BackupRef], dict[str, str]]:
    """'F1 I2 D3 I4* F5' -> (BackupRefs, {label: token}).  '*' = pinned."""
    refs: list[BackupRef] = []
    tokens: dict[str, str] = {}
    last_full: str | None = None
    previous: str | None = None
    last_day = 0
    for raw in spec.split():
        pinned = raw.endswith("*")
        token = raw.rstrip("*")
        letter, day = token[0], int(token[1:])
        assert letter in TYPES, f"bad token {raw!r}"
        assert day > last_day, f"days must increase: {spec!r}"
        last_day = day
        label = label_of(letter, day)
        btype = TYPES[letter]
        if btype == "full":
            parent = None
        elif btype == "diff":
            assert last_full, f"a diff needs a full before it: {spec!r}"
            parent = last_full
        else:
            assert previous, f"an incr needs a backup before it: {spec!r}"
            parent = previous
        refs.append(BackupRef(label, btype, parent, at(day), pinned))
        tokens[label] = token
        if btype == "full":
            last_full = label
        previous = label
    return refs, tokens


def rules(text: str) -> Rules:
    """'full:2 diff:1 max_age:7d' -> Rules."""
    kwargs: dict = {}
    for part in text.split():
        key, value = part.split(":", 1)
        kwargs[key] = parse_duration(value) if key == "max_age" else int(value)
    return Rules(**kwargs)


def when(now: int | datetime) -> datetime:
    return at(now) if isinstance(now, int) else now


def run(spec: str, rule_text: str, now: int | datetime = 100) -> dict[str, Decision]:
    """decide() on the notation; returns {token: Decision} with reasons in tokens."""
    refs, tokens = chain(spec)
    decisions = decide(refs, rules(rule_text), when(now))
    assert set(decisions) == {r.label for r in refs}, "one decision per backup"
    out = {}
    for label, decision in decisions.items():
        assert decision.label == label
        assert decision.reasons, f"{tokens[label]} has no reason"
        reasons = []
        for reason in decision.reasons:
            for full_label, token in tokens.items():
                reason = reason.replace(full_label, token)
            reasons.append(reason)
        out[tokens[label]] = Decision(tokens[label], decision.keep, reasons)
    return out


def kept(spec: str, rule_text: str, now: int | datetime = 100) -> str:
    """The kept tokens, in chain order, as one string."""
    decisions = run(spec, rule_text, now)
    order = [t.rstrip("*") for t in spec.split()]
    return " ".join(t for t in order if decisions[t].keep)


# --- golden table: which backups are kept --------------------------------------

CASES = [
    # (what, backups, rules, now (day), kept)
    ("empty list", "", "full:1", 10, ""),
    ("empty list, no rules", "", "", 10, ""),
    ("no rules keeps everything", "F1 I2 D3 I4 F5 I6", "", 100, "F1 I2 D3 I4 F5 I6"),
    ("a lone full is kept", "F1", "full:1", 100, "F1"),
    # full: N
    ("full:1 keeps the newest full and its incrs",
     "F1 I2 I3 F4 I5 I6", "full:1", 10, "F4 I5 I6"),
    ("full:2 keeps two full chains", "F1 I2 F3 I4 F5 I6", "full:2", 10, "F3 I4 F5 I6"),
    ("full:N beyond the number of fulls keeps all", "F1 I2 F3 I4", "full:5", 10, "F1 I2 F3 I4"),
    ("full:1 when the newest backup is a full", "F1 I2 F3", "full:1", 10, "F3"),
    ("only incrs on a full that expires go with it", "F1 I2 I3 I4 F5", "full:1", 10, "F5"),
    ("only fulls", "F1 F2 F3 F4", "full:2", 10, "F3 F4"),
    # diffs without a diff rule
    ("diffs without a diff rule go with their full",
     "F1 D2 D3 F4 D5 D6", "full:1", 10, "F4 D5 D6"),
    ("a diff goes with its full when the full expires", "F1 D2 F3 D4", "full:1", 10, "F3 D4"),
    # diff: M
    ("diff:1 keeps only the newest diff (and its full)", "F1 D2 D3 D4", "full:1 diff:1", 10, "F1 D4"),
    ("diff:2 keeps the two newest diffs", "F1 D2 D3 D4 D5", "full:1 diff:2", 10, "F1 D4 D5"),
    ("diff:1 across fulls: the older full's diff goes", "F1 D2 F3 D4 D5", "full:2 diff:1", 10, "F1 F3 D5"),
    ("diff:1 keeps a diff whose full no count keeps, and so that full",
     "F1 D2 F3", "full:1 diff:1", 10, "F1 D2 F3"),
    # incrs go with their base
    ("incrs go with their base diff while the diff is kept",
     "F1 D2 I3 I4 D5 I6", "full:1 diff:2", 10, "F1 D2 I3 I4 D5 I6"),
    ("incrs go with their base diff when the diff expires",
     "F1 D2 I3 I4 D5 I6", "full:1 diff:1", 10, "F1 D5 I6"),
    ("a full kept only because a diff needs it does not keep its incrs",
     "F1 I2 D3 F4", "full:1 diff:1", 10, "F1 D3 F4"),
    ("incrs on a diff that goes with its kept full are kept (diff has no rule)",
     "F1 D2 I3 F4", "full:2", 10, "F1 D2 I3 F4"),
    # max_age
    ("max_age keeps young backups and what they need",
     "F1 I2 F3 I4 I5", "max_age:2d", 6, "F3 I4 I5"),
    ("max_age boundary: exactly max_age old is kept", "F1 F2 F3", "max_age:2d", 4, "F2 F3"),
    ("max_age boundary: one second older is dropped",
     "F1 F2 F3", "max_age:2d", at(4) + timedelta(seconds=1), "F3"),
    ("max_age 1h30m: a backup 90 minutes old is kept, one a day older is not",
     "F1 F2", "max_age:1h30m", at(2) + timedelta(minutes=90), "F2"),
    ("a backup is kept if any rule keeps it (full or max_age)",
     "F1 I2 F3 I4 F5", "full:1 max_age:3d", 6, "F3 I4 F5"),
    # the newest backup
    ("the newest is kept even when max_age would drop everything",
     "F1 I2 I3", "max_age:1d", 100, "F1 I2 I3"),
    ("the newest is kept with its chain, nothing else",
     "F1 D2 I3 F4 D5 I6", "max_age:1d", 30, "F4 D5 I6"),
    ("max_age:0s keeps only the newest (and its chain)", "F1 F2 I3", "max_age:0s", 50, "F2 I3"),
    # pins
    ("a pinned incr keeps its whole chain",
     "F1 D2 I3 I4* F5 I6", "full:1", 10, "F1 D2 I3 I4 F5 I6"),
    ("a pinned incr keeps a diff that diff:M would drop",
     "F1 D2 I3* D4 F5", "full:1 diff:1", 10, "F1 D2 I3 D4 F5"),
    ("a pinned full is kept, and its incrs go with it",
     "F1* I2 I3 F4 I5", "full:1", 10, "F1 I2 I3 F4 I5"),
    ("a pinned diff keeps its full", "F1 D2* D3 F4", "full:1 diff:1", 10, "F1 D2 D3 F4"),
    ("a pin counts even with max_age only", "F1* F2 F3", "max_age:1d", 100, "F1 F3"),
]


@pytest.mark.parametrize("backups, rule_text, now, expected",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_kept(backups, rule_text, now, expected):
    assert kept(backups, rule_text, now) == expected


def test_full_zero_keeps_no_full_by_count():
    """`full: 0` means no full is kept by count; only the newest (always kept) remains.
    (The policy model refuses 0, but decide() is a pure function of its Rules.)"""
    assert kept("F1 F2 F3", "full:0", 10) == "F3"


def test_input_order_does_not_matter():
    refs, _ = chain("F1 D2 I3 I4 D5 I6 F7 I8 D9 I10")
    now = at(12)
    expected = decide(refs, rules("full:1 diff:1 max_age:3d"), now)
    shuffled = refs[:]
    random.Random(7).shuffle(shuffled)
    assert decide(shuffled, rules("full:1 diff:1 max_age:3d"), now) == expected


def test_empty_list_returns_no_decisions():
    assert decide([], Rules(full=1), at(1)) == {}
    assert decide([], Rules(), at(1)) == {}


# --- reasons ---------------------------------------------------------------


def test_reasons_no_rules():
    decisions = run("F1 I2 D3", "")
    assert all(d.reasons == ["no retention rules: everything is kept"] for d in decisions.values())


def test_reasons_newest_always_kept():
    decisions = run("F1 I2 I3", "max_age:1d", 100)
    assert decisions["I3"].reasons == ["newest backup (always kept)"]
    assert decisions["I2"].reasons == ["needed by I3"]
    assert decisions["F1"].reasons == ["needed by I3"]


def test_reasons_pinned_chain():
    decisions = run("F1 D2 I3 I4* F5 I6", "full:1", 10)
    assert decisions["I4"].reasons == ["pinned"]
    assert decisions["I3"].reasons == ["needed by I4"]
    assert decisions["D2"].reasons == ["needed by I4"]
    assert decisions["F1"].reasons == ["needed by I4"]
    assert decisions["I6"].reasons == ["newest backup (always kept)"]
    assert decisions["F5"].reasons[0] == "full 1 of the 1 newest (full: 1)"


def test_reasons_full_rank():
    decisions = run("F1 F2 F3", "full:2", 10)
    assert decisions["F3"].reasons == ["newest backup (always kept)", "full 1 of the 2 newest (full: 2)"]
    assert decisions["F2"].reasons == ["full 2 of the 2 newest (full: 2)"]
    assert decisions["F1"].reasons == ["not among the 2 newest fulls"]


def test_reasons_incr_goes_with_its_base():
    decisions = run("F1 D2 I3 I4 D5 I6 F7", "full:1 diff:1", 10)
    assert decisions["I6"].reasons == ["goes with its base D5"]
    assert decisions["I3"].reasons == ["its base D2 expires"]
    assert decisions["I4"].reasons == ["its base D2 expires"]
    assert decisions["D2"].reasons == ["not among the 1 newest diffs"]


def test_reasons_diff_goes_with_its_full():
    decisions = run("F1 D2 F3 D4 I5", "full:1", 10)
    assert decisions["D4"].reasons == ["goes with its full F3", "needed by I5"]
    assert decisions["D2"].reasons == ["its full F1 expires"]
    assert decisions["F1"].reasons == ["not among the 1 newest fulls"]


def test_reasons_max_age():
    decisions = run("F1 F2 F3", "full:1 max_age:1d", 3)
    assert decisions["F2"].reasons == ["younger than max_age (1d)"]
    assert decisions["F1"].reasons == ["not among the 1 newest fulls; older than max_age (1d)"]


def test_reasons_full_without_full_rule():
    decisions = run("F1 F2", "max_age:1d", 10)
    assert decisions["F1"].reasons == ["no rule keeps it (no `full:` count); older than max_age (1d)"]


def test_needed_by_is_said_once():
    decisions = run("F1 I2 I3 I4", "max_age:3d", 5)
    # I2..I4 are young; F1 is old and needed by all three, but says so once.
    assert [r for r in decisions["F1"].reasons if r.startswith("needed by")] == ["needed by I4"]


def test_a_dropped_backup_has_exactly_one_reason():
    decisions = run("F1 D2 I3 D4 I5 F6 I7", "full:1 diff:1", 10)
    dropped = {t: d for t, d in decisions.items() if not d.keep}
    assert set(dropped) == {"D2", "I3"}
    assert all(len(d.reasons) == 1 for d in dropped.values())


# --- properties over random chains and rules ---------------------------------


@st.composite
def chains_and_rules(draw):
    n = draw(st.integers(0, 14))
    letters = ["F"] + [draw(st.sampled_from("FDI")) for _ in range(n - 1)] if n else []
    day, parts = 0, []
    for letter in letters:
        day += draw(st.integers(1, 4))
        parts.append(f"{letter}{day}" + ("*" if draw(st.integers(0, 9)) == 0 else ""))
    full = draw(st.none() | st.integers(1, 4))
    diff = draw(st.none() | st.integers(1, 4))
    max_age = draw(st.none() | st.integers(0, 20 * 86400).map(lambda s: timedelta(seconds=s)))
    now = at(day or 1) + timedelta(seconds=draw(st.integers(0, 30 * 86400)))
    return " ".join(parts), Rules(full=full, diff=diff, max_age=max_age), now


PROPERTY = settings(max_examples=150, deadline=None, database=None)


@PROPERTY
@given(chains_and_rules())
def test_property_chains_of_kept_backups_are_kept(case):
    spec, rule, now = case
    refs, _ = chain(spec)
    decisions = decide(refs, rule, now)
    by_label = {r.label: r for r in refs}
    assert set(decisions) == set(by_label)
    if not refs:
        return
    assert decisions[max(by_label)].keep, "the newest backup is always kept"
    for ref in refs:
        assert decisions[ref.label].reasons
        if ref.pinned or rule.empty:
            assert decisions[ref.label].keep
        if rule.max_age is not None and now - ref.finished <= rule.max_age:
            assert decisions[ref.label].keep
        if not decisions[ref.label].keep:
            continue
        parent = ref.parent
        while parent is not None:
            assert decisions[parent].keep, f"{ref.label} is kept but its ancestor {parent} is not"
            parent = by_label[parent].parent


@PROPERTY
@given(chains_and_rules())
def test_property_order_independent(case):
    spec, rule, now = case
    refs, _ = chain(spec)
    shuffled = list(reversed(refs))
    assert decide(shuffled, rule, now) == decide(refs, rule, now)


@PROPERTY
@given(chains_and_rules())
@example(("F1 D2 I3 F4", Rules(full=2), at(5)))  # a diff kept with its full; its incr too
def test_property_incrs_go_with_a_base_kept_by_a_rule(case):
    """An incr goes with its base, and a diff (without a diff rule) with its full,
    whenever that base is kept for its own sake (not merely as someone's dependency)."""
    spec, rule, now = case
    refs, _ = chain(spec)
    decisions = decide(refs, rule, now)
    by_label = {r.label: r for r in refs}
    for ref in refs:
        if ref.type == "full" or (ref.type == "diff" and rule.diff is not None):
            continue
        base = ref.parent
        while by_label[base].type == "incr":
            base = by_label[base].parent
        base_reasons = decisions[base].reasons
        if decisions[base].keep and any(not r.startswith("needed by") for r in base_reasons):
            assert decisions[ref.label].keep, (
                f"{ref.label} dropped ({decisions[ref.label].reasons}) although its base "
                f"{base} is kept ({base_reasons})")
