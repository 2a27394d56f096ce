"""Hierarchical-modelling ablation (the structure of table 2 of the HSCNet paper) on synthetic clips.

The paragraphs, durations, timestamps and words are real (TACoS by default). The clip features
come from ``hsc.pipeline.synthetic_features``, so a sentence is found only by matching its
words with the clips. Each level configuration (SL, SL+PL, SL+WL, SL+PL+WL) is trained for
every seed, and the checkpoint with the best validation mIoU is evaluated on the test split.
The script prints mean and standard deviation over the seeds, the even-split baseline and the
wall time. ``--align`` and ``--decoders`` switch off alignment losses or decoders in every run,
as in tables 3 and 4. ``docs/benchmarks.md`` records the measured tables and their commands.

Example (about 20 minutes on a 2-core CPU):

    .venv/bin/python bench/ablation.py --out runs/ablation
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script from any folder without installing hsc

import torch  # noqa: E402

from hsc.model.config import HSCNetConfig  # noqa: E402
from hsc.pipeline.data import ParagraphDataset  # noqa: E402
from hsc.pipeline.evaluate import even_split_records, predict, records_metrics  # noqa: E402
from hsc.pipeline.presets import TrainConfig  # noqa: E402
from hsc.pipeline.synthetic_features import GeneratorConfig, SplitCaches, generate_splits  # noqa: E402
from hsc.pipeline.train import load_checkpoint, make_loader, train  # noqa: E402

log = logging.getLogger("ablation")

ANNOTATIONS = REPO.parent / "shared" / "data" / "annotations"
ALL_LEVELS = ("SL", "SL+PL", "SL+WL", "SL+PL+WL")
# Annotation folder and split files of each dataset, as published by 2D-TAN; ActivityNet-Captions
# uses val_1 for validation and val_2 for testing.
DATASETS = {
    "tacos": ("tacos", {"train": "train.json", "val": "val.json", "test": "test.json"}),
    "activitynet": ("activitynet_captions", {"train": "train.json", "val": "val_1.json", "test": "val_2.json"}),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"), help="folder for data, runs and results")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="tacos",
                        help="annotations to build on; also sets the recall thresholds")
    parser.add_argument("--annotations", type=Path, default=None,
                        help="folder with the dataset's split files (default: the shared data folder)")

    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--levels", nargs="+", default=list(ALL_LEVELS), help="level configurations to train")
    parser.add_argument("--align", default=None,
                        help="alignment losses to keep in every run, e.g. 'sentence' or 'word,sentence' "
                             "(default: those of the modelled levels)")
    parser.add_argument("--decoders", default=None,
                        help="extra decoders to keep in every run: 'word', 'paragraph', 'word,paragraph' or 'none' "
                             "(default: those of the modelled levels)")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs per run")

    parser.add_argument("--num-train", type=int, default=1000, help="training paragraphs drawn")
    parser.add_argument("--num-val", type=int, default=300, help="validation paragraphs drawn")
    parser.add_argument("--num-test", type=int, default=None, help="test paragraphs drawn (default: all)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the drawn paragraphs and the features")

    parser.add_argument("--num-clips", type=int, default=64, help="clips per synthetic video")
    parser.add_argument("--video-dim", type=int, default=256, help="size of a synthetic clip feature")
    parser.add_argument("--words-per-clip", type=int, default=GeneratorConfig.words_per_clip,
                        help="words of its sentence that one clip shows")
    parser.add_argument("--word-noise", type=float, default=GeneratorConfig.word_noise,
                        help="standard deviation of the noise on each word-space component")
    parser.add_argument("--max-word-share", type=float, default=GeneratorConfig.max_word_share,
                        help="words in more than this share of sentences are not shown in clips")
    parser.add_argument("--repeat-share", type=float, default=GeneratorConfig.repeat_share,
                        help="chance that an event outside a paragraph repeats one of its sentences")
    parser.add_argument("--random-words", action="store_true",
                        help="clips show random words of their sentence instead of the words in order")
    parser.add_argument("--all-words", action="store_true",
                        help="clips show every content word of their sentence, not only the words no other "
                             "sentence of the paragraph has")

    parser.add_argument("--hidden", type=int, default=64, help="model width D")
    parser.add_argument("--heads", type=int, default=4, help="attention heads")
    parser.add_argument("--dropout", type=float, default=0.1, help="dropout of every layer")
    parser.add_argument("--batch-size", type=int, default=16, help="paragraphs per batch")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")

    parser.add_argument("--device", default="cpu", help="torch device of every run, e.g. cuda")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time, one process each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def configure_logging() -> None:
    """Send INFO logs, the trainer's per-epoch lines included, to stderr (once per process)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def model_config(args: argparse.Namespace, levels: str) -> HSCNetConfig:
    """Return the small HSCNet of the benchmark modelling ``levels``, with ``--align`` and ``--decoders``."""
    config = HSCNetConfig(
        hidden_size=args.hidden,
        num_heads=args.heads,
        dropout=args.dropout,
        video_encoder_layers=1,
        text_encoder_layers=1,
        word_layers=1,
        sentence_layers=1,
        paragraph_layers=1,
    ).with_levels(levels)
    if args.align is not None:
        config = config.with_alignments(args.align)
    if args.decoders is not None:
        config = config.with_decoders(args.decoders)
    return config


def train_config(args: argparse.Namespace, seed: int) -> TrainConfig:
    return TrainConfig(
        dataset=args.dataset,
        num_clips=args.num_clips,
        batch_size=args.batch_size,
        epochs=args.epochs,
        learning_rate=args.lr,
        seed=seed,
    )


def evaluate_split(
    checkpoint: Path, caches: SplitCaches, config: TrainConfig, device: str = "cpu"
) -> tuple[dict[str, float], dict[str, float]]:
    """Return the metrics of ``checkpoint`` and of the even-split baseline on one split."""
    model, _ = load_checkpoint(checkpoint, device)
    dataset = ParagraphDataset(caches.video, caches.text, config.num_clips, config.normalize_clips)
    records = predict(model, make_loader(dataset, config.batch_size, shuffle=False), device)
    metrics = records_metrics(records, config.iou_thresholds, config.iou_strict)
    baseline = records_metrics(even_split_records(records), config.iou_thresholds, config.iou_strict)
    return metrics, baseline


def run_one(
    levels: str,
    seed: int,
    args: argparse.Namespace,
    splits: dict[str, SplitCaches],
) -> dict[str, Any]:
    """Train one level configuration with one seed and evaluate its best checkpoint on test."""
    configure_logging()
    torch.set_num_threads(args.threads)
    out_dir = args.out / "runs" / f"{levels.replace('+', '-')}_seed{seed}"
    shutil.rmtree(out_dir, ignore_errors=True)  # a run starts clean: metrics.jsonl is appended to
    start = time.perf_counter()
    tc = train_config(args, seed)
    result = train(
        splits["train"].video, splits["train"].text, splits["val"].video, splits["val"].text,
        out_dir, model_config(args, levels), tc, device=args.device,
    )
    test, baseline = evaluate_split(out_dir / "best.pt", splits["test"], tc, args.device)
    seconds = time.perf_counter() - start
    summary = {
        "levels": levels,
        "seed": seed,
        "best_epoch": result.best_epoch,
        "val": result.best_metrics,
        "test": test,
        "even_split": baseline,
        "seconds": seconds,
    }
    (out_dir / "result.json").write_text(json.dumps(summary, indent=1))
    return summary


def mean_std(values: list[float]) -> tuple[float, float]:
    """Return the mean and the sample standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def summarise(runs: list[dict[str, Any]], levels: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Return mean and std over seeds of every test metric, per level configuration."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for name in levels:
        chosen = [r for r in runs if r["levels"] == name]
        metrics = list(chosen[0]["test"])
        table[name] = {m: mean_std([r["test"][m] for r in chosen]) for m in metrics}
        table[name]["val mIoU"] = mean_std([r["val"]["mIoU"] for r in chosen])
    # The baseline ignores the model, so every run gives the same numbers.
    table["even split"] = {m: (v, 0.0) for m, v in runs[0]["even_split"].items()}
    return table


def format_table(table: dict[str, dict[str, tuple[float, float]]]) -> str:
    """Return ``table`` as a Markdown table of "mean ± std" cells."""
    columns = [c for c in next(iter(table.values()))]
    lines = ["| levels | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for name, row in table.items():
        cells = [f"{row[c][0]:.2f} ± {row[c][1]:.2f}" if c in row else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_configs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Build every run's config once, so an invalid combination exits before any training."""
    for name in args.levels:
        try:
            model_config(args, name)
        except ValueError as error:
            flags = [f"--levels {name}"]
            if args.align is not None:
                flags.append(f"--align {args.align}")
            if args.decoders is not None:
                flags.append(f"--decoders {args.decoders}")
            parser.error(f"{' '.join(flags)}: {error}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Generate the data, train every (levels, seed) pair, print and save the table."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_configs(parser, args)
    configure_logging()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    generator = GeneratorConfig(
        num_clips=args.num_clips,
        video_dim=args.video_dim,
        words_per_clip=args.words_per_clip,
        word_noise=args.word_noise,
        max_word_share=args.max_word_share,
        ordered_words=not args.random_words,
        repeat_share=args.repeat_share,
        distinctive_words=not args.all_words,
        seed=args.data_seed,
    )
    folder, files = DATASETS[args.dataset]
    root = args.annotations if args.annotations is not None else ANNOTATIONS / folder
    annotations = {split: root / name for split, name in files.items()}
    counts = {"train": args.num_train, "val": args.num_val, "test": args.num_test}
    # The data takes seconds to make, so it is made anew rather than checked against old runs.
    shutil.rmtree(args.out / "data", ignore_errors=True)
    splits = generate_splits(annotations, args.out / "data", counts, generator)
    data_seconds = time.perf_counter() - start
    log.info("data ready in %.1f s: %s", data_seconds, {k: v.paragraphs for k, v in splits.items()})

    pairs = [(levels, seed) for levels in args.levels for seed in args.seeds]
    if args.jobs > 1:
        # Spawned workers: forking a process that has run torch can deadlock its thread pools.
        pool = get_context("spawn").Pool(args.jobs)
        try:
            pending = [pool.apply_async(run_one, (levels, seed, args, splits)) for levels, seed in pairs]
            runs = [result.get() for result in pending]
            pool.close()
        except BaseException:
            # Ctrl-C or a failed run: stop every worker and drop the runs not started yet.
            pool.terminate()
            raise
        finally:
            pool.join()
    else:
        runs = [run_one(levels, seed, args, splits) for levels, seed in pairs]
    for run in runs:
        log.info("%s seed %d: best epoch %d, test %s, %.0f s", run["levels"], run["seed"],
                 run["best_epoch"], {k: round(v, 2) for k, v in run["test"].items()}, run["seconds"])

    table = summarise(runs, args.levels)
    wall = time.perf_counter() - start
    text = format_table(table)
    print(text)
    print(f"{len(runs)} runs, seeds {args.seeds}; data {data_seconds:.0f} s; wall time {wall:.0f} s "
          f"({wall / 60:.1f} min) on {os.cpu_count()} CPUs with {args.jobs} jobs x {args.threads} threads")
    results = {
        "command": " ".join(["bench/ablation.py", *(argv if argv is not None else sys.argv[1:])]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "generator": asdict(generator),
        "paragraphs": {k: v.paragraphs for k, v in splits.items()},
        "runs": runs,
        "table": {name: {m: list(v) for m, v in row.items()} for name, row in table.items()},
        "wall_seconds": wall,
        "data_seconds": data_seconds,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "table.md").write_text(text + "\n")
    return results


if __name__ == "__main__":
    # SIGTERM exits through the same cleanup as Ctrl-C, so no training worker is left behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; finished runs keep their folders under --out/runs", file=sys.stderr)
        sys.exit(130)
