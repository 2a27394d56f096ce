"""Training losses of HSCNet (equations 9 to 11).

Every loss is a mean over the valid queries of the batch (words, sentences or paragraphs), so
padding never changes a loss value. Spans are ``(start, end)`` in normalised time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hsc.model.config import HSCNetConfig
from hsc.model.hscnet import HSCNetOutput
from hsc.model.spans import clips_inside, generalized_iou


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Return the mean of ``values`` over ``mask`` (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def alignment_loss(logits: Tensor, positive: Tensor, query_mask: Tensor) -> Tensor:
    """Return -log of the softmax mass that each query puts on its positive clips.

    ``logits`` (B, Q, T) are the similarity logits of equation 5 with padding clips at -inf,
    ``positive`` (B, Q, T) marks the clips inside each query's ground truth and ``query_mask``
    (B, Q) the valid queries.
    """
    all_clips = torch.logsumexp(logits, dim=-1)
    inside = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=-1)
    loss = all_clips - inside
    loss = torch.where(query_mask, loss, torch.zeros_like(loss))  # padding rows may be inf
    return masked_mean(loss, query_mask)


def span_loss(pred: Tensor, target: Tensor, mask: Tensor, config: HSCNetConfig) -> Tensor:
    """Return the weighted L1 distance plus 1 - GIoU between predicted and target spans."""
    l1 = (pred - target).abs().sum(-1)
    giou = 1.0 - generalized_iou(pred, target)
    return config.weight_l1 * masked_mean(l1, mask) + config.weight_giou * masked_mean(giou, mask)


def word_union_loss(word_spans: Tensor, word_mask: Tensor, sentence_spans: Tensor, sentence_mask: Tensor, config: HSCNetConfig) -> Tensor:
    """Pull the union of each sentence's word spans onto the sentence's span.

    The union is taken as its hull, from the earliest word start to the latest word end, which
    is the union itself whenever the word spans overlap or touch. ``word_spans`` (B, S, L, 2),
    ``word_mask`` (B, S, L), ``sentence_spans`` (B, S, 2) ground truth.
    """
    start = word_spans[..., 0].masked_fill(~word_mask, float("inf")).amin(-1)
    end = word_spans[..., 1].masked_fill(~word_mask, float("-inf")).amax(-1)
    has_words = word_mask.any(-1) & sentence_mask
    hull = torch.stack([start, end], dim=-1)
    hull = torch.where(has_words[..., None], hull, sentence_spans)  # keep padding rows finite
    return span_loss(hull, sentence_spans, has_words, config)


def word_subset_loss(word_spans: Tensor, word_mask: Tensor, sentence_spans: Tensor) -> Tensor:
    """Penalise the part of each word span that sticks out of its sentence's span."""
    below = (sentence_spans[:, :, None, 0] - word_spans[..., 0]).clamp(min=0)
    above = (word_spans[..., 1] - sentence_spans[:, :, None, 1]).clamp(min=0)
    return masked_mean(below + above, word_mask)


@dataclass
class Targets:
    """Ground truth for a batch: sentence spans (B, S, 2), masks and clip counts."""

    sentence_spans: Tensor
    sentence_mask: Tensor
    word_sentence: Tensor
    word_mask: Tensor
    num_clips: Tensor  # (B,) valid clips of each video

    @property
    def paragraph_span(self) -> Tensor:
        """The hull of the sentences' spans (B, 2): the paragraph's ground truth."""
        start = self.sentence_spans[..., 0].masked_fill(~self.sentence_mask, float("inf")).amin(-1)
        end = self.sentence_spans[..., 1].masked_fill(~self.sentence_mask, float("-inf")).amax(-1)
        return torch.stack([start, end], dim=-1)


def hscnet_loss(output: HSCNetOutput, targets: Targets, config: HSCNetConfig) -> tuple[Tensor, dict[str, float]]:
    """Return the total loss of equation 11 and each term's value for logging."""
    terms: dict[str, Tensor] = {}
    T = next(iter(output.alignment_logits.values())).shape[-1]
    sentence_inside = clips_inside(targets.sentence_spans, targets.num_clips, T)  # (B, S, T)

    # Encoder: alignment losses (equation 9).
    if config.align_sentence:
        terms["align_sentence"] = alignment_loss(
            output.alignment_logits["sentence"], sentence_inside, targets.sentence_mask
        )
    if config.align_word:
        index = targets.word_sentence.clamp(min=0)[..., None].expand(-1, -1, T)
        word_inside = sentence_inside.gather(1, index)  # (B, W, T): the word's sentence
        terms["align_word"] = alignment_loss(output.alignment_logits["word"], word_inside, targets.word_mask)
    if config.align_paragraph:
        # The paragraph's positives are the union of its sentences' clips.
        union = (sentence_inside & targets.sentence_mask[..., None]).any(1, keepdim=True)
        terms["align_paragraph"] = alignment_loss(
            output.alignment_logits["paragraph"], union, torch.ones_like(union[..., 0])
        )

    # Decoders (equation 10) and the final grounding loss.
    if output.paragraph_span is not None:
        all_rows = torch.ones_like(targets.sentence_mask[:, 0])
        terms["paragraph"] = span_loss(output.paragraph_span, targets.paragraph_span, all_rows, config)
    terms["sentence"] = span_loss(output.sentence_spans, targets.sentence_spans, targets.sentence_mask, config)
    if output.word_spans is not None:
        terms["word_union"] = config.weight_word_union * word_union_loss(
            output.word_spans, output.word_mask, targets.sentence_spans, targets.sentence_mask, config
        )
        terms["word_subset"] = config.weight_word_subset * word_subset_loss(
            output.word_spans, output.word_mask, targets.sentence_spans
        )
        terms["final"] = span_loss(output.final_spans, targets.sentence_spans, targets.sentence_mask, config)

    total = sum(
        (config.weight_align * v if k.startswith("align_") else v for k, v in terms.items()),
        start=torch.zeros((), device=output.final_spans.device),
    )
    return total, {k: float(v.detach()) for k, v in terms.items()}
