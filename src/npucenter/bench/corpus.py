"""Prompts of exact token lengths from the shipped synthetic corpus (pure; reads package data).

NOTE(bench): we cannot tokenize locally (no tokenizer weights are downloaded), so the token count
is defined by the server. Each corpus word is one token in common BPE vocabularies; the server's
count of a prompt of ``w`` words is modelled as ``tokens = a*w + b`` (``b`` is the chat template's
overhead). :class:`TokenCalibration` holds ``a`` and ``b``, fitted by the load generator from two
probe requests' ``usage.prompt_tokens``, and :meth:`TokenCalibration.words_for` inverts it; every
request's actual ``prompt_tokens`` is recorded, so any residual error is reported, not hidden.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from npucenter.errors import InvalidConfigError

__all__ = ["CORPUS_VERSION", "TokenCalibration", "corpus_words", "make_prompt"]

#: Bumped whenever the word list or the way prompts are drawn changes.
CORPUS_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenCalibration:
    """Server tokens per prompt word: ``tokens = tokens_per_word * words + overhead_tokens``."""

    tokens_per_word: float = 1.0
    overhead_tokens: float = 0.0
    source: str = "assumed (1 token per word, no overhead)"

    def __post_init__(self) -> None:
        if not self.tokens_per_word > 0:
            raise InvalidConfigError("tokens_per_word", self.tokens_per_word, "must be > 0")

    def words_for(self, target_tokens: int) -> int:
        """Words to send so the server counts ``target_tokens`` prompt tokens (at least 1)."""
        return max(1, round((target_tokens - self.overhead_tokens) / self.tokens_per_word))

    @classmethod
    def fit(cls, words: tuple[int, int], tokens: tuple[int, int]) -> TokenCalibration:
        """Fit from two probes of ``words[i]`` words that the server counted as ``tokens[i]``."""
        (w1, w2), (t1, t2) = words, tokens
        if w1 == w2:
            raise InvalidConfigError("words", words, "calibration needs two different lengths")
        slope = (t2 - t1) / (w2 - w1)
        if slope <= 0:
            raise InvalidConfigError(
                "usage.prompt_tokens", tokens, "the server's prompt token count does not grow"
            )
        return cls(
            tokens_per_word=slope,
            overhead_tokens=t1 - slope * w1,
            source=f"fitted from usage.prompt_tokens of probes {w1}->{t1}, {w2}->{t2} words",
        )


@lru_cache(maxsize=1)
def corpus_words() -> tuple[str, ...]:
    """The shipped word list (comments and blanks skipped)."""
    text = resources.files("npucenter.bench").joinpath("data/corpus_words.txt").read_text("utf-8")
    return tuple(w for w in (line.strip() for line in text.splitlines()) if w and w[0] != "#")


def make_prompt(num_words: int, seed: int) -> str:
    """``num_words`` corpus words drawn with ``seed`` (same seed, same prompt)."""
    words = corpus_words()
    rng = random.Random(seed)
    return " ".join(rng.choices(words, k=num_words))
