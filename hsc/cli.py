"""The ``hsc`` command line: a thin layer over ``hsc.extract`` and ``hsc.pipeline``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    help="Video paragraph grounding with HSCNet: extract features, train, evaluate and ground.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
log = logging.getLogger("hsc")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )
    # Debug messages of hsc only: those of h5py and other libraries are noise to a user.
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


def check_device(device: str) -> str:
    """Return ``device`` if this torch build can use it, else raise ``ValueError`` with the fix."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} requested, but this torch build has no usable CUDA; use --device cpu")
    return device


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can fix into one message and exit status 2, without a traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from hsc.extract.cache import CacheSettingsError, InvalidInputError
        from hsc.pipeline.train import CheckpointError

        try:
            return command(*args, **kwargs)
        except (InvalidInputError, CacheSettingsError, CheckpointError, FileNotFoundError, ValueError) as error:
            err_console.print(f"[red]error:[/red] {escape(str(error))}")
            raise typer.Exit(2) from error

    return wrapper


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[str], None]]:
    """Show a progress bar on stderr; yields a callback that advances it by one item."""
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[item]}"),
    )
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(description, total=total, item="")
        yield lambda item: progress.update(task, advance=1, item=item)


def report_batch(summary: Any, what: str) -> None:
    """Print what a batch run did; exit with status 1 when any item failed."""
    console.print(
        f"{what}: {len(summary.written)} written, {len(summary.skipped)} already complete, "
        f"{len(summary.failed)} failed"
    )
    for key, reason in summary.failed:
        err_console.print(f"[red]failed[/red] {escape(key)}: {escape(reason)}")
    if summary.failed:
        raise typer.Exit(1)


@app.command("extract-video")
@user_errors
def extract_video_command(
    videos_dir: Annotated[Path, typer.Argument(help="Folder of videos; each file's stem is its video id.")],
    out: Annotated[Path, typer.Option(help="HDF5 cache to create or resume.")] = Path("video_features.h5"),
    weights: Annotated[Optional[Path], typer.Option(help="Sports-1M C3D state dict; random weights when absent.")] = None,
    device: Annotated[str, typer.Option(help="Torch device, e.g. cpu or cuda:0.")] = "cpu",
    batch_size: Annotated[int, typer.Option(help="Clips per C3D forward pass.")] = 8,
    clip_length: Annotated[int, typer.Option(help="Frames per clip.")] = 16,
    clip_stride: Annotated[int, typer.Option(help="Frames between the starts of consecutive clips.")] = 8,
    layer: Annotated[str, typer.Option(help="C3D layer to store: fc6 or fc7.")] = "fc6",
    pca: Annotated[Optional[Path], typer.Option(help="PCA file to reduce fc7 features with, e.g. PCA_activitynet_v1-3.hdf5 or an .npz with x_mean, U, S; needs --layer fc7.")] = None,
    pca_dims: Annotated[int, typer.Option(help="Principal components kept with --pca (500 in the public ActivityNet features).")] = 500,
) -> None:
    """Decode videos, cut 16-frame clips and store their C3D features."""
    check_device(device)
    from hsc.extract.video import VideoSettings, extract_videos, find_videos

    settings = VideoSettings(
        clip_length=clip_length, clip_stride=clip_stride, layer=layer, pca_dims=pca_dims if pca is not None else None
    )
    paths = find_videos(videos_dir)
    with progress_bar("C3D features", len(paths)) as advance:
        summary = extract_videos(
            paths, out, settings, weights=weights, device=device, batch_size=batch_size, progress=advance, pca=pca
        )
    report_batch(summary, f"videos in {out}")


@app.command("extract-text")
@user_errors
def extract_text_command(
    annotations: Annotated[Path, typer.Argument(help="ActivityNet-Captions, TACoS or paragraph-list JSON file.")],
    out: Annotated[Path, typer.Option(help="HDF5 cache to create or resume.")] = Path("text_features.h5"),
    vectors: Annotated[Optional[Path], typer.Option(help="GloVe .txt or .txt.gz file; GloVe 6B 50-d when absent.")] = None,
) -> None:
    """Tokenise each paragraph and store its GloVe word vectors."""
    from hsc.extract.text import extract_text

    result = extract_text(annotations, out, vectors_path=vectors)
    for key, reason in result.rejected:
        err_console.print(f"[yellow]rejected[/yellow] {escape(key)}: {escape(reason)}")
    console.print(
        f"{annotations} ({result.format}): {result.words} words, {result.oov_words} out of vocabulary "
        f"({100 * result.oov_rate:.2f}% out-of-vocabulary rate)"
    )
    report_batch(result.summary, f"paragraphs in {out}")
    if result.rejected:
        err_console.print(f"{len(result.rejected)} entries of {escape(str(annotations))} were rejected; fix them and rerun")
        raise typer.Exit(1)


def metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    table = Table(title=title)
    table.add_column("")
    names = list(next(iter(rows.values())))
    for name in names:
        table.add_column(name, justify="right")
    for label, metrics in rows.items():
        table.add_row(label, *(f"{metrics[n]:.2f}" for n in names))
    return table


@app.command()
@user_errors
def train(
    train_video: Annotated[Path, typer.Option(help="Video cache of the training split.")],
    train_text: Annotated[Path, typer.Option(help="Text cache of the training split.")],
    val_video: Annotated[Path, typer.Option(help="Video cache of the validation split.")],
    val_text: Annotated[Path, typer.Option(help="Text cache of the validation split.")],
    out: Annotated[Path, typer.Option(help="Run folder for last.pt, best.pt, config.json and metrics.jsonl.")] = Path("runs/hscnet"),
    preset: Annotated[str, typer.Option(help="activitynet, tacos or demo.")] = "activitynet",
    epochs: Annotated[Optional[int], typer.Option(help="Override the preset's epoch count.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Override the preset's batch size.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Override the preset's learning rate.")] = None,
    num_clips: Annotated[Optional[int], typer.Option(help="Override the clips per video after resampling.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    normalize_clips: Annotated[Optional[bool], typer.Option("--normalize-clips/--raw-clips", help="L2-normalise each clip feature; default from the preset.")] = None,
    strict_iou: Annotated[Optional[bool], typer.Option("--strict-iou/--inclusive-iou", help="Count a recall hit at IoU > m (strict) or IoU >= m; default strict.")] = None,
    levels: Annotated[Optional[str], typer.Option(help="Semantic levels: SL, SL+PL, SL+WL or SL+PL+WL.")] = None,
    align: Annotated[Optional[str], typer.Option(help="Alignment losses to keep, e.g. 'word,sentence' or 'none'.")] = None,
    decoders: Annotated[Optional[str], typer.Option(help="Extra decoders to keep: 'word,paragraph', 'word', 'paragraph' or 'none'.")] = None,
    device: Annotated[str, typer.Option(help="Torch device.")] = "cpu",
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt with its stored settings; --epochs may raise the epoch count.")] = False,
) -> None:
    """Train HSCNet on cached features, validating every epoch."""
    check_device(device)
    from hsc.pipeline.presets import get_preset, override
    from hsc.pipeline.train import train as run_training

    chosen = get_preset(preset)
    model_config = ablation_config(chosen.model, levels, align, decoders)
    train_config = override(
        chosen.train,
        {
            "epochs": epochs, "batch_size": batch_size, "learning_rate": lr, "num_clips": num_clips,
            "seed": seed, "normalize_clips": normalize_clips, "iou_strict": strict_iou,
        },
    )

    def show(entry: dict[str, Any]) -> None:
        val = "  ".join(f"{k} {v:.2f}" for k, v in entry["val"].items())
        console.print(f"epoch {entry['epoch']:3d}  loss {entry['loss'].get('total', float('nan')):.4f}  {val}")

    result = run_training(
        train_video, train_text, val_video, val_text, out, model_config, train_config,
        device=device, resume=resume, resume_epochs=epochs if resume else None, on_epoch=show,
    )
    console.print(metrics_table(f"best validation epoch {result.best_epoch}", {"HSCNet": result.best_metrics}))
    console.print(f"checkpoints in {out}: best.pt, last.pt")


def ablation_config(config: Any, levels: str | None, align: str | None, decoders: str | None) -> Any:
    """Apply ``--levels``, ``--align`` and ``--decoders`` to an HSCNetConfig, in that order.

    Raises ValueError naming the flags when their values do not fit together.
    """
    flags_given = ", ".join(f"--{flag} {value!r}" for flag, value in
                      (("levels", levels), ("align", align), ("decoders", decoders)) if value is not None)
    try:
        if levels is not None:
            config = config.with_levels(levels)
        if align is not None:
            config = config.with_alignments(align)
        if decoders is not None:
            config = config.with_decoders(decoders)
    except ValueError as error:
        raise ValueError(f"{flags_given}: {error}") from error
    return config


@app.command()
@user_errors
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="best.pt or last.pt of a run.")],
    video: Annotated[Path, typer.Option(help="Video cache of the split to evaluate.")],
    text: Annotated[Path, typer.Option(help="Text cache of the split to evaluate.")],
    out: Annotated[Path, typer.Option(help="JSON file for the metrics and every prediction.")] = Path("predictions.json"),
    strict_iou: Annotated[Optional[bool], typer.Option("--strict-iou/--inclusive-iou", help="Count IoU > m (strict) or IoU >= m; default from the checkpoint.")] = None,
    device: Annotated[str, typer.Option(help="Torch device.")] = "cpu",
    baseline: Annotated[bool, typer.Option(help="Also report the even-split baseline.")] = True,
) -> None:
    """Report R@IoU and mIoU of a checkpoint on one split."""
    check_device(device)
    from hsc.pipeline.data import ParagraphDataset
    from hsc.pipeline.evaluate import even_split_records, predict, records_metrics, write_predictions
    from hsc.pipeline.presets import TrainConfig
    from hsc.pipeline.train import check_checkpoint_caches, load_checkpoint, make_loader

    model, payload = load_checkpoint(checkpoint, device)
    check_checkpoint_caches(payload, checkpoint, video, text)
    train_config = TrainConfig.from_dict(payload["train_config"])
    strict = train_config.iou_strict if strict_iou is None else strict_iou
    dataset = ParagraphDataset(video, text, train_config.num_clips, train_config.normalize_clips)
    records = predict(model, make_loader(dataset, train_config.batch_size, shuffle=False), device)
    metrics = records_metrics(records, train_config.iou_thresholds, strict)
    rows = {"HSCNet": metrics}
    if baseline:
        rows["even split"] = records_metrics(even_split_records(records), train_config.iou_thresholds, strict)
    settings = {
        "checkpoint": str(checkpoint), "video": str(video), "text": str(text),
        "iou_thresholds": list(train_config.iou_thresholds), "iou_strict": strict,
    }
    write_predictions(out, records, metrics, settings, rows.get("even split"))
    console.print(metrics_table(f"{len(records)} paragraphs, {sum(len(r['timestamps']) for r in records)} sentences", rows))
    console.print(f"predictions written to {out}")


@app.command()
@user_errors
def ground(
    video: Annotated[Path, typer.Argument(help="Video file.")],
    paragraph: Annotated[Path, typer.Argument(help="Text file: one sentence per line, or running text.")],
    checkpoint: Annotated[Path, typer.Option(help="Trained checkpoint (best.pt).")],
    weights: Annotated[Optional[Path], typer.Option(help="C3D weights, when the checkpoint was trained on features from a weights file.")] = None,
    vectors: Annotated[Optional[Path], typer.Option(help="GloVe file, when the checkpoint was trained on vectors from a file.")] = None,
    pca: Annotated[Optional[Path], typer.Option(help="PCA file, when the checkpoint was trained on PCA-reduced features (PCA_activitynet_v1-3.hdf5 for the public ActivityNet ones).")] = None,
    layer: Annotated[Optional[str], typer.Option(help="C3D layer (fc6 or fc7) for checkpoints trained on public features; fc7 with --pca, else fc6.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    device: Annotated[str, typer.Option(help="Torch device.")] = "cpu",
) -> None:
    """Find the start and end of each sentence of a paragraph in a video."""
    check_device(device)
    from hsc.pipeline.ground import ground_paragraph

    result = ground_paragraph(
        video, paragraph, checkpoint, weights=weights, vectors=vectors, device=device, pca=pca, layer=layer
    )
    if as_json:
        print(json.dumps(result, indent=1))
        return
    table = Table(title=f"{result['video']} ({result['duration']:.2f} s)")
    table.add_column("#", justify="right")
    table.add_column("sentence")
    table.add_column("start (s)", justify="right")
    table.add_column("end (s)", justify="right")
    for i, sentence in enumerate(result["sentences"], start=1):
        table.add_row(str(i), sentence["text"], f"{sentence['start']:.2f}", f"{sentence['end']:.2f}")
    console.print(table)
    console.print(f"paragraph: {result['paragraph']['start']:.2f} s to {result['paragraph']['end']:.2f} s")


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the generated data, caches and run.")] = Path("hsc-demo"),
    epochs: Annotated[Optional[int], typer.Option(help="Override the demo preset's epoch count.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated data and of training.")] = 0,
) -> None:
    """Run every stage on a generated dataset of rendered videos and report the test metrics."""
    import time

    from hsc.pipeline.demo import run_demo

    start = time.perf_counter()
    result = run_demo(out, progress_bar, lambda line: console.print(f"[green]done[/green] {line}"), epochs=epochs, seed=seed)
    total = time.perf_counter() - start
    console.print(metrics_table("test split", {"HSCNet": result.metrics, "even split": result.baseline}))

    grounding = result.grounding
    table = Table(title=f"hsc ground {grounding['video']} ({grounding['duration']:.2f} s)")
    for column in ("sentence", "predicted (s)", "true (s)"):
        table.add_column(column)
    for sentence, truth in zip(grounding["sentences"], result.truth):
        table.add_row(sentence["text"], f"{sentence['start']:.2f} - {sentence['end']:.2f}", f"{truth[0]:.2f} - {truth[1]:.2f}")
    console.print(table)
    console.print(f"demo finished in {total:.1f} s; everything is in {out}")


if __name__ == "__main__":
    app()
