"""docs/admission.md's runnable example runs as written and prints what the page says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "admission.md"


def test_the_runnable_example_prints_what_the_page_says() -> None:
    text = DOC.read_text()
    block = text.split("(runs as written):", 1)[1]
    code = re.search(r"```python\n(.*?)```", block, re.S)
    assert code is not None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.group(1), str(DOC), "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0] == "8"
    assert lines[1].startswith("cs-8 quota_in_use - tenant cs holds 8 of its 8 rngd cards")
    assert lines[-1].startswith("phys-0 held - tenant physics is held")
