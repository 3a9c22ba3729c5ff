"""What the job programs share: the spec file, the log lines, the result file."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from npucenter.settings import environ

__all__ = ["load_spec", "say", "write_result"]


def load_spec(argv: list[str] | None = None) -> dict[str, Any]:
    """The spec of ``--spec FILE`` (default ``spec.json`` in the work dir)."""
    args = list(sys.argv[1:] if argv is None else argv)
    path = Path("spec.json")
    if "--spec" in args:
        path = Path(args[args.index("--spec") + 1])
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict):
        raise SystemExit(f"{path}: a JSON object is expected")
    return doc


def say(message: str) -> None:
    """One line of the job's log, flushed at once (the runner keeps the tail)."""
    print(message, flush=True)


def write_result(document: dict[str, Any]) -> None:
    """Write the job's result (``$NPUCENTER_RESULT_PATH``, else ``result.json``)."""
    path = Path(environ().get("NPUCENTER_RESULT_PATH") or "result.json")
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(document, indent=1))
    os.replace(tmp, path)
