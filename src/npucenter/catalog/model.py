"""LLM architecture parameters (dense decoder-only transformers with GQA)."""

from __future__ import annotations

from dataclasses import dataclass

from npucenter.errors import InvalidConfigError

__all__ = ["Model"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Model:
    """A dense decoder-only transformer, as its published config.json describes it."""

    model_id: str
    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    max_context_tokens: int = 4096
    aliases: tuple[str, ...] = ()
    source_url: str = ""
    assumed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "num_layers",
            "hidden_size",
            "num_attention_heads",
            "num_kv_heads",
            "head_dim",
            "intermediate_size",
            "vocab_size",
            "max_context_tokens",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidConfigError(
                    f"model {self.model_id}.{name}", value, "must be a positive integer"
                )
        if self.num_attention_heads % self.num_kv_heads:
            raise InvalidConfigError(
                f"model {self.model_id}.num_kv_heads",
                self.num_kv_heads,
                "must divide num_attention_heads",
            )

    @property
    def q_dim(self) -> int:
        """Width of the query projection (heads × head_dim)."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of one of the K/V projections (KV heads × head_dim)."""
        return self.num_kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        """Weights of one transformer layer (attention + gated MLP; norms are negligible)."""
        h = self.hidden_size
        attention = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h
        mlp = 3 * h * self.intermediate_size
        return attention + mlp

    @property
    def embedding_params(self) -> int:
        """Token embedding plus LM head (one matrix when tied)."""
        matrices = 1 if self.tie_word_embeddings else 2
        return matrices * self.vocab_size * self.hidden_size

    @property
    def num_params(self) -> int:
        """All weights."""
        return self.num_layers * self.layer_params + self.embedding_params

    def kv_elements_per_token(self) -> int:
        """K and V elements stored per token over all layers."""
        return 2 * self.num_layers * self.kv_dim
