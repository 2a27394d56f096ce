"""Annotation readers: ActivityNet-Captions, TACoS and plain paragraph lists to paragraphs.

Every reader returns :class:`Paragraph` records with times in seconds. A malformed entry is
rejected with a reason and the rest of the file is still read. ``docs/data.md`` describes the
three formats, how paragraphs are built for each dataset and how the quirks of the real files
are handled.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsc.extract.cache import InvalidInputError

log = logging.getLogger(__name__)

ACTIVITYNET = "activitynet"
TACOS = "tacos"
PARAGRAPHS = "paragraphs"

# A TACoS chunk has at most this many sentences. Cutting the annotators' paragraphs with it
# reproduces the published train and val paragraph chunks of PRVG (MCG-NJU/PRVG, data/TACoS).
DEFAULT_MAX_SENTENCES = 9

# TACoS annotator paragraphs with fewer sentences are dropped, as in the published chunks.
MIN_TACOS_PARAGRAPH_SENTENCES = 3

_MAX_LOGGED_REJECTIONS = 20

ACCEPTED_FORMATS = (
    "Accepted annotation formats (JSON, times as noted):\n"
    "  activitynet: {video_id: {\"duration\": s, \"timestamps\": [[start_s, end_s], ...], "
    "\"sentences\": [...]}}\n"
    "  tacos: {video_id: {\"timestamps\": [[start_frame, end_frame], ...], \"sentences\": [...], "
    "\"fps\": f, \"num_frames\": n}}\n"
    "  paragraphs: [{\"video\": id, \"duration\": s, \"sentences\": [...], "
    "\"timestamps\": [[start_s, end_s], ...]}, ...]"
)


@dataclass
class Paragraph:
    """Sentences describing one video, each with its (start, end) span in seconds."""

    id: str
    video: str
    duration: float
    sentences: list[str]
    timestamps: list[tuple[float, float]]


@dataclass
class _SpanFixes:
    """Counts of timestamps changed while reading one file, logged once at the end."""

    clamped: int = 0
    empty_spans: int = 0
    examples: list[str] = field(default_factory=list)

    def note_empty(self, where: str) -> None:
        self.empty_spans += 1
        if len(self.examples) < 5:
            self.examples.append(where)


def read_annotations(
    path: Path, max_sentences: int = DEFAULT_MAX_SENTENCES
) -> tuple[str, list[Paragraph], list[tuple[str, str]]]:
    """Read an annotation file in any accepted format into paragraphs.

    Returns ``(format, paragraphs, rejected)``: the detected format name ("activitynet",
    "tacos" or "paragraphs"), the paragraphs in file order, and ``(id, reason)`` for each entry
    rejected as malformed. ``max_sentences`` (at least 2) bounds the size of TACoS chunks and
    leaves the other formats unchanged. Raises ``InvalidInputError`` when the file is missing,
    is not JSON, or matches none of the accepted formats.
    """
    if max_sentences < 2:
        raise ValueError(f"max_sentences must be at least 2, got {max_sentences}")
    path = Path(path)
    data = _load_json(path)
    fmt = detect_format(data, path)
    fixes = _SpanFixes()
    if fmt == ACTIVITYNET:
        paragraphs, rejected = _read_activitynet(data, fixes)
    elif fmt == TACOS:
        paragraphs, rejected = _read_tacos(data, max_sentences, fixes)
    else:
        paragraphs, rejected = _read_paragraph_list(data, fixes)

    log.info("%s: %s format, %d paragraphs, %d entries rejected",
             path, fmt, len(paragraphs), len(rejected))
    for entry_id, reason in rejected[:_MAX_LOGGED_REJECTIONS]:
        log.warning("%s: rejected %s: %s", path, entry_id, reason)
    if len(rejected) > _MAX_LOGGED_REJECTIONS:
        log.warning("%s: %d more entries rejected (all are in the returned list)",
                    path, len(rejected) - _MAX_LOGGED_REJECTIONS)
    if fixes.clamped:
        log.info("%s: clamped %d timestamps into [0, duration]", path, fixes.clamped)
    if fixes.empty_spans:
        log.warning("%s: %d spans with start >= end kept as zero-length spans at their start "
                    "(first: %s)", path, fixes.empty_spans, ", ".join(fixes.examples))
    return fmt, paragraphs, rejected


def _load_json(path: Path) -> Any:
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder; pass the annotation JSON file itself")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(
            f"annotation file not found: {path}. Check the path.\n{ACCEPTED_FORMATS}"
        ) from None
    except UnicodeDecodeError as error:
        raise InvalidInputError(f"{path} is not UTF-8 text ({error}); pass a JSON annotation file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInputError(
            f"{path} is not valid JSON ({error}).\n{ACCEPTED_FORMATS}"
        ) from None


def detect_format(data: Any, path: Path | str = "<annotations>") -> str:
    """Return the format name of parsed annotation JSON, or raise ``InvalidInputError``.

    The decision counts entries, so a few malformed entries do not change it. A list is
    "paragraphs" when at least half its items are objects with ``video`` and ``sentences``.
    A mapping qualifies when at least half its values are objects with ``sentences``. It is
    "tacos" when most of those carry ``fps`` or ``num_frames``, else "activitynet".
    """
    if isinstance(data, list) and data:
        with_video = sum(isinstance(e, dict) and "video" in e and "sentences" in e for e in data)
        if with_video * 2 >= len(data):
            return PARAGRAPHS
    elif isinstance(data, dict) and data:
        entries = [e for e in data.values() if isinstance(e, dict) and "sentences" in e]
        if entries and len(entries) * 2 >= len(data):
            with_frames = sum("fps" in e or "num_frames" in e for e in entries)
            return TACOS if with_frames * 2 > len(entries) else ACTIVITYNET
    if isinstance(data, (list, dict)) and not data:
        content = "an empty " + ("array" if isinstance(data, list) else "object")
    else:
        json_type = {dict: "object", list: "array", str: "string"}.get(type(data), "value")
        content = f"a JSON {json_type} in none of the accepted formats"
    raise InvalidInputError(f"{path} contains {content}.\n{ACCEPTED_FORMATS}")


class _EntryError(ValueError):
    """Error for one malformed annotation entry, whose message is the rejection reason."""


def _number(value: Any, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _EntryError(f"{field_name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise _EntryError(f"{field_name} must be finite, got {value!r}")
    return float(value)


def _positive(value: Any, field_name: str) -> float:
    number = _number(value, field_name)
    if number <= 0:
        raise _EntryError(f"{field_name} must be positive, got {value!r}")
    return number


def _field(entry: Any, name: str) -> Any:
    if not isinstance(entry, dict):
        raise _EntryError(f"entry must be a JSON object, got {type(entry).__name__}")
    if name not in entry:
        raise _EntryError(f"missing {name!r}")
    return entry[name]


def _sentences_and_spans(entry: dict[str, Any]) -> tuple[list[str], list[tuple[float, float]]]:
    """Validate ``sentences`` and ``timestamps`` of one entry into stripped text and raw spans."""
    sentences = _field(entry, "sentences")
    timestamps = _field(entry, "timestamps")
    if not isinstance(sentences, list) or not isinstance(timestamps, list):
        raise _EntryError("'sentences' and 'timestamps' must be lists")
    if len(sentences) != len(timestamps):
        raise _EntryError(
            f"{len(sentences)} sentences but {len(timestamps)} timestamps; they must pair up"
        )
    if not sentences:
        raise _EntryError("no sentences")
    texts = []
    for i, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise _EntryError(f"sentence {i} must be a string, got {sentence!r}")
        # Many ActivityNet sentences start with a space, which carries no meaning.
        text = sentence.strip()
        if not text:
            raise _EntryError(f"sentence {i} is empty")
        texts.append(text)
    spans = []
    for i, span in enumerate(timestamps):
        if not isinstance(span, (list, tuple)) or len(span) != 2:
            raise _EntryError(f"timestamp {i} must be a [start, end] pair, got {span!r}")
        spans.append((_number(span[0], f"timestamp {i} start"),
                      _number(span[1], f"timestamp {i} end")))
    return texts, spans


def _clean_spans(
    spans: Sequence[tuple[float, float]], duration: float, fixes: _SpanFixes, where: str
) -> list[tuple[float, float]]:
    """Clamp spans into [0, duration]. A span with start >= end becomes (start, start)."""
    cleaned = []
    for i, (start, end) in enumerate(spans):
        clamped_start = min(max(start, 0.0), duration)
        clamped_end = min(max(end, 0.0), duration)
        if (clamped_start, clamped_end) != (start, end):
            fixes.clamped += 1
        if clamped_start >= clamped_end:
            if start >= end:
                fixes.note_empty(f"{where} sentence {i} [{start}, {end}]")
            clamped_end = clamped_start
        cleaned.append((clamped_start, clamped_end))
    return cleaned


def _read_activitynet(
    data: dict[str, Any], fixes: _SpanFixes
) -> tuple[list[Paragraph], list[tuple[str, str]]]:
    paragraphs = []
    rejected = []
    for video, entry in data.items():
        try:
            duration = _positive(_field(entry, "duration"), "duration")
            texts, spans = _sentences_and_spans(entry)
        except _EntryError as error:
            rejected.append((video, str(error)))
            continue
        spans = _clean_spans(spans, duration, fixes, video)
        # Stable sort by start time, so sentences with equal starts keep their file order.
        order = sorted(range(len(texts)), key=lambda i: spans[i][0])
        paragraphs.append(Paragraph(
            id=video,
            video=video,
            duration=duration,
            sentences=[texts[i] for i in order],
            timestamps=[spans[i] for i in order],
        ))
    return paragraphs, rejected


def split_annotator_paragraphs(starts: Sequence[float]) -> list[list[int]]:
    """Split a TACoS sentence list into annotator paragraphs, as lists of sentence indices.

    TACoS lists the paragraphs of several annotators one after another, each in time order, so
    a new paragraph starts wherever a start time is smaller than the previous sentence's start.
    """
    paragraphs: list[list[int]] = []
    for i, start in enumerate(starts):
        if not paragraphs or start < starts[i - 1]:
            paragraphs.append([])
        paragraphs[-1].append(i)
    return paragraphs


def chunk_paragraph(indices: Sequence[int], max_sentences: int) -> list[list[int]]:
    """Cut one paragraph into chunks of at most ``max_sentences`` sentences, in order.

    The paragraph is cut into pieces of ``max_sentences - 1`` sentences, and a last piece of a
    single sentence joins the piece before it. With ``max_sentences=9`` a paragraph of up to 9
    sentences stays whole, 10 becomes 8 + 2 and 17 becomes 8 + 9.
    """
    size = max_sentences - 1
    pieces = [list(indices[i:i + size]) for i in range(0, len(indices), size)]
    if len(pieces) > 1 and len(pieces[-1]) == 1:
        last = pieces.pop()
        pieces[-1].extend(last)
    return pieces


def _read_tacos(
    data: dict[str, Any], max_sentences: int, fixes: _SpanFixes
) -> tuple[list[Paragraph], list[tuple[str, str]]]:
    paragraphs = []
    rejected = []
    for video, entry in data.items():
        try:
            fps = _positive(_field(entry, "fps"), "fps")
            num_frames = _positive(_field(entry, "num_frames"), "num_frames")
            texts, frame_spans = _sentences_and_spans(entry)
        except _EntryError as error:
            rejected.append((video, str(error)))
            continue
        duration = num_frames / fps
        # Split on the raw frame numbers, before clamping can make two starts equal.
        annotator_paragraphs = split_annotator_paragraphs([s for s, _ in frame_spans])
        spans = _clean_spans([(s / fps, e / fps) for s, e in frame_spans], duration, fixes, video)
        index = 0
        for annotator_paragraph in annotator_paragraphs:
            if len(annotator_paragraph) < MIN_TACOS_PARAGRAPH_SENTENCES:
                continue
            for chunk in chunk_paragraph(annotator_paragraph, max_sentences):
                paragraphs.append(Paragraph(
                    id=f"{video}#{index}",
                    video=video,
                    duration=duration,
                    sentences=[texts[i] for i in chunk],
                    timestamps=[spans[i] for i in chunk],
                ))
                index += 1
    return paragraphs, rejected


def _read_paragraph_list(
    data: list[Any], fixes: _SpanFixes
) -> tuple[list[Paragraph], list[tuple[str, str]]]:
    paragraphs = []
    rejected = []
    # The index counts every entry of a video, rejected or not, so ids do not depend on
    # whether an earlier entry of the same video was valid.
    per_video: Counter[str] = Counter()
    for position, entry in enumerate(data):
        video = entry.get("video") if isinstance(entry, dict) else None
        if not isinstance(video, str) or not video:
            rejected.append((f"entry {position}", "missing or invalid 'video' (a non-empty "
                                                  f"string is expected), got {video!r}"))
            continue
        paragraph_id = f"{video}#{per_video[video]}"
        per_video[video] += 1
        try:
            duration = _positive(_field(entry, "duration"), "duration")
            texts, spans = _sentences_and_spans(entry)
        except _EntryError as error:
            rejected.append((paragraph_id, str(error)))
            continue
        paragraphs.append(Paragraph(
            id=paragraph_id,
            video=video,
            duration=duration,
            sentences=texts,
            timestamps=_clean_spans(spans, duration, fixes, paragraph_id),
        ))
    return paragraphs, rejected
