"""The usage journal: a write-ahead log of ledger rows, so a killed center loses no usage.

NOTE(store): the gateway writes a request's row here *before* the last bytes of its answer go
out (a reservation: the tokens the client is being sent), and again when the request is over
(the settlement: device time, energy, cost). Each is one ``os.write`` of one JSON line to the
current segment file: it survives ``kill -9`` the moment the call returns (the kernel has it),
and a machine crash once the flush thread has fsync'ed it. The database gets the rows in bulk
off the request path; a segment file is deleted once every request id in it is committed. At
start, whatever segments a previous process left are replayed into the database (the last line
of a request id wins; the store skips ids it has), then deleted: 0 rows lost, 0 doubled.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from npucenter.metering.ledger import UsageRecord

__all__ = ["UsageJournal", "read_segments"]

log = logging.getLogger(__name__)

_SEGMENT_GLOB = "usage-*.jsonl"
_FIELDS = tuple(f.name for f in dataclasses.fields(UsageRecord))
_ENCODE = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


class UsageJournal:
    """Segment files ``usage-<n>.jsonl`` in ``directory``; thread-safe.

    ``max_lines`` per segment before the next :meth:`committed` starts a new one.
    """

    def __init__(self, directory: Path, *, max_lines: int = 20_000) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._max_lines = max_lines
        # Segments left by an earlier process: replayed by the owner (see leftover()).
        self._leftover = sorted(self.directory.glob(_SEGMENT_GLOB), key=_segment_number)
        start = max((_segment_number(p) for p in self._leftover), default=0) + 1
        self._next = start
        self._closed: list[tuple[Path, set[str]]] = []  # older segments and their request ids
        self._committed: set[str] = set()  # committed ids still named by a kept segment
        self._open_segment()

    def write(self, record: UsageRecord, *, final: bool) -> None:
        """Journal ``record`` (a reservation, or with ``final`` its settlement): one write."""
        doc = {name: getattr(record, name) for name in _FIELDS}
        doc["final"] = final
        line = _ENCODE(doc).encode()
        with self._lock:
            os.write(self._fd, line + b"\n")
            self._ids.add(record.request_id)
            self._lines += 1

    def committed(self, request_ids: Iterable[str]) -> None:
        """The store has these requests' rows: drop segments whose every id is committed."""
        fd = self._fd  # only this method (the flush thread) replaces it
        if fd >= 0:
            os.fsync(fd)  # what is journaled now survives a machine crash too (writers go on)
        with self._lock:
            self._committed.update(request_ids)
            if self._lines >= self._max_lines or (self._lines and self._ids <= self._committed):
                self._close_segment()
                self._open_segment()
            kept: list[tuple[Path, set[str]]] = []
            for path, ids in self._closed:
                if ids <= self._committed:
                    path.unlink(missing_ok=True)
                    self._committed -= ids
                else:
                    kept.append((path, ids))
            self._closed = kept

    def leftover(self) -> list[Path]:
        """Segments an earlier process left (oldest first), to replay before serving."""
        return list(self._leftover)

    def discard(self, segments: Iterable[Path]) -> None:
        """Delete replayed leftover segments."""
        for path in segments:
            path.unlink(missing_ok=True)
            if path in self._leftover:
                self._leftover.remove(path)

    def close(self) -> None:
        """Close the current segment (kept on disk until its rows are committed)."""
        with self._lock:
            if self._fd >= 0:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1

    def _open_segment(self) -> None:
        self._path = self.directory / f"usage-{self._next:08d}.jsonl"
        self._next += 1
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._ids: set[str] = set()
        self._lines = 0

    def _close_segment(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        if self._ids <= self._committed:
            self._path.unlink(missing_ok=True)
            self._committed -= self._ids
        else:
            self._closed.append((self._path, self._ids))


def read_segments(paths: Iterable[Path]) -> list[UsageRecord]:
    """The rows of segments (oldest first): one per request id, a settlement winning over its
    reservation; a torn line (the process died mid-write) is skipped."""
    out: dict[str, UsageRecord] = {}
    final: set[str] = set()
    names = {f.name for f in dataclasses.fields(UsageRecord)}
    for path in paths:
        with open(path, "rb") as handle:
            for raw in handle:
                try:
                    doc = json.loads(raw)
                    record = UsageRecord(**{k: v for k, v in doc.items() if k in names})
                except (ValueError, TypeError) as exc:
                    log.warning("skipping a torn usage journal line in %s: %s", path, exc)
                    continue
                if record.request_id in final:
                    continue
                out[record.request_id] = record
                if doc.get("final"):
                    final.add(record.request_id)
    return list(out.values())


def _segment_number(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return 0
