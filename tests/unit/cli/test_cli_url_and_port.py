"""The tour's first-hour errors say what to do: a /v1 NPUCENTER_URL, a busy port for `up`."""

from __future__ import annotations

import socket

import pytest

from npucenter.cli.client import Client
from npucenter.cli.up import _check_port_free
from npucenter.errors import ConflictError, InvalidConfigError


@pytest.mark.parametrize("suffix", ["/v1", "/v1/", "/api"])
def test_a_url_with_the_gateway_or_api_path_is_refused_naming_the_base(suffix: str) -> None:
    with pytest.raises(InvalidConfigError) as info:
        Client(f"http://127.0.0.1:8000{suffix}", "key")
    assert info.value.details["field"] == "NPUCENTER_URL"
    assert "NPUCENTER_URL=http://127.0.0.1:8000" in info.value.hint


def test_a_busy_port_is_a_conflict_before_anything_starts() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ConflictError):
            _check_port_free("127.0.0.1", port)
    _check_port_free("127.0.0.1", port)  # free again
