"""Span maths on temporal intervals.

A span is a ``(..., 2)`` tensor. ``(start, end)`` spans are in normalised time, where 0 is the
start of the video and 1 its end; ``(centre, width)`` spans are what the prediction heads output.
Every function works elementwise over the leading dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Keeps IoU and GIoU finite when both spans have zero length.
EPS = 1e-6


def cw_to_se(spans: Tensor) -> Tensor:
    """Convert ``(centre, width)`` spans to ``(start, end)``."""
    centre, width = spans.unbind(-1)
    return torch.stack([centre - 0.5 * width, centre + 0.5 * width], dim=-1)


def se_to_cw(spans: Tensor) -> Tensor:
    """Convert ``(start, end)`` spans to ``(centre, width)``."""
    start, end = spans.unbind(-1)
    return torch.stack([0.5 * (start + end), end - start], dim=-1)


def temporal_iou(a: Tensor, b: Tensor) -> Tensor:
    """Return the IoU of ``(start, end)`` spans ``a`` and ``b``; 0 when the union is empty."""
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    return torch.where(union > 0, inter / union.clamp(min=EPS), torch.zeros_like(inter))


def generalized_iou(a: Tensor, b: Tensor) -> Tensor:
    """Return the generalised IoU (Rezatofighi et al. 2019) of ``(start, end)`` spans.

    GIoU = IoU - (hull - union) / hull, where hull is the length of the smallest interval that
    contains both spans. It lies in [-1, 1] and, unlike IoU, still measures how far apart two
    disjoint spans are. Spans of zero length are allowed: two identical points score 0, not NaN.
    """
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    hull = torch.maximum(a[..., 1], b[..., 1]) - torch.minimum(a[..., 0], b[..., 0])
    iou = inter / (union + EPS)
    return iou - (hull - union) / (hull + EPS)


def clip_centres(num_valid: Tensor, num_clips: int) -> Tensor:
    """Return the normalised centre of each clip slot, ``(B, T)``, for videos of ``num_valid`` clips.

    Clip ``t`` of a video with ``n`` valid clips covers ``[t / n, (t + 1) / n]``. Padding slots
    (``t >= n``) get centres above 1, so no span contains them.
    """
    index = torch.arange(num_clips, device=num_valid.device, dtype=torch.float32)
    return (index[None, :] + 0.5) / num_valid[:, None].float().clamp(min=1)


def clips_inside(spans: Tensor, num_valid: Tensor, num_clips: int) -> Tensor:
    """Return which clips lie inside each span, ``(B, Q, T)`` bool, for spans ``(B, Q, 2)``.

    A clip is inside when its centre is. A span shorter than one clip may contain no centre; it
    then gets the clip that contains its midpoint, so every query has at least one positive clip.
    """
    centres = clip_centres(num_valid, num_clips)[:, None, :]  # (B, 1, T)
    inside = (centres >= spans[..., :1]) & (centres <= spans[..., 1:])
    midpoint = spans.mean(-1)  # (B, Q)
    nearest = (midpoint * num_valid[:, None].float()).floor().long()
    nearest = torch.minimum(nearest.clamp(min=0), (num_valid[:, None] - 1).clamp(min=0))
    index = torch.arange(num_clips, device=spans.device)
    return inside | (index[None, None, :] == nearest[..., None])
