"""LoRA in the virtual engine: a loaded adapter costs the perf model's LoRA term, its load time.

vLLM's runtime calls are answered by :class:`~npucenter.engines.virtual.app.VirtualEngineApp`;
this module is what a load changes: :class:`LoraStepCost` (the core's step cost, with
:meth:`PerfModel.with_lora` while adapters are loaded) and the rank and targets read from the
adapter's ``adapter_config.json`` (:func:`adapter_shape`). A load takes the time the real
engine took where one was measured (``npucenter.perf.lora.ADAPTER_LOAD_S``), scaled like the
engine's steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from npucenter.perf.lora import LORA_TARGETS, LoraShape

__all__ = ["LoraStepCost", "adapter_shape"]


def adapter_shape(path: str | Path) -> LoraShape:
    """The rank and targets in a peft adapter's ``adapter_config.json`` (defaults if unreadable)."""
    try:
        config = json.loads((Path(path) / "adapter_config.json").read_text())
        rank = int(config.get("r", 8))
        targets = config.get("target_modules") or ()
        targets = (targets,) if isinstance(targets, str) else tuple(targets)
    except (OSError, ValueError, TypeError, AttributeError):
        return LoraShape()
    known = tuple(t for t in LORA_TARGETS if any(str(x).endswith(t) for x in targets))
    return LoraShape(rank=max(rank, 1), target_modules=known or LoraShape().target_modules)


class LoraStepCost:
    """A replica's step cost plus the perf model's LoRA term while adapters are loaded.

    The virtual engine's core steps through it: with no adapter loaded it is the base model's
    cost; with some, :meth:`PerfModel.with_lora` for their largest rank, all their targets and
    as many per step as are loaded (an upper bound: the whole batch pays). A perf model without
    ``with_lora`` (a test's fake) stays as it is.
    """

    def __init__(self, perf: Any) -> None:
        self.base = perf
        self.current = perf
        self.kv_capacity_tokens: int = perf.kv_capacity_tokens
        self.idle_power_w: float = perf.idle_power_w
        self._loaded: dict[str, LoraShape] = {}

    def loaded(self, name: str, path: str | Path) -> None:
        """Adapter ``name`` (saved at ``path``) is loaded."""
        self._loaded[name] = adapter_shape(path)
        self._update()

    def unloaded(self, name: str) -> None:
        """Adapter ``name`` is gone."""
        self._loaded.pop(name, None)
        self._update()

    def _update(self) -> None:
        with_lora = getattr(self.base, "with_lora", None)
        if not self._loaded or with_lora is None:
            self.current = self.base
            return
        shapes = list(self._loaded.values())
        targets = {t for shape in shapes for t in shape.target_modules}
        self.current = with_lora(
            LoraShape(
                rank=max(shape.rank for shape in shapes),
                target_modules=tuple(t for t in LORA_TARGETS if t in targets),
                max_loras=len(shapes),
            )
        )

    def step_time_s(self, prefill: Any, pairs: Any, decode: Any, context: Any) -> Any:
        """The current step time (see :class:`~npucenter.perf.PerfModel`)."""
        return self.current.step_time_s(prefill, pairs, decode, context)

    def step_power_w(self, prefill: Any, pairs: Any, decode: Any, context: Any) -> Any:
        """The current step power."""
        return self.current.step_power_w(prefill, pairs, decode, context)
