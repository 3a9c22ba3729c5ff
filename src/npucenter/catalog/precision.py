"""Numeric precisions an engine can serve a model in, and what each costs in memory and compute."""

from __future__ import annotations

import enum

from npucenter.errors import InvalidConfigError

__all__ = ["Precision"]


class Precision(enum.Enum):
    """Serving precision of a model's transformer weights (and, for FP8/INT8, its activations).

    ``INT4`` is weight-only (W4A16): weights are 4-bit, matmuls run at the 16-bit rate.
    """

    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"

    @property
    def weight_bytes(self) -> float:
        """Bytes per transformer weight."""
        return _WEIGHT_BYTES[self]

    @property
    def kv_bytes(self) -> float:
        """Default bytes per KV-cache element (FP8/INT8 checkpoints usually quantise the KV too)."""
        return 1.0 if self in (Precision.FP8, Precision.INT8) else 2.0

    @property
    def compute_field(self) -> str:
        """The Device field holding the dense matmul rate used at this precision."""
        return _COMPUTE_FIELD[self]

    @classmethod
    def parse(cls, value: str | Precision) -> Precision:
        """Parse ``"fp8"``, ``"FP8"``, ``"w4a16"``…; raises InvalidConfigError listing the choices."""
        if isinstance(value, Precision):
            return value
        key = value.strip().lower()
        key = {"w4a16": "int4", "w8a8": "int8", "bfloat16": "bf16", "float16": "fp16"}.get(key, key)
        try:
            return cls(key)
        except ValueError:
            raise InvalidConfigError(
                "precision", value, f"choose one of {', '.join(p.value for p in cls)}"
            ) from None


_WEIGHT_BYTES = {
    Precision.BF16: 2.0,
    Precision.FP16: 2.0,
    Precision.FP8: 1.0,
    Precision.INT8: 1.0,
    Precision.INT4: 0.5,
}
_COMPUTE_FIELD = {
    Precision.BF16: "bf16_tflops",
    Precision.FP16: "bf16_tflops",
    Precision.FP8: "fp8_tflops",
    Precision.INT8: "int8_tops",
    Precision.INT4: "bf16_tflops",
}
