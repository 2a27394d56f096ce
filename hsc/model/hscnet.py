"""HSCNet: hierarchical multi-modal encoder and hierarchical progressive decoder.

See ``hsc.model.layers`` for the dimension names and the mask convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from hsc.model.config import HSCNetConfig
from hsc.model.layers import (
    FeatureEncoder,
    MultiModalLayer,
    PoolCrossAttention,
    SpanHead,
    VisualSelfAttention,
    aggregate,
    clip_time_features,
)
from hsc.model.spans import cw_to_se


@dataclass
class HSCNetOutput:
    """Predictions of one forward pass; spans are ``(start, end)`` in normalised time.

    ``final_spans`` (B, S, 2) is the grounding result. The other fields feed the losses:
    ``sentence_spans`` (B, S, 2); ``paragraph_span`` (B, 2) or None without the paragraph
    decoder; ``word_spans`` (B, S, L, 2) and ``word_mask`` (B, S, L) or None without the word
    decoder; ``alignment_logits`` maps "word" (B, W, T), "sentence" (B, S, T) and "paragraph"
    (B, 1, T) to the logits of equation 5 for each level that is modelled.
    """

    final_spans: Tensor
    sentence_spans: Tensor
    paragraph_span: Tensor | None = None
    word_spans: Tensor | None = None
    word_mask: Tensor | None = None
    alignment_logits: dict[str, Tensor] = field(default_factory=dict)


def words_by_sentence(word_sentence: Tensor, num_sentences: int) -> tuple[Tensor, Tensor]:
    """Return each word's position inside its sentence (B, W) and the longest sentence length.

    ``word_sentence`` (B, W) holds each word's sentence index, -1 for padding. Words of a
    sentence need not be contiguous; their order in the paragraph is kept.
    """
    one_hot = F.one_hot(word_sentence.clamp(min=0), num_sentences) * (word_sentence >= 0)[..., None]
    rank = (one_hot.cumsum(dim=1) * one_hot).sum(-1) - 1  # (B, W), -1 for padding
    longest = int(one_hot.sum(1).max().item()) if word_sentence.numel() else 0
    return rank, max(longest, 1)


def run_lstm(lstm: nn.LSTM, x: Tensor, lengths: Tensor) -> Tensor:
    """Run ``lstm`` on padded ``x`` (N, L, in) whose rows have ``lengths``; returns (N, L, out).

    Packing keeps padding out of the recurrence, so a row's output does not depend on how much
    padding the batch adds. Rows of length 0 are run as length 1 and must be ignored by callers.
    """
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out


class HSCNet(nn.Module):
    """Hierarchical Semantic Correspondence Network (Tan et al., CVPR 2023).

    Parts switched off in the config are not built, so they cost nothing and get no gradient.
    """

    def __init__(self, config: HSCNetConfig):
        super().__init__()
        self.config = config
        D, H, p, scale = config.hidden_size, config.num_heads, config.dropout, config.initial_similarity_scale

        self.video_encoder = FeatureEncoder(config.video_dim, D, H, config.video_encoder_layers, p)
        self.text_encoder = FeatureEncoder(config.word_dim, D, H, config.text_encoder_layers, p)

        def stack(depth: int) -> nn.ModuleList:
            return nn.ModuleList(MultiModalLayer(D, H, p, scale) for _ in range(depth))

        if config.word_level:
            self.word_layers = stack(config.word_layers)
        self.sentence_pool = PoolCrossAttention(D, H, p)
        self.sentence_visual = VisualSelfAttention(D, H, p)
        self.sentence_layers = stack(config.sentence_layers)
        if config.paragraph_level:
            self.paragraph_pool = PoolCrossAttention(D, H, p)
            self.paragraph_visual = VisualSelfAttention(D, H, p)
            self.paragraph_layers = stack(config.paragraph_layers)

        # Grounding features g are [Q; softmax(A) V], 2D wide, and D wider with the attended clip times.
        G = 3 * D if config.pooled_time else 2 * D
        if config.paragraph_decoder:
            self.paragraph_project = nn.Linear(G, D)
            self.paragraph_head = SpanHead(D, D, p)
        sentence_in = G + (G if config.paragraph_level else 0)
        # Either direction of a bidirectional LSTM has D/2 units, so every state is D wide.
        bi = config.bidirectional_lstm
        units = D // 2 if bi else D
        self.sentence_lstm = nn.LSTM(sentence_in, units, batch_first=True, bidirectional=bi)
        self.sentence_head = SpanHead(D, D, p)
        if config.word_decoder:
            self.word_lstm = nn.LSTM(G + D, units, batch_first=True, bidirectional=bi)
            self.word_head = SpanHead(D, D, p)
            self.final_attention = nn.MultiheadAttention(D, H, dropout=p, batch_first=True)
            self.final_head = SpanHead(2 * D, D, p)

    def forward(
        self,
        video: Tensor,
        video_mask: Tensor,
        words: Tensor,
        word_mask: Tensor,
        word_sentence: Tensor,
        sentence_mask: Tensor,
    ) -> HSCNetOutput:
        """Ground every sentence of a batch of paragraphs.

        Args:
            video: clip features (B, T, video_dim).
            video_mask: (B, T), True for real clips.
            words: word vectors of each paragraph, sentences in order (B, W, word_dim).
            word_mask: (B, W), True for real words.
            word_sentence: (B, W) index of each word's sentence, -1 for padding.
            sentence_mask: (B, S), True for real sentences.
        """
        cfg = self.config
        B, T, _ = video.shape
        S = sentence_mask.shape[1]
        logits: dict[str, Tensor] = {}

        # Feature encoders.
        visual = self.video_encoder(video, video_mask)  # (B, T, D)
        textual = self.text_encoder(words, word_mask)  # (B, W, D)
        times = clip_time_features(video_mask, visual.shape[-1]) if cfg.pooled_time else None

        # Word level: clips and words attend jointly.
        g_word = None
        if cfg.word_level:
            for layer in self.word_layers:
                visual, textual = layer(visual, video_mask, textual, word_mask)
            g_word, logits["word"] = aggregate(textual, visual, video_mask, cfg.temperature, times)

        # Sentence level: pool words into sentences, adapt the clips, attend jointly.
        sentences = self.sentence_pool(textual, word_mask, word_sentence, S)  # (B, S, D)
        visual = self.sentence_visual(visual, video_mask)
        for layer in self.sentence_layers:
            visual, sentences = layer(visual, video_mask, sentences, sentence_mask)
        g_sentence, logits["sentence"] = aggregate(sentences, visual, video_mask, cfg.temperature, times)

        # Paragraph level: one token pooled from the sentences.
        g_paragraph = None
        if cfg.paragraph_level:
            paragraph_group = torch.where(sentence_mask, 0, -1)
            paragraph = self.paragraph_pool(sentences, sentence_mask, paragraph_group, 1)  # (B, 1, D)
            visual = self.paragraph_visual(visual, video_mask)
            paragraph_mask = torch.ones(B, 1, dtype=torch.bool, device=video.device)
            for layer in self.paragraph_layers:
                visual, paragraph = layer(visual, video_mask, paragraph, paragraph_mask)
            g_paragraph, logits["paragraph"] = aggregate(paragraph, visual, video_mask, cfg.temperature, times)

        # Paragraph decoder.
        paragraph_span = None
        if cfg.paragraph_decoder:
            paragraph_span = cw_to_se(self.paragraph_head(self.paragraph_project(g_paragraph[:, 0])))

        # Sentence decoder (equation 7): an LSTM over [g_S; g_P] in sentence order.
        sentence_in = g_sentence
        if g_paragraph is not None:
            sentence_in = torch.cat([g_sentence, g_paragraph.expand(-1, S, -1)], dim=-1)
        g_sp = run_lstm(self.sentence_lstm, sentence_in, sentence_mask.sum(1))  # (B, S, D)
        sentence_spans = cw_to_se(self.sentence_head(g_sp))

        if not cfg.word_decoder:
            return HSCNetOutput(sentence_spans, sentence_spans, paragraph_span, alignment_logits=logits)

        # Word decoder (equation 8): regroup words by sentence, then an LSTM per sentence.
        rank, L = words_by_sentence(word_sentence, S)
        valid = word_mask & (word_sentence >= 0)
        slot = word_sentence.clamp(min=0) * L + rank.clamp(min=0)  # (B, W) index into S * L
        slot = torch.where(valid, slot, S * L)  # padding goes to a spare slot that is dropped
        grouped = g_word.new_zeros(B, S * L + 1, g_word.shape[-1])
        grouped.scatter_(1, slot[..., None].expand(-1, -1, g_word.shape[-1]), g_word)
        grouped = grouped[:, : S * L].reshape(B, S, L, -1)  # (B, S, L, G)
        word_mask_grouped = torch.zeros(B, S * L + 1, dtype=torch.bool, device=video.device)
        word_mask_grouped.scatter_(1, slot, valid)
        word_mask_grouped = word_mask_grouped[:, : S * L].reshape(B, S, L)

        word_in = torch.cat([grouped, g_sp[:, :, None].expand(-1, -1, L, -1)], dim=-1)
        g_ws = run_lstm(
            self.word_lstm, word_in.reshape(B * S, L, -1), word_mask_grouped.reshape(B * S, L).sum(1)
        ).view(B, S, L, -1)  # (B, S, L, D)
        word_spans = cw_to_se(self.word_head(g_ws))  # (B, S, L, 2)

        # Final head: each sentence attends to its own words, then [word-derived; sentence].
        keys_mask = word_mask_grouped.reshape(B * S, L).clone()
        keys_mask[:, 0] |= ~keys_mask.any(1)  # a padding sentence attends to a dummy slot
        attended, _ = self.final_attention(
            g_sp.reshape(B * S, 1, -1),
            g_ws.view(B * S, L, -1),
            g_ws.view(B * S, L, -1),
            key_padding_mask=~keys_mask,
            need_weights=False,
        )
        final_in = torch.cat([attended.view(B, S, -1), g_sp], dim=-1)
        final_spans = cw_to_se(self.final_head(final_in))

        return HSCNetOutput(
            final_spans,
            sentence_spans,
            paragraph_span,
            word_spans,
            word_mask_grouped,
            logits,
        )
