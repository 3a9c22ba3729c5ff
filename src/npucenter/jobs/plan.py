"""``python -m npucenter.jobs.plan --spec spec.json``: the capacity planner as a job.

Runs `npucenter plan` on the spec's plan (the shipped catalog and its overrides, the simulator's
replica profile, the whole-center verifier when ``verify`` is set), prints each step the planner
reports and writes `npucenter plan --json`'s document as the result.
"""

from __future__ import annotations

import time

from npucenter.catalog import default_catalog
from npucenter.jobs._common import load_spec, say, write_result
from npucenter.jobs.twin import jsonable
from npucenter.plan.planner import plan_capacity, spec_catalog
from npucenter.plan.profile import CachedProfile
from npucenter.plan.report import result_to_dict
from npucenter.plan.sources import PROFILE_SOURCES, VERIFIERS
from npucenter.plan.spec import parse_plan_spec
from npucenter.plan.traffic import resolve_traffic

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    doc = load_spec(argv)
    started = time.monotonic()
    spec = parse_plan_spec(doc["plan"])
    traffic = resolve_traffic(spec)
    cat = spec_catalog(spec, default_catalog())
    source = PROFILE_SOURCES.get("sim")(cat, spec, traffic)
    verifier = VERIFIERS.get("center")(cat, spec, traffic) if doc.get("verify") else None
    say(f"plan: {spec.name}, {len(spec.services)} services, objective {spec.objective}")
    result = plan_capacity(
        spec,
        catalog=default_catalog(),
        traffic=traffic,
        profile=CachedProfile(source),
        verifier=verifier,
        profile_source=_describe(source, "sim"),
        verifier_source=_describe(verifier, "center") if verifier is not None else "none",
        progress=say,
    )
    out = result_to_dict(result)
    out["wall_s"] = time.monotonic() - started
    say(f"planned in {out['wall_s']:.1f} s")
    write_result({"kind": "plan", "plan_label": doc.get("plan_label", spec.name), **jsonable(out)})
    return 0


def _describe(part: object, name: str) -> str:
    describe = getattr(part, "describe", None)
    return str(describe()) if callable(describe) else name


if __name__ == "__main__":
    raise SystemExit(main())
