"""PCA reduction of C3D fc7 features, as in the public ActivityNet C3D features.

The public ActivityNet-Captions features (``sub_activitynet_v1-3.c3d.hdf5``, 500-d) are C3D fc7
activations reduced by PCA. The PCA model is published next to them as
``PCA_activitynet_v1-3.hdf5``, whose datasets ``data/x_mean``, ``data/U`` and ``data/S``
contain the mean, the eigenvectors and the eigenvalues. The reduction is a plain projection without
whitening, as the features' author documents for the same kind of file in the DAPs repository
(escorciav/daps, ``data/models/README.md``)::

    x_reduced = (x - x_mean) @ U[:, :num_components]

``S`` is read and checked but not used. ``docs/features.md`` lists the sources and what is not
verified.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hsc.extract.c3d import FEATURE_DIM
from hsc.extract.cache import InvalidInputError
from hsc.extract.vectors import file_description

log = logging.getLogger(__name__)

DEFAULT_PCA_DIMS = 500
# Dataset names, and the HDF5 groups searched for them in order: the public ActivityNet file
# keeps them in the group "data", the DAPs THUMOS14 file at the root.
PCA_DATASETS = ("x_mean", "U", "S")
PCA_GROUPS = ("data", "")
# Largest deviation of U's selected columns from orthonormality that is accepted. float32
# eigenvectors of a 4096-d covariance deviate by about 1e-6.
ORTHONORMAL_TOLERANCE = 1e-3


@dataclass(frozen=True)
class PCAProjection:
    """The mean and leading principal axes that reduce 4096-d C3D features."""

    mean: np.ndarray  # (4096,) float64
    components: np.ndarray  # (4096, dims) float64, column j is principal axis j
    description: str  # "<file name> sha256=<first 16 hex digits>"

    @property
    def dims(self) -> int:
        """Number of components kept."""
        return self.components.shape[1]

    def project(self, features: np.ndarray) -> np.ndarray:
        """Reduce (clips, 4096) features to (clips, dims) float32: ``(x - mean) @ components``."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"invalid features for PCA {self.description}: expected (clips, "
                f"{self.mean.shape[0]}), got {features.shape}"
            )
        centred = features.astype(np.float64) - self.mean
        return (centred @ self.components).astype(np.float32)


def load_pca(path: Path, dims: int = DEFAULT_PCA_DIMS) -> PCAProjection:
    """Read a PCA model and keep its ``dims`` leading components.

    ``path`` is an HDF5 file with the datasets ``x_mean``, ``U`` and ``S`` in the group
    ``data`` (the layout of ``PCA_activitynet_v1-3.hdf5``) or at the root, or an ``.npz`` file
    with arrays of those names. ``x_mean`` contains 4096 values. ``U`` contains one principal axis
    per column, shape (4096, k), or per row, shape (k, 4096). ``S`` contains k eigenvalues in
    decreasing order. Raises ``InvalidInputError`` naming the file and the dataset that does
    not fit.
    """
    path = Path(path)
    if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
        raise ValueError(f"invalid number of PCA components {dims!r}: expected an integer >= 1")
    if not path.is_file():
        raise InvalidInputError(f"PCA file {path} not found: pass an existing .hdf5 or .npz file")

    arrays, prefix = _read_arrays(path)
    mean = _check_mean(path, prefix, arrays["x_mean"])
    components = _check_components(path, prefix, arrays["U"], dims)
    _check_eigenvalues(path, prefix, arrays["S"], dims)

    description = file_description(path)
    log.info("loaded PCA %s: %d of %d components", description, dims, FEATURE_DIM)
    return PCAProjection(mean=mean, components=components, description=description)


def _read_arrays(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """Return the arrays x_mean, U and S of ``path`` and the prefix naming them in messages."""
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                return _pick(path, npz), ""
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise InvalidInputError(
                f"cannot read PCA file {path} as .npz ({error}). Save it with "
                "numpy.savez(path, x_mean=..., U=..., S=...)."
            ) from error

    if not h5py.is_hdf5(path):
        raise InvalidInputError(
            f"PCA file {path} is neither HDF5 nor .npz: expected PCA_activitynet_v1-3.hdf5 or an "
            ".npz file with the arrays x_mean, U and S"
        )
    with h5py.File(path, "r") as f:
        for group in PCA_GROUPS:
            node = f.get(group) if group else f
            if isinstance(node, h5py.Group) and all(
                isinstance(node.get(name), h5py.Dataset) for name in PCA_DATASETS
            ):
                prefix = f"{group}/" if group else ""
                return {name: node[name][()] for name in PCA_DATASETS}, prefix
        found = []
        f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    raise InvalidInputError(
        f"PCA file {path} contains no datasets data/x_mean, data/U and data/S (nor x_mean, U and S "
        f"at the root); it contains: {', '.join(found) or 'no datasets'}"
    )


def _pick(path: Path, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [name for name in PCA_DATASETS if name not in arrays]
    if missing:
        raise InvalidInputError(
            f"PCA file {path} lacks the arrays {', '.join(missing)}: expected x_mean, U and S"
        )
    return {name: np.asarray(arrays[name]) for name in PCA_DATASETS}


def _check_mean(path: Path, prefix: str, mean: np.ndarray) -> np.ndarray:
    # (1, 4096), as the public file stores it, and (4096,) are both accepted.
    if mean.ndim > 2 or mean.size != FEATURE_DIM or max(mean.shape, default=0) != FEATURE_DIM:
        raise InvalidInputError(
            f"PCA file {path}: dataset {prefix}x_mean has shape {mean.shape}, expected "
            f"({FEATURE_DIM},) or (1, {FEATURE_DIM}) to match C3D fc7 features"
        )
    mean = mean.astype(np.float64).reshape(FEATURE_DIM)
    if not np.isfinite(mean).all():
        raise InvalidInputError(f"PCA file {path}: dataset {prefix}x_mean contains NaN or infinite values")
    return mean


def _check_components(path: Path, prefix: str, axes: np.ndarray, dims: int) -> np.ndarray:
    name = f"{prefix}U"
    if axes.ndim != 2 or FEATURE_DIM not in axes.shape:
        raise InvalidInputError(
            f"PCA file {path}: dataset {name} has shape {axes.shape}, expected ({FEATURE_DIM}, k) "
            f"with one principal axis per column, or (k, {FEATURE_DIM})"
        )
    # A square U is read column-wise, as the DAPs README does.
    # NOTE: no public code from the authors reads PCA_activitynet_v1-3.hdf5 itself, so its
    # orientation is taken from that README, not checked against the file.
    by_column = axes.shape[0] == FEATURE_DIM
    available = axes.shape[1] if by_column else axes.shape[0]
    if dims > available:
        raise InvalidInputError(
            f"PCA file {path}: dataset {name} has shape {axes.shape}, so {available} components, "
            f"fewer than the {dims} requested; lower --pca-dims to at most {available}"
        )
    components = axes[:, :dims] if by_column else axes[:dims].T
    components = components.astype(np.float64)
    if not np.isfinite(components).all():
        raise InvalidInputError(f"PCA file {path}: dataset {name} contains NaN or infinite values")

    deviation = np.abs(components.T @ components - np.eye(dims)).max()
    if deviation > ORTHONORMAL_TOLERANCE:
        raise InvalidInputError(
            f"PCA file {path}: the first {dims} principal axes in dataset {name} are not "
            f"orthonormal (largest deviation of U^T U from the identity: {deviation:.3g}). "
            "Expected unit eigenvectors, not axes scaled for whitening."
        )
    return components


def _check_eigenvalues(path: Path, prefix: str, eigenvalues: np.ndarray, dims: int) -> None:
    name = f"{prefix}S"
    # (k,) and (1, k) are both accepted.
    is_vector = eigenvalues.ndim == 1 or (eigenvalues.ndim == 2 and min(eigenvalues.shape) == 1)
    if not is_vector or eigenvalues.size < dims:
        raise InvalidInputError(
            f"PCA file {path}: dataset {name} has shape {eigenvalues.shape}, expected a vector "
            f"of at least {dims} eigenvalues"
        )
    leading = eigenvalues.reshape(-1)[:dims].astype(np.float64)
    if not np.isfinite(leading).all():
        raise InvalidInputError(f"PCA file {path}: dataset {name} contains NaN or infinite values")
    # The leading components are only the first ones when the eigenvalues decrease.
    if np.any(np.diff(leading) > 0):
        raise InvalidInputError(
            f"PCA file {path}: the first {dims} values of dataset {name} do not decrease, so the "
            "first principal axes in U are not the leading ones; sort S and U by decreasing S"
        )


__all__ = ["DEFAULT_PCA_DIMS", "PCAProjection", "load_pca"]
