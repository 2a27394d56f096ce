"""Tests of the video stage: clip layout, decoding, C3D and the video feature cache."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import av
import decord
import h5py
import numpy as np
import pytest
import torch

from hsc.extract.c3d import (
    FEATURE_DIM,
    RANDOM_INIT_DESCRIPTION,
    SPORTS1M_MEAN_RGB,
    C3D,
    clips_to_input,
    load_c3d,
)
from hsc.extract.cache import CacheSettingsError, InvalidInputError
from hsc.extract.video import (
    ClipReader,
    DecodeError,
    DecordClipReader,
    VideoSettings,
    clip_times,
    count_clips,
    extract_video,
    extract_videos,
    find_videos,
    open_clip_reader,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_VIDEO = DATA / "videos" / "v_GGSY1Qvo990.mp4"

SETTINGS = VideoSettings()
FPS = 10
# Frame i of a test video is flat grey of level GREY_STEP * i, so its level gives its index.
GREY_STEP = 8
GREY_TOLERANCE = 3.0  # coding at 4 Mbit/s moves a level by at most 1 (5 at the default rate)


def write_video(
    path: Path, num_frames: int, codec: str = "mpeg4", width: int = 64, height: int = 48
) -> Path:
    """Write a video whose frame i is flat grey of level GREY_STEP * i."""
    pixel_format = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        stream.bit_rate = 4_000_000
        for i in range(num_frames):
            image = np.full((height, width, 3), GREY_STEP * i % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_all(path: Path, decoder: str | None = None, batch_size: int = 8) -> np.ndarray:
    with open_clip_reader(path, SETTINGS, decoder) as reader:
        return np.concatenate(list(reader.batches(batch_size)))


def grey_level(frame: np.ndarray) -> float:
    return float(frame.astype(np.float64).mean())


@pytest.fixture(scope="module")
def model() -> C3D:
    return load_c3d(None, "cpu")[0]


# Clip layout


@pytest.mark.parametrize(
    ("num_frames", "expected"),
    [(0, 0), (1, 1), (15, 1), (16, 1), (23, 1), (24, 2), (40, 4), (355, 43)],
)
def test_count_clips_cases(num_frames: int, expected: int) -> None:
    assert count_clips(num_frames, SETTINGS) == expected


def test_clip_times_by_hand() -> None:
    times = clip_times(3, fps=10.0, duration=3.0, settings=SETTINGS)
    # Frames [0, 16), [8, 24), [16, 32) at 10 fps; the last end 3.2 s is clamped to 3.0 s.
    expected = np.array([[0.0, 1.6], [0.8, 2.4], [1.6, 3.0]])
    assert times.dtype == np.float64
    np.testing.assert_allclose(times, expected)


def test_clip_times_short_video_clamped() -> None:
    times = clip_times(1, fps=10.0, duration=1.0, settings=SETTINGS)
    np.testing.assert_allclose(times, [[0.0, 1.0]])


# Settings


def test_settings_record_exact() -> None:
    record = SETTINGS.to_dict("random-init seed=0")
    assert record == {
        "kind": "video",
        "model": "c3d",
        "layer": "fc6",
        "frame_height": 128,
        "frame_width": 171,
        "crop_size": 112,
        "clip_length": 16,
        "clip_stride": 8,
        "weights": "random-init seed=0",
        "pca": None,
        "pca_dims": None,
    }


def test_settings_record_with_pca() -> None:
    record = VideoSettings(layer="fc7", pca_dims=500).to_dict("w", "pca.hdf5 sha256=0123")
    assert record["pca"] == "pca.hdf5 sha256=0123"
    assert record["pca_dims"] == 500


def test_settings_round_trip() -> None:
    settings = VideoSettings(layer="fc7", clip_stride=16)
    assert VideoSettings.from_dict(settings.to_dict("w")) == settings


def test_settings_round_trip_with_pca() -> None:
    settings = VideoSettings(layer="fc7", pca_dims=500)
    assert VideoSettings.from_dict(settings.to_dict("w", "p")) == settings


def test_settings_record_without_pca_keys_read() -> None:
    record = SETTINGS.to_dict("w")
    del record["pca"], record["pca_dims"]
    assert VideoSettings.from_dict(record) == SETTINGS


def test_settings_pca_needs_fc7() -> None:
    with pytest.raises(ValueError, match="--layer fc7"):
        VideoSettings(layer="fc6", pca_dims=500)


def test_settings_pca_description_required() -> None:
    with pytest.raises(ValueError, match="inconsistent PCA settings"):
        VideoSettings(layer="fc7", pca_dims=500).to_dict("w")


def test_settings_pca_description_without_dims_rejected() -> None:
    with pytest.raises(ValueError, match="inconsistent PCA settings"):
        SETTINGS.to_dict("w", "pca.hdf5 sha256=0123")


def test_settings_from_text_record_rejected() -> None:
    with pytest.raises(ValueError, match="kind 'video'"):
        VideoSettings.from_dict({"kind": "text", "model": "c3d"})


@pytest.mark.parametrize(
    "changes",
    [
        {"layer": "fc8"},
        {"clip_stride": 0},
        {"crop_size": 200},
        {"clip_length": 2.5},
        {"layer": "fc7", "pca_dims": 0},
        {"layer": "fc7", "pca_dims": 4097},
        {"layer": "fc7", "pca_dims": True},
    ],
)
def test_settings_invalid_rejected(changes: dict) -> None:
    with pytest.raises(ValueError, match="invalid"):
        VideoSettings(**changes)


# Decoding


def test_decode_clip_count_and_shape(tmp_path: Path) -> None:
    path = write_video(tmp_path / "a.mp4", 40)
    with open_clip_reader(path, SETTINGS) as reader:
        batches = list(reader.batches(3))
        assert reader.decoder == "decord"
        assert reader.fps == FPS
        assert reader.num_frames == 40
        assert reader.duration == pytest.approx(4.0)
    assert [len(b) for b in batches] == [3, 1]
    assert batches[0].shape[1:] == (16, 112, 112, 3)
    assert batches[0].dtype == np.uint8


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_decode_frame_order(tmp_path: Path, decoder: str) -> None:
    clips = decode_all(write_video(tmp_path / "a.mp4", 32), decoder, batch_size=2)
    # Clip i frame j is source frame 8 * i + j, also across the batch boundary.
    for i, j in [(0, 0), (0, 15), (1, 0), (1, 9), (2, 0), (2, 15)]:
        expected = GREY_STEP * (8 * i + j)
        assert abs(grey_level(clips[i, j]) - expected) < GREY_TOLERANCE, (i, j)


def test_decode_short_video_padded(tmp_path: Path) -> None:
    clips = decode_all(write_video(tmp_path / "short.mp4", 10))
    assert clips.shape == (1, 16, 112, 112, 3)
    assert abs(grey_level(clips[0, 9]) - GREY_STEP * 9) < GREY_TOLERANCE
    for j in range(10, 16):
        np.testing.assert_array_equal(clips[0, j], clips[0, 9])


def test_decode_pyav_matches_decord(tmp_path: Path) -> None:
    path = write_video(tmp_path / "a.mp4", 24)
    from_decord = decode_all(path, "decord").astype(np.int16)
    from_pyav = decode_all(path, "pyav").astype(np.int16)
    assert from_pyav.shape == from_decord.shape
    assert np.abs(from_pyav - from_decord).mean() < 2.0


def test_decode_chunks_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_video(tmp_path / "a.mp4", 44)
    sizes: list[int] = []
    original = DecordClipReader._frame_chunks

    def recording(self: DecordClipReader, chunk_size: int):
        for chunk in original(self, chunk_size):
            sizes.append(len(chunk))
            yield chunk

    monkeypatch.setattr(DecordClipReader, "_frame_chunks", recording)
    with open_clip_reader(path, SETTINGS) as reader:
        assert len(list(reader.batches(1))) == 4
    # Batches of 1 clip read 16 frames at a time, and stop at frame 40, where the last clip
    # ends, not at the 44th frame of the file.
    assert sizes == [16, 16, 8]


@pytest.mark.skipif("libsvtav1" not in av.codecs_available, reason="PyAV here has no AV1 encoder")
def test_decode_av1_falls_back(tmp_path: Path) -> None:
    path = write_video(tmp_path / "av1.mp4", 24, codec="libsvtav1", width=64, height=64)
    with open_clip_reader(path, SETTINGS) as reader:
        clips = np.concatenate(list(reader.batches(8)))
        assert reader.decoder == "pyav"
    assert len(clips) == 2


def test_decode_text_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("not a video\n" * 20)
    with pytest.raises(InvalidInputError, match="notes.mp4"):
        open_clip_reader(path, SETTINGS)


def test_decode_empty_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(InvalidInputError, match=r"empty.mp4 is empty"):
        open_clip_reader(path, SETTINGS)


def test_decode_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not found"):
        open_clip_reader(tmp_path / "gone.mp4", SETTINGS)


def test_decode_zero_frames_rejected(tmp_path: Path) -> None:
    path = write_video(tmp_path / "blank.mp4", 0)
    with pytest.raises(InvalidInputError, match="blank.mp4"):
        decode_all(path)


def test_decode_zero_fps_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no valid frame rate"):
        ClipReader(tmp_path / "a.mp4", SETTINGS, fps=0.0, num_frames=10)


def test_decode_decord_zero_fps_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_video(tmp_path / "a.mp4", 24)
    monkeypatch.setattr(decord.VideoReader, "get_avg_fps", lambda self: 0.0)
    with open_clip_reader(path, SETTINGS) as reader:
        assert reader.decoder == "pyav"
        assert reader.fps == FPS


@pytest.mark.skipif(not REAL_VIDEO.is_file(), reason=f"real video {REAL_VIDEO} is absent")
def test_decode_real_video() -> None:
    with open_clip_reader(REAL_VIDEO, SETTINGS) as reader:
        num_clips = sum(len(batch) for batch in reader.batches(8))
        assert reader.decoder == "decord"
        assert reader.num_frames == 355
        assert reader.fps == pytest.approx(19.62, abs=0.005)
        assert reader.duration == pytest.approx(18.16, abs=0.005)
    assert num_clips == (355 - 16) // 8 + 1
    times = clip_times(num_clips, reader.fps, reader.duration, SETTINGS)
    np.testing.assert_allclose(times[-1], [336 / 19.62, 352 / 19.62], rtol=1e-4)


# Finding videos


def test_find_videos_sorted_and_filtered(tmp_path: Path) -> None:
    for name in ["b.mp4", "a.MKV", "c.webm", "notes.txt", "d.mp4.part"]:
        (tmp_path / name).touch()
    (tmp_path / "sub.mp4").mkdir()
    found = [p.name for p in find_videos(tmp_path)]
    assert found == ["a.MKV", "b.mp4", "c.webm"]


def test_find_videos_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not found"):
        find_videos(tmp_path / "nothing")


def test_find_videos_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").touch()
    with pytest.raises(InvalidInputError, match=r"\.mp4"):
        find_videos(tmp_path)


# C3D


def test_c3d_feature_shapes(model: C3D) -> None:
    clips = torch.zeros(1, 3, 16, 112, 112)
    with torch.inference_mode():
        fc6 = model.features(clips, "fc6")
        fc7 = model.features(clips, "fc7")
    assert fc6.shape == (1, FEATURE_DIM)
    assert fc7.shape == (1, FEATURE_DIM)
    assert bool((fc6 >= 0).all())


def test_c3d_logits_shape(model: C3D) -> None:
    with torch.inference_mode():
        logits = model(torch.zeros(1, 3, 16, 112, 112))
    assert logits.shape == (1, 487)


def test_c3d_wrong_input_rejected(model: C3D) -> None:
    with pytest.raises(ValueError, match="expected"):
        model.features(torch.zeros(1, 3, 8, 112, 112))


def test_clips_to_input_layout() -> None:
    clips = np.zeros((2, 16, 112, 112, 3), np.uint8)
    clips[..., 0] = 200
    tensor = clips_to_input(clips)
    assert tensor.shape == (2, 3, 16, 112, 112)
    assert float(tensor[0, 0, 0, 0, 0]) == 200 - SPORTS1M_MEAN_RGB[0]
    assert float(tensor[1, 2, 15, 111, 111]) == -SPORTS1M_MEAN_RGB[2]


# Weights


def test_random_init_repeatable(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with caplog.at_level(logging.WARNING):
        first, description = load_c3d(None, "cpu")
    assert torch.equal(torch.rand(3), expected_next)  # global RNG untouched
    second, _ = load_c3d(None, "cpu")
    assert description == RANDOM_INIT_DESCRIPTION
    assert torch.equal(first.conv1.weight, second.conv1.weight)
    assert "no learned meaning" in caplog.text


def c3d_shapes() -> dict[str, torch.Size]:
    with torch.device("meta"):  # shapes only, no memory and no initialisation
        return {key: value.shape for key, value in C3D().state_dict().items()}


def tiny_state_dict() -> dict[str, torch.Tensor]:
    """Return a C3D state dict of the right shapes whose file takes a few kilobytes."""
    # An expanded tensor is saved as its single-element storage.
    return {key: torch.zeros(1).expand(shape) for key, shape in c3d_shapes().items()}


def test_weights_round_trip(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(1)
    state = {}
    for key, shape in c3d_shapes().items():
        # Tensors over a million values get one random value each, expanded, which keeps the
        # file at a few MB instead of the 312 MB of a full C3D.
        full = shape.numel() <= 1_000_000
        state[key] = torch.randn(shape if full else (1,), generator=generator).expand(shape)
    path = tmp_path / "c3d.pickle"
    torch.save(state, path)
    model, description = load_c3d(path, "cpu")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert description == f"c3d.pickle sha256={digest}"
    assert torch.equal(model.conv2.weight, state["conv2.weight"])
    assert torch.equal(model.fc6.weight, state["fc6.weight"])
    assert torch.equal(model.conv5b.bias, state["conv5b.bias"])
    assert not model.training


def test_weights_missing_key_rejected(tmp_path: Path) -> None:
    state = tiny_state_dict()
    del state["conv3b.bias"]
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(InvalidInputError, match=r"bad\.pt.*'conv3b\.bias' is missing"):
        load_c3d(path, "cpu")


def test_weights_wrong_shape_rejected(tmp_path: Path) -> None:
    state = tiny_state_dict()
    state["fc8.weight"] = torch.zeros(101, 4096)
    state["fc8.bias"] = torch.zeros(101)
    path = tmp_path / "ucf.pt"
    torch.save(state, path)
    with pytest.raises(InvalidInputError, match=r"ucf\.pt.*'fc8\.weight' has shape \(101, 4096\)"):
        load_c3d(path, "cpu")


def test_weights_extra_key_rejected(tmp_path: Path) -> None:
    state = tiny_state_dict()
    state["fc9.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pt"
    torch.save(state, path)
    with pytest.raises(InvalidInputError, match="unexpected key 'fc9.weight'"):
        load_c3d(path, "cpu")


def test_weights_pickled_model_rejected(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(InvalidInputError, match="model.pt"):
        load_c3d(path, "cpu")


# Extraction


def test_extract_video_features(tmp_path: Path, model: C3D) -> None:
    result = extract_video(write_video(tmp_path / "a.mp4", 24), model, SETTINGS)
    assert result.features.shape == (2, FEATURE_DIM)
    assert result.features.dtype == np.float32
    np.testing.assert_allclose(result.clip_times, [[0.0, 1.6], [0.8, 2.4]])
    assert result.num_frames == 24
    assert result.decoder == "decord"


def test_extract_video_decord_failure_redone(
    tmp_path: Path, model: C3D, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(self: DecordClipReader, chunk_size: int):
        raise DecodeError("decord failed on frames 0-15 (simulated)")
        yield  # makes this a generator, as the method it replaces

    monkeypatch.setattr(DecordClipReader, "_frame_chunks", failing)
    result = extract_video(write_video(tmp_path / "short.mp4", 10), model, SETTINGS)
    assert result.decoder == "pyav"
    assert result.features.shape == (1, FEATURE_DIM)


def test_extract_videos_resume(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "long.mp4", 24)
    write_video(videos / "short.mp4", 10)
    (videos / "broken.mp4").write_text("not a video\n" * 20)
    out = tmp_path / "video.h5"
    seen: list[str] = []

    summary = extract_videos(find_videos(videos), out, SETTINGS, progress=seen.append)
    assert sorted(summary.written) == ["long", "short"]
    assert [key for key, _ in summary.failed] == ["broken"]
    assert "broken.mp4" in summary.failed[0][1]
    assert sorted(seen) == ["broken", "long", "short"]

    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["settings"]) == SETTINGS.to_dict(RANDOM_INIT_DESCRIPTION)
        group = f["long"]
        assert group["features"].shape == (2, FEATURE_DIM)
        assert group["features"].dtype == np.float32
        assert group["clip_times"].dtype == np.float64
        assert group.attrs["fps"] == FPS
        assert group.attrs["num_frames"] == 24
        assert group.attrs["duration"] == pytest.approx(2.4)
        assert group.attrs["decoder"] == "decord"
        assert group.attrs["source"] == str((videos / "long.mp4").resolve())
        np.testing.assert_allclose(f["short"]["clip_times"][:], [[0.0, 1.0]])

    rerun = extract_videos(find_videos(videos), out, SETTINGS)
    assert sorted(rerun.skipped) == ["long", "short"]
    assert rerun.written == []

    with h5py.File(out, "a") as f:
        del f["short"].attrs["complete"]
    redo = extract_videos(find_videos(videos), out, SETTINGS)
    assert redo.written == ["short"]
    assert redo.skipped == ["long"]


def test_extract_videos_duplicate_stem(tmp_path: Path) -> None:
    first = write_video(tmp_path / "clip.mp4", 10)
    second = write_video(tmp_path / "clip.avi", 10, codec="mjpeg")
    summary = extract_videos([first, second], tmp_path / "video.h5", SETTINGS)
    assert summary.written == ["clip"]
    assert [key for key, _ in summary.failed] == ["clip"]
    assert "duplicate video id" in summary.failed[0][1]
    assert "clip.avi" in summary.failed[0][1]


def test_extract_videos_settings_mismatch(tmp_path: Path) -> None:
    out = tmp_path / "video.h5"
    extract_videos([], out, SETTINGS)
    with pytest.raises(CacheSettingsError, match="layer"):
        extract_videos([], out, VideoSettings(layer="fc7"))


def test_extract_videos_resumes_cache_without_pca_keys(tmp_path: Path) -> None:
    out = tmp_path / "video.h5"
    extract_videos([], out, SETTINGS)
    legacy = SETTINGS.to_dict(RANDOM_INIT_DESCRIPTION)
    del legacy["pca"], legacy["pca_dims"]
    with h5py.File(out, "a") as f:
        f.attrs["settings"] = json.dumps(legacy)

    summary = extract_videos([], out, SETTINGS)
    assert summary.ok


def test_extract_videos_pca_file_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="inconsistent PCA settings"):
        extract_videos([], tmp_path / "video.h5", VideoSettings(layer="fc7", pca_dims=3))


def test_extract_videos_non_c3d_settings_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="clip_length"):
        extract_videos([], tmp_path / "video.h5", VideoSettings(clip_length=8))
