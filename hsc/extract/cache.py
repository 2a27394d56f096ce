"""HDF5 feature caches shared by the video and the text stage.

A cache is one HDF5 file. Its root attribute ``settings`` holds, as JSON, the settings that
produced every entry, so a cache never mixes features made in different ways. Each entry is a
group named by its key (a video id or a paragraph id) holding arrays and attributes. The
attribute ``complete`` is written last: a group without it was interrupted and is redone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

log = logging.getLogger(__name__)

SETTINGS_ATTR = "settings"
COMPLETE_ATTR = "complete"


class CacheSettingsError(ValueError):
    """An existing cache was written with settings other than the requested ones."""


class InvalidInputError(ValueError):
    """One input (a video, a paragraph) cannot be processed; the message gives the reason and the fix."""


def check_key(key: str) -> str:
    """Return ``key`` if it can name an HDF5 group, else raise ``InvalidInputError``."""
    if not key or "/" in key or key in (".", ".."):
        raise InvalidInputError(f"invalid id {key!r}: an id must be non-empty and contain no '/'")
    return key


def settings_differences(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """Return ``"key: first vs second"`` for each setting that differs; empty when they match.

    A key that is missing on one side and None on the other counts as equal, so a setting added
    later with a None default does not invalidate older records.
    """
    keys = sorted(set(first) | set(second))
    return [f"{k}: {first.get(k)!r} vs {second.get(k)!r}" for k in keys if first.get(k) != second.get(k)]


class FeatureCache:
    """An HDF5 file of entries that all share one settings record.

    Opening a new file stores ``settings``; opening an existing one checks that its stored
    settings equal ``settings`` and raises ``CacheSettingsError`` naming the differences if not.
    A key that is missing on one side and None on the other counts as equal, so a setting added
    later with a None default does not invalidate older caches.
    """

    def __init__(self, path: str | Path, settings: dict[str, Any]):
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings))  # normalise tuples to lists
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open_hdf5(self.path, "a")
        stored = self._file.attrs.get(SETTINGS_ATTR)
        if stored is None:
            self._file.attrs[SETTINGS_ATTR] = json.dumps(self.settings, sort_keys=True)
            self._file.flush()
            return
        stored = json.loads(stored)
        diffs = settings_differences(stored, self.settings)
        if diffs:
            self._file.close()
            raise CacheSettingsError(
                f"{self.path} was written with other settings (cache vs requested: {'; '.join(diffs)}). "
                "Write to a new --out file, or delete this one to start over."
            )

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_complete(self, key: str) -> bool:
        group = self._file.get(key)
        return isinstance(group, h5py.Group) and bool(group.attrs.get(COMPLETE_ATTR, False))

    def keys(self) -> list[str]:
        return [k for k in self._file.keys() if self.is_complete(k)]

    def write(self, key: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
        """Replace the entry ``key`` with ``arrays`` and ``attrs``, then mark it complete."""
        check_key(key)
        if key in self._file:
            del self._file[key]
        group = self._file.create_group(key)
        for name, value in arrays.items():
            value = np.asarray(value)
            if value.dtype.kind == "U":
                value = value.astype(h5py.string_dtype())
            group.create_dataset(name, data=value)
        for name, value in attrs.items():
            group.attrs[name] = value
        group.attrs[COMPLETE_ATTR] = True
        self._file.flush()


@dataclass
class BatchSummary:
    """Outcome of a batch run: ids written, ids already complete, and failures with reasons."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def run_batch(
    cache: FeatureCache,
    items: Iterable[tuple[str, Any]],
    compute: Callable[[str, Any], tuple[dict[str, np.ndarray], dict[str, Any]]],
    progress: Callable[[str], None] | None = None,
) -> BatchSummary:
    """Compute and store every item not yet complete in ``cache``.

    ``compute(key, item)`` returns ``(arrays, attrs)`` for one entry. A failing item is logged
    and recorded in the summary and the batch goes on, so one bad input never loses the entries
    already written. ``progress(key)`` is called after each item, whatever its outcome.
    """
    summary = BatchSummary()
    for key, item in items:
        try:
            check_key(key)
            if cache.is_complete(key):
                summary.skipped.append(key)
                continue
            arrays, attrs = compute(key, item)
            cache.write(key, arrays, attrs)
            summary.written.append(key)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # noqa: BLE001 - isolate one bad input from the batch
            log.error("%s: %s", key, error)
            log.debug("traceback for %s", key, exc_info=True)
            summary.failed.append((key, f"{type(error).__name__}: {error}"))
        finally:
            if progress is not None:
                progress(key)
    return summary


def open_hdf5(path: str | Path, mode: str = "r") -> h5py.File:
    """Open an HDF5 file, raising ``InvalidInputError`` that names the file when that fails."""
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder; pass an HDF5 file path")
    if mode == "r" and not path.is_file():
        raise InvalidInputError(f"feature file not found: {path}")
    try:
        return h5py.File(path, mode)
    except OSError as error:
        raise InvalidInputError(f"{path} is not a readable HDF5 file ({error}); pass a cache written by hsc") from None


def read_settings(path: str | Path) -> dict[str, Any]:
    """Return the settings record of the cache at ``path`` ({} for a file without one)."""
    with open_hdf5(path) as f:
        stored = f.attrs.get(SETTINGS_ATTR)
    return json.loads(stored) if stored is not None else {}


def iter_complete(path: str | Path) -> Iterator[tuple[str, h5py.Group]]:
    """Yield ``(key, group)`` for each complete entry of the cache at ``path``."""
    with h5py.File(path, "r") as f:
        for key, group in f.items():
            if isinstance(group, h5py.Group) and group.attrs.get(COMPLETE_ATTR, False):
                yield key, group
