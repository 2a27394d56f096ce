"""HSCNet shapes, masks, padding invariance, gradients and determinism."""

import pytest
import torch

from hsc.model.config import HSCNetConfig
from hsc.model.hscnet import HSCNet
from hsc.model.layers import aggregate, clip_time_features
from hsc.model.losses import Targets, hscnet_loss

VIDEO_DIM, WORD_DIM = 12, 6


def small_config(**changes) -> HSCNetConfig:
    values = dict(
        video_dim=VIDEO_DIM, word_dim=WORD_DIM, hidden_size=16, num_heads=2,
        video_encoder_layers=1, text_encoder_layers=1, dropout=0.0,
        word_layers=2, sentence_layers=2, paragraph_layers=2,
    )
    values.update(changes)
    return HSCNetConfig(**values)


def paragraph(num_clips: int, sentence_lengths: list[int], seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    n_words = sum(sentence_lengths)
    spans = torch.sort(torch.rand(len(sentence_lengths), 2, generator=g), dim=-1).values
    return {
        "video": torch.randn(num_clips, VIDEO_DIM, generator=g),
        "words": torch.randn(n_words, WORD_DIM, generator=g),
        "word_sentence": torch.repeat_interleave(torch.arange(len(sentence_lengths)), torch.tensor(sentence_lengths)),
        "spans": spans,
    }


def batch_of(items: list[dict]) -> tuple[dict, Targets]:
    B = len(items)
    T = max(p["video"].shape[0] for p in items)
    W = max(p["words"].shape[0] for p in items)
    S = max(p["spans"].shape[0] for p in items)
    inputs = {
        "video": torch.zeros(B, T, VIDEO_DIM), "video_mask": torch.zeros(B, T, dtype=torch.bool),
        "words": torch.zeros(B, W, WORD_DIM), "word_mask": torch.zeros(B, W, dtype=torch.bool),
        "word_sentence": torch.full((B, W), -1), "sentence_mask": torch.zeros(B, S, dtype=torch.bool),
    }
    spans = torch.zeros(B, S, 2)
    for i, p in enumerate(items):
        t, w, s = p["video"].shape[0], p["words"].shape[0], p["spans"].shape[0]
        inputs["video"][i, :t], inputs["video_mask"][i, :t] = p["video"], True
        inputs["words"][i, :w], inputs["word_mask"][i, :w] = p["words"], True
        inputs["word_sentence"][i, :w] = p["word_sentence"]
        inputs["sentence_mask"][i, :s], spans[i, :s] = True, p["spans"]
    targets = Targets(spans, inputs["sentence_mask"], inputs["word_sentence"], inputs["word_mask"], inputs["video_mask"].sum(1))
    return inputs, targets


def build(config: HSCNetConfig, seed: int = 0) -> HSCNet:
    torch.manual_seed(seed)
    return HSCNet(config).eval()


def test_output_shapes():
    model = build(small_config())
    inputs, _ = batch_of([paragraph(10, [3, 2, 4], 0), paragraph(7, [2, 2], 1)])
    out = model(**inputs)
    assert out.final_spans.shape == (2, 3, 2)
    assert out.sentence_spans.shape == (2, 3, 2)
    assert out.paragraph_span.shape == (2, 2)
    assert out.word_spans.shape == (2, 3, 4, 2)
    assert out.alignment_logits["word"].shape == (2, 9, 10)
    assert out.alignment_logits["sentence"].shape == (2, 3, 10)
    assert out.alignment_logits["paragraph"].shape == (2, 1, 10)


def test_word_mask_groups_words_by_sentence():
    model = build(small_config())
    inputs, _ = batch_of([paragraph(10, [3, 1, 4], 0)])
    out = model(**inputs)
    assert out.word_mask[0].sum(-1).tolist() == [3, 1, 4]


def test_spans_are_finite_and_ordered():
    model = build(small_config())
    inputs, _ = batch_of([paragraph(10, [3, 2, 4], 0), paragraph(7, [2, 2], 1)])
    spans = model(**inputs).final_spans
    assert torch.isfinite(spans).all()
    assert (spans[..., 1] >= spans[..., 0]).all()


@pytest.mark.parametrize(
    "other",
    [
        paragraph(10, [3, 2, 2, 5, 1], 5),  # more sentences
        paragraph(10, [9, 8], 6),  # longer sentences
        paragraph(25, [2, 2], 7),  # longer video
    ],
    ids=["more-sentences", "longer-sentences", "longer-video"],
)
@pytest.mark.parametrize("levels", ["SL+PL+WL", "SL"])
def test_padding_invariance(other, levels):
    model = build(small_config().with_levels(levels))
    alone = paragraph(10, [3, 2, 4], 0)
    single_inputs, _ = batch_of([alone])
    padded_inputs, _ = batch_of([alone, other])
    with torch.no_grad():
        single = model(**single_inputs)
        padded = model(**padded_inputs)
    assert torch.allclose(single.final_spans[0], padded.final_spans[0, :3], atol=1e-5)
    assert torch.allclose(single.sentence_spans[0], padded.sentence_spans[0, :3], atol=1e-5)
    if single.paragraph_span is not None:
        assert torch.allclose(single.paragraph_span[0], padded.paragraph_span[0], atol=1e-5)


def gradient_report(config: HSCNetConfig) -> tuple[list[str], list[str], dict[str, float]]:
    """Return the parameters without a finite non-zero gradient, all parameter names, and the loss terms."""
    model = build(config).train()
    inputs, targets = batch_of([paragraph(10, [3, 2, 4], 0), paragraph(7, [2, 2], 1)])
    loss, terms = hscnet_loss(model(**inputs), targets, config)
    loss.backward()
    missing = [
        name for name, p in model.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0
    ]
    return missing, [name for name, _ in model.named_parameters()], terms


def test_full_loss_reaches_every_parameter():
    missing, _, terms = gradient_report(small_config())
    assert missing == []
    assert sorted(terms) == sorted(
        ["align_word", "align_sentence", "align_paragraph", "paragraph", "sentence", "word_union", "word_subset", "final"]
    )


@pytest.mark.parametrize(
    "levels, absent_prefixes, expected_terms",
    [
        ("SL", ("word_", "paragraph_", "final_"), ["align_sentence", "sentence"]),
        ("SL+PL", ("word_", "final_"), ["align_paragraph", "align_sentence", "paragraph", "sentence"]),
        ("SL+WL", ("paragraph_",), ["align_sentence", "align_word", "final", "sentence", "word_subset", "word_union"]),
    ],
)
def test_level_ablation_removes_parts(levels, absent_prefixes, expected_terms):
    missing, names, terms = gradient_report(small_config().with_levels(levels))
    assert missing == []
    assert [n for n in names if n.startswith(absent_prefixes)] == []
    assert sorted(terms) == expected_terms


def test_decoder_ablation_keeps_encoders():
    config = small_config(word_decoder=False, paragraph_decoder=False)
    missing, names, terms = gradient_report(config)
    assert missing == []
    assert any(n.startswith("word_layers") for n in names)
    assert not any(n.startswith(("word_lstm", "paragraph_head", "final_head")) for n in names)
    assert "final" not in terms


@pytest.mark.parametrize("switch", ["align_word", "align_sentence", "align_paragraph"])
def test_alignment_switch_removes_term(switch):
    _, _, terms = gradient_report(small_config(**{switch: False}))
    assert switch not in terms


def test_disabling_every_alignment_loss_trains_encoders_through_decoders():
    config = small_config(align_word=False, align_sentence=False, align_paragraph=False)
    missing, _, _ = gradient_report(config)
    # The text encoder's words still reach the loss through the decoders; sigma of the word
    # layers too, since the grounding features depend on the attention.
    assert missing == []


def test_seeded_runs_are_identical():
    first = gradient_report(small_config())[2]
    second = gradient_report(small_config())[2]
    assert first == second


def test_config_rejects_decoder_without_level():
    with pytest.raises(ValueError, match="word_decoder needs word_level"):
        HSCNetConfig(word_level=False, align_word=False)


def test_config_rejects_unknown_levels():
    with pytest.raises(ValueError, match="invalid levels"):
        HSCNetConfig().with_levels("WL+PL")


def test_clip_time_features_follow_normalised_time():
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, :2] = True  # clip 0 of 2 sits at time 0.25
    mask[1, :6] = True  # clip 1 of 6 sits at time 0.25 too
    times = clip_time_features(mask, 16)
    assert torch.allclose(times[0, 0], times[1, 1], atol=1e-6)
    assert not torch.allclose(times[0, 0], times[1, 0])
    assert torch.allclose(times[mask].norm(dim=-1), torch.ones(8), atol=1e-5)
    assert times[0, 2:].abs().sum() == 0  # padding


def test_aggregate_appends_attended_time():
    visual = torch.eye(4)[None]  # four orthogonal clips
    textual = visual[:, 2:3]  # a query that matches clip 2 only
    mask = torch.ones(1, 4, dtype=torch.bool)
    times = clip_time_features(mask, 4)
    g, _ = aggregate(textual, visual, mask, temperature=0.01, times=times)
    assert g.shape == (1, 1, 12)
    assert torch.allclose(g[0, 0, 8:], times[0, 2], atol=1e-5)
    assert aggregate(textual, visual, mask, temperature=0.01)[0].shape == (1, 1, 8)


def test_model_without_pooled_time_runs():
    config = small_config(pooled_time=False)
    inputs, _ = batch_of([paragraph(10, [3, 2, 4], 0)])
    with torch.no_grad():
        out = build(config)(**inputs)
    assert out.final_spans.shape == (1, 3, 2)
    assert build(config).sentence_lstm.input_size == 4 * config.hidden_size


def test_old_config_loads_old_behaviour():
    old = HSCNetConfig().to_dict()
    del old["pooled_time"], old["bidirectional_lstm"]
    loaded = HSCNetConfig.from_dict(old)
    assert loaded.pooled_time is False
    assert loaded.bidirectional_lstm is True
    current = HSCNetConfig.from_dict(HSCNetConfig().to_dict())
    assert current.pooled_time is True
    assert current.bidirectional_lstm is False


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_direction_padding_invariance(bidirectional):
    model = build(small_config(bidirectional_lstm=bidirectional))
    assert model.sentence_lstm.bidirectional is bidirectional
    assert model.word_lstm.bidirectional is bidirectional
    alone = paragraph(10, [3, 2, 4], 0)
    single_inputs, _ = batch_of([alone])
    padded_inputs, _ = batch_of([alone, paragraph(14, [5, 1, 2, 6], 3)])
    with torch.no_grad():
        single = model(**single_inputs).final_spans[0]
        padded = model(**padded_inputs).final_spans[0, :3]
    assert torch.allclose(single, padded, atol=1e-5)


def test_with_alignments_keeps_named_losses():
    config = HSCNetConfig().with_alignments("word, sentence")
    assert config.align_word
    assert config.align_sentence
    assert not config.align_paragraph
    assert not HSCNetConfig().with_alignments("none").align_sentence


def test_with_decoders_keeps_named_decoders():
    config = HSCNetConfig().with_decoders("paragraph")
    assert config.paragraph_decoder
    assert not config.word_decoder


def test_switches_reject_unknown_names():
    with pytest.raises(ValueError, match="unknown names"):
        HSCNetConfig().with_alignments("words")
    with pytest.raises(ValueError, match="unknown names"):
        HSCNetConfig().with_decoders("sentence")


@pytest.mark.parametrize("text", ["", " , "])
def test_switches_reject_empty_text(text):
    with pytest.raises(ValueError, match="no names"):
        HSCNetConfig().with_alignments(text)
