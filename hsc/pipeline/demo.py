"""``hsc demo``: every stage on a generated dataset, from rendered videos to grounded paragraphs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsc.extract.cache import BatchSummary
from hsc.extract.text import extract_text
from hsc.extract.video import VideoSettings, extract_videos, find_videos
from hsc.pipeline.data import ParagraphDataset
from hsc.pipeline.evaluate import even_split_records, predict, records_metrics, write_predictions
from hsc.pipeline.ground import ground_paragraph
from hsc.pipeline.presets import get_preset, override
from hsc.pipeline.synthetic import SPLITS, make_demo_dataset
from hsc.pipeline.train import load_checkpoint, make_loader, train

ProgressBar = Callable[[str, int], AbstractContextManager[Callable[[str], None]]]


class DemoError(RuntimeError):
    """A stage of the demo failed on the generated data."""


@dataclass
class DemoResult:
    metrics: dict[str, float]
    baseline: dict[str, float]
    grounding: dict[str, Any]
    truth: list[list[float]]
    seconds: dict[str, float] = field(default_factory=dict)
    num_clips: int = 0


def require_ok(summary: BatchSummary, stage: str) -> None:
    if summary.failed:
        key, reason = summary.failed[0]
        raise DemoError(f"{stage} failed on {len(summary.failed)} items of the generated data (first: {key}: {reason})")


def run_demo(
    out: Path,
    progress_bar: ProgressBar,
    report: Callable[[str], None],
    epochs: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    num_videos: tuple[int, int, int] | None = None,
) -> DemoResult:
    """Generate the demo data under ``out`` and run extraction, training, evaluation and grounding.

    Each stage reuses what an earlier run left in ``out``, so an interrupted demo resumes.
    ``report`` receives one line per finished stage. ``num_videos`` sets the train, validation
    and test sizes of the generated data (the generator's defaults when None).
    """
    out = Path(out)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = now - clock
        clock = now
        report(f"{stage}: {seconds[stage]:.1f} s")

    # 1. Rendered videos and their paragraphs.
    sizes = {} if num_videos is None else dict(zip(("num_train", "num_val", "num_test"), num_videos))
    dataset = make_demo_dataset(out / "data", seed=seed, **sizes)
    lap("generate videos")

    # 2. C3D features of every video, then word vectors of every split.
    video_cache = out / "video_features.h5"
    paths = find_videos(dataset.videos_dir)
    with progress_bar("C3D features", len(paths)) as advance:
        summary = extract_videos(paths, video_cache, VideoSettings(), weights=None, device=device, progress=advance)
    require_ok(summary, "video feature extraction")
    lap(f"extract video features ({len(paths)} videos)")

    text_caches = {}
    for split in SPLITS:
        text_caches[split] = out / f"text_{split}.h5"
        result = extract_text(dataset.annotation_paths[split], text_caches[split])
        require_ok(result.summary, f"text feature extraction ({split})")
    lap("extract text features")

    # 3. Training with per-epoch validation.
    preset = get_preset("demo")
    train_config = override(preset.train, {"epochs": epochs, "seed": seed})
    run_dir = out / "run"
    resume = (run_dir / "last.pt").is_file()
    trained = []  # epochs run by this call; a resumed demo may have none left

    def on_epoch(entry: dict) -> None:
        trained.append(entry["epoch"])
        advance(f"epoch {entry['epoch']}: val mIoU {entry['val']['mIoU']:.1f}")

    with progress_bar("training", train_config.epochs) as advance:
        train(
            video_cache, text_caches["train"], video_cache, text_caches["val"], run_dir,
            preset.model, train_config, device=device, resume=resume, resume_epochs=train_config.epochs,
            on_epoch=on_epoch,
        )
    if len(trained) == train_config.epochs:
        lap(f"train ({train_config.epochs} epochs)")
    else:
        lap(f"train ({len(trained)} of {train_config.epochs} epochs, the rest done by an earlier run)")

    # 4. Test metrics against the even-split baseline.
    model, payload = load_checkpoint(run_dir / "best.pt", device)
    test_set = ParagraphDataset(video_cache, text_caches["test"], train_config.num_clips, train_config.normalize_clips)
    records = predict(model, make_loader(test_set, train_config.batch_size, shuffle=False), device)
    thresholds = train_config.iou_thresholds
    metrics = records_metrics(records, thresholds, train_config.iou_strict)
    baseline = records_metrics(even_split_records(records), thresholds, train_config.iou_strict)
    settings = {
        "checkpoint": str(run_dir / "best.pt"),
        "iou_thresholds": list(thresholds),
        "iou_strict": train_config.iou_strict,
    }
    write_predictions(out / "test_predictions.json", records, metrics, settings, baseline)
    lap("evaluate")

    # 5. Ground one test paragraph from the raw video, as a user would.
    first = records[0]
    paragraph_file = out / f"{first['video']}.txt"
    paragraph_file.write_text("\n".join(first["sentences"]) + "\n")
    grounding = ground_paragraph(dataset.video_path(first["video"]), paragraph_file, run_dir / "best.pt", device=device)
    lap("ground one video")

    return DemoResult(metrics, baseline, grounding, first["timestamps"], seconds, sum(1 for _ in paths))
