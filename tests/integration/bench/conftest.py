"""Fixtures: the stub server on loopback."""

from __future__ import annotations

import pytest

from npucenter.bench.stub import running_stub, stub_script


@pytest.fixture(scope="module")
def stub_url():
    with running_stub(stub_script(ttft_s=0.02, itl_s=0.002, tokens_per_chunk=2)) as url:
        yield url
