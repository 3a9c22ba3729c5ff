"""Hypothesis: a fungible fleet-file service (``fallback_devices``) fills its device types in the
order it lists them, each as far as its free cards go (room decides under the covering quota the
twin gives a tenant without a ``tenants:`` entry), and never lands on a type it does not list."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from npucenter.fleet.placement import place_fleet
from npucenter.fleet.spec import fleet_spec_from_mapping

DEVICES = ("rngd", "atom", "h100")


@st.composite
def fungible_fleets(draw: st.DrawFn) -> tuple[dict[str, object], list[str], dict[str, int]]:
    servers, services, free = [], [], {}
    for device in DEVICES:
        count, cards = draw(st.integers(1, 3)), draw(st.sampled_from((2, 4, 8)))
        pinned = draw(st.integers(0, cards))  # a fixed service's cards on each server
        servers.append({"device": device, "count": count, "cards_per_server": cards})
        if pinned:
            services.append(
                {"service": f"fixed-{device}", "model": "m", "device": device,
                 "replicas_per_server": pinned}
            )  # fmt: skip
        free[device] = count * (cards - pinned)
    order = draw(st.permutations(DEVICES))
    listed = list(order[: draw(st.integers(2, 3))])
    room = sum(free[d] for d in listed)
    if room == 0:
        listed, room = list(DEVICES), sum(free.values())
    replicas = draw(st.integers(1, max(1, room))) if room else 0
    doc: dict[str, object] = {"servers": servers, "services": services}
    if replicas:
        services.append(
            {"service": "chat", "model": "m", "device": listed[0],
             "fallback_devices": listed[1:], "replicas": replicas}
        )  # fmt: skip
    return doc, listed, {"replicas": replicas, **free}


@settings(max_examples=150, deadline=None)
@given(fungible_fleets())
def test_replicas_fill_the_listed_types_in_order_as_far_as_each_has_room(case) -> None:  # type: ignore[no-untyped-def]
    doc, listed, counts = case
    if not counts["replicas"] or not doc["services"]:
        return
    spec = fleet_spec_from_mapping(doc)
    got = place_fleet(spec).devices_by_service(spec)["chat"]
    left, expected = counts["replicas"], {}
    for device in listed:  # greedy: the first type with a free card takes the next replica
        expected[device] = min(left, counts[device])
        left -= expected[device]
    assert got == expected
    assert set(got) == set(listed)
