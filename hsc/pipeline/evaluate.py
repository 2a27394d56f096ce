"""Grounding metrics and prediction records.

Metrics are averaged over all sentences of a split, as in the VPG literature: R@m is the share
of sentences whose predicted span has IoU > m with the ground truth (``strict=True``) or
IoU >= m (``strict=False``), and mIoU is the mean IoU.

Training and ``hsc evaluate`` use ``TrainConfig.iou_strict``, True by default, because the
public evaluators of the methods HSCNet is compared with count a hit at IoU > m:

- PRVG (MCG-NJU/PRVG, ``lib/core/eval.py``): ``np.count_nonzero(overlap > t)``.
- DepNet (baopj/DenseEventsGrounding, ``DepNet_ANet_Release/lib/core/eval.py``) and 2D-TAN
  (microsoft/VideoX, ``lib/core/eval.py`` of the 2D-TAN code): ``(overlap > t)[:r].any()``.

The two conventions differ only for predictions whose IoU equals a threshold exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from hsc.model.spans import temporal_iou
from hsc.pipeline.data import Batch

# Recall thresholds reported for each benchmark.
IOU_THRESHOLDS = {
    "activitynet": (0.3, 0.5, 0.7),
    "tacos": (0.1, 0.3, 0.5),
}


def grounding_metrics(
    predictions: np.ndarray, ground_truth: np.ndarray, thresholds: Sequence[float], strict: bool = True
) -> dict[str, float]:
    """Return ``R@m`` for each threshold and ``mIoU``, in percent, over (N, 2) spans in seconds."""
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1, 2)
    ground_truth = np.asarray(ground_truth, dtype=np.float64).reshape(-1, 2)
    if predictions.shape != ground_truth.shape:
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truth)} ground-truth spans")
    if len(predictions) == 0:
        raise ValueError("no sentences to evaluate")
    iou = temporal_iou(torch.from_numpy(predictions), torch.from_numpy(ground_truth)).numpy()
    metrics = {}
    for m in thresholds:
        hits = iou > m if strict else iou >= m
        metrics[f"R@{m:g}"] = 100.0 * float(hits.mean())
    metrics["mIoU"] = 100.0 * float(iou.mean())
    return metrics


def records_metrics(records: Iterable[dict[str, Any]], thresholds: Sequence[float], strict: bool = True) -> dict[str, float]:
    """Return the metrics of prediction records (see ``predict``) over all their sentences."""
    predictions, ground_truth = [], []
    for record in records:
        predictions.extend(record["predictions"])
        ground_truth.extend(record["timestamps"])
    return grounding_metrics(np.array(predictions), np.array(ground_truth), thresholds, strict)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device | str) -> list[dict[str, Any]]:
    """Run ``model`` over ``loader`` and return one record per paragraph, times in seconds.

    A record contains ``id``, ``video``, ``duration``, ``sentences``, ground-truth ``timestamps`` and
    ``predictions``, each a list of ``[start, end]``.
    """
    was_training = model.training
    model.eval()
    records = []
    batch: Batch
    for batch in loader:
        output = model(**batch.to(device).model_inputs())
        spans = output.final_spans.clamp(0.0, 1.0).cpu().numpy()
        for i, sample in enumerate(batch.samples):
            n = len(sample.spans)
            records.append(
                {
                    "id": sample.id,
                    "video": sample.video,
                    "duration": sample.duration,
                    "sentences": sample.sentences,
                    "timestamps": (sample.spans.astype(np.float64) * sample.duration).round(3).tolist(),
                    "predictions": (spans[i, :n].astype(np.float64) * sample.duration).round(3).tolist(),
                }
            )
    model.train(was_training)
    return records


def even_split_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return copies of ``records`` whose predictions split each video evenly among its sentences."""
    baseline = []
    for record in records:
        n, duration = len(record["timestamps"]), record["duration"]
        spans = [[duration * i / n, duration * (i + 1) / n] for i in range(n)]
        baseline.append({**record, "predictions": spans})
    return baseline


def write_predictions(
    path: str | Path,
    records: list[dict[str, Any]],
    metrics: dict[str, float],
    settings: dict[str, Any],
    baseline: dict[str, float] | None = None,
) -> None:
    """Write metrics, the settings that produced them and every record to a JSON file.

    ``baseline``, the even-split metrics, is stored as "even_split" when given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"metrics": metrics}
    if baseline is not None:
        payload["even_split"] = baseline
    payload.update(settings=settings, predictions=records)
    path.write_text(json.dumps(payload, indent=1))
