"""Progress counters that workers update and the CLI reads (engines never print)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Progress:
    phase: str = "starting"
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, files: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.files_done += files
            self.bytes_done += nbytes

    def plan(self, files: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.files_total += files
            self.bytes_total += nbytes
