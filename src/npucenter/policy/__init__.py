"""Policies: the one brain shared by the live center and the digital twin.

Admission (quotas, fair share, preemption) and routing (which replica serves a request) are plain,
deterministic objects: a snapshot of state in, a decision record out. Import the submodule you
need (``npucenter.policy.routing``, a package with one policy per module); this package imports
nothing so that each half stays light.
"""

from __future__ import annotations

__all__: list[str] = []
