"""The specs of the job programs: what a tenant writes under ``finetune:``/``preprocess:``.

Validated where they are submitted (the API) and read again by the program from the
``spec.json`` the runner writes into its work dir (with the inputs' paths filled in).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from npucenter.errors import InvalidConfigError

__all__ = ["PROGRAM_KINDS", "FinetuneSpec", "PreprocessSpec", "program_spec"]

#: Job kinds the center runs with a program of its own (``python -m npucenter.jobs.<kind>``).
PROGRAM_KINDS = ("preprocess", "finetune")
_DEFAULT_TARGETS = ("q_proj", "v_proj")


def _take(cls: type, doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(doc, Mapping):
        raise InvalidConfigError(where, type(doc).__name__, "must be a mapping")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise InvalidConfigError(
            f"{where}.{unknown[0]}",
            doc[unknown[0]],
            f"unknown key; known: {', '.join(sorted(known))}",
        )
    return dict(doc)


def _positive(where: str, value: Any, *, integer: bool = False) -> None:
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if not ok or not value > 0:
        raise InvalidConfigError(
            where, value, f"must be a positive {'integer' if integer else 'number'}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PreprocessSpec:
    """Tokenise a data set with the base model's tokenizer and pack it into fixed-length rows."""

    base_model: str
    dataset: str  # a data set of the tenant (name or id)
    output: str = ""  # the packed data set's name (default: <dataset>-packed)
    max_seq_len: int = 128

    def __post_init__(self) -> None:
        for name in ("base_model", "dataset"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise InvalidConfigError(f"preprocess.{name}", getattr(self, name), "required")
        _positive("preprocess.max_seq_len", self.max_seq_len, integer=True)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> PreprocessSpec:
        return cls(**_take(cls, doc, "preprocess"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class FinetuneSpec:
    """LoRA on the base model (peft + transformers): the adapter is registered when it succeeds."""

    base_model: str
    dataset: str  # a data set of the tenant (name or id): text or packed
    adapter: str = ""  # the adapter's name (default: the job's name)
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = _DEFAULT_TARGETS
    steps: int = 30
    learning_rate: float = 1e-3
    batch_size: int = 8
    max_seq_len: int = 128
    seed: int = 0
    checkpoint_every: int = 10  # steps between checkpoints (a preempted run resumes there)
    extra: dict[str, Any] = field(default_factory=dict)  # reserved

    def __post_init__(self) -> None:
        for name in ("base_model", "dataset"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise InvalidConfigError(f"finetune.{name}", getattr(self, name), "required")
        for name in ("rank", "steps", "batch_size", "max_seq_len", "checkpoint_every"):
            _positive(f"finetune.{name}", getattr(self, name), integer=True)
        for name in ("alpha", "learning_rate"):
            _positive(f"finetune.{name}", getattr(self, name))
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise InvalidConfigError("finetune.dropout", self.dropout, "must be in [0, 1)")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise InvalidConfigError("finetune.seed", self.seed, "must be an integer")
        targets = self.target_modules
        if (
            isinstance(targets, str)
            or not targets
            or not all(isinstance(t, str) and t.isidentifier() for t in targets)
        ):
            raise InvalidConfigError(
                "finetune.target_modules", targets, "a list of module names, e.g. [q_proj, v_proj]"
            )
        object.__setattr__(self, "target_modules", tuple(targets))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> FinetuneSpec:
        return cls(**_take(cls, doc, "finetune"))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["target_modules"] = list(self.target_modules)
        return out


def program_spec(kind: str, doc: Mapping[str, Any]) -> PreprocessSpec | FinetuneSpec:
    """The validated spec of a ``kind`` job program."""
    if kind == "finetune":
        return FinetuneSpec.from_dict(doc)
    if kind == "preprocess":
        return PreprocessSpec.from_dict(doc)
    raise InvalidConfigError(
        "kind", kind, f"the center runs programs for {', '.join(PROGRAM_KINDS)} jobs only"
    )
