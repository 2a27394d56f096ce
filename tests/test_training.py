"""Training loop: determinism, checkpoints, resume and input checks, on small random caches."""

import json

import h5py
import numpy as np
import pytest
import torch

from hsc.extract.cache import FeatureCache, InvalidInputError
from hsc.model.config import HSCNetConfig
from hsc.pipeline.presets import TrainConfig
from hsc.pipeline.train import CheckpointError, load_checkpoint, train

VIDEO_DIM, WORD_DIM = 10, 4
MODEL = HSCNetConfig(hidden_size=16, num_heads=2, video_encoder_layers=1, text_encoder_layers=1)
TRAINING = TrainConfig(dataset="activitynet", num_clips=6, batch_size=2, epochs=2, learning_rate=1e-3)


def write_caches(folder, num_videos=4, seed=0):
    """Write a video and a text cache of random features, one 2-sentence paragraph per video."""
    rng = np.random.default_rng(seed)
    video_path, text_path = folder / "video.h5", folder / "text.h5"
    with FeatureCache(video_path, {"kind": "video", "model": "random"}) as cache:
        for i in range(num_videos):
            clips = int(rng.integers(4, 9))
            cache.write(f"v{i}", {"features": rng.normal(size=(clips, VIDEO_DIM)).astype(np.float32)}, {"duration": 10.0})
    with FeatureCache(text_path, {"kind": "text", "vectors": "random", "dim": WORD_DIM}) as cache:
        for i in range(num_videos):
            cache.write(
                f"v{i}",
                {
                    "word_vectors": rng.normal(size=(5, WORD_DIM)).astype(np.float32),
                    "word_sentence": np.array([0, 0, 1, 1, 1], dtype=np.int32),
                    "words": np.array(["a", "b", "c", "d", "e"]),
                    "sentences": np.array(["a b", "c d e"]),
                    "timestamps": np.array([[0.0, 4.0], [4.0, 9.0]]),
                },
                {"video": f"v{i}", "duration": 10.0, "oov_words": 0},
            )
    return video_path, text_path


def run(folder, caches, **kwargs):
    video, text = caches
    return train(video, text, video, text, folder, MODEL, kwargs.pop("config", TRAINING), **kwargs)


def weights(path):
    return torch.load(path, weights_only=False)["state_dict"]


def test_train_writes_checkpoints_and_logs(tmp_path):
    caches = write_caches(tmp_path)
    result = run(tmp_path / "run", caches)
    assert (tmp_path / "run" / "best.pt").is_file()
    assert (tmp_path / "run" / "last.pt").is_file()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    assert [entry["epoch"] for entry in result.history] == [1, 2]
    assert 1 <= result.best_epoch <= 2


def test_checkpoint_holds_full_config(tmp_path):
    caches = write_caches(tmp_path)
    run(tmp_path / "run", caches)
    model, payload = load_checkpoint(tmp_path / "run" / "best.pt")
    assert model.config.video_dim == VIDEO_DIM
    assert model.config.word_dim == WORD_DIM
    assert payload["train_config"]["num_clips"] == 6
    assert payload["video_settings"] == {"kind": "video", "model": "random"}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model_config"]["hidden_size"] == 16


def test_seeded_training_is_deterministic(tmp_path):
    caches = write_caches(tmp_path)
    first = run(tmp_path / "a", caches)
    second = run(tmp_path / "b", caches)
    assert first.history == second.history
    a, b = weights(tmp_path / "a" / "last.pt"), weights(tmp_path / "b" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_matches_uninterrupted_run(tmp_path):
    caches = write_caches(tmp_path)
    run(tmp_path / "full", caches)
    one_epoch = TrainConfig(**{**TRAINING.to_dict(), "epochs": 1})
    run(tmp_path / "split", caches, config=one_epoch)
    resumed = run(tmp_path / "split", caches, config=one_epoch, resume=True, resume_epochs=2)
    assert [entry["epoch"] for entry in resumed.history] == [1, 2]
    a, b = weights(tmp_path / "full" / "last.pt"), weights(tmp_path / "split" / "last.pt")
    assert all(torch.allclose(a[k], b[k]) for k in a)


def test_resume_without_checkpoint_fails(tmp_path):
    caches = write_caches(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        run(tmp_path / "run", caches, resume=True)


def test_load_checkpoint_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(CheckpointError, match="not an hsc checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_train_rejects_caches_without_common_videos(tmp_path):
    video, _ = write_caches(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, text = write_caches(other)
    with h5py.File(text, "a") as f:
        for key in f:
            f[key].attrs["video"] = "unknown"
    with pytest.raises(InvalidInputError, match="no paragraph"):
        train(video, text, video, text, tmp_path / "run", MODEL, TRAINING)


def test_prepare_clips_normalises_before_resampling():
    from hsc.pipeline.data import prepare_clips

    features = np.array([[3.0, 4.0], [0.0, 2.0], [0.0, 0.0]], dtype=np.float32)
    normalised = prepare_clips(features, num_clips=3, normalize=True)
    np.testing.assert_allclose(normalised, [[0.6, 0.8], [0.0, 1.0], [0.0, 0.0]])
    # Two bins over three clips: [0, 1) and [1, 3).
    pooled = prepare_clips(features, num_clips=2, normalize=True)
    np.testing.assert_allclose(pooled, [[0.6, 0.8], [0.0, 0.5]])


def test_normalize_clips_reaches_the_checkpoint(tmp_path):
    caches = write_caches(tmp_path)
    config = TrainConfig(**{**TRAINING.to_dict(), "epochs": 1, "normalize_clips": True})
    run(tmp_path / "run", caches, config=config)
    _, payload = load_checkpoint(tmp_path / "run" / "best.pt")
    assert payload["train_config"]["normalize_clips"] is True


def test_train_refuses_to_overwrite_a_run(tmp_path):
    caches = write_caches(tmp_path)
    run(tmp_path / "run", caches)
    with pytest.raises(CheckpointError, match="--resume"):
        run(tmp_path / "run", caches)


def test_train_rejects_splits_with_other_settings(tmp_path):
    video, text = write_caches(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    other_video, _ = write_caches(other)
    with h5py.File(other_video, "a") as f:
        f.attrs["settings"] = json.dumps({"kind": "video", "model": "random", "clip_stride": 16})
    with pytest.raises(InvalidInputError, match="clip_stride"):
        train(video, text, other_video, text, tmp_path / "run", MODEL, TRAINING)


def test_text_cache_as_video_cache_is_named(tmp_path):
    from hsc.pipeline.data import ParagraphDataset

    _, text = write_caches(tmp_path)
    with pytest.raises(InvalidInputError, match="is a text cache"):
        ParagraphDataset(text, text, 4)


def test_video_cache_as_text_cache_is_named(tmp_path):
    from hsc.pipeline.data import ParagraphDataset

    video, _ = write_caches(tmp_path)
    with pytest.raises(InvalidInputError, match="is not a text cache"):
        ParagraphDataset(video, video, 4)


def test_non_hdf5_cache_is_named(tmp_path):
    from hsc.pipeline.data import ParagraphDataset

    video, _ = write_caches(tmp_path)
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(InvalidInputError, match="not a readable HDF5 file"):
        ParagraphDataset(video, bad, 4)


def test_checkpoint_that_is_text_is_named(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("notes")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)
