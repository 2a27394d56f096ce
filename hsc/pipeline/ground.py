"""Ground the sentences of one paragraph in one raw video with a trained checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hsc.extract.c3d import load_c3d
from hsc.extract.cache import InvalidInputError
from hsc.extract.text import encode_paragraph, split_paragraph, tokenize
from hsc.extract.vectors import load_word_vectors
from hsc.extract.video import VideoSettings, extract_video
from hsc.pipeline.data import Sample, collate, resample_clips
from hsc.pipeline.presets import TrainConfig
from hsc.pipeline.train import load_checkpoint


def read_paragraph(path: Path) -> list[str]:
    """Return the sentences of a paragraph file (one per line, or running text)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"paragraph file not found: {path}")
    sentences = split_paragraph(path.read_text(encoding="utf-8"))
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


@torch.no_grad()
def ground_paragraph(
    video: Path,
    paragraph: Path,
    checkpoint: Path,
    weights: Path | None = None,
    vectors: Path | None = None,
    device: str = "cpu",
    batch_size: int = 8,
) -> dict[str, Any]:
    """Extract the video's and the paragraph's features as at training time and ground them.

    Returns ``{"video", "duration", "paragraph": {"start", "end"}, "sentences": [{"text",
    "start", "end"}]}`` with times in seconds. The paragraph's span is the paragraph decoder's
    prediction when the model has one, else the hull of the sentence predictions.
    """
    video, paragraph, checkpoint = Path(video), Path(paragraph), Path(checkpoint)
    if not video.is_file():
        raise InvalidInputError(f"video file not found: {video}")
    model, payload = load_checkpoint(checkpoint, device)
    video_settings, text_settings = payload["video_settings"], payload["text_settings"]
    if video_settings.get("kind") != "video":
        raise InvalidInputError(
            f"{checkpoint} was trained on video features that hsc extract-video did not make, so "
            "ground cannot recompute them from a raw video; train on features from hsc extract-video"
        )
    train_config = TrainConfig.from_dict(payload["train_config"])

    # Text: the same tokeniser and word vectors as the training cache.
    sentences = read_paragraph(paragraph)
    word_vectors = load_word_vectors(vectors)
    check_same(text_settings.get("vectors", ""), word_vectors.description, "word vectors", "--vectors", checkpoint)
    encoded = encode_paragraph(sentences, tokenize, word_vectors)

    # Video: the same decoder settings and C3D weights as the training cache.
    c3d, weights_description = load_c3d(weights, device)
    check_same(video_settings.get("weights", ""), weights_description, "C3D features", "--weights", checkpoint)
    features = extract_video(video, c3d, VideoSettings.from_dict(video_settings), device=device, batch_size=batch_size)

    sample = Sample(
        id=video.stem,
        video=video.stem,
        duration=features.duration,
        clips=resample_clips(features.features, train_config.num_clips),
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
