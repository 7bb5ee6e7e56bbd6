"""Seeded generation and mutation of file trees, and exact snapshots of them.

A snapshot records everything a restore must bring back: type, mode, owner
(when root), size, mtime_ns, link target, content hash, empty directories
and which paths share an inode.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path

ROOT = os.geteuid() == 0
NAMES = ["a", "b", "conf", "data", "x y", "ünï", "日本", "dash-name", "dot.name", "UPPER"]


def _name(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.1:
        return b"raw\xff\xfe" + str(rng.randrange(1000)).encode()  # not UTF-8
    return (rng.choice(NAMES) + str(rng.randrange(10000))).encode()


def _content(rng: random.Random, size: int) -> bytes:
    if rng.random() < 0.5:
        return rng.randbytes(size)
    return (b"line %d\n" % rng.randrange(100)) * (size // 8) + b"z" * (size % 8)


def _mtime(rng: random.Random) -> int:
    return rng.randrange(1_500_000_000, 1_750_000_000) * 1_000_000_000 + rng.randrange(1_000_000_000)


def generate(root: Path, seed: int, files: int = 60, big: int = 2) -> None:
    rng = random.Random(seed)
    broot = os.fsencode(root)
    dirs = [broot]
    for _ in range(max(3, files // 6)):
        d = os.path.join(rng.choice(dirs), _name(rng))
        if not os.path.exists(d):
            os.mkdir(d)
            dirs.append(d)
    for _ in range(files):
        _add_file(rng, rng.choice(dirs), rng.randrange(0, 40_000))
    for _ in range(big):
        _add_file(rng, rng.choice(dirs), rng.randrange(1_100_000, 3_500_000))
    regular = [p for p in _walk(broot) if stat.S_ISREG(os.lstat(p).st_mode)]
    for _ in range(4):
        target = rng.choice(regular)
        link = os.path.join(rng.choice(dirs), b"hard-" + _name(rng))
        if not os.path.exists(link):
            os.link(target, link)
    for i in range(6):
        link = os.path.join(rng.choice(dirs), b"sym-" + _name(rng))
        if os.path.lexists(link):
            continue
        choice = rng.random()
        text = (os.path.relpath(rng.choice(regular), os.path.dirname(link)) if choice < 0.5 else
                b"/nonexistent/dangling" if choice < 0.7 else rng.choice(dirs))
        os.symlink(text, link)
    os.makedirs(os.path.join(broot, b"empty", b"deeper"), exist_ok=True)
    os.mkfifo(os.path.join(broot, b"a-fifo"))
    for path in _walk(broot):
        _random_meta(rng, path)


def _add_file(rng: random.Random, directory: bytes, size: int) -> bytes:
    path = os.path.join(directory, _name(rng))
    if os.path.lexists(path):
        return path
    with open(path, "wb") as handle:
        handle.write(_content(rng, size))
    return path


def _random_meta(rng: random.Random, path: bytes) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        if ROOT and rng.random() < 0.3:
            os.lchown(path, rng.choice([0, 1, 65534, 4321]), rng.choice([0, 1, 65534, 8765]))
        os.utime(path, ns=(_mtime(rng), _mtime(rng)), follow_symlinks=False)
        return
    if stat.S_ISDIR(st.st_mode):
        mode = rng.choice([0o755, 0o750, 0o700, 0o775, 0o1777])
    else:
        mode = rng.choice([0o644, 0o600, 0o640, 0o755, 0o444, 0o4755, 0o2750])
    if ROOT and rng.random() < 0.4:
        os.chown(path, rng.choice([0, 1, 65534, 4321]), rng.choice([0, 1, 65534, 8765]))
    os.chmod(path, mode)
    os.utime(path, ns=(_mtime(rng), _mtime(rng)))


def _walk(broot: bytes):
    yield broot
    for dirpath, dirnames, filenames in os.walk(broot):
        for name in dirnames + filenames:
            yield os.path.join(dirpath, name)


def mutate(root: Path, seed: int) -> None:
    """Change a tree the way real trees change between backups."""
    rng = random.Random(seed)
    broot = os.fsencode(root)
    paths = sorted(p for p in _walk(broot) if p != broot)
    files = [p for p in paths if stat.S_ISREG(os.lstat(p).st_mode)]
    dirs = [broot] + [p for p in paths if stat.S_ISDIR(os.lstat(p).st_mode)]
    for path in rng.sample(files, min(4, len(files))):  # rewrite: same size, new bytes
        size = os.path.getsize(path)
        with open(path, "r+b") as handle:
            handle.seek(rng.randrange(size) if size else 0)
            handle.write(rng.randbytes(min(100, size)) if size else b"new")
    for path in rng.sample(files, min(2, len(files))):  # append
        with open(path, "ab") as handle:
            handle.write(rng.randbytes(rng.randrange(1, 5000)))
    big = [p for p in files if os.path.getsize(p) > 1_200_000]
    if big:  # one block of a big file
        with open(big[0], "r+b") as handle:
            handle.seek(1 << 20)
            handle.write(rng.randbytes(4096))
    for path in rng.sample(files, min(2, len(files))):
        if os.path.lexists(path):
            os.unlink(path)
    for _ in range(3):
        _add_file(rng, rng.choice(dirs), rng.randrange(0, 20_000))
    for path in rng.sample(files, min(3, len(files))):
        if os.path.lexists(path):
            os.chmod(path, rng.choice([0o600, 0o644, 0o700]))
            os.utime(path, ns=(_mtime(rng), _mtime(rng)))
    links = [p for p in paths if os.path.islink(p)]
    if links:
        os.unlink(links[0])
        os.symlink(b"retargeted/" + _name(rng), links[0])
    os.makedirs(os.path.join(broot, b"new-empty-" + str(seed).encode()), exist_ok=True)
    for d in rng.sample(dirs, min(3, len(dirs))):
        if os.path.isdir(d) and not os.path.islink(d):
            os.utime(d, ns=(_mtime(rng), _mtime(rng)))


def snapshot(root: Path) -> dict:
    """path (bytes, relative) -> what a restore must reproduce."""
    broot = os.fsencode(root)
    out: dict = {}
    inodes: dict = {}
    for path in _walk(broot):
        st = os.lstat(path)
        rel = os.path.relpath(path, broot)
        item = {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode),
                "mtime_ns": st.st_mtime_ns}
        if ROOT:
            item.update(uid=st.st_uid, gid=st.st_gid)
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as handle:
                item["sha256"] = hashlib.sha256(handle.read()).hexdigest()
            item["size"] = st.st_size
            inodes.setdefault(st.st_ino, []).append(rel)
        elif stat.S_ISLNK(st.st_mode):
            item["target"] = os.readlink(path)
            item.pop("mode")  # Linux ignores symlink modes
        out[rel] = item
    for group in inodes.values():
        for rel in group:
            out[rel]["links"] = sorted(group)
    return out


def diff(expected: dict, actual: dict) -> list[str]:
    problems = []
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            problems.append(f"missing {rel!r}")
        elif rel not in expected:
            problems.append(f"unexpected {rel!r}")
        elif expected[rel] != actual[rel]:
            problems.append(f"{rel!r}: expected {expected[rel]} got {actual[rel]}")
    return problems
