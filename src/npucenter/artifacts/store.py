"""Where artifacts' bytes live: a Protocol and its local-directory implementation.

Keys are relative POSIX paths the center makes (``t<tenant id>/<kind>/<id>-<name>``), never a
tenant's text: a key cannot leave the store's root.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Protocol, runtime_checkable

from npucenter.errors import InvalidRequestError, NotFoundError

__all__ = ["ArtifactStore", "LocalArtifactStore", "tree_bytes", "tree_digest"]


@runtime_checkable
class ArtifactStore(Protocol):
    """Bytes by key. An object store implements it with ``materialize`` as a local download."""

    def put_bytes(self, key: str, data: bytes) -> int:
        """Store ``data`` as a file at ``key``; its size in bytes."""
        ...

    def put_tree(self, key: str, source: Path) -> int:
        """Copy the file or directory ``source`` to ``key``; its size in bytes."""
        ...

    def materialize(self, key: str) -> Path:
        """A local path holding the artifact (the engine loads adapters from it)."""
        ...

    def copy_to(self, key: str, dest: Path) -> None:
        """Copy the artifact to the local path ``dest`` (a job's work dir)."""
        ...

    def delete(self, key: str) -> None:
        """Remove the artifact (absent: nothing to do)."""
        ...


class LocalArtifactStore:
    """Artifacts as files under ``root`` (``<data dir>/artifacts``), mode 0700: the server's only."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        parts = Path(key).parts
        if not parts or Path(key).is_absolute() or any(p in ("..", ".") for p in parts):
            raise InvalidRequestError(f"artifact key {key!r} is not a relative path")
        return self.root.joinpath(*parts)

    def _ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def put_bytes(self, key: str, data: bytes) -> int:
        self._ensure_root()
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return len(data)

    def put_tree(self, key: str, source: Path) -> int:
        self._ensure_root()
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self.delete(key)
        if source.is_dir():
            shutil.copytree(source, path, symlinks=False)
        else:
            shutil.copyfile(source, path)
        return tree_bytes(path)

    def materialize(self, key: str) -> Path:
        path = self._path(key)
        if not path.exists():
            raise NotFoundError("artifact", key)
        return path

    def copy_to(self, key: str, dest: Path) -> None:
        path = self.materialize(key)
        if path.is_dir():
            shutil.copytree(path, dest, dirs_exist_ok=True)
        else:
            shutil.copyfile(path, dest)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def tree_bytes(path: Path) -> int:
    """Bytes of a file, or of every regular file under a directory (links not followed)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            p = Path(root) / name
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total


def tree_digest(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, sorted)."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
        return h.hexdigest()
    for p in sorted(q for q in path.rglob("*") if q.is_file() and not q.is_symlink()):
        h.update(p.relative_to(path).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()
