"""Ground the sentences of one paragraph in one raw video with a trained checkpoint.

The video's features must be made as the training features were. A checkpoint trained on a
cache from ``hsc extract-video`` stores that cache's settings record, which fixes the decoding,
the C3D layer, and names the weights and PCA files. A checkpoint trained on the public
ActivityNet or TACoS C3D files stores an empty record, so the user names the C3D weights, the
PCA file and the layer, and only the resulting feature size can be checked.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hsc.extract.c3d import FEATURE_DIM, load_c3d
from hsc.extract.cache import InvalidInputError
from hsc.extract.pca import load_pca
from hsc.extract.text import encode_paragraph, split_paragraph, tokenize
from hsc.extract.vectors import file_description, load_word_vectors
from hsc.extract.video import VideoSettings, extract_video
from hsc.pipeline.data import Sample, collate, prepare_clips
from hsc.pipeline.presets import TrainConfig
from hsc.pipeline.train import load_checkpoint

log = logging.getLogger(__name__)


def read_paragraph(path: Path) -> list[str]:
    """Return the sentences of a paragraph file (one per line, or running text)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"paragraph file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InvalidInputError(f"{path} is not UTF-8 text ({error}); pass a plain-text paragraph file") from None
    try:
        sentences = split_paragraph(text)
    except InvalidInputError as error:
        raise InvalidInputError(f"{path}: {error}") from None
    if not sentences:
        raise InvalidInputError(f"{path} contains no sentence; write one sentence per line")
    return sentences


def check_same(stored: str, current: str, what: str, flag: str, checkpoint: Path) -> None:
    """Raise unless the features made now come from the same source as the training features."""
    if stored != current:
        raise InvalidInputError(
            f"{checkpoint} was trained on {what} from {stored!r}, but these would come from "
            f"{current!r}; pass {flag} with the file the training features were made with"
        )


def check_pca(stored: str | None, current: str | None, checkpoint: Path) -> None:
    """Raise unless the features made now are reduced by the same PCA file as at training."""
    if stored == current:
        return
    if stored is None:
        raise InvalidInputError(
            f"{checkpoint} was trained on features without PCA, but --pca {current!r} was "
            "given; omit --pca"
        )
    if current is None:
        raise InvalidInputError(
            f"{checkpoint} was trained on features reduced with the PCA file {stored!r}; pass "
            "--pca with that file"
        )
    check_same(stored, current, "PCA-reduced features", "--pca", checkpoint)


def recorded_video_settings(
    record: dict[str, Any], layer: str | None, checkpoint: Path
) -> VideoSettings:
    """Return the settings of a checkpoint trained on a cache from ``hsc extract-video``."""
    if record.get("kind") != "video" or record.get("model") != "c3d":
        raise InvalidInputError(
            f"{checkpoint} was trained on video features whose settings record ({record}) does "
            "not come from hsc extract-video, so ground cannot recompute them from a raw video"
        )
    try:
        settings = VideoSettings.from_dict(record)
    except ValueError as error:
        raise InvalidInputError(f"{checkpoint}: {error}") from error
    if layer is not None and layer != settings.layer:
        raise InvalidInputError(
            f"{checkpoint} was trained on C3D {settings.layer} features, but --layer {layer} was "
            f"given; omit --layer or pass --layer {settings.layer}"
        )
    return settings


def public_video_settings(
    video_dim: int, weights: Path | None, pca: Path | None, layer: str | None, checkpoint: Path
) -> VideoSettings:
    """Return the settings for a checkpoint trained on features without a settings record.

    Such features (the public ActivityNet and TACoS C3D files) come from the Sports-1M C3D, so
    ``weights`` is required. The layer defaults to fc7 with ``pca`` (the public ActivityNet
    setup) and to fc6 without. Raises ``InvalidInputError`` unless the features would have the
    model's ``video_dim``.
    """
    if weights is None:
        raise InvalidInputError(
            f"{checkpoint} was trained on pre-extracted features without a settings record (such "
            "as the public ActivityNet or TACoS C3D files), which come from the Sports-1M C3D; "
            "pass --weights with that state dict, since random weights give unrelated features"
        )
    pca_dims = None
    if pca is not None:
        pca_dims = video_dim
    if layer is None:
        layer = "fc7" if pca is not None else "fc6"
    if pca is not None and layer != "fc7":
        raise InvalidInputError(
            f"--pca reduces fc7 features, the layer the public PCA model was fit on, but --layer "
            f"{layer} was given; pass --layer fc7 or omit --layer"
        )
    try:
        settings = VideoSettings(layer=layer, pca_dims=pca_dims)
    except ValueError as error:
        raise InvalidInputError(f"cannot make {video_dim}-d features for {checkpoint}: {error}") from error
    if settings.feature_dim != video_dim:
        raise InvalidInputError(
            f"{checkpoint} expects {video_dim}-d clip features, but C3D {layer} gives "
            f"{FEATURE_DIM}-d ones; pass --pca with the PCA file the training features were "
            "reduced with (PCA_activitynet_v1-3.hdf5 for the public ActivityNet features)"
        )
    log.warning(
        "%s records no feature settings, so they cannot be checked: making C3D %s features%s of "
        "16-frame clips every 8 frames, resized to 128x171 and centre-cropped to 112x112, the "
        "settings of the public ActivityNet features as far as they are known (docs/features.md)",
        checkpoint, layer, f" reduced to {pca_dims} dimensions" if pca_dims else "",
    )
    return settings


@torch.no_grad()
def ground_paragraph(
    video: Path,
    paragraph: Path,
    checkpoint: Path,
    weights: Path | None = None,
    vectors: Path | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    pca: Path | None = None,
    layer: str | None = None,
) -> dict[str, Any]:
    """Extract the video's and the paragraph's features as at training time and ground them.

    ``weights``, ``vectors`` and ``pca`` name the C3D state dict, the GloVe file and the PCA
    file the training features were made with. ``layer`` is needed only for checkpoints trained
    on features without a settings record (see ``public_video_settings``). Returns
    ``{"video", "duration", "paragraph": {"start", "end"}, "sentences": [{"text", "start",
    "end"}]}`` with times in seconds. The paragraph's span is the paragraph decoder's
    prediction when the model has one, else the hull of the sentence predictions.
    """
    video, paragraph, checkpoint = Path(video), Path(paragraph), Path(checkpoint)
    if not video.is_file():
        raise InvalidInputError(f"video file not found: {video}")
    if pca is not None and not Path(pca).is_file():
        raise InvalidInputError(f"PCA file {pca} not found: pass an existing .hdf5 or .npz file")
    model, payload = load_checkpoint(checkpoint, device)
    video_settings, text_settings = payload["video_settings"], payload["text_settings"]
    video_dim = model.config.video_dim
    # Check every setting before the slow part: loading C3D and running it on the video.
    if video_settings:
        settings = recorded_video_settings(video_settings, layer, checkpoint)
    else:
        settings = public_video_settings(video_dim, weights, pca, layer, checkpoint)
    if settings.feature_dim != video_dim:
        raise InvalidInputError(
            f"{checkpoint} expects {video_dim}-d clip features, but its settings record gives "
            f"{settings.feature_dim}-d ones; the checkpoint is inconsistent, so retrain it"
        )
    if video_settings:
        check_pca(video_settings.get("pca"), file_description(pca) if pca is not None else None, checkpoint)
    # After the checks above, pca is given exactly when pca_dims is set.
    projection = load_pca(pca, settings.pca_dims) if pca is not None and settings.pca_dims is not None else None
    train_config = TrainConfig.from_dict(payload["train_config"])

    # Text: the same tokeniser and word vectors as the training cache.
    sentences = read_paragraph(paragraph)
    word_vectors = load_word_vectors(vectors)
    check_same(text_settings.get("vectors", ""), word_vectors.description, "word vectors", "--vectors", checkpoint)
    try:
        encoded = encode_paragraph(sentences, tokenize, word_vectors)
    except InvalidInputError as error:
        raise InvalidInputError(f"{paragraph}: {error}") from None
    if encoded.oov_words:
        log.warning(
            "%d of %d words of %s have no vector in %s; they enter the model as zeros",
            encoded.oov_words, len(encoded.words), paragraph, word_vectors.description,
        )

    # Video: the same decoder settings, C3D weights and PCA file as the training cache.
    c3d, weights_description = load_c3d(weights, device)
    if video_settings:
        check_same(video_settings.get("weights", ""), weights_description, "C3D features", "--weights", checkpoint)
    features = extract_video(video, c3d, settings, device=device, batch_size=batch_size, pca=projection)

    sample = Sample(
        id=video.stem,
        video=video.stem,
        duration=features.duration,
        clips=prepare_clips(features.features, train_config.num_clips, train_config.normalize_clips),
        word_vectors=encoded.word_vectors,
        word_sentence=encoded.word_sentence.astype(np.int64),
        spans=np.zeros((len(sentences), 2), dtype=np.float32),
        sentences=sentences,
    )
    batch = collate([sample]).to(device)
    output = model(**batch.model_inputs())

    duration = features.duration
    spans = (output.final_spans[0].clamp(0, 1).cpu().numpy().astype(np.float64) * duration).round(2)
    if output.paragraph_span is not None:
        start, end = (output.paragraph_span[0].clamp(0, 1).cpu().numpy().astype(np.float64) * duration).round(2)
    else:
        start, end = spans[:, 0].min(), spans[:, 1].max()
    return {
        "video": str(video),
        "duration": round(duration, 3),
        "paragraph": {"start": float(start), "end": float(end)},
        "sentences": [
            {"text": text, "start": float(s), "end": float(e)} for text, (s, e) in zip(sentences, spans)
        ],
    }
