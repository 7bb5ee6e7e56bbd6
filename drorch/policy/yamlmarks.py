"""YAML loading that remembers where every value came from.

pydantic reports a problem by its location (a tuple of keys and indexes);
DBAs need FILE:LINE:COL.  We compose the YAML node tree ourselves and record
the mark of every mapping key and value under its location tuple.  Duplicate
keys are errors: PyYAML would silently keep the last one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[Any, ...]


@dataclass
class Marked:
    """A loaded document and the (line, column) of every location in it (1-based)."""

    path: Path
    data: Any
    marks: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def where(self, loc: Loc) -> str:
        """FILE:LINE:COL for the deepest known prefix of loc."""
        for n in range(len(loc), -1, -1):
            mark = self.marks.get(tuple(loc[:n]))
            if mark:
                return f"{self.path}:{mark[0]}:{mark[1]}"
        return f"{self.path}:1:1"


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    def __init__(self, doc: Marked):
        self.doc = doc
        self.scalar_loader = yaml.SafeLoader("")

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.doc.marks.setdefault(loc, _mark(node))
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
            line, col = _mark(node)
            self.doc.problems.append(f"{self.doc.path}:{line}:{col}: {_dotted(loc) or '<top>'}: "
                                     f"tag {node.tag} is not allowed in a policy; remove it")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, loc + (i,)) for i, item in enumerate(node.value)]
        return self.scalar_loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict:
        own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        self.scalar_loader.flatten_mapping(node)  # resolves YAML merge keys (<<): merged pairs first
        out: dict = {}
        merged: set = set()  # keys that came from a merge: a key of our own overrides them
        for key_node, value_node in node.value:
            key = self.scalar_loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                self.doc.problems.append(f"{self.doc.path}:{_mark(key_node)[0]}:{_mark(key_node)[1]}: "
                                         f"{_dotted(loc) or '<top>'}: a key must be a plain value")
                continue
            if key in out and key in merged and id(key_node) in own:
                merged.discard(key)
                del out[key]
            elif key in out:
                first = self.doc.marks.get(loc + (key,), (0, 0))
                line, col = _mark(key_node)
                self.doc.problems.append(
                    f"{self.doc.path}:{line}:{col}: {_dotted(loc + (key,))}: duplicate key "
                    f"(first defined at line {first[0]}); remove one of them")
                continue
            if id(key_node) not in own:
                merged.add(key)
            self.doc.marks[loc + (key,)] = _mark(key_node)
            out[key] = self.build(value_node, loc + (key,))
        return out


def _dotted(loc: Loc) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


dotted = _dotted


def load_marked(path: Path) -> Marked:
    """Load one YAML file; syntax errors become problems, never exceptions."""
    doc = Marked(path=path, data=None)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        doc.problems.append(f"{path}:1:1: <file>: cannot read: {exc}")
        return doc
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context_mark and exc.problem_mark and \
                exc.context_mark.line != exc.problem_mark.line:
            what += f" ({exc.context} at line {exc.context_mark.line + 1})"
        doc.problems.append(f"{path}:{line}:{col}: <yaml>: {what}; fix the YAML syntax")
        return doc
    except yaml.YAMLError as exc:
        doc.problems.append(f"{path}:1:1: <yaml>: {exc}")
        return doc
    nodes = [n for n in nodes if n is not None]
    if len(nodes) > 1:
        line, col = _mark(nodes[1])
        doc.problems.append(f"{path}:{line}:{col}: <yaml>: one document per file, please "
                            "(split it into several files in the policy directory)")
        return doc
    if not nodes:
        doc.data = {}
        return doc
    try:
        doc.data = _Builder(doc).build(nodes[0], ())
    except yaml.YAMLError as exc:  # e.g. an unknown tag
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        doc.problems.append(f"{path}:{line}:{col}: <yaml>: {getattr(exc, 'problem', exc)}")
    return doc
