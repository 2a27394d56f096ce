"""Synthetic clip features on real annotations, for the hierarchical-modelling benchmark.

The paragraphs, durations, timestamps and words come from a real annotation file. Only the clip
features are made up, and they are made so that a sentence can be found only by matching its
words with the clips:

* Each paragraph gets its own synthetic video of ``num_clips`` equal clips over its real
  duration. Clip ``t`` covers ``[t, t + 1] * duration / num_clips``.
* The video's timeline is tiled with events, each standing for one sentence. The paragraph's
  own sentences sit at their real spans. A clip belongs to a sentence by the rule of the
  alignment loss (``hsc.model.spans.clips_inside``): its centre lies in the span, or the span is
  shorter than a clip and the clip contains the span's midpoint.
* The other clips show events that the paragraph does not describe. Where the same real video
  has a sentence of another paragraph whose span overlaps none of this paragraph's spans, that
  sentence is shown at its real span (distractor events). The gaps left are filled with
  sentences of other videos of the same split, with lengths drawn from the split's real
  sentence lengths (background events). An event before the paragraph's first sentence or
  after its last one repeats one of the paragraph's sentences with ``repeat_share``.
* The clips of an event show its sentence's clip words one at a time, in sentence order. Clip
  words are content words (no spaCy stop word, with a vector), less words found in more than
  ``max_word_share`` of the split's sentences, less words that another sentence of the same
  paragraph also has (``distinctive_words``). A clip's feature is the mean of its words' unit
  GloVe vectors plus Gaussian noise, mapped by a fixed random linear projection into
  ``video_dim`` dimensions, plus Gaussian noise in that space.

Every clip is made the same way, so neither feature statistics nor timestamps tell the
paragraph's clips from the others: a model finds a sentence only by finding the clips that show
its words. ``docs/benchmarks.md`` explains the choices and what they mean for each level of
HSCNet.

The caches follow the layouts of ``hsc extract-video`` and ``hsc extract-text``, so
``hsc train`` and ``hsc evaluate`` read them unchanged. A synthetic video is keyed by its
paragraph's id. Its attribute ``fps`` is the clip rate (clips per second) and ``num_frames``
the clip count, because a synthetic video has no frames.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from spacy.lang.en.stop_words import STOP_WORDS

from hsc.extract.annotations import Paragraph, read_annotations
from hsc.extract.cache import BatchSummary, FeatureCache, InvalidInputError, run_batch
from hsc.extract.text import encode_paragraph, text_record, text_settings, tokenize
from hsc.extract.vectors import WordVectors, default_vectors
from hsc.model.spans import clips_inside

log = logging.getLogger(__name__)

# Bump when the features made for the same settings change, so an old cache is not reused.
GENERATOR_VERSION = 1
VIDEO_CACHE_NAME = "{split}_video.h5"
TEXT_CACHE_NAME = "{split}_text.h5"

# Roles of a timeline segment.
PARAGRAPH_SENTENCE = "sentence"
DISTRACTOR = "distractor"
BACKGROUND = "background"
REPEAT = "repeat"


@dataclass(frozen=True)
class GeneratorConfig:
    """Settings of the synthetic clip features; all of them are stored in the video cache."""

    num_clips: int = 64
    video_dim: int = 256
    # Clip words of its event that one clip shows; their unit vectors are averaged.
    words_per_clip: int = 1
    # Standard deviation of the noise added to each component of the unit word mean (50-d for
    # GloVe 6B 50-d) before the projection, and to each feature after it.
    word_noise: float = 0.05
    feature_noise: float = 0.05
    # Words found in more than this share of a split's sentences are not shown in clips.
    max_word_share: float = 0.2
    # True: a sentence's clips show only its words that no other sentence of its paragraph has
    # (all of its words when it has none of its own).
    distinctive_words: bool = True
    # True: the clips of an event show its words in the order of its sentence, each word over
    # an equal share of the event. False: each clip shows words drawn at random from it.
    ordered_words: bool = True
    # Chance that an event outside the paragraph's extent (before its first or after its last
    # sentence) repeats the words of one of the paragraph's sentences.
    repeat_share: float = 0.3
    # Seed of the random projection, shared by every split so that train, val and test match.
    projection_seed: int = 0
    # Seed of the paragraph subsets, the timelines and the noise.
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_clips", "video_dim", "words_per_clip"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.repeat_share <= 1.0:
            raise ValueError(f"repeat_share must be in [0, 1], got {self.repeat_share}")
        if not 0.0 < self.max_word_share <= 1.0:
            raise ValueError(f"max_word_share must be in (0, 1], got {self.max_word_share}")
        for name in ("word_noise", "feature_noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")


@dataclass(frozen=True)
class Segment:
    """One event of a synthetic timeline: clips ``[first_clip, last_clip]`` show ``words``.

    ``role`` is one of "sentence", "distractor", "background" and "repeat". A "sentence" event
    shows the paragraph's sentence number ``sentence``. A "distractor" shows a sentence of
    another paragraph of the same real video at its real span, and a "background" event a
    sentence of another video. A "repeat" shows a sentence of the paragraph outside the
    paragraph's extent. ``sentence`` is -1 for all roles but "sentence".
    """

    first_clip: int
    last_clip: int
    role: str
    sentence: int
    words: tuple[str, ...]


@dataclass(frozen=True)
class SplitCaches:
    """Paths and paragraph count of one generated split."""

    video: Path
    text: Path
    paragraphs: int


def content_words(sentence: str, vectors: WordVectors) -> list[str]:
    """Return the tokens of ``sentence`` that carry content: not a stop word, with a vector.

    A sentence made only of stop words keeps its tokens that have a vector, so that every
    sentence with one known word can be shown in a clip.
    """
    tokens = tokenize(sentence)
    known = [t for t in tokens if t in vectors.index]
    content = [t for t in known if t not in STOP_WORDS]
    return content or known


def make_projection(config: GeneratorConfig, word_dim: int) -> np.ndarray:
    """Return the fixed (video_dim, word_dim) projection from word space into feature space.

    Entries are N(0, 1 / word_dim), so a unit vector maps to a vector of norm about 1.
    """
    rng = np.random.default_rng([config.projection_seed, 7919])
    return (rng.standard_normal((config.video_dim, word_dim)) / np.sqrt(word_dim)).astype(np.float32)


def paragraph_rng(config: GeneratorConfig, paragraph_id: str) -> np.random.Generator:
    """Return the generator of one paragraph's features, independent of which others are made."""
    return np.random.default_rng([config.seed, zlib.crc32(paragraph_id.encode("utf-8"))])


def clip_membership(spans_s: Sequence[tuple[float, float]], duration: float, num_clips: int) -> np.ndarray:
    """Return which clips belong to each span, (S, num_clips) bool, by the alignment-loss rule."""
    spans = torch.tensor(np.asarray(spans_s, dtype=np.float64).reshape(-1, 2) / duration, dtype=torch.float32)
    inside = clips_inside(spans[None].clamp(0.0, 1.0), torch.tensor([num_clips]), num_clips)
    return inside[0].numpy()


class SentencePool:
    """Clip words and spans of every sentence of a split, grouped by real video.

    The clip words of a sentence are its content words, less those found in more than
    ``max_word_share`` of the split's sentences (in TACoS only "person", in 41%). Such a word
    names what is visible all through a video, so a clip showing it would locate nothing. With
    ``distinctive``, words shared with another sentence of the same paragraph go too (see
    ``paragraph_words``).
    """

    def __init__(
        self,
        paragraphs: Sequence[Paragraph],
        vectors: WordVectors,
        max_word_share: float = 1.0,
        distinctive: bool = False,
    ):
        self.vectors = vectors
        self.distinctive = distinctive
        self._content: dict[str, tuple[str, ...]] = {}
        sentences = [s for p in paragraphs for s in p.sentences]
        counts: Counter[str] = Counter()
        for sentence in sentences:
            counts.update(set(self._content_words(sentence)))
        self.frequent = frozenset(w for w, c in counts.items() if c > max_word_share * len(sentences))

        self.by_video: dict[str, list[tuple[str, tuple[float, float], tuple[str, ...]]]] = defaultdict(list)
        self.words: list[tuple[str, ...]] = []  # clip words of every sentence that has any
        self.video_of: list[str] = []
        lengths = []
        for paragraph in paragraphs:
            for sentence, span, words in zip(paragraph.sentences, paragraph.timestamps, self.paragraph_words(paragraph)):
                if not words:
                    continue
                self.by_video[paragraph.video].append((paragraph.id, span, words))
                self.words.append(words)
                self.video_of.append(paragraph.video)
                lengths.append((span[1] - span[0]) / paragraph.duration)
        if not self.words:
            raise InvalidInputError("no sentence of the split has a word with a vector; check the vectors")
        # Sentence lengths as fractions of their video, to size background events.
        self.length_fractions = np.asarray([x for x in lengths if x > 0] or [0.05])

    def _content_words(self, sentence: str) -> tuple[str, ...]:
        if sentence not in self._content:
            self._content[sentence] = tuple(content_words(sentence, self.vectors))
        return self._content[sentence]

    def clip_words(self, sentence: str) -> tuple[str, ...]:
        """Return the words that clips of ``sentence`` show; all content words if all are frequent."""
        words = self._content_words(sentence)
        return tuple(w for w in words if w not in self.frequent) or words

    def paragraph_words(self, paragraph: Paragraph) -> list[tuple[str, ...]]:
        """Return the clip words of each sentence of ``paragraph``.

        With ``distinctive`` a sentence keeps only the words that no other sentence of its
        paragraph has, or all of them when none is its own.
        """
        words = [self.clip_words(s) for s in paragraph.sentences]
        if not self.distinctive:
            return words
        result = []
        for i, own in enumerate(words):
            others = {w for j, ws in enumerate(words) if j != i for w in ws}
            result.append(tuple(w for w in own if w not in others) or own)
        return result

    def other_video_words(self, video: str, rng: np.random.Generator) -> tuple[str, ...]:
        """Draw the content words of a sentence from a video other than ``video``."""
        for _ in range(100):
            index = int(rng.integers(len(self.words)))
            if self.video_of[index] != video:
                return self.words[index]
        # Only reached when one video makes up nearly the whole split.
        return self.words[int(rng.integers(len(self.words)))]


def plan_timeline(
    paragraph: Paragraph,
    sentence_words: Sequence[Sequence[str]],
    pool: SentencePool,
    num_clips: int,
    rng: np.random.Generator,
    repeat_share: float = 0.0,
) -> list[Segment]:
    """Tile the clips of ``paragraph``'s video with paragraph, distractor and background events.

    Returns segments covering every clip once, in time order. Where two sentences of the
    paragraph claim a clip, the later sentence gets it, except that a sentence keeps at least
    the clip of its midpoint. Events outside the paragraph's extent then become repeats with
    ``repeat_share`` (see ``add_repeats``).
    """
    duration = paragraph.duration
    owner = np.full(num_clips, -1)
    role = np.array([BACKGROUND] * num_clips, dtype=object)
    words: list[tuple[str, ...]] = [()] * num_clips

    # 1. The paragraph's sentences at their real spans.
    membership = clip_membership(paragraph.timestamps, duration, num_clips)
    for i, row in enumerate(membership):
        owner[row] = i
    for i, (start, end) in enumerate(paragraph.timestamps):
        midpoint = min(int(0.5 * (start + end) / duration * num_clips), num_clips - 1)
        if not (owner == i).any():
            owner[midpoint] = i
    for t in np.flatnonzero(owner >= 0):
        role[t] = PARAGRAPH_SENTENCE
        words[t] = tuple(sentence_words[owner[t]])

    # 2. Distractor events: sentences of other paragraphs of the same real video whose spans
    # overlap none of this paragraph's spans.
    candidates = [
        (span, w)
        for pid, span, w in pool.by_video.get(paragraph.video, [])
        if pid != paragraph.id
        and not any(span[0] < end and start < span[1] for start, end in paragraph.timestamps)
    ]
    rng.shuffle(candidates)  # which of two overlapping distractors wins is random
    next_id = len(paragraph.sentences)
    if candidates:
        candidate_membership = clip_membership([span for span, _ in candidates], duration, num_clips)
        for (_, w), row in zip(candidates, candidate_membership):
            free = row & (owner == -1)
            if free.any():
                owner[free] = next_id
                role[free] = DISTRACTOR
                for t in np.flatnonzero(free):
                    words[t] = w
                next_id += 1

    # 3. Background events of other videos fill the remaining runs of free clips.
    t = 0
    while t < num_clips:
        if owner[t] != -1:
            t += 1
            continue
        fraction = float(pool.length_fractions[int(rng.integers(len(pool.length_fractions)))])
        length = max(1, int(round(fraction * num_clips)))
        end = t
        while end < num_clips and owner[end] == -1 and end - t < length:
            end += 1
        w = pool.other_video_words(paragraph.video, rng)
        owner[t:end] = next_id
        for k in range(t, end):
            words[k] = w
        next_id += 1
        t = end

    segments = []
    start = 0
    for t in range(1, num_clips + 1):
        if t == num_clips or owner[t] != owner[start]:
            sentence = int(owner[start]) if role[start] == PARAGRAPH_SENTENCE else -1
            segments.append(Segment(start, t - 1, str(role[start]), sentence, words[start]))
            start = t
    return add_repeats(segments, sentence_words, repeat_share, rng)


def add_repeats(
    segments: list[Segment],
    sentence_words: Sequence[Sequence[str]],
    repeat_share: float,
    rng: np.random.Generator,
) -> list[Segment]:
    """Let events outside the paragraph's extent repeat one of its sentences, each with ``repeat_share``.

    A repeat is an action done again where the paragraph does not describe it, like washing
    the hands at the start and at the end. Only the paragraph's extent distinguishes it from
    the described event.
    """
    own = [s for s in segments if s.role == PARAGRAPH_SENTENCE]
    first, last = own[0].first_clip, own[-1].last_clip
    result = []
    for segment in segments:
        outside = segment.last_clip < first or segment.first_clip > last
        if segment.role != PARAGRAPH_SENTENCE and outside and rng.random() < repeat_share:
            repeated = tuple(sentence_words[int(rng.integers(len(sentence_words)))])
            segment = Segment(segment.first_clip, segment.last_clip, REPEAT, -1, repeated)
        result.append(segment)
    return result


def word_indices(num_words: int, num_clips: int, config: GeneratorConfig, rng: np.random.Generator) -> np.ndarray:
    """Return which of an event's words each of its clips shows, (num_clips, words_per_clip).

    With ``ordered_words``, clip j of n shows the ``words_per_clip`` consecutive words centred on
    position (j + 0.5) * num_words / n, so the words pass in sentence order. Without it, each
    clip shows words drawn at random.
    """
    m = config.words_per_clip
    if not config.ordered_words:
        return rng.integers(num_words, size=(num_clips, m))
    centre = (np.arange(num_clips) + 0.5) * num_words / num_clips - 0.5
    first = np.rint(centre - 0.5 * (m - 1)).astype(np.int64)
    return np.clip(first[:, None] + np.arange(m)[None, :], 0, num_words - 1)


def clip_features(
    segments: Sequence[Segment],
    vectors: WordVectors,
    projection: np.ndarray,
    config: GeneratorConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Return float32 (num_clips, video_dim) features: each clip shows some of its segment's words."""
    vocabulary = sorted({w for segment in segments for w in segment.words})
    unit, _ = vectors.lookup(vocabulary)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True).clip(min=1e-6)
    row_of = {w: i for i, w in enumerate(vocabulary)}
    rows = np.empty((config.num_clips, config.words_per_clip), dtype=np.int64)
    for segment in segments:
        choices = np.asarray([row_of[w] for w in segment.words])
        rows[segment.first_clip : segment.last_clip + 1] = choices[
            word_indices(len(choices), segment.last_clip - segment.first_clip + 1, config, rng)
        ]
    mixed = unit[rows].mean(1)  # (num_clips, word_dim)
    mixed += config.word_noise * rng.standard_normal(mixed.shape).astype(np.float32)
    # einsum skips BLAS: once torch has run (clips_inside), NumPy's BLAS threads compete with
    # torch's, and this product took 7 ms instead of 0.3 ms on a 2-core machine.
    features = np.einsum("tw,vw->tv", mixed, projection)
    features += config.feature_noise * rng.standard_normal(features.shape).astype(np.float32)
    return features.astype(np.float32)


def clip_times(duration: float, num_clips: int) -> np.ndarray:
    """Return the (num_clips, 2) start and end of each clip in seconds."""
    edges = np.linspace(0.0, duration, num_clips + 1)
    return np.stack([edges[:-1], edges[1:]], axis=1)


def video_settings(config: GeneratorConfig, vectors: WordVectors) -> dict[str, Any]:
    """Return the settings record of a synthetic video cache.

    It is the same for every split, because training checks that the training and validation
    caches share their settings. Which paragraphs a cache contains is checked separately.
    """
    return {
        "kind": "video",
        "model": "synthetic",
        "generator": f"hsc.pipeline.synthetic_features v{GENERATOR_VERSION}",
        **asdict(config),
        "vectors": vectors.description,
    }


def select_paragraphs(paragraphs: Sequence[Paragraph], count: int | None, seed: int) -> list[Paragraph]:
    """Draw ``count`` paragraphs at random (all when None or larger), keeping file order."""
    if count is None or count >= len(paragraphs):
        return list(paragraphs)
    if count < 1:
        raise ValueError(f"the paragraph count must be at least 1, got {count}")
    chosen = np.sort(np.random.default_rng([seed, 104729]).choice(len(paragraphs), size=count, replace=False))
    return [paragraphs[i] for i in chosen]


def write_split(
    annotations: Path,
    video_path: Path,
    text_path: Path,
    config: GeneratorConfig,
    count: int | None = None,
    vectors: WordVectors | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[BatchSummary, BatchSummary]:
    """Write the synthetic video cache and the text cache of ``count`` paragraphs of a file.

    Distractor and background events are drawn from every paragraph of the file, not only the
    selected ones. Entries already complete are kept, so an interrupted run resumes. Returns
    the batch summaries of the video and the text cache. Raises ``CacheSettingsError`` when a
    cache exists with other settings.
    """
    vectors = vectors if vectors is not None else default_vectors()
    _, paragraphs, rejected = read_annotations(Path(annotations))
    if rejected:
        log.warning("%s: %d entries rejected (first: %s)", annotations, len(rejected), rejected[0])
    pool = SentencePool(paragraphs, vectors, config.max_word_share, config.distinctive_words)
    selected = select_paragraphs(paragraphs, count, config.seed)
    projection = make_projection(config, vectors.dim)

    def compute_video(key: str, paragraph: Paragraph) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        sentence_words = pool.paragraph_words(paragraph)
        for index, words in enumerate(sentence_words):
            if not words:
                raise InvalidInputError(
                    f"sentence {index} of paragraph {key} ({paragraph.sentences[index]!r}) has no "
                    "word with a vector, so no clip can show it; the paragraph is left out"
                )
        rng = paragraph_rng(config, key)
        segments = plan_timeline(paragraph, sentence_words, pool, config.num_clips, rng, config.repeat_share)
        arrays = {
            "features": clip_features(segments, vectors, projection, config, rng),
            "clip_times": clip_times(paragraph.duration, config.num_clips),
        }
        attrs = {
            "fps": config.num_clips / paragraph.duration,
            "num_frames": config.num_clips,
            "duration": float(paragraph.duration),
            "source": f"{Path(annotations).name}:{paragraph.video}",
            "decoder": "synthetic",
        }
        return arrays, attrs

    def compute_text(key: str, paragraph: Paragraph) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        # The synthetic video is keyed by the paragraph id, so the record points there.
        return text_record(paragraph, encode_paragraph(paragraph.sentences, tokenize, vectors), key)

    with FeatureCache(video_path, video_settings(config, vectors)) as cache:
        extra = sorted(set(cache.keys()) - {p.id for p in selected})
        if extra:
            raise InvalidInputError(
                f"{video_path} contains {len(extra)} paragraphs that are not among the {len(selected)} drawn "
                f"from {annotations} (first: {extra[0]}); write to a new folder or delete the old caches"
            )
        video_summary = run_batch(cache, ((p.id, p) for p in selected), compute_video, progress)
    # Only paragraphs with a video get a text entry, so both caches hold the same paragraphs.
    written = set(video_summary.written) | set(video_summary.skipped)
    with FeatureCache(text_path, text_settings(vectors)) as cache:
        text_summary = run_batch(cache, ((p.id, p) for p in selected if p.id in written), compute_text)
    log.info(
        "%s: %d of %d paragraphs written to %s and %s (%d already there, %d failed)",
        annotations, len(video_summary.written), len(selected), video_path, text_path,
        len(video_summary.skipped), len(video_summary.failed),
    )
    return video_summary, text_summary


def generate_splits(
    annotations: dict[str, Path],
    out_dir: Path,
    counts: dict[str, int | None],
    config: GeneratorConfig | None = None,
    vectors: WordVectors | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, SplitCaches]:
    """Write the caches of every split in ``annotations`` (split name -> file) under ``out_dir``.

    ``counts`` maps a split to the number of paragraphs to draw (None or missing for all).
    Returns the caches of each split.
    Raises ``InvalidInputError`` when a split ends up with no paragraph.
    """
    config = config or GeneratorConfig()
    vectors = vectors if vectors is not None else default_vectors()
    out_dir = Path(out_dir)
    result = {}
    for split, path in annotations.items():
        video_path = out_dir / VIDEO_CACHE_NAME.format(split=split)
        text_path = out_dir / TEXT_CACHE_NAME.format(split=split)
        video_summary, _ = write_split(path, video_path, text_path, config, counts.get(split), vectors, progress)
        total = len(video_summary.written) + len(video_summary.skipped)
        if total == 0:
            raise InvalidInputError(f"no paragraph of {path} could be written for split {split}")
        result[split] = SplitCaches(video_path, text_path, total)
    return result
