"""Training settings and the named presets that bundle them with a model configuration."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from hsc.model.config import HSCNetConfig
from hsc.pipeline.evaluate import IOU_THRESHOLDS


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run."""

    # Selects the recall thresholds: "activitynet", "tacos", or "custom" (ActivityNet's).
    dataset: str = "activitynet"
    # Clips per video after resampling (N^V in the HSCNet paper, Tan et al., CVPR 2023).
    num_clips: int = 256
    batch_size: int = 32
    epochs: int = 20
    # Adam at 1e-4 without weight decay, as published for HSCNet.
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    # Gradient-norm clip. HSCNet's publication gives none; clipping guards the LSTMs early on.
    grad_clip: float = 1.0
    seed: int = 0
    # L2-normalise each clip feature before resampling, as the evaluated code of 2D-TAN, DepNet
    # and PRVG does for the public C3D features (their configs set NORMALIZE: True).
    normalize_clips: bool = False
    # Count a recall hit at IoU > m (True) or IoU >= m (False). The public evaluators of
    # 2D-TAN, DepNet and PRVG count IoU > m; see hsc/pipeline/evaluate.py.
    iou_strict: bool = True

    def __post_init__(self) -> None:
        if self.dataset not in (*IOU_THRESHOLDS, "custom"):
            raise ValueError(f"unknown dataset {self.dataset!r}; expected activitynet, tacos or custom")
        for name in ("num_clips", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

    @property
    def iou_thresholds(self) -> tuple[float, ...]:
        return IOU_THRESHOLDS.get(self.dataset, IOU_THRESHOLDS["activitynet"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)


@dataclass(frozen=True)
class Preset:
    model: HSCNetConfig
    train: TrainConfig


# The settings published for HSCNet (Tan et al., CVPR 2023, section 4.2). The epoch counts are
# not published, so these are our choice.
PRESETS: dict[str, Preset] = {
    "activitynet": Preset(
        HSCNetConfig(word_layers=1, sentence_layers=1, paragraph_layers=1),
        TrainConfig(dataset="activitynet", num_clips=256, batch_size=32, epochs=20, normalize_clips=True),
    ),
    "tacos": Preset(
        HSCNetConfig(word_layers=3, sentence_layers=3, paragraph_layers=3),
        TrainConfig(dataset="tacos", num_clips=512, batch_size=16, epochs=60, normalize_clips=True),
    ),
    # Small enough to train in a minute or two on a 2-core CPU, for `hsc demo` and tests.
    "demo": Preset(
        HSCNetConfig(hidden_size=64, num_heads=4, video_encoder_layers=1, text_encoder_layers=1, dropout=0.1),
        TrainConfig(dataset="custom", num_clips=32, batch_size=8, epochs=80, learning_rate=1e-3),
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def override(config: Any, values: dict[str, Any]) -> Any:
    """Return a copy of a config dataclass with the non-None ``values`` replaced."""
    return replace(config, **{k: v for k, v in values.items() if v is not None})
