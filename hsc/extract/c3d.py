"""C3D, the 3D convolutional network of Tran et al., "Learning Spatiotemporal Features with 3D
Convolutional Networks" (ICCV 2015), as a feature extractor.

Parameter names and shapes are those of ``C3D_model.py`` in the widely used PyTorch port of the
Sports-1M model (DavideA/c3d-pytorch): ``conv1.weight``, ``conv1.bias``, ... ``fc8.bias``. So
the port's state dict ``c3d.pickle`` matches key for key (checked against that file's code, not
against the weights, which cannot be downloaded here).

Input: a float tensor (batch, 3, 16, 112, 112) of RGB values in 0-255 minus
``SPORTS1M_MEAN_RGB``; ``clips_to_input`` makes it from decoded uint8 clips.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hsc.extract.cache import InvalidInputError

log = logging.getLogger(__name__)

FEATURE_LAYERS = ("fc6", "fc7")
FEATURE_DIM = 4096
SPORTS1M_CLASSES = 487
RANDOM_INIT_SEED = 0
RANDOM_INIT_DESCRIPTION = f"random-init seed={RANDOM_INIT_SEED}"

# Per-channel mean subtracted from 0-255 RGB input. The Caffe C3D of facebook/C3D subtracts the
# Sports-1M mean clip (sport1m_train16_128_mean.binaryproto, one value per frame, pixel and
# channel), so the learned weights expect roughly zero-centred input. jfzhang95/
# pytorch-video-recognition (inference.py) subtracts the per-channel values (90, 98, 102) from
# OpenCV's BGR frames; this constant is the same mean in RGB order.
# NOTE: the port's predict.py feeds raw 0-255 RGB without mean subtraction, and the Caffe model
# read BGR frames. Neither choice has been checked against the pretrained weights here.
SPORTS1M_MEAN_RGB = (102.0, 98.0, 90.0)


class C3D(nn.Module):
    """C3D with the Sports-1M layer layout: 8 conv layers, 5 max-pool layers, fc6, fc7 and fc8.

    ``features`` returns the activations of fc6 or fc7 after their ReLU, which is what the next
    layer of the trained network receives, so every value is non-negative. The Caffe feature
    extractor of facebookarchive/C3D writes the same values, because its relu6 and relu7 layers
    work in place on the fc6-1 and fc7-1 blobs (c3d_sport1m_feature_extractor_frm.prototxt).
    Dropout never applies in ``features``, so its output does not depend on train or eval mode.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _conv(3, 64)
        self.pool1 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))

        self.conv2 = _conv(64, 128)
        self.pool2 = nn.MaxPool3d(kernel_size=2, stride=2)

        self.conv3a = _conv(128, 256)
        self.conv3b = _conv(256, 256)
        self.pool3 = nn.MaxPool3d(kernel_size=2, stride=2)

        self.conv4a = _conv(256, 512)
        self.conv4b = _conv(512, 512)
        self.pool4 = nn.MaxPool3d(kernel_size=2, stride=2)

        self.conv5a = _conv(512, 512)
        self.conv5b = _conv(512, 512)
        # The padding turns the 7x7 map of pool4 into 4x4, so 512 * 1 * 4 * 4 = 8192 inputs to fc6.
        self.pool5 = nn.MaxPool3d(kernel_size=2, stride=2, padding=(0, 1, 1))

        self.fc6 = nn.Linear(8192, FEATURE_DIM)
        self.fc7 = nn.Linear(FEATURE_DIM, FEATURE_DIM)
        self.fc8 = nn.Linear(FEATURE_DIM, SPORTS1M_CLASSES)
        self.dropout = nn.Dropout(p=0.5)

    def _fc6(self, clips: torch.Tensor) -> torch.Tensor:
        h = self.pool1(F.relu(self.conv1(clips)))
        h = self.pool2(F.relu(self.conv2(h)))
        h = self.pool3(F.relu(self.conv3b(F.relu(self.conv3a(h)))))
        h = self.pool4(F.relu(self.conv4b(F.relu(self.conv4a(h)))))
        h = self.pool5(F.relu(self.conv5b(F.relu(self.conv5a(h)))))
        # Flatten channel-major, as the port does, so that fc6 weights line up.
        return F.relu(self.fc6(torch.flatten(h, start_dim=1)))

    def features(self, clips: torch.Tensor, layer: str = "fc6") -> torch.Tensor:
        """Compute the post-ReLU activations of ``layer`` ("fc6" or "fc7"), shape (batch, 4096)."""
        if layer not in FEATURE_LAYERS:
            raise ValueError(f"invalid C3D layer {layer!r}: expected one of {FEATURE_LAYERS}")
        _check_input_shape(clips)
        h = self._fc6(clips)
        if layer == "fc7":
            h = F.relu(self.fc7(h))
        return h

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Compute the Sports-1M class logits, shape (batch, 487)."""
        _check_input_shape(clips)
        h = self.dropout(self._fc6(clips))
        h = self.dropout(F.relu(self.fc7(h)))
        return self.fc8(h)


def _conv(in_channels: int, out_channels: int) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)


def _check_input_shape(clips: torch.Tensor) -> None:
    if clips.ndim != 5 or tuple(clips.shape[1:]) != (3, 16, 112, 112):
        raise ValueError(
            f"invalid C3D input shape {tuple(clips.shape)}: expected (batch, 3, 16, 112, 112)"
        )


def clips_to_input(clips: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """Convert uint8 RGB clips (batch, frames, height, width, 3) to a mean-subtracted float
    tensor (batch, 3, frames, height, width) on ``device``."""
    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(
            f"invalid clips: expected uint8 (batch, frames, height, width, 3), "
            f"got {clips.dtype} {clips.shape}"
        )
    # Move uint8 to the device first: a quarter of the bytes of float32.
    tensor = torch.from_numpy(clips).to(device).permute(0, 4, 1, 2, 3).float()
    mean = torch.tensor(SPORTS1M_MEAN_RGB, dtype=torch.float32, device=tensor.device)
    return tensor - mean.view(1, 3, 1, 1, 1)


def load_c3d(weights: Path | None, device: str = "cpu") -> tuple[C3D, str]:
    """Build a C3D in eval mode on ``device`` and describe its weights.

    With ``weights``, load that state dict (``torch.load(..., weights_only=True)``) and check
    that its keys and shapes match C3D exactly; the description is
    ``"<file name> sha256=<first 16 hex digits>"``. Without, initialise from seed 0 without
    touching the global torch RNG, log a warning, and describe it as ``"random-init seed=0"``.
    Raises ``InvalidInputError`` naming the file and the first mismatching key.
    """
    if weights is None:
        model = _random_c3d()
        description = RANDOM_INIT_DESCRIPTION
        log.warning(
            "no C3D weights given: using random weights (seed %d); the features carry no "
            "learned meaning. Pass the Sports-1M state dict to get meaningful features.",
            RANDOM_INIT_SEED,
        )
    else:
        weights = Path(weights)
        model = C3D()
        model.load_state_dict(_read_state_dict(weights, model))
        description = f"{weights.name} sha256={_sha256(weights)[:16]}"
        log.info("loaded C3D weights %s", description)
    return model.to(device).eval(), description


def _random_c3d() -> C3D:
    # Parameters are initialised on the CPU from the global CPU generator. fork_rng restores
    # that generator afterwards, and seeding only it (not torch.manual_seed, which also seeds
    # CUDA) leaves every other RNG stream of the caller unchanged.
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(RANDOM_INIT_SEED)
        return C3D()


def _read_state_dict(path: Path, model: C3D) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise InvalidInputError(
            f"C3D weights file {path} not found: pass an existing state-dict file"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise InvalidInputError(
            f"cannot read C3D weights {path}: it contains pickled objects other than tensors. "
            "Expected a plain state dict, saved with torch.save(model.state_dict(), path)."
        ) from error
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as error:
        # torch.load raises KeyError or EOFError, among others, for files that are not checkpoints.
        raise InvalidInputError(
            f"cannot read C3D weights {path} ({type(error).__name__}: {error}). "
            "Expected a state dict saved with torch.save(model.state_dict(), path)."
        ) from error

    if not isinstance(state, dict):
        raise InvalidInputError(
            f"C3D weights {path} contain a {type(state).__name__}, expected a state dict "
            "(a mapping from parameter names such as 'conv1.weight' to tensors)"
        )
    _check_state_dict(path, state, model.state_dict())
    return state


def _check_state_dict(
    path: Path, state: dict[str, object], expected: dict[str, torch.Tensor]
) -> None:
    for key, reference in expected.items():
        if key not in state:
            raise InvalidInputError(
                f"C3D weights {path} do not match C3D: key {key!r} is missing. "
                f"Expected the keys of the Sports-1M port: {', '.join(expected)}."
            )
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != reference.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InvalidInputError(
                f"C3D weights {path} do not match C3D: key {key!r} has shape {shape}, "
                f"expected {tuple(reference.shape)}"
            )
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise InvalidInputError(
            f"C3D weights {path} do not match C3D: unexpected key {unexpected[0]!r} "
            f"({len(unexpected)} unexpected in all)"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
