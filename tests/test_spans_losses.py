"""Span maths, losses and metrics on values worked out by hand."""

import math

import numpy as np
import pytest
import torch

from hsc.model.config import HSCNetConfig
from hsc.model.losses import alignment_loss, span_loss, word_subset_loss, word_union_loss
from hsc.model.spans import clips_inside, cw_to_se, generalized_iou, se_to_cw, temporal_iou
from hsc.pipeline.evaluate import even_split_records, grounding_metrics, records_metrics


def spans(*pairs):
    return torch.tensor(pairs, dtype=torch.float64)


def test_iou_partial_overlap():
    # Intersection [1, 2] = 1, union [0, 3] = 3.
    assert temporal_iou(spans([0, 2]), spans([1, 3])).item() == pytest.approx(1 / 3)


def test_iou_identical_and_disjoint():
    assert temporal_iou(spans([0.2, 0.7]), spans([0.2, 0.7])).item() == pytest.approx(1.0)
    assert temporal_iou(spans([0, 1]), spans([2, 3])).item() == 0.0


def test_iou_zero_length_spans():
    assert temporal_iou(spans([0.5, 0.5]), spans([0.5, 0.5])).item() == 0.0
    assert temporal_iou(spans([0.5, 0.5]), spans([0, 1])).item() == 0.0


def test_giou_disjoint_is_negative():
    # IoU 0, union 2, hull [0, 3] = 3: GIoU = 0 - (3 - 2) / 3.
    assert generalized_iou(spans([0, 1]), spans([2, 3])).item() == pytest.approx(-1 / 3, abs=1e-6)


def test_giou_equals_iou_when_hull_is_union():
    assert generalized_iou(spans([0, 2]), spans([1, 3])).item() == pytest.approx(1 / 3, abs=1e-6)


def test_giou_degenerate_spans_are_finite():
    same_point = generalized_iou(spans([0.5, 0.5]), spans([0.5, 0.5]))
    point_inside = generalized_iou(spans([0.5, 0.5]), spans([0, 1]))
    assert same_point.item() == pytest.approx(0.0, abs=1e-6)
    assert point_inside.item() == pytest.approx(0.0, abs=1e-6)


def test_centre_width_round_trip():
    cw = spans([0.5, 0.2], [0.1, 0.0])
    assert torch.allclose(cw_to_se(cw), spans([0.4, 0.6], [0.1, 0.1]))
    assert torch.allclose(se_to_cw(cw_to_se(cw)), cw)


def test_clips_inside_by_centre():
    # Four clips with centres 0.125, 0.375, 0.625, 0.875.
    inside = clips_inside(torch.tensor([[[0.3, 0.6]]]), torch.tensor([4]), 4)
    assert inside[0, 0].tolist() == [False, True, False, False]


def test_clips_inside_short_span_gets_midpoint_clip():
    # No centre lies in [0.5, 0.55]; its midpoint 0.525 falls in clip 2 = [0.5, 0.75].
    inside = clips_inside(torch.tensor([[[0.5, 0.55]]]), torch.tensor([4]), 4)
    assert inside[0, 0].tolist() == [False, False, True, False]


def test_clips_inside_ignores_padding_clips():
    # Two valid clips of four slots: centres 0.25, 0.75, then padding.
    inside = clips_inside(torch.tensor([[[0.0, 1.0]]]), torch.tensor([2]), 4)
    assert inside[0, 0].tolist() == [True, True, False, False]


def test_alignment_loss_value():
    # softmax([0, log 3]) = [1/4, 3/4]; the positive clip holds 3/4 of the mass.
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    positive = torch.tensor([[[False, True]]])
    loss = alignment_loss(logits, positive, torch.tensor([[True]]))
    assert loss.item() == pytest.approx(-math.log(0.75), abs=1e-6)


def test_alignment_loss_ignores_padding_queries():
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, -5.0]]])
    positive = torch.tensor([[[False, True], [False, True]]])
    loss = alignment_loss(logits, positive, torch.tensor([[True, False]]))
    assert loss.item() == pytest.approx(-math.log(0.75), abs=1e-6)


def test_alignment_loss_padding_clip_at_minus_infinity():
    logits = torch.tensor([[[0.0, 0.0, float("-inf")]]])
    positive = torch.tensor([[[True, False, False]]])
    loss = alignment_loss(logits, positive, torch.tensor([[True]]))
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-6)


def test_span_loss_value():
    # L1 = 0.1 + 0.1; GIoU of [0.1, 0.5] and [0.2, 0.6]: IoU = 0.3 / 0.5, hull = union.
    config = HSCNetConfig()
    loss = span_loss(torch.tensor([[0.1, 0.5]]), torch.tensor([[0.2, 0.6]]), torch.tensor([True]), config)
    assert loss.item() == pytest.approx(0.2 + (1 - 0.6), abs=1e-5)


def test_word_subset_loss_value():
    # The word sticks out by 0.1 on each side of the sentence [0.2, 0.6]; the padding word is ignored.
    word_spans = torch.tensor([[[[0.1, 0.7], [0.0, 1.0]]]])
    word_mask = torch.tensor([[[True, False]]])
    loss = word_subset_loss(word_spans, word_mask, torch.tensor([[[0.2, 0.6]]]))
    assert loss.item() == pytest.approx(0.2, abs=1e-6)


def test_word_subset_loss_zero_inside():
    word_spans = torch.tensor([[[[0.3, 0.4], [0.2, 0.6]]]])
    loss = word_subset_loss(word_spans, torch.ones(1, 1, 2, dtype=torch.bool), torch.tensor([[[0.2, 0.6]]]))
    assert loss.item() == 0.0


def test_word_union_loss_zero_when_hull_matches():
    config = HSCNetConfig()
    word_spans = torch.tensor([[[[0.2, 0.3], [0.4, 0.6]]]])
    loss = word_union_loss(word_spans, torch.ones(1, 1, 2, dtype=torch.bool), torch.tensor([[[0.2, 0.6]]]), torch.tensor([[True]]), config)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_word_union_loss_value():
    # Hull [0.3, 0.5] against [0.2, 0.6]: L1 = 0.2, IoU = 0.2 / 0.4, GIoU = IoU.
    config = HSCNetConfig()
    word_spans = torch.tensor([[[[0.3, 0.4], [0.35, 0.5]]]])
    loss = word_union_loss(word_spans, torch.ones(1, 1, 2, dtype=torch.bool), torch.tensor([[[0.2, 0.6]]]), torch.tensor([[True]]), config)
    assert loss.item() == pytest.approx(0.2 + 0.5, abs=1e-5)


def test_metrics_inclusive_threshold():
    # IoUs: 1.0, exactly 0.5, 0.0.
    predictions = np.array([[0, 10], [0, 10], [20, 30]])
    truth = np.array([[0, 10], [0, 5], [0, 10]])
    metrics = grounding_metrics(predictions, truth, (0.5,), strict=False)
    assert metrics["R@0.5"] == pytest.approx(200 / 3)
    assert metrics["mIoU"] == pytest.approx(50.0)


def test_metrics_strict_threshold_is_default():
    predictions = np.array([[0, 10], [0, 10], [20, 30]])
    truth = np.array([[0, 10], [0, 5], [0, 10]])
    assert grounding_metrics(predictions, truth, (0.5,))["R@0.5"] == pytest.approx(100 / 3)


def test_metrics_average_over_sentences_not_paragraphs():
    records = [
        {"duration": 10, "timestamps": [[0, 10]], "predictions": [[0, 10]]},
        {"duration": 10, "timestamps": [[0, 10]] * 3, "predictions": [[20, 30]] * 3},
    ]
    assert records_metrics(records, (0.5,))["mIoU"] == pytest.approx(25.0)


def test_even_split_baseline():
    records = [{"duration": 9.0, "timestamps": [[0, 1], [1, 2], [2, 3]], "predictions": []}]
    assert even_split_records(records)[0]["predictions"] == [[0.0, 3.0], [3.0, 6.0], [6.0, 9.0]]
