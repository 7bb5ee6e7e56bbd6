"""Load a policy: one YAML file or a directory of them, merged.

Every problem is reported as `FILE:LINE:COL: dotted.key: message`, all of
them at once, and raised as one PolicyError (exit code 2).
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from drorch.errors import PolicyError
from drorch.policy.cron import schedule_problems
from drorch.policy.models import Daemon, PolicyDocument
from drorch.policy.notify_models import Reports
from drorch.policy.object_lock import object_lock_problems
from drorch.policy.yamlmarks import Marked, dotted, load_marked

DEFAULT_POLICY_PATH = Path("/etc/drorch/policies")
ORIGIN_FILE = ".origin"
SECTIONS = tuple(PolicyDocument.model_fields)


@dataclass
class Policy:
    """All policy documents merged.  `where[(section, name)]` is where each
    named entry was defined, for messages that point at the file."""

    path: Path
    files: list[Path]
    hosts: dict[str, Any] = field(default_factory=dict)
    repositories: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)
    docs: dict[tuple[str, str], Marked] = field(default_factory=dict)
    daemon: Daemon = field(default_factory=Daemon)  # `daemon:` of one file, else the defaults
    notify: list = field(default_factory=list)  # channels of every file, in file order
    reports: Reports = field(default_factory=Reports)
    origin: Path | None = None  # where relative paths (hooks) point: the policy's own directory
    runbooks: dict[str, Any] = field(default_factory=dict)  # files whose top level is `runbook:`
    runbook_docs: dict[str, Marked] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        """The directory relative hook paths are read from: the policy directory, or the policy
        file's; for the daemon's copy of the policies, the directory they were copied from."""
        if self.origin is not None:
            return self.origin
        return self.path if self.path.is_dir() else self.path.parent

    def where(self, section: str, name: str, *keys: Any) -> str:
        return self.docs[(section, name)].where((section, name, *keys))


def policy_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.suffix in (".yaml", ".yml") and p.is_file() and not p.name.startswith("."))
        if not files:
            raise PolicyError([f"{path}: no *.yaml or *.yml files in this policy directory"],
                              "put policy files there, or pass --policy FILE")
        return files
    if path.is_file():
        return [path]
    raise PolicyError([f"{path}: no such policy file or directory"],
                      "pass --policy PATH (a YAML file or a directory of them); the default is "
                      f"{DEFAULT_POLICY_PATH}")


def load_policy(path: Path | str) -> Policy:
    path = Path(path)
    files = policy_files(path)
    policy = Policy(path=path, files=files, origin=_origin(path))
    problems: list[str] = []
    for file in files:
        doc = load_marked(file)
        problems += doc.problems
        if doc.problems:
            continue
        if isinstance(doc.data, dict) and "runbook" in doc.data:
            _add_runbook(policy, doc, problems)
            continue
        if not isinstance(doc.data, dict):
            problems.append(f"{doc.where(())}: <top>: a policy file is a mapping of sections "
                            f"({', '.join(SECTIONS)})")
            continue
        try:
            model = PolicyDocument.model_validate(doc.data)
        except ValidationError as exc:
            problems += [_describe(doc, err) for err in exc.errors()]
            continue
        _merge(policy, doc, model, problems)
    if not problems:
        problems += _cross_references(policy)
    if problems:
        raise PolicyError(problems, "fix the lines above; `drorch policy schema` prints every key")
    return policy


def _origin(path: Path) -> Path | None:
    """A copy of policies (the daemon's) names the directory it was copied from in `.origin`."""
    marker = (path if path.is_dir() else path.parent) / ORIGIN_FILE
    try:
        return Path(marker.read_text().strip())
    except OSError:
        return None


def load_runbook_file(path: Path | str):
    """One runbook file on its own (no policy): (runbook, its marked document)."""
    policy = Policy(path=Path(path), files=[Path(path)])
    doc = load_marked(Path(path))
    problems = list(doc.problems)
    if not problems and not (isinstance(doc.data, dict) and "runbook" in doc.data):
        problems.append(f"{doc.where(())}: <top>: a runbook file has one top-level key, `runbook:`")
    if not problems:
        _add_runbook(policy, doc, problems)
    if problems:
        raise PolicyError(problems, "fix the lines above")
    book = next(iter(policy.runbooks.values()))
    return book, doc


def _add_runbook(policy: Policy, doc: Marked, problems: list[str]) -> None:
    from drorch.runbook.checks import runbook_problems
    from drorch.runbook.model import RunbookDocument

    try:
        book = RunbookDocument.model_validate(doc.data).runbook
    except ValidationError as exc:
        problems += [_describe(doc, err, RunbookDocument) for err in exc.errors()]
        return
    found = runbook_problems(book, doc)
    if book.id in policy.runbooks:
        found.append(f"{doc.where(('runbook', 'id'))}: runbook.id: runbook {book.id!r} is defined twice (also "
                     f"in {policy.runbook_docs[book.id].path})")
    problems += found
    if not found:
        policy.runbooks[book.id] = book
        policy.runbook_docs[book.id] = doc


def _merge(policy: Policy, doc: Marked, model: PolicyDocument, problems: list[str]) -> None:
    for section in SECTIONS:
        target = getattr(policy, section)
        if isinstance(target, list):  # notify: the channels of every file add up
            target.extend(getattr(model, section))
            continue
        if not isinstance(target, dict):  # a single section (daemon): in one file only
            value = getattr(model, section)
            if value is None:
                continue
            if (section, "") in policy.docs:
                first = policy.docs[(section, "")].where((section,))
                problems.append(f"{doc.where((section,))}: {section}: defined twice (also at {first}); "
                                "keep it in one policy file")
                continue
            setattr(policy, section, value)
            policy.docs[(section, "")] = doc
            continue
        for name, value in getattr(model, section).items():
            if name in target:
                first = policy.where(section, name)
                problems.append(f"{doc.where((section, name))}: {section}.{name}: defined twice "
                                f"(also at {first}); names must be unique across policy files")
                continue
            target[name] = value
            policy.docs[(section, name)] = doc


def _cross_references(policy: Policy) -> list[str]:
    problems = []
    for name, source in policy.sources.items():
        if source.repository not in policy.repositories:
            known = ", ".join(sorted(policy.repositories)) or "none defined"
            problems.append(f"{policy.where('sources', name, 'repository')}: sources.{name}.repository: "
                            f"no repository named {source.repository!r} (repositories: {known})")
        for index, target in enumerate(source.copy_to):
            where = policy.where("sources", name, "copy_to", index)
            if target not in policy.repositories:
                known = ", ".join(sorted(policy.repositories)) or "none defined"
                problems.append(f"{where}: sources.{name}.copy_to: no repository named {target!r} "
                                f"(repositories: {known})")
            elif target == source.repository:
                problems.append(f"{where}: sources.{name}.copy_to: {target!r} is the source's own "
                                "repository; name other repositories here")
        for keys, host in _host_refs(source):
            if host != "local" and host not in policy.hosts:
                known = ", ".join(["local", *sorted(set(policy.hosts) - {"local"})])
                problems.append(f"{policy.where('sources', name, *keys)}: sources.{name}.{'.'.join(keys)}: "
                                f"no host named {host!r} (hosts: {known})")
    return (problems + object_lock_problems(policy) + _host_references(policy) + schedule_problems(policy)
            + _runbook_references(policy))


def _runbook_references(policy: Policy) -> list[str]:
    if not policy.runbooks:
        return []
    from drorch.runbook.checks import policy_problems

    return [p for name, book in policy.runbooks.items()
            for p in policy_problems(policy, book, policy.runbook_docs[name])]


def _host_refs(source) -> list[tuple[tuple[str, ...], str]]:
    """(key path, host name) of every host a source refers to."""
    refs = [(("host",), source.host)]
    if source.verify.host != "local":
        refs.append((("verify", "host"), source.verify.host))
    standby = getattr(source, "standby", None)
    if standby is not None:
        refs.append((("standby", "host"), standby.host))
    return refs


def _host_references(policy: Policy) -> list[str]:
    """`local` is reserved; every jump names a host; jumps never loop."""
    problems = []
    for name, host in policy.hosts.items():
        if name == "local":
            problems.append(f"{policy.where('hosts', name)}: hosts.local: `local` is this machine and "
                            "cannot be redefined; give the entry another name")
        if host.jump is None:
            continue
        if host.jump not in policy.hosts:
            known = ", ".join(sorted(policy.hosts))
            problems.append(f"{policy.where('hosts', name, 'jump')}: hosts.{name}.jump: "
                            f"no host named {host.jump!r} (hosts: {known})")
            continue
        chain, step = [name], host.jump
        while step is not None and step in policy.hosts and step not in chain:
            chain.append(step)
            step = policy.hosts[step].jump
        if step in chain:
            loop = " -> ".join(chain[chain.index(step):] + [step])
            if chain[0] == step:  # said at each member of the loop, not at hosts leading into it
                problems.append(f"{policy.where('hosts', name, 'jump')}: hosts.{name}.jump: "
                                f"jump hosts loop ({loop})")
    return problems


def _real_loc(data: Any, loc: tuple) -> tuple:
    """pydantic's loc includes union tags; keep only the steps that exist in the data,
    plus a final missing key."""
    out: list[Any] = []
    for i, step in enumerate(loc):
        if isinstance(data, dict) and step in data:
            data = data[step]
            out.append(step)
        elif isinstance(data, list) and isinstance(step, int) and 0 <= step < len(data):
            data = data[step]
            out.append(step)
        elif i == len(loc) - 1 and isinstance(data, dict):
            out.append(step)
    return tuple(out)


def _describe(doc: Marked, err: dict, root: type[BaseModel] = PolicyDocument) -> str:
    loc = _real_loc(doc.data, tuple(step for step in err["loc"] if step != "[key]"))
    kind = err["type"]
    if kind in ("invalid_kind", "invalid_type", "invalid_action", "invalid_engine"):  # point at the discriminator key itself
        field = kind.removeprefix("invalid_")
        if isinstance(_value_at(doc.data, loc), dict) and field in _value_at(doc.data, loc):
            loc = loc + (field,)
    if kind == "extra_forbidden":
        allowed = _fields_at(tuple(err["loc"])[:-1], root)
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        message = "unknown key" + (f"; did you mean {guess[0]!r}?" if guess else "")
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = err["msg"].removeprefix("Value error, ")
    where = doc.where(loc)
    if kind == "missing":  # point at the mapping that lacks the key
        where = doc.where(loc[:-1])
    return f"{where}: {dotted(loc) or '<top>'}: {message}"


def _value_at(data: Any, loc: tuple) -> Any:
    for step in loc:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _fields_at(loc: tuple, root: type[BaseModel] = PolicyDocument) -> list[str]:
    """The keys allowed in the mapping that pydantic's loc (tags included) points into."""
    current: Any = root
    for step in loc:
        current = _step(current, step)
        if current is None:
            return []
    optional = [a for a in typing.get_args(current) if _is_model(a)]  # `Model | None`
    current = optional[0] if not _is_model(current) and len(optional) == 1 else current
    return [info.alias or name for name, info in current.model_fields.items()] if _is_model(current) else []


def _step(annotation: Any, step: Any) -> Any:
    """Follow one loc step through a model / dict / list / tagged union annotation."""
    if _is_model(annotation):
        info = next((i for n, i in annotation.model_fields.items() if step in (n, i.alias)), None)
        return info.annotation if info else None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        if any(getattr(meta, "tag", None) == step for meta in args[1:]):
            return args[0]  # the step is this member's union tag
        return _step(args[0], step)
    if origin is dict:
        return args[1]
    if origin is list:
        return args[0]
    if origin in (typing.Union, types.UnionType):
        for member in args:  # a tagged union: the step is the tag
            inner = typing.get_args(member)[0] if typing.get_origin(member) is typing.Annotated else member
            if _is_model(inner):
                for field in ("kind", "type", "action", "engine"):
                    info = inner.model_fields.get(field)
                    if info is not None and step in typing.get_args(info.annotation):
                        return inner
        models = [a for a in args if _is_model(a)]  # Optional[Model]
        return _step(models[0], step) if len(models) == 1 else None
    return None


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)
