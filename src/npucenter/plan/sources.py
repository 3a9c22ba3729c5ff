"""Registries of the planner's pluggable parts: profile sources and verifiers, by name.

A factory takes ``(catalog, spec, traffic)`` and returns the part; the CLI's ``--profile`` and
``--verifier`` choices are the registered names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from npucenter.catalog import Catalog
from npucenter.plan.planner import Verifier
from npucenter.plan.profile import AnalyticProfile, ProfileSource, TrafficStats
from npucenter.plan.simulate import CenterVerifier, SimProfile
from npucenter.plan.spec import PlanSpec
from npucenter.registry import Registry

__all__ = ["PROFILE_SOURCES", "VERIFIERS", "ProfileFactory", "VerifierFactory"]

ProfileFactory = Callable[[Catalog, PlanSpec, Mapping[str, TrafficStats]], ProfileSource]
VerifierFactory = Callable[[Catalog, PlanSpec, Mapping[str, TrafficStats]], Verifier]

PROFILE_SOURCES: Registry[ProfileFactory] = Registry("profile source")
VERIFIERS: Registry[VerifierFactory] = Registry("plan verifier")


def _sim_profile(cat: Catalog, spec: PlanSpec, traffic: Mapping[str, TrafficStats]) -> SimProfile:
    return SimProfile(cat, spec, traffic=traffic)


def _analytic(cat: Catalog, spec: PlanSpec, traffic: Mapping[str, TrafficStats]) -> AnalyticProfile:
    del spec
    return AnalyticProfile(cat, traffic)


def _center(cat: Catalog, spec: PlanSpec, traffic: Mapping[str, TrafficStats]) -> CenterVerifier:
    del traffic  # the center replays each service's own requests
    return CenterVerifier(cat, spec)


PROFILE_SOURCES.add("sim", _sim_profile, aliases=("simulator",))
PROFILE_SOURCES.add("analytic", _analytic, aliases=("perf",))
VERIFIERS.add("center", _center, aliases=("sim",))
