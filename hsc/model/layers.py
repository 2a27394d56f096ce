"""Building blocks of HSCNet.

Dimension names used across ``hsc.model``: B batch, T clips, W words of a paragraph, S sentences,
L words of the longest sentence, N tokens of a joint sequence, D model width, H heads.
Masks are bool tensors where True marks a valid (non-padding) position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MLP(nn.Module):
    """Two linear layers with a ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> Tensor:
    """Return the ``(length, dim)`` sinusoidal position table of Vaswani et al. (2017)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


class FeatureEncoder(nn.Module):
    """Project input features to width D, add positions, then run a self-attention stack.

    The paper's video and text encoders are three-layer self-attention networks on top of C3D
    clip features and GloVe word vectors respectively.
    """

    def __init__(self, in_dim: int, dim: int, num_heads: int, num_layers: int, dropout: float):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim), nn.Dropout(dropout))
        layer = nn.TransformerEncoderLayer(
            dim, num_heads, dim_feedforward=4 * dim, dropout=dropout, batch_first=True
        )
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Encode ``x`` (B, N, in_dim) with ``mask`` (B, N); returns (B, N, D)."""
        _, length, _ = x.shape
        h = self.project(x)
        h = h + sinusoidal_positions(length, h.shape[-1], h.device)[None]
        return self.layers(h, src_key_padding_mask=~mask)


class SimilarityAttention(nn.Module):
    """Multi-head self-attention scored by scaled cosine similarity (equations 1 and 2).

    Per head, s_ij = cos(phi(m_i), rho(m_j)) / sigma, softmax over valid j, and the output is the
    weighted sum of psi(m_j). sigma is one learned positive scalar per layer, stored as its log.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float, initial_scale: float):
        super().__init__()
        self.num_heads = num_heads
        self.phi = nn.Linear(dim, dim)
        self.rho = nn.Linear(dim, dim)
        self.psi = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.log_sigma = nn.Parameter(torch.tensor(-math.log(initial_scale)))
        self.dropout = nn.Dropout(dropout)

    def forward(self, m: Tensor, mask: Tensor) -> Tensor:
        """Attend over ``m`` (B, N, D) with ``mask`` (B, N); returns (B, N, D)."""
        B, N, D = m.shape
        H = self.num_heads

        def heads(x: Tensor) -> Tensor:
            return x.view(B, N, H, D // H).transpose(1, 2)  # (B, H, N, D/H)

        query = F.normalize(heads(self.phi(m)), dim=-1)
        key = F.normalize(heads(self.rho(m)), dim=-1)
        value = heads(self.psi(m))

        scores = query @ key.transpose(-1, -2) / self.log_sigma.exp()  # (B, H, N, N)
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        weights = self.dropout(scores.softmax(dim=-1))
        out = (weights @ value).transpose(1, 2).reshape(B, N, D)
        return self.out(out)


class MultiModalLayer(nn.Module):
    """One multi-modal layer: joint similarity attention, then a visual and a textual MLP.

    The clips and the queries are projected into a shared sequence M (B, T + Q, D), attended
    jointly, and split again. Two unshared MLPs return the visual and the textual part. Residual
    connections and layer norms around both steps are our choice, as in the standard Transformer
    layer, because the paper leaves this open.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float, initial_scale: float):
        super().__init__()
        self.project_visual = nn.Linear(dim, dim)
        self.project_textual = nn.Linear(dim, dim)
        # Tells the attention which modality a token comes from after the concatenation.
        self.modality = nn.Parameter(torch.zeros(2, dim))
        self.norm_joint = nn.LayerNorm(dim)
        self.attention = SimilarityAttention(dim, num_heads, dropout, initial_scale)
        self.norm_attention = nn.LayerNorm(dim)
        self.mlp_visual = MLP(dim, 4 * dim, dim, dropout)
        self.mlp_textual = MLP(dim, 4 * dim, dim, dropout)
        self.norm_visual = nn.LayerNorm(dim)
        self.norm_textual = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, visual: Tensor, visual_mask: Tensor, textual: Tensor, textual_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Update ``visual`` (B, T, D) and ``textual`` (B, Q, D); returns both, same shapes."""
        T = visual.shape[1]
        m = torch.cat(
            [
                self.project_visual(visual) + self.modality[0],
                self.project_textual(textual) + self.modality[1],
            ],
            dim=1,
        )  # (B, T + Q, D)
        m = self.norm_joint(m)
        mask = torch.cat([visual_mask, textual_mask], dim=1)
        h = self.norm_attention(m + self.dropout(self.attention(m, mask)))

        visual = self.norm_visual(visual + self.dropout(self.mlp_visual(h[:, :T])))
        textual = self.norm_textual(textual + self.dropout(self.mlp_textual(h[:, T:])))
        return visual, textual


class PoolCrossAttention(nn.Module):
    """Move textual tokens one level up: pool each group, then cross-attend to all tokens.

    Equations 3 and 4: a group's token (a sentence's, or the paragraph's) starts as the mean of
    its members and is refined by cross-attention from it to every valid lower-level token.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor, mask: Tensor, group: Tensor, num_groups: int) -> Tensor:
        """Pool ``tokens`` (B, N, D) by ``group`` (B, N), index in [0, G) or -1 for padding.

        Returns (B, G, D). A group with no member pools to zeros before the cross-attention.
        """
        members = F.one_hot(group.clamp(min=0), num_groups).float()  # (B, N, G)
        members = members * (mask & (group >= 0))[..., None].float()
        count = members.sum(1).clamp(min=1)  # (B, G)
        pooled = members.transpose(1, 2) @ tokens / count[..., None]  # (B, G, D)
        attended, _ = self.attention(pooled, tokens, tokens, key_padding_mask=~mask, need_weights=False)
        return self.norm(pooled + attended)


class VisualSelfAttention(nn.Module):
    """The self-attention layer that adapts the clips to the next level."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            dim, num_heads, dim_feedforward=4 * dim, dropout=dropout, batch_first=True
        )

    def forward(self, visual: Tensor, mask: Tensor) -> Tensor:
        return self.layer(visual, src_key_padding_mask=~mask)


def clip_time_features(video_mask: Tensor, dim: int) -> Tensor:
    """Return sinusoidal features of each clip's normalised time, (B, T, dim), unit rows.

    Clip t of a video with n real clips sits at time c = (t + 0.5) / n in [0, 1], so the features
    mean the same in a short video as in a long one, and padding does not change them. Each pair
    of components is (sin, cos) of 2 pi f c, with f from 0.25 to 64 cycles per video on a
    geometric scale. Rows are scaled to unit norm; padding clips get zeros.
    """
    lengths = video_mask.sum(1, keepdim=True).clamp(min=1).float()  # (B, 1)
    steps = torch.arange(video_mask.shape[1], device=video_mask.device, dtype=torch.float32)
    centres = (steps[None] + 0.5) / lengths  # (B, T)
    frequencies = torch.logspace(math.log10(0.25), math.log10(64.0), dim // 2, device=video_mask.device)
    angles = 2 * math.pi * centres[..., None] * frequencies  # (B, T, dim / 2)
    table = torch.cat([angles.sin(), angles.cos()], dim=-1) / math.sqrt(dim // 2)
    return table * video_mask[..., None]


def aggregate(
    textual: Tensor,
    visual: Tensor,
    visual_mask: Tensor,
    temperature: float,
    times: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Aggregate the clips into each textual query (equations 5 and 6).

    Both sides are L2-normalised; ``A = Q V^T / tau`` is masked over padding clips. Returns the
    grounding features ``g = [Q; softmax(A) V]`` (B, Q, 2D) and the logits ``A`` (B, Q, T), which
    the alignment loss reads. With ``times`` (B, T, D) from ``clip_time_features``, ``g`` also
    holds ``softmax(A) times``, where the query's attention puts it in time, and is 3D wide.
    """
    q = F.normalize(textual, dim=-1)
    v = F.normalize(visual, dim=-1)
    logits = q @ v.transpose(1, 2) / temperature  # (B, Q, T)
    logits = logits.masked_fill(~visual_mask[:, None, :], float("-inf"))
    weights = logits.softmax(dim=-1)
    parts = [q, weights @ v]
    if times is not None:
        parts.append(weights @ times)
    return torch.cat(parts, dim=-1), logits


class SpanHead(nn.Module):
    """A two-layer MLP that predicts a ``(centre, width)`` span in normalised time."""

    def __init__(self, in_dim: int, hidden_dim: int, dropout: float):
        super().__init__()
        self.mlp = MLP(in_dim, hidden_dim, 2, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x).sigmoid()
