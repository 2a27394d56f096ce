"""Typed configuration of HSCNet.

Defaults follow the paper's implementation details (Tan et al., "Hierarchical Semantic
Correspondence Networks for Video Paragraph Grounding", CVPR 2023, section 4.2) where it gives
them. ``docs/model.md`` explains each choice the paper leaves open.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class HSCNetConfig:
    """Architecture, ablation switches and loss weights of one HSCNet."""

    # Input feature sizes: C3D fc6 is 4096-d, the public ActivityNet features are 500-d after
    # PCA, GloVe 6B is 50-d and GloVe 840B is 300-d.
    video_dim: int = 4096
    word_dim: int = 300
    # Width D of every encoder and decoder; 256 in all of the paper's settings.
    hidden_size: int = 256
    num_heads: int = 8
    dropout: float = 0.1
    # The feature encoders are three-layer self-attention networks.
    video_encoder_layers: int = 3
    text_encoder_layers: int = 3
    # C1, C2 and C3: 1/1/1 on ActivityNet-Captions, 3/3/3 on TACoS.
    word_layers: int = 1
    sentence_layers: int = 1
    paragraph_layers: int = 1
    # Temperature of the visual-to-textual aggregation (equation 5); 0.2 at every level.
    temperature: float = 0.2
    # Initial 1/sigma of the similarity attention (equation 1); sigma is learned per layer.
    # Cosine similarities lie in [-1, 1], so without a scale the softmax is nearly uniform.
    initial_similarity_scale: float = 10.0
    # Append to each grounding feature the attention-weighted sinusoidal features of the clips'
    # normalised times, so the span heads read where a query attends (docs/model.md).
    pooled_time: bool = True
    # Equations 7 and 8 use "an LSTM", read here as one direction. A sentence's decoder state
    # then depends on the sentences before it and on the paragraph context g_P, and a word's
    # state on the words before it. True runs each LSTM in both directions (D/2 units each).
    bidirectional_lstm: bool = False

    # Semantic levels (table 2). The sentence level is always on.
    word_level: bool = True
    paragraph_level: bool = True
    # Alignment losses of the encoder (table 3).
    align_word: bool = True
    align_sentence: bool = True
    align_paragraph: bool = True
    # Decoders (table 4). The sentence decoder is always on.
    word_decoder: bool = True
    paragraph_decoder: bool = True

    # Loss weights. Equation 11 sums the terms unweighted, and so do these defaults.
    weight_align: float = 1.0
    weight_l1: float = 1.0
    weight_giou: float = 1.0
    weight_word_union: float = 1.0
    weight_word_subset: float = 1.0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.word_decoder and not self.word_level:
            raise ValueError("word_decoder needs word_level: the word decoder reads word-level features")
        if self.paragraph_decoder and not self.paragraph_level:
            raise ValueError(
                "paragraph_decoder needs paragraph_level: the paragraph decoder reads paragraph-level features"
            )
        if self.align_word and not self.word_level:
            raise ValueError("align_word needs word_level: a word alignment loss needs the word level modelled")
        if self.align_paragraph and not self.paragraph_level:
            raise ValueError(
                "align_paragraph needs paragraph_level: a paragraph alignment loss needs the paragraph level modelled"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HSCNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown HSCNet config keys {unknown}; known keys: {sorted(known)}")
        # Checkpoints written before these options existed were trained with the old behaviour.
        return cls(**{"pooled_time": False, "bidirectional_lstm": True, **values})

    def with_levels(self, levels: str) -> HSCNetConfig:
        """Return a copy modelling only ``levels``: "SL", "SL+PL", "SL+WL" or "SL+PL+WL".

        A level that is off takes its encoder, its alignment loss and its decoder with it, as in
        the paper's table 2.
        """
        parts = {p.strip().upper() for p in levels.split("+")}
        if "SL" not in parts or not parts <= {"SL", "PL", "WL"}:
            raise ValueError(f"invalid levels {levels!r}; expected SL, SL+PL, SL+WL or SL+PL+WL")
        word, paragraph = "WL" in parts, "PL" in parts
        values = self.to_dict()
        values.update(
            word_level=word,
            align_word=word,
            word_decoder=word,
            paragraph_level=paragraph,
            align_paragraph=paragraph,
            paragraph_decoder=paragraph,
        )
        return HSCNetConfig(**values)

    def with_alignments(self, names: str) -> HSCNetConfig:
        """Return a copy that keeps only the alignment losses in ``names`` (table 3).

        ``names`` is a comma-separated subset of "word", "sentence" and "paragraph", or "none".
        """
        enabled = parse_names(names, ("word", "sentence", "paragraph"))
        values = self.to_dict()
        values.update({f"align_{name}": name in enabled for name in ("word", "sentence", "paragraph")})
        return HSCNetConfig(**values)

    def with_decoders(self, names: str) -> HSCNetConfig:
        """Return a copy that keeps only the extra decoders in ``names`` (table 4).

        ``names`` is "word", "paragraph", "word,paragraph" or "none"; the sentence decoder is
        always on.
        """
        enabled = parse_names(names, ("word", "paragraph"))
        values = self.to_dict()
        values.update({f"{name}_decoder": name in enabled for name in ("word", "paragraph")})
        return HSCNetConfig(**values)


def parse_names(text: str, names: tuple[str, ...]) -> set[str]:
    """Return the names in a comma-separated ``text`` ("none" for none); raises ValueError on others."""
    if text.strip().lower() == "none":
        return set()
    chosen = {part.strip().lower() for part in text.split(",") if part.strip()}
    if not chosen:
        raise ValueError(f"no names in {text!r}; choose from {', '.join(names)}, or 'none' to keep none")
    unknown = chosen - set(names)
    if unknown:
        raise ValueError(f"unknown names {sorted(unknown)} in {text!r}; choose from {', '.join(names)} or 'none'")
    return chosen
