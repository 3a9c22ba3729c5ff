"""`python -m npucenter.engines.virtual` as a user runs it: bad input exits non-zero with one
actionable line; a good one serves the OpenAI API and is no faster than the model says."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest
from _center import ENGINE, running_engine

from npucenter.catalog import default_catalog
from npucenter.perf import build_perf_model

pytestmark = pytest.mark.e2e

CMD = ENGINE


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--model", "no-such-model", "--device", "rngd"], 3, "error[not_found]"),
        (["--model", "llama-3.1-8b", "--device", "no-such-card"], 3, "error[not_found]"),
        (["--model", "llama-3.1-8b", "--device", "rngd", "--tp", "0"], 2, "error[invalid_request]"),
        (["--model", "llama-3.1-8b"], 2, "--device"),
    ],
)
def test_bad_arguments_exit_with_one_line(args: list[str], code: int, needle: str) -> None:
    done = subprocess.run(CMD + args, capture_output=True, text=True, timeout=60)
    assert done.returncode == code
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert needle in lines[-1]


def test_serves_and_is_never_faster_than_modelled() -> None:
    with running_engine(["--model", "llama-3.1-8b", "--device", "rngd"]) as url:
        prompt = list(range(2000))
        t0 = time.perf_counter()
        r = httpx.post(
            url + "/v1/completions", json={"prompt": prompt, "max_tokens": 20}, timeout=30
        )
        elapsed = time.perf_counter() - t0
        assert r.status_code == 200
        assert r.json()["usage"] == {
            "prompt_tokens": 2000,
            "completion_tokens": 20,
            "total_tokens": 2020,
        }
        pm = build_perf_model(default_catalog(), model="llama-3.1-8b", device="rngd", tp=1)
        modelled = pm.ttft_s(2000) + 19 * pm.tpot_s(1, 2010)
        assert elapsed >= 0.95 * modelled  # one-sided: real time may only add to the model
