"""Fixtures: scripted upstreams and a gateway, each served by uvicorn on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import openai
import pytest

from factories import make_endpoint
from npucenter.gateway import (
    Gateway,
    GatewayConfig,
    Principal,
    StaticKeyResolver,
    TenantLimits,
)
from npucenter.gateway.testing import running_server
from npucenter.metering import InMemoryLedger
from npucenter.wire.fake import FakeOpenAI, FakeScript

KEYS = {
    "sk-acme": Principal(key_id="key-acme", tenant="acme"),
    "sk-uni": Principal(key_id="key-uni", tenant="uni", limits=TenantLimits(requests_per_min=2)),
    "sk-tiny": Principal(key_id="key-tiny", tenant="tiny", limits=TenantLimits(token_quota=50)),
    "sk-admin": Principal(key_id="key-admin", tenant="operator", scopes=frozenset(), is_admin=True),
    "sk-readonly": Principal(key_id="key-ro", tenant="acme", scopes=frozenset({"read"})),
}


@dataclass
class Rig:
    url: str
    gateway: Gateway
    ledger: InMemoryLedger
    upstreams: list[FakeOpenAI]

    def client(self, key: str = "sk-acme", **kw: object) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=20.0, **kw
        )  # type: ignore[arg-type]


RigFactory = Callable[..., Rig]


@pytest.fixture
def make_rig() -> Iterator[RigFactory]:
    with ExitStack() as stack:

        def make(
            scripts: list[FakeScript] | None = None, *, max_inflight: int = 64, **config: object
        ) -> Rig:
            ups = [FakeOpenAI(s, name=f"u{i}") for i, s in enumerate(scripts or [FakeScript()])]
            endpoints = []
            for i, up in enumerate(ups):
                url = stack.enter_context(running_server(up, lifespan="off"))
                endpoints.append(
                    make_endpoint(
                        replica_id=f"r{i}",
                        base_url=url,
                        device_id="rngd",
                        max_inflight=max_inflight,
                        busy_power_w=100.0,
                    )
                )
            ledger = InMemoryLedger()
            gw = Gateway(
                keys=StaticKeyResolver(KEYS),
                endpoints=endpoints,
                ledger=ledger,
                config=GatewayConfig(**config),  # type: ignore[arg-type]
            )
            url = stack.enter_context(running_server(gw))
            return Rig(url=url, gateway=gw, ledger=ledger, upstreams=ups)

        yield make
