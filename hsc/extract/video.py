"""Video stage: decode videos into 16-frame clips and store their C3D features in an HDF5 cache.

Each video is decoded with decord, or with PyAV when decord cannot open or read it (decord 0.6
cannot open AV1, for example). Frames are resized to ``frame_height`` x ``frame_width``,
centre-cropped to ``crop_size`` squared and cut into clips of ``clip_length`` frames every
``clip_stride`` frames. Clip ``i`` covers frames ``[i * stride, i * stride + length)``. Frames
after the last full clip are not used. A video shorter than one clip gives one clip, padded with
copies of its last frame.

With a PCA model (``pca_dims`` set, layer fc7), the 4096-d features are reduced as the public
ActivityNet C3D features were (see ``hsc.extract.pca``).

Decoding (``open_clip_reader`` and ``ClipReader.batches``, which yield uint8 clip batches) is
kept apart from the network forward (``compute_features``), so that decoding can move to another
process without touching the model code.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import av
import decord
import h5py
import numpy as np
import torch
import torch.nn.functional as F

from hsc.extract.c3d import C3D, FEATURE_DIM, FEATURE_LAYERS, clips_to_input, load_c3d
from hsc.extract.cache import (
    SETTINGS_ATTR,
    BatchSummary,
    FeatureCache,
    InvalidInputError,
    run_batch,
)
from hsc.extract.pca import PCAProjection, load_pca

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".avi", ".flv", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".webm")

# C3D's fc6 takes 512 * 1 * 4 * 4 inputs, which only clips of 16 frames of 112 x 112 give.
C3D_CLIP_LENGTH = 16
C3D_CROP_SIZE = 112


@dataclass(frozen=True)
class VideoSettings:
    """Frame size, crop, clip layout and C3D layer of a video feature cache."""

    frame_height: int = 128
    frame_width: int = 171
    crop_size: int = 112
    clip_length: int = 16
    clip_stride: int = 8
    layer: str = "fc6"
    # Principal components kept after PCA, or None to store the 4096-d activations.
    pca_dims: int | None = None

    def __post_init__(self) -> None:
        for name in ("frame_height", "frame_width", "crop_size", "clip_length", "clip_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"invalid video setting {name}={value!r}: expected an integer >= 1"
                )
        if self.crop_size > min(self.frame_height, self.frame_width):
            raise ValueError(
                f"invalid video settings: crop_size {self.crop_size} is larger than the frame "
                f"({self.frame_height} x {self.frame_width})"
            )
        if self.layer not in FEATURE_LAYERS:
            raise ValueError(f"invalid C3D layer {self.layer!r}: expected one of {FEATURE_LAYERS}")
        self._check_pca_dims()

    def _check_pca_dims(self) -> None:
        dims = self.pca_dims
        if dims is None:
            return
        if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= FEATURE_DIM:
            raise ValueError(
                f"invalid video setting pca_dims={dims!r}: expected an integer from 1 to "
                f"{FEATURE_DIM}, or None"
            )
        # The public PCA model was fit on fc7 activations, so it means nothing for fc6.
        if self.layer != "fc7":
            raise ValueError(
                f"invalid video settings: PCA reduction applies to fc7 features, the layer the "
                f"public PCA model was fit on, but the layer is {self.layer!r}. Use layer fc7 "
                "(hsc extract-video --layer fc7)."
            )

    @property
    def feature_dim(self) -> int:
        """Size of each stored clip feature: ``pca_dims`` after PCA, else 4096."""
        return self.pca_dims if self.pca_dims is not None else FEATURE_DIM

    def to_dict(
        self, weights_description: str, pca_description: str | None = None
    ) -> dict[str, Any]:
        """Return the settings record stored in a video cache's root attribute ``settings``.

        ``pca_description`` names the PCA file (``"<file name> sha256=<16 hex>"``) and must be
        given exactly when ``pca_dims`` is set.
        """
        if (pca_description is None) != (self.pca_dims is None):
            raise ValueError(
                f"inconsistent PCA settings: pca_dims is {self.pca_dims!r} but the PCA "
                f"description is {pca_description!r}; give both or neither"
            )
        return {
            "kind": "video",
            "model": "c3d",
            "layer": self.layer,
            "frame_height": self.frame_height,
            "frame_width": self.frame_width,
            "crop_size": self.crop_size,
            "clip_length": self.clip_length,
            "clip_stride": self.clip_stride,
            "weights": weights_description,
            "pca": pca_description,
            "pca_dims": self.pca_dims,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> VideoSettings:
        """Build settings from a record made by ``to_dict``; ``weights`` and ``pca`` are not
        part of them. A record without ``pca_dims``, written before PCA support, means no PCA."""
        if record.get("kind") != "video" or record.get("model") != "c3d":
            raise ValueError(
                f"invalid video settings record: expected kind 'video' and model 'c3d', got "
                f"kind {record.get('kind')!r} and model {record.get('model')!r}"
            )
        names = [f.name for f in fields(cls) if f.name != "pca_dims"]
        missing = [name for name in names if name not in record]
        if missing:
            raise ValueError(f"invalid video settings record: missing {', '.join(missing)}")
        values = {name: record[name] for name in names}
        return cls(**values, pca_dims=record.get("pca_dims"))


@dataclass(frozen=True)
class VideoFeatures:
    """C3D features of one video with the time span of each clip."""

    features: np.ndarray  # (clips, 4096) float32, or (clips, pca_dims) after PCA
    clip_times: np.ndarray  # (clips, 2) float64 start and end in seconds
    fps: float
    num_frames: int
    duration: float  # seconds
    decoder: str  # "decord" or "pyav"


class DecodeError(InvalidInputError):
    """A decoder cannot open a video or decode one of its frames."""


def count_clips(num_frames: int, settings: VideoSettings) -> int:
    """Return the number of clips cut from ``num_frames`` frames (1 for 1 to clip_length frames)."""
    if num_frames < 1:
        return 0
    if num_frames <= settings.clip_length:
        return 1
    return (num_frames - settings.clip_length) // settings.clip_stride + 1


def clip_times(num_clips: int, fps: float, duration: float, settings: VideoSettings) -> np.ndarray:
    """Return (num_clips, 2) clip start and end times in seconds.

    Clip ``i`` spans frames ``[i * stride, i * stride + length)``, so it starts at
    ``i * stride / fps`` and ends at ``(i * stride + length) / fps``, clamped to ``duration``.
    """
    starts = np.arange(num_clips, dtype=np.float64) * settings.clip_stride
    times = np.stack([starts, starts + settings.clip_length], axis=1) / fps
    return np.minimum(times, duration)


class ClipReader:
    """Decoder of one video into batches of uint8 clips (batch, length, crop, crop, 3), RGB.

    Memory stays bounded by the batch size, whatever the video length: frames are decoded in
    chunks of ``max(batch_size * clip_stride, clip_length)`` and dropped once no later clip
    needs them.
    """

    decoder = ""

    def __init__(self, path: Path, settings: VideoSettings, fps: float, num_frames: int):
        self.path = path
        self.settings = settings
        self.fps = _check_fps(path, fps)
        # decord reads the count from the container when opening. PyAV counts frames while
        # decoding, so its count is final only once batches() has been exhausted.
        self.num_frames = num_frames
        self._container_duration: float | None = None

    @property
    def duration(self) -> float:
        """Duration in seconds: the container's if it records one, else frames / fps."""
        if self._container_duration is not None and self._container_duration > 0:
            return self._container_duration
        return self.num_frames / self.fps

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield clips in batches of ``batch_size`` (the last batch may be smaller).

        Raises ``InvalidInputError`` naming the file if no frame can be decoded, and
        ``DecodeError`` if decoding fails part way.
        """
        if batch_size < 1:
            raise ValueError(f"invalid batch_size {batch_size}: expected >= 1")
        settings = self.settings
        length, stride = settings.clip_length, settings.clip_stride
        chunk_size = max(batch_size * stride, length)

        pending = np.empty((0, settings.crop_size, settings.crop_size, 3), np.uint8)
        pending_start = 0  # frame index of pending[0]
        next_start = 0  # first frame of the next clip
        batch: list[np.ndarray] = []
        frames_seen = 0
        for chunk in self._frame_chunks(chunk_size):
            frames_seen += len(chunk)
            pending = np.concatenate([pending, self._crop(chunk)])
            while next_start + length <= pending_start + len(pending):
                offset = next_start - pending_start
                batch.append(pending[offset : offset + length])
                next_start += stride
                if len(batch) == batch_size:
                    yield np.stack(batch)
                    batch = []
            # Keep only frames that a later clip can still use.
            drop = min(next_start - pending_start, len(pending))
            pending = pending[drop:]
            pending_start += drop

        if frames_seen == 0:
            raise InvalidInputError(
                f"video {self.path} has no decodable frames ({self.decoder}). "
                "Check the file, for example with ffprobe, or re-encode it."
            )
        if next_start == 0:
            padding = np.repeat(pending[-1:], length - len(pending), axis=0)
            batch.append(np.concatenate([pending, padding]))
        if batch:
            yield np.stack(batch)

    def close(self) -> None:
        """Release the decoder."""

    def __enter__(self) -> ClipReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _frame_chunks(self, chunk_size: int) -> Iterator[np.ndarray]:
        """Yield consecutive resized frames (n, frame_height, frame_width, 3) uint8 from frame 0."""
        raise NotImplementedError

    def _crop(self, frames: np.ndarray) -> np.ndarray:
        size = self.settings.crop_size
        top = (frames.shape[1] - size) // 2
        left = (frames.shape[2] - size) // 2
        return frames[:, top : top + size, left : left + size]


class DecordClipReader(ClipReader):
    """Clip reader on decord, which resizes while decoding (FFmpeg's scaler)."""

    decoder = "decord"

    def __init__(self, path: Path, settings: VideoSettings):
        try:
            self._reader = decord.VideoReader(
                str(path),
                ctx=decord.cpu(0),
                width=settings.frame_width,
                height=settings.frame_height,
            )
            num_frames = len(self._reader)
            fps = float(self._reader.get_avg_fps())
            # Decode one frame now, so that a file decord opens but cannot decode falls back to
            # PyAV before any clip is yielded.
            if num_frames > 0:
                self._reader.get_batch([0])
        except (decord.DECORDError, RuntimeError) as error:
            raise DecodeError(f"decord cannot read {path}: {_first_line(error)}") from error
        if not math.isfinite(fps) or fps <= 0:
            # PyAV falls back to the stream's guessed rate, which decord does not read.
            raise DecodeError(f"decord reports no valid frame rate for {path} (got {fps})")
        super().__init__(path, settings, fps, num_frames)
        self._container_duration = _probe_duration(path)

    def _frame_chunks(self, chunk_size: int) -> Iterator[np.ndarray]:
        settings = self.settings
        clips = count_clips(self.num_frames, settings)
        if self.num_frames >= settings.clip_length:
            stop = (clips - 1) * settings.clip_stride + settings.clip_length
        else:
            stop = self.num_frames
        for start in range(0, stop, chunk_size):
            indices = list(range(start, min(start + chunk_size, stop)))
            try:
                frames = self._reader.get_batch(indices)
            except (decord.DECORDError, RuntimeError) as error:
                raise DecodeError(
                    f"decord failed on frames {indices[0]}-{indices[-1]} of {self.path}: "
                    f"{_first_line(error)}"
                ) from error
            # get_batch returns a torch tensor instead when decord.bridge was set to torch.
            yield frames.asnumpy() if hasattr(frames, "asnumpy") else np.asarray(frames)

    def close(self) -> None:
        self._reader = None


class PyAVClipReader(ClipReader):
    """Clip reader on PyAV; frames are resized with torch (bilinear, antialiased)."""

    decoder = "pyav"

    def __init__(self, path: Path, settings: VideoSettings):
        try:
            self._container = av.open(str(path))
        except (av.FFmpegError, OSError) as error:
            raise DecodeError(f"PyAV cannot open {path}: {_first_line(error)}") from error
        if not self._container.streams.video:
            self._container.close()
            raise InvalidInputError(f"{path} contains no video stream: expected a video file")
        self._stream = self._container.streams.video[0]
        rate = self._stream.average_rate or self._stream.guessed_rate
        fps = float(rate) if rate else 0.0
        try:
            super().__init__(path, settings, fps, int(self._stream.frames))
        except InvalidInputError:
            self._container.close()
            raise
        if self._container.duration is not None:
            self._container_duration = self._container.duration / av.time_base

    def _frame_chunks(self, chunk_size: int) -> Iterator[np.ndarray]:
        frames: list[np.ndarray] = []
        decoded = 0
        try:
            for frame in self._container.decode(self._stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                decoded += 1
                if len(frames) == chunk_size:
                    yield self._resize(frames)
                    frames = []
        except av.FFmpegError as error:
            raise DecodeError(
                f"PyAV failed after frame {decoded} of {self.path}: {_first_line(error)}"
            ) from error
        if frames:
            yield self._resize(frames)
        self.num_frames = decoded

    def _resize(self, frames: list[np.ndarray]) -> np.ndarray:
        # One interpolate call per run of equally sized frames: per-frame calls cost several
        # times more on a loaded machine. The frame size may change within a stream.
        height, width = self.settings.frame_height, self.settings.frame_width
        runs: list[np.ndarray] = []
        start = 0
        for end in range(1, len(frames) + 1):
            if end == len(frames) or frames[end].shape != frames[start].shape:
                runs.append(_resize_rgb(np.stack(frames[start:end]), height, width))
                start = end
        return np.concatenate(runs) if len(runs) > 1 else runs[0]

    def close(self) -> None:
        self._container.close()


def open_clip_reader(path: Path, settings: VideoSettings, decoder: str | None = None) -> ClipReader:
    """Open ``path`` for clip reading with ``decoder`` ("decord" or "pyav").

    With ``decoder=None``, try decord first and PyAV if decord cannot open or decode the file.

    Raises ``InvalidInputError`` naming the file when it is missing, empty or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"video {path} not found: expected an existing video file")
    if path.stat().st_size == 0:
        raise InvalidInputError(f"video {path} is empty (0 bytes): replace it with a complete copy")
    if decoder == "decord":
        return DecordClipReader(path, settings)
    if decoder == "pyav":
        return PyAVClipReader(path, settings)
    if decoder is not None:
        raise ValueError(f"invalid decoder {decoder!r}: expected 'decord', 'pyav' or None")

    try:
        return DecordClipReader(path, settings)
    except DecodeError as decord_error:
        log.info("%s; trying PyAV", decord_error)
        try:
            return PyAVClipReader(path, settings)
        except DecodeError as pyav_error:
            raise InvalidInputError(
                f"failed to decode video {path}. {decord_error}. {pyav_error}. Check that the "
                "file is a complete video, or re-encode it (for example to H.264)."
            ) from pyav_error


def compute_features(
    model: C3D, clip_batches: Iterable[np.ndarray], layer: str, device: str = "cpu"
) -> np.ndarray:
    """Run C3D on uint8 clip batches and return the ``layer`` activations (clips, 4096) float32."""
    outputs = []
    with torch.inference_mode():
        for clips in clip_batches:
            activations = model.features(clips_to_input(clips, device), layer)
            outputs.append(activations.float().cpu().numpy())
    if not outputs:
        return np.empty((0, model.fc6.out_features), np.float32)
    return np.concatenate(outputs)


def extract_video(
    path: Path,
    model: C3D,
    settings: VideoSettings,
    device: str = "cpu",
    batch_size: int = 8,
    pca: PCAProjection | None = None,
) -> VideoFeatures:
    """Decode one video and compute the C3D features of its clips, reduced by ``pca`` if given.

    ``pca`` must be given exactly when ``settings.pca_dims`` is set, with that many components.
    If decord opens the file but fails part way, the whole video is decoded again with PyAV,
    so every clip of one video comes from one decoder.
    """
    _check_c3d_settings(settings)
    _check_pca(settings, pca)
    path = Path(path)
    reader = open_clip_reader(path, settings)
    try:
        return _extract_with(reader, model, device, batch_size, pca)
    except DecodeError as error:
        if reader.decoder != "decord":
            raise
        log.warning("%s; decoding %s again with PyAV", error, path)
    return _extract_with(open_clip_reader(path, settings, "pyav"), model, device, batch_size, pca)


def _extract_with(
    reader: ClipReader, model: C3D, device: str, batch_size: int, pca: PCAProjection | None
) -> VideoFeatures:
    with reader:
        batches = reader.batches(batch_size)
        features = compute_features(model, batches, reader.settings.layer, device)
    if pca is not None:
        features = pca.project(features)
    duration = reader.duration
    return VideoFeatures(
        features=features,
        clip_times=clip_times(len(features), reader.fps, duration, reader.settings),
        fps=reader.fps,
        num_frames=reader.num_frames,
        duration=duration,
        decoder=reader.decoder,
    )


def find_videos(directory: Path) -> list[Path]:
    """Return the video files directly inside ``directory`` (not in subfolders), sorted by name.

    A file counts as a video when its extension, in any case, is one of ``VIDEO_EXTENSIONS``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidInputError(f"video folder {directory} not found: expected a folder of videos")
    videos = sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
    )
    if not videos:
        raise InvalidInputError(
            f"no videos found in {directory}: expected files ending in "
            f"{', '.join(VIDEO_EXTENSIONS)}"
        )
    return videos


def extract_videos(
    paths: Sequence[Path],
    out: Path,
    settings: VideoSettings,
    weights: Path | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    progress: Callable[[str], None] | None = None,
    pca: Path | None = None,
) -> BatchSummary:
    """Extract C3D features of ``paths`` into the video cache ``out``, keyed by file stem.

    ``pca`` is a PCA file (see ``hsc.extract.pca.load_pca``), required exactly when
    ``settings.pca_dims`` is set. Videos already complete in ``out`` are skipped and
    interrupted ones are redone. One video failing (unreadable, or a file stem already taken by
    an earlier path) is recorded in the summary and the others go on. Raises
    ``CacheSettingsError`` if ``out`` was written with other settings, weights or PCA file.
    """
    _check_c3d_settings(settings)
    if batch_size < 1:
        raise ValueError(f"invalid batch_size {batch_size}: expected >= 1")
    if (pca is None) != (settings.pca_dims is None):
        raise ValueError(
            f"inconsistent PCA settings: pca_dims is {settings.pca_dims!r} but the PCA file is "
            f"{pca!r}; pass a PCA file exactly when pca_dims is set"
        )
    projection = load_pca(pca, settings.pca_dims) if pca is not None else None
    model, weights_description = load_c3d(weights, device)

    first_path: dict[str, Path] = {}
    duplicates: list[tuple[str, str]] = []
    for path in map(Path, paths):
        if path.stem in first_path:
            duplicates.append(
                (
                    path.stem,
                    f"InvalidInputError: duplicate video id {path.stem!r}: {path} has the same "
                    f"file stem as {first_path[path.stem]}, and the cache keys videos by stem. "
                    "Rename or remove one of them.",
                )
            )
        else:
            first_path[path.stem] = path

    def compute(video_id: str, path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        result = extract_video(path, model, settings, device, batch_size, projection)
        log.info(
            "%s: %d clips from %d frames (%s)",
            video_id,
            len(result.features),
            result.num_frames,
            result.decoder,
        )
        arrays = {"features": result.features, "clip_times": result.clip_times}
        attrs = {
            "fps": result.fps,
            "num_frames": result.num_frames,
            "duration": result.duration,
            "source": str(path.resolve()),
            "decoder": result.decoder,
        }
        return arrays, attrs

    pca_description = projection.description if projection is not None else None
    record = settings.to_dict(weights_description, pca_description)
    with FeatureCache(out, record) as cache:
        summary = run_batch(cache, first_path.items(), compute, progress)
    for video_id, message in duplicates:
        log.error("%s: %s", video_id, message)
        summary.failed.append((video_id, message))
        if progress is not None:
            progress(video_id)
    return summary


def _check_c3d_settings(settings: VideoSettings) -> None:
    if (settings.clip_length, settings.crop_size) != (C3D_CLIP_LENGTH, C3D_CROP_SIZE):
        raise ValueError(
            f"invalid video settings for C3D: clip_length {settings.clip_length} and crop_size "
            f"{settings.crop_size}, expected {C3D_CLIP_LENGTH} and {C3D_CROP_SIZE}"
        )


def _check_pca(settings: VideoSettings, pca: PCAProjection | None) -> None:
    expected = settings.pca_dims
    given = pca.dims if pca is not None else None
    if expected != given:
        raise ValueError(
            f"inconsistent PCA settings: pca_dims is {expected!r} but the PCA projection keeps "
            f"{given!r} components"
        )


def _check_fps(path: Path, fps: float) -> float:
    if not math.isfinite(fps) or fps <= 0:
        raise InvalidInputError(
            f"video {path} has no valid frame rate (got {fps}): clip times cannot be computed. "
            "Re-encode it with a constant frame rate, for example with ffmpeg -r 30."
        )
    return fps


def _probe_duration(path: Path) -> float | None:
    # decord 0.6 does not expose the container duration. On ActivityNet videos the container
    # value matches the annotated duration (18.16 s for v_GGSY1Qvo990), while frames / fps
    # differs (355 / 19.62 = 18.09 s).
    try:
        with av.open(str(path)) as container:
            if container.duration is None:
                return None
            return container.duration / av.time_base
    except (av.FFmpegError, OSError) as error:
        log.debug("cannot probe the duration of %s: %s", path, error)
        return None


def _resize_rgb(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 RGB frames (n, h, w, 3) to (n, height, width, 3), bilinear with antialiasing."""
    # Antialiasing brings downscaled frames close to decord's: on a 320x240 ActivityNet video
    # the mean absolute difference per pixel value drops from 2.1 to 1.3 (max 54 to 8).
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    resized = F.interpolate(
        tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )
    return resized.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0].rstrip(".") if text else type(error).__name__


__all__ = [
    "VIDEO_EXTENSIONS",
    "ClipReader",
    "DecodeError",
    "DecordClipReader",
    "PyAVClipReader",
    "VideoFeatures",
    "VideoSettings",
    "clip_times",
    "compute_features",
    "count_clips",
    "extract_video",
    "extract_videos",
    "find_videos",
    "open_clip_reader",
]
