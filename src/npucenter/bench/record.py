"""The per-request record of a benchmark run (one row per request sent or dropped).

Times are seconds; ``start_s`` is relative to the run's start. ``output_tokens`` comes from the
server's ``usage.completion_tokens`` when it reports it (``usage_reported``), never from counting
chunks unless the server gives no usage at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RequestRecord"]


@dataclass(slots=True, kw_only=True)
class RequestRecord:
    """What happened to one request."""

    index: int
    step: int = 0  # sweep step this request belongs to
    scheduled_s: float = 0.0
    start_s: float | None = None  # when the request was handed to the socket (None = never sent)
    lag_s: float | None = None  # start_s - scheduled_s for open-loop arrivals
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: tuple[float, ...] = ()  # gaps between content-bearing chunks, split per token
    num_chunks: int = 0
    target_input_tokens: int = 0
    target_output_tokens: int = 0
    prompt_tokens: int | None = None
    output_tokens: int = 0
    reasoning_tokens: int = 0
    usage_reported: bool = False
    ok: bool = False
    error: str | None = None  # error kind: http_401, timeout, not_streaming, dropped, ...
    error_detail: str | None = None

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first (None below two tokens)."""
        if not self.ok or self.ttft_s is None or self.e2e_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)

    @property
    def end_s(self) -> float | None:
        """Completion time relative to the run start."""
        if self.start_s is None or self.e2e_s is None:
            return None
        return self.start_s + self.e2e_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-able row (ITLs rounded to microseconds to keep files small)."""
        out = asdict(self)
        out["itl_s"] = [round(x, 6) for x in self.itl_s]
        out["tpot_s"] = self.tpot_s
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        """Inverse of :meth:`to_dict` (unknown keys ignored)."""
        names = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["itl_s"] = tuple(kwargs.get("itl_s", ()))
        return cls(**kwargs)
