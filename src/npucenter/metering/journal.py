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
import fcntl
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
        # Segments left by a stopped process (a live one holds a lock on each of its own):
        # replayed by the owner of this journal (see leftover()).
        found = sorted(self.directory.glob(_SEGMENT_GLOB), key=_segment_number)
        self._leftover = [p for p in found if not _locked_by_another(p)]
        self._next = max((_segment_number(p) for p in found), default=0) + 1
        # Older segments, their request ids and their (locked) descriptors.
        self._closed: list[tuple[Path, set[str], int]] = []
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
            kept: list[tuple[Path, set[str], int]] = []
            for path, ids, fd in self._closed:
                if ids <= self._committed:
                    path.unlink(missing_ok=True)
                    os.close(fd)
                    self._committed -= ids
                else:
                    kept.append((path, ids, fd))
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
        """Close every segment; those not committed stay on disk for the next start to replay
        (as when the process dies: its locks go with it)."""
        with self._lock:
            if self._fd >= 0:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
            for _, _, fd in self._closed:
                os.close(fd)
            self._closed = []

    def _open_segment(self) -> None:
        self._path = self.directory / f"usage-{self._next:08d}.jsonl"
        self._next += 1
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours while this process lives
        self._ids: set[str] = set()
        self._lines = 0

    def _close_segment(self) -> None:
        os.fsync(self._fd)
        if self._ids <= self._committed:
            self._path.unlink(missing_ok=True)
            os.close(self._fd)
            self._committed -= self._ids
        else:  # kept open (and locked) until its rows are committed
            self._closed.append((self._path, self._ids, self._fd))


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


def _locked_by_another(path: Path) -> bool:
    """Whether a live process holds ``path`` (its lock); a stopped process holds nothing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _segment_number(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return 0
