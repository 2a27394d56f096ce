"""Training loop with per-epoch validation, checkpoints and resume.

The steps are separate functions (build the data loaders, build the model, run one epoch,
validate) so that a distributed launcher can wrap the model and swap the sampler without
rewriting the loop.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from hsc import __version__
from hsc.extract.cache import InvalidInputError, read_settings, settings_differences
from hsc.model.config import HSCNetConfig
from hsc.model.hscnet import HSCNet
from hsc.model.losses import Targets, hscnet_loss
from hsc.pipeline.data import Batch, ParagraphDataset, collate
from hsc.pipeline.evaluate import predict, records_metrics
from hsc.pipeline.presets import TrainConfig

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "hsc-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not an hsc checkpoint."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loader(dataset: ParagraphDataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator)


def batch_targets(batch: Batch) -> Targets:
    return Targets(
        sentence_spans=batch.spans,
        sentence_mask=batch.sentence_mask,
        word_sentence=batch.word_sentence,
        word_mask=batch.word_mask,
        num_clips=batch.video_mask.sum(1),
    )


def train_one_epoch(
    model: HSCNet,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    device: torch.device | str,
    on_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Run one epoch over ``loader`` and return each loss term averaged over its batches."""
    model.train()
    sums: dict[str, float] = {}
    steps = 0
    for batch in loader:
        batch = batch.to(device)
        output = model(**batch.model_inputs())
        loss, terms = hscnet_loss(output, batch_targets(batch), model.config)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} ({terms}); lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()

        terms["total"] = float(loss.detach())
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value
        steps += 1
        if on_step is not None:
            on_step()
    return {name: value / max(steps, 1) for name, value in sums.items()}


def validate(model: HSCNet, loader: DataLoader, config: TrainConfig, device: torch.device | str) -> tuple[dict[str, float], list[dict[str, Any]]]:
    records = predict(model, loader, device)
    return records_metrics(records, config.iou_thresholds, config.iou_strict), records


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` through a temporary file, so a crash never leaves half a file."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[HSCNet, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint; returns the model (in eval mode) and the payload."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass a checkpoint file such as {path / 'best.pt'}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # noqa: BLE001 - torch raises many unrelated types for a bad file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({first_line}); pass best.pt or last.pt of an hsc train run"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an hsc checkpoint (expected format {CHECKPOINT_FORMAT})")
    model = HSCNet(HSCNetConfig.from_dict(payload["model_config"])).to(device)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload


def check_same_settings(kind: str, train_path: Path, val_path: Path) -> dict[str, Any]:
    """Return the settings record shared by the training and validation caches of one kind.

    Raises ``InvalidInputError`` when the two caches were made with different settings, since a
    model trained on one kind of features is meaningless on another.
    """
    train_settings, val_settings = read_settings(train_path), read_settings(val_path)
    diffs = settings_differences(train_settings, val_settings)
    if diffs:
        raise InvalidInputError(
            f"the {kind} caches {train_path} and {val_path} were made with different settings "
            f"({'; '.join(diffs)}); extract both splits with the same settings"
        )
    return train_settings


def check_checkpoint_caches(payload: dict[str, Any], checkpoint: Path, video: Path, text: Path) -> None:
    """Raise ``InvalidInputError`` unless both caches were made with the checkpoint's settings."""
    for kind, path in (("video", video), ("text", text)):
        stored, current = payload[f"{kind}_settings"], read_settings(path)
        diffs = settings_differences(stored, current)
        if diffs:
            raise InvalidInputError(
                f"{path} was made with other {kind} settings than {checkpoint} was trained on "
                f"({'; '.join(diffs)}); extract this split with the training settings"
            )


@dataclass
class TrainResult:
    out_dir: Path
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)


def train(
    train_video: Path,
    train_text: Path,
    val_video: Path,
    val_text: Path,
    out_dir: Path,
    model_config: HSCNetConfig,
    train_config: TrainConfig,
    device: str = "cpu",
    resume: bool = False,
    resume_epochs: int | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[], None] | None = None,
) -> TrainResult:
    """Train HSCNet, validating every epoch; keeps ``last.pt`` and ``best.pt`` in ``out_dir``.

    The model's input sizes are taken from the caches. With ``resume`` the run continues from
    ``out_dir/last.pt``, whose stored configuration replaces ``model_config`` and
    ``train_config``; ``resume_epochs`` then raises the epoch count to train to. Best means
    highest validation mIoU.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"

    payload = None
    if not resume and last_path.is_file():
        raise CheckpointError(
            f"{out_dir} already contains a run ({last_path}); pass --resume to continue it, "
            "or choose a new --out folder"
        )
    if resume:
        if not last_path.is_file():
            raise CheckpointError(f"--resume was given but {last_path} does not exist; start without --resume")
        payload = torch.load(last_path, map_location="cpu", weights_only=False)
        model_config = HSCNetConfig.from_dict(payload["model_config"])
        train_config = TrainConfig.from_dict(payload["train_config"])
        if resume_epochs is not None:
            train_config = TrainConfig.from_dict({**train_config.to_dict(), "epochs": resume_epochs})
        log.info("resuming from %s after epoch %d", last_path, payload["epoch"])

    video_settings = check_same_settings("video", train_video, val_video)
    text_settings = check_same_settings("text", train_text, val_text)
    if payload is not None:
        for kind, current in (("video", video_settings), ("text", text_settings)):
            diffs = settings_differences(payload[f"{kind}_settings"], current)
            if diffs:
                raise CheckpointError(
                    f"the {kind} cache settings differ from those {last_path} was trained on "
                    f"({'; '.join(diffs)}); resume with the caches of the original run"
                )

    seed_everything(train_config.seed)
    train_set = ParagraphDataset(train_video, train_text, train_config.num_clips, train_config.normalize_clips)
    val_set = ParagraphDataset(val_video, val_text, train_config.num_clips, train_config.normalize_clips)
    if payload is None:
        model_config = HSCNetConfig.from_dict(
            {**model_config.to_dict(), "video_dim": train_set.video_dim, "word_dim": train_set.word_dim}
        )
    for name, dataset in (("validation", val_set), ("training", train_set)):
        if (dataset.video_dim, dataset.word_dim) != (model_config.video_dim, model_config.word_dim):
            raise ValueError(
                f"the {name} caches hold {dataset.video_dim}-d clips and {dataset.word_dim}-d words, "
                f"but the model expects {model_config.video_dim}-d and {model_config.word_dim}-d; "
                "extract all splits with the same settings"
            )

    model = HSCNet(model_config).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=train_config.learning_rate, weight_decay=train_config.weight_decay
    )
    history: list[dict[str, Any]] = []
    start_epoch, best_epoch, best_metrics = 1, 0, {"mIoU": -1.0}
    if payload is not None:
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["rng_state"])
        start_epoch = payload["epoch"] + 1
        best_epoch, best_metrics, history = payload["best_epoch"], payload["best_metrics"], payload["history"]

    settings = {
        "model_config": model_config.to_dict(),
        "train_config": train_config.to_dict(),
        "video_settings": video_settings,
        "text_settings": text_settings,
        "data": {k: str(v) for k, v in
                 {"train_video": train_video, "train_text": train_text, "val_video": val_video, "val_text": val_text}.items()},
        "version": __version__,
    }
    (out_dir / "config.json").write_text(json.dumps(settings, indent=1))
    val_loader = make_loader(val_set, train_config.batch_size, shuffle=False)

    for epoch in range(start_epoch, train_config.epochs + 1):
        train_loader = make_loader(train_set, train_config.batch_size, shuffle=True, seed=train_config.seed + epoch)
        losses = train_one_epoch(model, train_loader, optimizer, train_config, device, on_step)
        metrics, _ = validate(model, val_loader, train_config, device)
        entry = {"epoch": epoch, "loss": losses, "val": metrics}
        history.append(entry)
        with open(out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")

        improved = metrics["mIoU"] > best_metrics["mIoU"]
        if improved:
            best_epoch, best_metrics = epoch, metrics
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            **settings,
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng_state": torch.get_rng_state(),
            "epoch": epoch,
            "metrics": metrics,
            "best_epoch": best_epoch,
            "best_metrics": best_metrics,
            "history": history,
        }
        save_checkpoint(last_path, checkpoint)
        if improved:
            save_checkpoint(best_path, checkpoint)
        log.debug("epoch %d: loss %.4f, validation %s", epoch, losses.get("total", float("nan")), metrics)
        if on_epoch is not None:
            on_epoch(entry)

    return TrainResult(out_dir, best_epoch, best_metrics, history)
