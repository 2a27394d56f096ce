"""Text features: sentences -> spaCy tokens -> word vectors -> HDF5 text cache.

Tokens come from spaCy's rule-based English tokenizer (``spacy.blank("en")``, no trained
model). Each token is lowercased to match GloVe 6B, which has only lowercase words, and
whitespace and punctuation tokens are dropped.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import spacy
from spacy.language import Language

from hsc.extract.annotations import DEFAULT_MAX_SENTENCES, Paragraph, read_annotations
from hsc.extract.cache import BatchSummary, FeatureCache, InvalidInputError, run_batch
from hsc.extract.vectors import WordVectors, load_word_vectors

log = logging.getLogger(__name__)

TOKENIZER_NAME = "spacy blank en"


@functools.lru_cache(maxsize=1)
def _pipeline() -> Language:
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return nlp


def tokenize(sentence: str) -> list[str]:
    """Split ``sentence`` into lowercase word tokens, dropping whitespace and punctuation."""
    return [
        token.lower_
        for token in _pipeline().tokenizer(sentence)
        if not (token.is_space or token.is_punct)
    ]


def split_paragraph(text: str) -> list[str]:
    """Split paragraph text into sentences.

    Text with several non-empty lines gives one sentence per non-empty line. Text on one line
    is split by spaCy's rule-based sentencizer, which ends a sentence at ``.``, ``!`` or ``?``.
    Raises ``InvalidInputError`` for text without any sentence.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        return lines
    sentences = [span.text.strip() for span in _pipeline()(text).sents if span.text.strip()]
    if not sentences:
        raise InvalidInputError("the paragraph text is empty. Give at least one sentence.")
    return sentences


@dataclass
class EncodedParagraph:
    """Word vectors of one paragraph, flattened over its sentences."""

    word_vectors: np.ndarray  # float32 (W, dim)
    word_sentence: np.ndarray  # int32 (W,), 0-based sentence index of each word
    words: list[str]
    oov_words: int


def encode_paragraph(
    sentences: Sequence[str],
    tokenizer: Callable[[str], list[str]],
    vectors: WordVectors,
) -> EncodedParagraph:
    """Tokenize each sentence and look up its word vectors.

    Raises ``InvalidInputError`` naming the sentence index and text when a sentence yields no
    token, since the grounding model needs at least one word per sentence.
    """
    words: list[str] = []
    word_sentence: list[int] = []
    for index, sentence in enumerate(sentences):
        tokens = tokenizer(sentence)
        if not tokens:
            raise InvalidInputError(
                f"sentence {index} ({sentence!r}) has no words after dropping punctuation and "
                "whitespace; reword or remove it"
            )
        words.extend(tokens)
        word_sentence.extend([index] * len(tokens))
    word_vectors, oov = vectors.lookup(words)
    return EncodedParagraph(
        word_vectors=word_vectors,
        word_sentence=np.asarray(word_sentence, dtype=np.int32),
        words=words,
        oov_words=int(oov.sum()),
    )


def text_record(
    paragraph: Paragraph, encoded: EncodedParagraph, video: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Return the arrays and attributes that a text cache stores for one paragraph."""
    arrays = {
        "word_vectors": encoded.word_vectors,
        "word_sentence": encoded.word_sentence,
        "words": np.asarray(encoded.words, dtype=str),
        "sentences": np.asarray(paragraph.sentences, dtype=str),
        "timestamps": np.asarray(paragraph.timestamps, dtype=np.float64).reshape(-1, 2),
    }
    attrs = {"video": video, "duration": float(paragraph.duration), "oov_words": encoded.oov_words}
    return arrays, attrs


def text_settings(vectors: WordVectors, max_sentences: int = DEFAULT_MAX_SENTENCES) -> dict[str, Any]:
    """Return the settings record of a text cache built with ``vectors``.

    ``max_sentences`` is recorded because it decides how TACoS paragraphs are cut.
    """
    return {
        "kind": "text",
        "vectors": vectors.description,
        "dim": vectors.dim,
        "tokenizer": TOKENIZER_NAME,
        "lowercase": True,
        "max_sentences": max_sentences,
    }


@dataclass
class TextExtractionResult:
    """Outcome of one ``extract_text`` run.

    ``words`` and ``oov_words`` count the paragraphs written in this run, not those that an
    earlier run had already completed.
    """

    summary: BatchSummary
    format: str
    words: int = 0
    oov_words: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)

    @property
    def oov_rate(self) -> float:
        """Fraction of written words without a vector (0.0 when nothing was written)."""
        return self.oov_words / self.words if self.words else 0.0


def extract_text(
    annotations: Path,
    out: Path,
    vectors_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
    max_sentences: int = DEFAULT_MAX_SENTENCES,
) -> TextExtractionResult:
    """Read an annotation file and write one text cache entry per paragraph to ``out``.

    ``vectors_path`` is a GloVe text file, and None selects GloVe 6B 50-d. Entries already
    complete in ``out`` are kept, so an interrupted run resumes. A paragraph that fails (for
    example a sentence without words) is recorded in the summary and the others are written.
    ``max_sentences`` bounds TACoS chunks (see ``read_annotations``). Raises
    ``CacheSettingsError`` when ``out`` was written with other vectors.
    """
    fmt, paragraphs, rejected = read_annotations(Path(annotations), max_sentences=max_sentences)
    vectors = load_word_vectors(vectors_path)
    # Word counts per computed paragraph. Only those that were also written are summed.
    counts: dict[str, tuple[int, int]] = {}

    def compute(key: str, paragraph: Paragraph) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        encoded = encode_paragraph(paragraph.sentences, tokenize, vectors)
        counts[key] = (len(encoded.words), encoded.oov_words)
        return text_record(paragraph, encoded, paragraph.video)

    with FeatureCache(out, text_settings(vectors, max_sentences)) as cache:
        summary = run_batch(cache, ((p.id, p) for p in paragraphs), compute, progress=progress)
    result = TextExtractionResult(
        summary=summary,
        format=fmt,
        words=sum(counts[key][0] for key in summary.written),
        oov_words=sum(counts[key][1] for key in summary.written),
        rejected=rejected,
    )
    log.info(
        "%s -> %s: %d written, %d already complete, %d failed, %d rejected, "
        "%d words, %d without a vector (%.2f%%)",
        annotations, out, len(result.summary.written), len(result.summary.skipped),
        len(result.summary.failed), len(rejected), result.words, result.oov_words,
        100 * result.oov_rate,
    )
    return result
