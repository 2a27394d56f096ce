"""Public C3D feature files (ActivityNet, TACoS layouts), PCA reduction, and grounding with
checkpoints trained on public features. All files are small stand-ins written by the tests."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hsc.cli import app
from hsc.extract.c3d import FEATURE_DIM, load_c3d
from hsc.extract.cache import FeatureCache, InvalidInputError
from hsc.extract.pca import load_pca
from hsc.extract.text import extract_text
from hsc.extract.video import VideoSettings, extract_video, extract_videos
from hsc.model.config import HSCNetConfig
from hsc.pipeline.data import ParagraphDataset, VideoFeatureStore
from hsc.pipeline.ground import check_pca, ground_paragraph
from hsc.pipeline.presets import TrainConfig
from hsc.pipeline.synthetic import write_video
from hsc.pipeline.train import train

runner = CliRunner()
MODEL = HSCNetConfig(hidden_size=16, num_heads=2, video_encoder_layers=1, text_encoder_layers=1)
TRAINING = TrainConfig(dataset="activitynet", num_clips=8, batch_size=2, epochs=1)
ANET_DIM = 500

# ActivityNet-style annotations: clips per video in the feature file, duration in seconds.
ANET_VIDEOS = {
    "v_long": (20, 40.0, ["a man runs on a track.", "he jumps over a bar."]),
    "v_mid": (12, 24.0, ["a woman opens a door.", "she walks into the room."]),
    "v_short": (5, 10.0, ["a dog catches a ball.", "the dog runs back."]),
}
ANET_SPANS = [[2.0, 10.0], [10.0, 30.0]]

# PCA stand-in with 500 components: principal axis j is the unit vector of input dimension
# AXIS_DIMS[j], the first three chosen for hand-checked projections.
AXES = [2, 0, 5]
AXIS_DIMS = AXES + [d for d in range(FEATURE_DIM) if d not in AXES][: ANET_DIM - len(AXES)]
EIGENVALUES = np.arange(ANET_DIM, 0, -1, dtype=np.float64)


def rows_numbered(num_clips: int, dim: int) -> np.ndarray:
    """Return (num_clips, dim) features whose row i is all i, so bin means are easy to check."""
    return np.repeat(np.arange(num_clips, dtype=np.float32)[:, None], dim, axis=1)


def write_activitynet_file(path: Path, videos: dict[str, np.ndarray]) -> Path:
    """Write the layout of sub_activitynet_v1-3.c3d.hdf5: one group per video, no settings."""
    with h5py.File(path, "w") as f:
        for video, features in videos.items():
            f.create_group(video).create_dataset("c3d_features", data=features)
    return path


def write_tacos_file(path: Path, videos: dict[str, np.ndarray]) -> Path:
    """Write the layout of tall_c3d_features.hdf5: one dataset per video at the root."""
    with h5py.File(path, "w") as f:
        for video, features in videos.items():
            f.create_dataset(video, data=features)
    return path


def write_pca_hdf5(path: Path, mean: np.ndarray, axes: np.ndarray, eigenvalues, group: str = "data") -> Path:
    """Write a PCA file with the datasets x_mean, U and S in ``group`` (the root when empty)."""
    with h5py.File(path, "w") as f:
        node = f.require_group(group) if group else f
        node.create_dataset("x_mean", data=mean)
        node.create_dataset("U", data=axes)
        node.create_dataset("S", data=np.asarray(eigenvalues, dtype=np.float64))
    return path


def pca_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Return x_mean (1, 4096) and U (4096, 500) float32 of the PCA stand-in."""
    mean = (np.arange(FEATURE_DIM, dtype=np.float32) / 1000.0)[None, :]
    axes = np.zeros((FEATURE_DIM, ANET_DIM), dtype=np.float32)
    axes[AXIS_DIMS, np.arange(ANET_DIM)] = 1.0
    return mean, axes


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def anet_text(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("anet_text")
    annotations = {
        video: {"duration": duration, "timestamps": ANET_SPANS, "sentences": sentences}
        for video, (_, duration, sentences) in ANET_VIDEOS.items()
    }
    (folder / "annotations.json").write_text(json.dumps(annotations))
    extract_text(folder / "annotations.json", folder / "text.h5")
    return folder / "text.h5"


@pytest.fixture(scope="module")
def anet_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("anet_features")
    videos = {video: rows_numbered(clips, ANET_DIM) for video, (clips, _, _) in ANET_VIDEOS.items()}
    return write_activitynet_file(folder / "sub_activitynet_v1-3.c3d.hdf5", videos)


@pytest.fixture(scope="module")
def tacos_text(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tacos_text")
    annotations = {
        "s13-d21.avi": {
            "timestamps": [[0, 60], [60, 150], [150, 300]],
            "sentences": ["the person takes out a knife.", "she cuts the onion.", "she washes the board."],
            "fps": 30.0,
            "num_frames": 300,
        }
    }
    (folder / "annotations.json").write_text(json.dumps(annotations))
    extract_text(folder / "annotations.json", folder / "text.h5")
    return folder / "text.h5"


@pytest.fixture(scope="module")
def pca_file(tmp_path_factory) -> Path:
    mean, axes = pca_arrays()
    return write_pca_hdf5(tmp_path_factory.mktemp("pca") / "PCA_activitynet_v1-3.hdf5", mean, axes, EIGENVALUES)


@pytest.fixture(scope="module")
def c3d():
    return load_c3d(None, "cpu")[0]


@pytest.fixture(scope="module")
def video_file(tmp_path_factory) -> Path:
    """A 24-frame video at 8 fps: two 16-frame clips, 3 s."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    frames = np.random.default_rng(0).integers(0, 255, size=(24, 48, 64, 3), dtype=np.uint8)
    write_video(path, frames, 8.0)
    return path


@pytest.fixture(scope="module")
def short_video(tmp_path_factory) -> Path:
    """A 16-frame video at 8 fps: one clip, 2 s, so that each grounding runs C3D once."""
    path = tmp_path_factory.mktemp("short_video") / "short.mp4"
    frames = np.random.default_rng(1).integers(0, 255, size=(16, 48, 64, 3), dtype=np.uint8)
    write_video(path, frames, 8.0)
    return path


@pytest.fixture(scope="module")
def paragraph_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("paragraph") / "paragraph.txt"
    path.write_text("a man runs on a track.\nhe jumps over a bar.\n")
    return path


# ActivityNet layout


def test_activitynet_pairs_every_paragraph(anet_file, anet_text):
    dataset = ParagraphDataset(anet_file, anet_text, num_clips=8)
    assert len(dataset) == 3
    assert dataset.video_dim == ANET_DIM
    assert dataset.word_dim == 50


def test_activitynet_bin_means_by_hand(anet_file, anet_text):
    dataset = ParagraphDataset(anet_file, anet_text, num_clips=8)
    sample = next(dataset[i] for i in range(len(dataset)) if dataset[i].video == "v_long")
    # 20 clips into 8 bins: [0,2) [2,5) [5,7) [7,10) [10,12) [12,15) [15,17) [17,20).
    expected = [0.5, 3.0, 5.5, 8.0, 10.5, 13.0, 15.5, 18.0]
    assert sample.clips.shape == (8, ANET_DIM)
    np.testing.assert_allclose(sample.clips[:, 0], expected)
    np.testing.assert_allclose(sample.clips[:, -1], expected)


def test_activitynet_short_video_unchanged(anet_file, anet_text):
    dataset = ParagraphDataset(anet_file, anet_text, num_clips=8)
    sample = next(dataset[i] for i in range(len(dataset)) if dataset[i].video == "v_short")
    assert sample.clips.shape == (5, ANET_DIM)
    np.testing.assert_allclose(sample.clips[:, 0], [0, 1, 2, 3, 4])


def test_activitynet_duration_from_text_cache(anet_file, anet_text):
    dataset = ParagraphDataset(anet_file, anet_text, num_clips=8)
    sample = next(dataset[i] for i in range(len(dataset)) if dataset[i].video == "v_long")
    assert sample.duration == 40.0
    np.testing.assert_allclose(sample.spans, np.array(ANET_SPANS) / 40.0, rtol=1e-6)


def test_missing_video_left_out_with_warning(tmp_path, anet_text, caplog):
    videos = {video: rows_numbered(clips, ANET_DIM) for video, (clips, _, _) in ANET_VIDEOS.items()}
    del videos["v_mid"]
    features = write_activitynet_file(tmp_path / "partial.hdf5", videos)
    with caplog.at_level(logging.WARNING, logger="hsc.pipeline.data"):
        dataset = ParagraphDataset(features, anet_text, num_clips=8)
    assert len(dataset) == 2
    assert "1 of 3 paragraphs" in caplog.text
    assert "v_mid" in caplog.text


def test_no_common_video_raises(tmp_path, anet_text):
    features = write_activitynet_file(tmp_path / "other.hdf5", {"v_other": rows_numbered(4, ANET_DIM)})
    with pytest.raises(InvalidInputError, match="no paragraph"):
        ParagraphDataset(features, anet_text, num_clips=8)


# TACoS layout


@pytest.mark.parametrize("key", ["s13-d21.avi", "s13-d21"])
def test_tacos_dataset_at_root_found(tmp_path, tacos_text, key):
    features = write_tacos_file(tmp_path / "tall_c3d_features.hdf5", {key: rows_numbered(10, FEATURE_DIM)})
    dataset = ParagraphDataset(features, tacos_text, num_clips=8)
    assert len(dataset) == 1
    assert dataset.video_dim == FEATURE_DIM
    sample = dataset[0]
    # 10 clips into 8 bins: [0,1) [1,2) [2,3) [3,5) [5,6) [6,7) [7,8) [8,10).
    np.testing.assert_allclose(sample.clips[:, 0], [0, 1, 2, 3.5, 5, 6, 7, 8.5])
    assert sample.duration == 10.0


# Feature store checks


def test_store_skips_interrupted_hsc_entry(tmp_path):
    path = tmp_path / "video.h5"
    with FeatureCache(path, {"kind": "video", "model": "c3d"}) as cache:
        cache.write("done", {"features": rows_numbered(3, 4)}, {})
        cache.write("interrupted", {"features": rows_numbered(3, 4)}, {})
    with h5py.File(path, "a") as f:
        del f["interrupted"].attrs["complete"]
    assert VideoFeatureStore(path).keys == {"done"}


def test_store_mixed_sizes_rejected(tmp_path):
    path = write_tacos_file(tmp_path / "mixed.hdf5", {"a": rows_numbered(3, 4), "b": rows_numbered(3, 5)})
    with pytest.raises(InvalidInputError, match="different sizes"):
        VideoFeatureStore(path)


def test_store_text_file_rejected(tmp_path):
    path = tmp_path / "features.hdf5"
    path.write_text("not hdf5")
    with pytest.raises(InvalidInputError, match="not HDF5"):
        VideoFeatureStore(path)


# Training and evaluation on the public layout


@pytest.fixture(scope="module")
def anet_run(tmp_path_factory, anet_file, anet_text) -> Path:
    out = tmp_path_factory.mktemp("anet_run")
    train(anet_file, anet_text, anet_file, anet_text, out, MODEL, TRAINING)
    return out


@pytest.fixture(scope="module")
def anet_run_checkpoint(anet_run) -> Path:
    return anet_run / "best.pt"


def test_checkpoint_records_no_video_settings(anet_run):
    payload = torch.load(anet_run / "best.pt", weights_only=False)
    assert payload["video_settings"] == {}
    assert payload["model_config"]["video_dim"] == ANET_DIM


def test_evaluate_reports_metrics(anet_run, anet_file, anet_text, tmp_path):
    out = tmp_path / "predictions.json"
    result = invoke(
        "evaluate", "--checkpoint", anet_run / "best.pt", "--video", anet_file, "--text", anet_text, "--out", out
    )
    assert result.exit_code == 0, result.output
    assert "R@0.7" in result.output
    written = json.loads(out.read_text())
    assert set(written["metrics"]) == {"R@0.3", "R@0.5", "R@0.7", "mIoU"}
    assert written["settings"]["iou_strict"] is True
    assert len(written["predictions"]) == 3


# PCA files


def test_pca_projection_by_hand(pca_file):
    projection = load_pca(pca_file, dims=3)
    features = np.zeros((2, FEATURE_DIM), dtype=np.float32)
    features[0, [0, 2, 5]] = [1.0, 2.0, 3.0]
    features[1, [0, 2, 5]] = [4.0, 5.0, 6.0]
    # (x - mean) on dimensions 2, 0, 5, with mean[d] = d / 1000.
    expected = [[2.0 - 0.002, 1.0, 3.0 - 0.005], [5.0 - 0.002, 4.0, 6.0 - 0.005]]
    projected = projection.project(features)
    assert projected.dtype == np.float32
    np.testing.assert_allclose(projected, expected, rtol=1e-5)


def test_pca_keeps_leading_components(pca_file):
    projection = load_pca(pca_file, dims=2)
    features = np.zeros((1, FEATURE_DIM))
    features[0, [0, 2, 5]] = [1.0, 2.0, 3.0]
    np.testing.assert_allclose(projection.project(features), [[2.0 - 0.002, 1.0]], rtol=1e-5)


def test_pca_description_names_file(pca_file):
    description = load_pca(pca_file, dims=3).description
    assert description.startswith("PCA_activitynet_v1-3.hdf5 sha256=")
    assert len(description.split("sha256=")[1]) == 16


def test_pca_rows_at_root_same_projection(tmp_path, pca_file):
    mean, axes = pca_arrays()
    rows_file = write_pca_hdf5(tmp_path / "pca_rows.hdf5", mean[0], axes.T, EIGENVALUES, group="")
    features = np.random.default_rng(0).normal(size=(3, FEATURE_DIM))
    np.testing.assert_allclose(
        load_pca(rows_file, 3).project(features), load_pca(pca_file, 3).project(features), rtol=1e-6
    )


def test_pca_npz_same_projection(tmp_path, pca_file):
    mean, axes = pca_arrays()
    npz = tmp_path / "pca.npz"
    np.savez(npz, x_mean=mean, U=axes, S=np.array(EIGENVALUES))
    features = np.random.default_rng(1).normal(size=(3, FEATURE_DIM))
    np.testing.assert_allclose(load_pca(npz, 3).project(features), load_pca(pca_file, 3).project(features), rtol=1e-6)


def test_pca_too_many_components_names_dataset(pca_file):
    with pytest.raises(InvalidInputError, match=r"data/U has shape \(4096, 500\), so 500 components"):
        load_pca(pca_file, dims=501)


def test_pca_wrong_mean_size_names_dataset(tmp_path):
    _, axes = pca_arrays()
    path = write_pca_hdf5(tmp_path / "pca.hdf5", np.zeros((1, 500)), axes, EIGENVALUES)
    with pytest.raises(InvalidInputError, match=r"data/x_mean has shape \(1, 500\)"):
        load_pca(path, dims=3)


def test_pca_wrong_axes_size_names_dataset(tmp_path):
    mean, _ = pca_arrays()
    path = write_pca_hdf5(tmp_path / "pca.hdf5", mean, np.eye(500)[:, :3], EIGENVALUES)
    with pytest.raises(InvalidInputError, match=r"data/U has shape \(500, 3\)"):
        load_pca(path, dims=3)


def test_pca_missing_datasets_listed(tmp_path):
    path = tmp_path / "pca.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data/mean", data=np.zeros(FEATURE_DIM))
    with pytest.raises(InvalidInputError, match="it contains: data/mean"):
        load_pca(path, dims=3)


def test_pca_npz_missing_array_named(tmp_path):
    mean, axes = pca_arrays()
    path = tmp_path / "pca.npz"
    np.savez(path, x_mean=mean, U=axes)
    with pytest.raises(InvalidInputError, match="lacks the arrays S"):
        load_pca(path, dims=3)


def test_pca_increasing_eigenvalues_rejected(tmp_path):
    mean, axes = pca_arrays()
    path = write_pca_hdf5(tmp_path / "pca.hdf5", mean, axes, [1.0, 2.0, 3.0])
    with pytest.raises(InvalidInputError, match="do not decrease"):
        load_pca(path, dims=3)


def test_pca_scaled_axes_rejected(tmp_path):
    mean, axes = pca_arrays()
    path = write_pca_hdf5(tmp_path / "pca.hdf5", mean, axes * 2.0, EIGENVALUES)
    with pytest.raises(InvalidInputError, match="not orthonormal"):
        load_pca(path, dims=3)


def test_pca_other_file_rejected(tmp_path):
    path = tmp_path / "pca.hdf5"
    path.write_text("not a PCA file")
    with pytest.raises(InvalidInputError, match="neither HDF5 nor .npz"):
        load_pca(path, dims=3)


# Extraction with PCA


@pytest.fixture(scope="module")
def pca_cache(tmp_path_factory, video_file, pca_file) -> Path:
    out = tmp_path_factory.mktemp("pca_cache") / "video.h5"
    summary = extract_videos([video_file], out, VideoSettings(layer="fc7", pca_dims=3), pca=pca_file)
    assert summary.written == ["clip"]
    return out


def test_extract_with_pca_records_file(pca_cache, pca_file):
    with h5py.File(pca_cache, "r") as f:
        record = json.loads(f.attrs["settings"])
    assert record["pca"] == load_pca(pca_file, 3).description
    assert record["pca_dims"] == 3
    assert record["layer"] == "fc7"


def test_extract_with_pca_projects_fc7(pca_cache, video_file, c3d):
    with h5py.File(pca_cache, "r") as f:
        stored = f["clip"]["features"][()]
    fc7 = extract_video(video_file, c3d, VideoSettings(layer="fc7")).features
    mean, _ = pca_arrays()
    expected = (fc7.astype(np.float64) - mean)[:, AXES]
    assert stored.shape == (2, 3)
    np.testing.assert_allclose(stored, expected, rtol=1e-5, atol=1e-5)


def test_cli_pca_needs_fc7(tmp_path, video_file, pca_file):
    result = invoke("extract-video", video_file.parent, "--out", tmp_path / "v.h5", "--pca", pca_file)
    assert result.exit_code == 2
    assert "--layer fc7" in " ".join(result.output.split())


# Grounding with checkpoints trained on public features


def test_ground_public_checkpoint_with_pca(anet_run_checkpoint, short_video, paragraph_file, pca_file, c3d, monkeypatch):
    # Sports-1M weights cannot be downloaded here; random weights stand in for them.
    monkeypatch.setattr("hsc.pipeline.ground.load_c3d", lambda weights, device: (c3d, "c3d.pickle sha256=0"))
    result = ground_paragraph(
        short_video, paragraph_file, anet_run_checkpoint, weights=Path("c3d.pickle"), pca=pca_file
    )
    assert len(result["sentences"]) == 2
    assert result["duration"] == pytest.approx(2.0, abs=0.2)
    for sentence in result["sentences"]:
        assert 0.0 <= sentence["start"] <= sentence["end"] <= result["duration"]


def test_ground_public_checkpoint_needs_pca(anet_run_checkpoint, short_video, paragraph_file):
    with pytest.raises(InvalidInputError, match="expects 500-d clip features.*pass --pca"):
        ground_paragraph(short_video, paragraph_file, anet_run_checkpoint, weights=Path("c3d.pickle"))


def test_ground_public_checkpoint_needs_weights(anet_run_checkpoint, short_video, paragraph_file, pca_file):
    with pytest.raises(InvalidInputError, match="pass --weights"):
        ground_paragraph(short_video, paragraph_file, anet_run_checkpoint, pca=pca_file)


def test_ground_cli_pca_with_fc6_rejected(anet_run_checkpoint, short_video, paragraph_file, pca_file):
    result = invoke(
        "ground", short_video, paragraph_file, "--checkpoint", anet_run_checkpoint,
        "--weights", "c3d.pickle", "--pca", pca_file, "--layer", "fc6",
    )
    assert result.exit_code == 2
    assert "--layer fc7" in " ".join(result.output.split())


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory, pca_cache) -> Path:
    """A checkpoint trained on a cache from extract_videos with PCA to 3 dims."""
    folder = tmp_path_factory.mktemp("recorded_run")
    annotations = {"clip": {"duration": 3.0, "timestamps": [[0.0, 1.0], [1.0, 3.0]], "sentences": ["a man runs.", "he jumps."]}}
    (folder / "annotations.json").write_text(json.dumps(annotations))
    extract_text(folder / "annotations.json", folder / "text.h5")
    train(pca_cache, folder / "text.h5", pca_cache, folder / "text.h5", folder, MODEL, TRAINING)
    return folder / "best.pt"


def test_ground_recorded_checkpoint_with_pca(recorded_run, short_video, paragraph_file, pca_file):
    result = ground_paragraph(short_video, paragraph_file, recorded_run, pca=pca_file)
    assert len(result["sentences"]) == 2


def test_ground_recorded_checkpoint_needs_pca(recorded_run, short_video, paragraph_file):
    with pytest.raises(InvalidInputError, match="pass --pca with that file"):
        ground_paragraph(short_video, paragraph_file, recorded_run)


def test_ground_recorded_checkpoint_other_pca_rejected(recorded_run, short_video, paragraph_file, tmp_path):
    mean, axes = pca_arrays()
    other = write_pca_hdf5(tmp_path / "other.hdf5", mean + 1.0, axes, EIGENVALUES)
    with pytest.raises(InvalidInputError, match="PCA-reduced features"):
        ground_paragraph(short_video, paragraph_file, recorded_run, pca=other)


def test_ground_recorded_checkpoint_other_layer_rejected(recorded_run, short_video, paragraph_file, pca_file):
    with pytest.raises(InvalidInputError, match="trained on C3D fc7 features"):
        ground_paragraph(short_video, paragraph_file, recorded_run, pca=pca_file, layer="fc6")


def test_check_pca_unexpected_file_rejected():
    with pytest.raises(InvalidInputError, match="omit --pca"):
        check_pca(None, "pca.hdf5 sha256=0123", Path("best.pt"))
