"""A fleet file's service may autoscale: min/max replicas and the policy's knobs."""

from __future__ import annotations

import pytest

from npucenter.errors import InvalidConfigError
from npucenter.fleet import fleet_from_dict
from npucenter.policy.autoscaling import AutoscalePolicy


def _fleet(**service: object) -> dict[str, object]:
    return {
        "name": "t",
        "servers": [{"device": "rngd", "count": 1, "cards_per_server": 4}],
        "services": [{"model": "llama-3.1-8b", "device": "rngd", **service}],
    }


def test_min_and_max_replicas_and_knobs_make_a_policy() -> None:
    fleet = fleet_from_dict(_fleet(min_replicas=0, max_replicas=3, autoscale={"idle_to_zero_s": 5}))
    (service,) = fleet.services
    assert service.autoscale == AutoscalePolicy(min_replicas=0, max_replicas=3, idle_to_zero_s=5)


def test_a_service_without_them_has_a_fixed_count() -> None:
    (service,) = fleet_from_dict(_fleet()).services
    assert service.autoscale is None


@pytest.mark.parametrize(
    "bad",
    [
        {"autoscale": {"idle_s": 5}},  # unknown knob
        {"min_replicas": 3, "max_replicas": 2},  # max below min
        {"autoscale": [1]},  # not a mapping
    ],
)
def test_bad_autoscale_entries_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidConfigError):
        fleet_from_dict(_fleet(**bad))
