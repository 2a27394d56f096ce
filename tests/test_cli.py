"""One run of every command on three tiny generated videos, plus bad input."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hsc.cli import app
from hsc.pipeline.synthetic import write_video

runner = CliRunner()
FPS = 8.0
SENTENCES = {
    "clip_a": ["A red circle moves left.", "A blue square grows."],
    "clip_b": ["A green triangle spins.", "A white ring shrinks."],
    "clip_c": ["A yellow square falls.", "A red diamond blinks."],
}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def flat(result) -> str:
    """Return the output with rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Three 32-frame videos (3 clips each) with a two-sentence paragraph each."""
    root = tmp_path_factory.mktemp("cli")
    videos = root / "videos"
    videos.mkdir()
    rng = np.random.default_rng(0)
    annotations = {}
    for name, sentences in SENTENCES.items():
        frames = rng.integers(0, 255, size=(32, 48, 64, 3), dtype=np.uint8)
        write_video(videos / f"{name}.mp4", frames, FPS)
        annotations[name] = {"duration": 4.0, "timestamps": [[0.0, 1.5], [2.0, 4.0]], "sentences": sentences}
    (root / "annotations.json").write_text(json.dumps(annotations))
    return root


@pytest.fixture(scope="module")
def caches(workspace):
    video = invoke("extract-video", workspace / "videos", "--out", workspace / "video.h5", "--batch-size", 4)
    text = invoke("extract-text", workspace / "annotations.json", "--out", workspace / "text.h5")
    return video, text


@pytest.fixture(scope="module")
def trained(workspace, caches):
    h5 = {"video": workspace / "video.h5", "text": workspace / "text.h5"}
    return invoke(
        "train", "--train-video", h5["video"], "--train-text", h5["text"],
        "--val-video", h5["video"], "--val-text", h5["text"],
        "--preset", "demo", "--epochs", 2, "--out", workspace / "run",
    )


def test_extract_video_writes_every_video(caches):
    video, _ = caches
    assert video.exit_code == 0, video.output
    assert "3 written" in flat(video)


def test_extract_video_rerun_skips(workspace, caches):
    again = invoke("extract-video", workspace / "videos", "--out", workspace / "video.h5")
    assert again.exit_code == 0, again.output
    assert "3 already complete" in flat(again)


def test_extract_text_prints_oov_rate(caches):
    _, text = caches
    assert text.exit_code == 0, text.output
    assert "out-of-vocabulary rate" in flat(text)
    assert "3 written" in flat(text)


def test_train_keeps_best_and_last(workspace, trained):
    assert trained.exit_code == 0, trained.output
    assert (workspace / "run" / "best.pt").is_file()
    assert (workspace / "run" / "last.pt").is_file()


def test_train_resume_continues(workspace, trained):
    h5 = {"video": workspace / "video.h5", "text": workspace / "text.h5"}
    result = invoke(
        "train", "--train-video", h5["video"], "--train-text", h5["text"],
        "--val-video", h5["video"], "--val-text", h5["text"],
        "--out", workspace / "run", "--resume", "--epochs", 3,
    )
    assert result.exit_code == 0, result.output
    assert "epoch 3" in flat(result)
    assert "epoch 1 " not in flat(result)


def test_evaluate_writes_predictions(workspace, trained):
    out = workspace / "predictions.json"
    result = invoke(
        "evaluate", "--checkpoint", workspace / "run" / "best.pt",
        "--video", workspace / "video.h5", "--text", workspace / "text.h5", "--out", out,
    )
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert set(written["metrics"]) == {"R@0.3", "R@0.5", "R@0.7", "mIoU"}
    assert len(written["predictions"]) == 3
    assert set(written["even_split"]) == set(written["metrics"])
    assert written["settings"]["iou_thresholds"] == [0.3, 0.5, 0.7]
    assert "even split" in flat(result)


def test_ground_json(workspace, trained):
    paragraph = workspace / "paragraph.txt"
    paragraph.write_text("\n".join(SENTENCES["clip_b"]) + "\n")
    result = invoke(
        "ground", workspace / "videos" / "clip_b.mp4", paragraph,
        "--checkpoint", workspace / "run" / "best.pt", "--json",
    )
    assert result.exit_code == 0, result.output
    grounded = json.loads(result.stdout[result.stdout.index("{"):])
    assert [s["text"] for s in grounded["sentences"]] == SENTENCES["clip_b"]
    assert grounded["duration"] == pytest.approx(4.0, abs=0.2)
    for sentence in grounded["sentences"]:
        assert 0.0 <= sentence["start"] <= sentence["end"] <= grounded["duration"]
    assert set(grounded["paragraph"]) == {"start", "end"}


def test_ground_table(workspace, trained):
    paragraph = workspace / "running.txt"
    paragraph.write_text(" ".join(SENTENCES["clip_a"]))
    result = invoke("ground", workspace / "videos" / "clip_a.mp4", paragraph, "--checkpoint", workspace / "run" / "best.pt")
    assert result.exit_code == 0, result.output
    assert "A blue square grows." in flat(result)


def test_ground_missing_video_is_clear(workspace, trained):
    paragraph = workspace / "paragraph.txt"
    paragraph.write_text("A red circle moves left.\n")
    result = invoke("ground", workspace / "nope.mp4", paragraph, "--checkpoint", workspace / "run" / "best.pt")
    assert result.exit_code == 2
    assert "video file not found" in flat(result)


def test_ground_rejects_other_vectors(workspace, trained, tmp_path):
    glove = tmp_path / "tiny.txt"
    glove.write_text("red 1 0 0\ncircle 0 1 0\n")
    paragraph = tmp_path / "p.txt"
    paragraph.write_text("A red circle.\n")
    result = invoke(
        "ground", workspace / "videos" / "clip_a.mp4", paragraph,
        "--checkpoint", workspace / "run" / "best.pt", "--vectors", glove,
    )
    assert result.exit_code == 2
    assert "--vectors" in flat(result)


def test_extract_video_bad_file_does_not_stop_batch(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "good.mp4", np.zeros((20, 48, 64, 3), dtype=np.uint8), FPS)
    (folder / "broken.mp4").write_text("not a video")
    result = invoke("extract-video", folder, "--out", tmp_path / "v.h5")
    assert result.exit_code == 1
    assert "1 written" in flat(result)
    assert "broken" in flat(result)


def test_evaluate_missing_checkpoint_is_clear(tmp_path):
    result = invoke("evaluate", "--checkpoint", tmp_path / "none.pt", "--video", tmp_path / "v.h5", "--text", tmp_path / "t.h5")
    assert result.exit_code == 2
    assert "checkpoint not found" in flat(result)


def test_train_rejects_unknown_preset(tmp_path):
    result = invoke(
        "train", "--train-video", "a", "--train-text", "b", "--val-video", "c", "--val-text", "d", "--preset", "nope",
    )
    assert result.exit_code == 2
    assert "unknown preset" in flat(result)


def test_evaluate_rejects_cache_with_other_settings(workspace, trained, tmp_path):
    import h5py

    other = tmp_path / "video.h5"
    other.write_bytes((workspace / "video.h5").read_bytes())
    with h5py.File(other, "a") as f:
        settings = json.loads(f.attrs["settings"])
        settings["clip_stride"] = 16
        f.attrs["settings"] = json.dumps(settings)
    result = invoke(
        "evaluate", "--checkpoint", workspace / "run" / "best.pt", "--video", other, "--text", workspace / "text.h5",
    )
    assert result.exit_code == 2
    assert "clip_stride" in flat(result)


def test_error_keeps_square_brackets(workspace, trained):
    result = invoke(
        "ground", workspace / "videos" / "clip_a.mp4", workspace / "[red]p.txt",
        "--checkpoint", workspace / "run" / "best.pt",
    )
    assert result.exit_code == 2
    assert "[red]p.txt" in flat(result)


def test_cuda_device_without_cuda_is_clear(workspace, trained):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = invoke("evaluate", "--checkpoint", "x.pt", "--video", "v.h5", "--text", "t.h5", "--device", "cuda:0")
    assert result.exit_code == 2
    assert "--device cpu" in flat(result)


def test_extract_text_rejected_entries_exit_nonzero(tmp_path):
    annotations = tmp_path / "a.json"
    annotations.write_text(json.dumps({
        "good": {"duration": 4.0, "timestamps": [[0, 1]], "sentences": ["A red circle."]},
        "bad": {"timestamps": [[0, 1]], "sentences": ["A blue square."]},
    }))
    result = invoke("extract-text", annotations, "--out", tmp_path / "t.h5")
    assert result.exit_code == 1
    assert "1 written" in flat(result)
    assert "rejected" in flat(result)


def test_train_names_clashing_flags(tmp_path):
    missing = tmp_path / "missing.h5"
    result = invoke(
        "train", "--train-video", missing, "--train-text", missing, "--val-video", missing,
        "--val-text", missing, "--out", tmp_path / "run", "--levels", "SL+PL", "--align", "word",
    )
    assert result.exit_code == 2
    assert "--levels 'SL+PL', --align 'word': align_word needs word_level" in flat(result)
    assert not (tmp_path / "run").exists()
