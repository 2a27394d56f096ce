"""Datasets that pair a text cache with a video cache, and batching with masks.

A paragraph's ``video`` attribute names its video. Three video cache layouts are read:

- a cache from ``hsc extract-video``: a group per video with the dataset ``features``;
- the public ActivityNet-Captions file ``sub_activitynet_v1-3.c3d.hdf5``: a group per video
  with the dataset ``c3d_features`` (500-d);
- the public TACoS file ``tall_c3d_features.hdf5``: one 4096-d dataset per video at the root.

A video id is looked up as given, then without its file extension, so the TACoS id
``s13-d21.avi`` finds a dataset named ``s13-d21.avi`` or ``s13-d21``. ``docs/features.md``
describes the public files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from hsc.extract.cache import COMPLETE_ATTR, SETTINGS_ATTR, InvalidInputError, read_settings

log = logging.getLogger(__name__)

# Dataset names of the clip features inside a video's group, in lookup order.
FEATURE_DATASETS = ("features", "c3d_features")


def resample_clips(features: np.ndarray, num_clips: int) -> np.ndarray:
    """Average ``features`` (T, D) into ``num_clips`` equal bins when T > num_clips.

    Shorter videos are returned unchanged and padded later, so no clip is invented.
    """
    total = features.shape[0]
    if total <= num_clips:
        return features
    edges = np.linspace(0, total, num_clips + 1)
    starts = np.floor(edges[:-1]).astype(int)
    ends = np.maximum(starts + 1, np.floor(edges[1:]).astype(int))
    return np.stack([features[s:e].mean(0) for s, e in zip(starts, ends)]).astype(np.float32)


def prepare_clips(features: np.ndarray, num_clips: int, normalize: bool) -> np.ndarray:
    """Optionally L2-normalise each clip feature, then resample to at most ``num_clips`` clips."""
    if normalize:
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        features = features / np.maximum(norms, 1e-12)
    return resample_clips(features.astype(np.float32), num_clips)


def video_id_candidates(video_id: str) -> list[str]:
    """Return the keys under which ``video_id`` may be stored in a video cache."""
    candidates = [video_id]
    stem = video_id.rsplit(".", 1)[0]
    if stem != video_id:
        candidates.append(stem)
    return candidates


class VideoFeatureStore:
    """Read-only access to clip features in any of the supported video cache layouts.

    Raises ``InvalidInputError`` when the file is missing, is not HDF5, or contains features of
    different sizes.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InvalidInputError(f"video feature file not found: {self.path}")
        if not h5py.is_hdf5(self.path):
            raise InvalidInputError(
                f"video feature file {self.path} is not HDF5: expected a cache from hsc "
                "extract-video or a public C3D feature file"
            )
        self._file: h5py.File | None = None
        with h5py.File(self.path, "r") as f:
            # Only caches written by hsc carry a settings record. In them, an entry without
            # the complete mark was interrupted; the public files have no such mark.
            needs_mark = SETTINGS_ATTR in f.attrs
            dims: dict[int, str] = {}
            self.keys: set[str] = set()
            for key, node in f.items():
                dataset = self._features_of(node, needs_mark)
                if dataset is not None:
                    self.keys.add(key)
                    dims.setdefault(dataset.shape[1], key)
        if len(dims) > 1:
            examples = ", ".join(f"{key} is {dim}-d" for dim, key in sorted(dims.items()))
            raise InvalidInputError(
                f"{self.path} mixes clip features of different sizes ({examples}); use a file "
                "whose videos were all extracted with the same settings"
            )
        self.dim = next(iter(dims), 0)

    @staticmethod
    def _features_of(node: h5py.Group | h5py.Dataset, needs_mark: bool) -> h5py.Dataset | None:
        """Return the (clips, dim) dataset of one entry, or None when the entry has none."""
        if isinstance(node, h5py.Dataset):
            return node if node.ndim == 2 else None
        if needs_mark and not node.attrs.get(COMPLETE_ATTR, False):
            return None
        for name in FEATURE_DATASETS:
            dataset = node.get(name)
            if isinstance(dataset, h5py.Dataset) and dataset.ndim == 2:
                return dataset
        return None

    @staticmethod
    def _read(f: h5py.File, key: str) -> np.ndarray:
        node = f[key]
        if isinstance(node, h5py.Dataset):
            return node[()].astype(np.float32)
        for name in FEATURE_DATASETS:
            if name in node:
                return node[name][()].astype(np.float32)
        raise InvalidInputError(f"{key} in {f.filename} contains none of the datasets {FEATURE_DATASETS}")

    def resolve(self, video_id: str) -> str | None:
        """Return the key storing ``video_id``, or None when the cache lacks it."""
        for candidate in video_id_candidates(video_id):
            if candidate in self.keys:
                return candidate
        return None

    def read(self, key: str) -> np.ndarray:
        """Return the (clips, dim) float32 features stored under ``key``."""
        # Opened on first use so that each data-loader worker gets its own handle.
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._read(self._file, key)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        return state


@dataclass
class Sample:
    """One paragraph with its video, ready for batching; spans are normalised to [0, 1]."""

    id: str
    video: str
    duration: float
    clips: np.ndarray  # (T, video_dim)
    word_vectors: np.ndarray  # (W, word_dim)
    word_sentence: np.ndarray  # (W,)
    spans: np.ndarray  # (S, 2) normalised (start, end)
    sentences: list[str]


class ParagraphDataset(Dataset):
    """Paragraphs of a text cache paired with their videos' features.

    Paragraphs whose video is missing from the video cache are left out with one warning that
    counts them; a pair of caches with no paragraph in common raises ``InvalidInputError``.
    """

    def __init__(self, video_path: str | Path, text_path: str | Path, num_clips: int, normalize_clips: bool = False):
        if Path(video_path).is_file() and read_settings(video_path).get("kind") == "text":
            raise InvalidInputError(
                f"{video_path} is a text cache; pass a video cache from hsc extract-video or a public C3D feature file"
            )
        self.videos = VideoFeatureStore(video_path)
        self.text_path = Path(text_path)
        self.num_clips = num_clips
        self.normalize_clips = normalize_clips
        if not self.text_path.is_file():
            raise InvalidInputError(f"text feature file not found: {self.text_path}")
        self._text: h5py.File | None = None
        kind = read_settings(self.text_path).get("kind")
        if kind != "text":
            raise InvalidInputError(
                f"{self.text_path} is not a text cache (its settings say kind={kind!r}); "
                "pass a file written by hsc extract-text"
            )

        self.items: list[tuple[str, str]] = []  # (paragraph id, video key)
        missing: list[str] = []
        with h5py.File(self.text_path, "r") as f:
            for key, group in f.items():
                if not isinstance(group, h5py.Group) or not group.attrs.get(COMPLETE_ATTR, False):
                    continue
                video = str(group.attrs["video"])
                resolved = self.videos.resolve(video)
                if resolved is None:
                    missing.append(video)
                else:
                    self.items.append((key, resolved))
            self.word_dim = next(
                (f[k]["word_vectors"].shape[1] for k, _ in self.items[:1]), 0
            )
        if missing:
            log.warning(
                "%d of %d paragraphs in %s have no video in %s and are left out (first: %s)",
                len(missing), len(missing) + len(self.items), self.text_path, video_path, missing[0],
            )
        if not self.items:
            raise InvalidInputError(
                f"no paragraph of {self.text_path} has its video in {video_path}; check that both "
                "caches come from the same split and that video ids match (file stems)"
            )

    @property
    def video_dim(self) -> int:
        return self.videos.dim

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        key, video_key = self.items[index]
        if self._text is None:
            self._text = h5py.File(self.text_path, "r")
        group = self._text[key]
        duration = float(group.attrs["duration"])
        timestamps = group["timestamps"][()].astype(np.float64)
        spans = np.clip(timestamps / duration, 0.0, 1.0).astype(np.float32)
        return Sample(
            id=key,
            video=str(group.attrs["video"]),
            duration=duration,
            clips=prepare_clips(self.videos.read(video_key), self.num_clips, self.normalize_clips),
            word_vectors=group["word_vectors"][()].astype(np.float32),
            word_sentence=group["word_sentence"][()].astype(np.int64),
            spans=spans,
            sentences=[s.decode() if isinstance(s, bytes) else str(s) for s in group["sentences"][()]],
        )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_text"] = None
        return state


@dataclass
class Batch:
    """Padded tensors of a list of samples; masks are True at real positions."""

    video: Tensor  # (B, T, video_dim)
    video_mask: Tensor  # (B, T)
    words: Tensor  # (B, W, word_dim)
    word_mask: Tensor  # (B, W)
    word_sentence: Tensor  # (B, W), -1 for padding
    sentence_mask: Tensor  # (B, S)
    spans: Tensor  # (B, S, 2) normalised ground truth, zeros for padding
    samples: list[Sample]

    def to(self, device: torch.device | str) -> Batch:
        moved = {
            name: getattr(self, name).to(device)
            for name in ("video", "video_mask", "words", "word_mask", "word_sentence", "sentence_mask", "spans")
        }
        return Batch(samples=self.samples, **moved)

    def model_inputs(self) -> dict[str, Tensor]:
        return {
            "video": self.video,
            "video_mask": self.video_mask,
            "words": self.words,
            "word_mask": self.word_mask,
            "word_sentence": self.word_sentence,
            "sentence_mask": self.sentence_mask,
        }


def collate(samples: list[Sample]) -> Batch:
    """Pad a list of samples into a ``Batch``."""
    B = len(samples)
    T = max(s.clips.shape[0] for s in samples)
    W = max(s.word_vectors.shape[0] for s in samples)
    S = max(s.spans.shape[0] for s in samples)
    video_dim = samples[0].clips.shape[1]
    word_dim = samples[0].word_vectors.shape[1]

    video = torch.zeros(B, T, video_dim)
    video_mask = torch.zeros(B, T, dtype=torch.bool)
    words = torch.zeros(B, W, word_dim)
    word_mask = torch.zeros(B, W, dtype=torch.bool)
    word_sentence = torch.full((B, W), -1, dtype=torch.long)
    sentence_mask = torch.zeros(B, S, dtype=torch.bool)
    spans = torch.zeros(B, S, 2)
    for i, s in enumerate(samples):
        t, w, n = s.clips.shape[0], s.word_vectors.shape[0], s.spans.shape[0]
        video[i, :t] = torch.from_numpy(s.clips)
        video_mask[i, :t] = True
        words[i, :w] = torch.from_numpy(s.word_vectors)
        word_mask[i, :w] = True
        word_sentence[i, :w] = torch.from_numpy(s.word_sentence)
        sentence_mask[i, :n] = True
        spans[i, :n] = torch.from_numpy(s.spans)
    return Batch(video, video_mask, words, word_mask, word_sentence, sentence_mask, spans, samples)
