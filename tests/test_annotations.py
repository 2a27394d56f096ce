"""Tests for hsc.extract.annotations: format detection, paragraph building and quirks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hsc.extract.annotations import (
    chunk_paragraph,
    detect_format,
    read_annotations,
    split_annotator_paragraphs,
)
from hsc.extract.cache import InvalidInputError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ANNOTATIONS = DATA / "annotations"


def write_json(tmp_path: Path, data: Any, name: str = "annotations.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def activitynet_entry(**overrides: Any) -> dict[str, Any]:
    entry = {
        "duration": 20.0,
        "timestamps": [[0.0, 5.0], [5.0, 12.0]],
        "sentences": ["A man walks in.", "He sits down."],
    }
    entry.update(overrides)
    return entry


def tacos_entry(starts: list[int], fps: float = 25.0, num_frames: int = 1000) -> dict[str, Any]:
    return {
        "timestamps": [[s, s + 10] for s in starts],
        "sentences": [f"sentence {i}" for i in range(len(starts))],
        "fps": fps,
        "num_frames": num_frames,
    }


# ActivityNet-Captions


def test_activitynet_reads_one_paragraph_per_video(tmp_path):
    path = write_json(tmp_path, {"v_a": activitynet_entry(), "v_b": activitynet_entry()})
    fmt, paragraphs, rejected = read_annotations(path)
    assert fmt == "activitynet"
    assert [p.id for p in paragraphs] == ["v_a", "v_b"]
    assert [p.video for p in paragraphs] == ["v_a", "v_b"]
    assert paragraphs[0].duration == 20.0
    assert paragraphs[0].timestamps == [(0.0, 5.0), (5.0, 12.0)]
    assert rejected == []


def test_activitynet_sorts_by_start(tmp_path):
    entry = activitynet_entry(
        timestamps=[[8.0, 9.0], [1.0, 2.0], [4.0, 6.0], [1.0, 3.0]],
        sentences=["late", "early", "middle", "early too"],
    )
    _, paragraphs, _ = read_annotations(write_json(tmp_path, {"v": entry}))
    # Equal starts keep their file order ("early" before "early too").
    assert paragraphs[0].sentences == ["early", "early too", "middle", "late"]
    assert paragraphs[0].timestamps == [(1.0, 2.0), (1.0, 3.0), (4.0, 6.0), (8.0, 9.0)]


def test_activitynet_strips_leading_space(tmp_path):
    entry = activitynet_entry(sentences=["A man walks in.", "  He sits down. "])
    _, paragraphs, _ = read_annotations(write_json(tmp_path, {"v": entry}))
    assert paragraphs[0].sentences == ["A man walks in.", "He sits down."]


def test_span_end_after_duration_clamped(tmp_path):
    entry = activitynet_entry(timestamps=[[0.0, 5.0], [15.0, 20.7]])
    _, paragraphs, _ = read_annotations(write_json(tmp_path, {"v": entry}))
    assert paragraphs[0].timestamps[1] == (15.0, 20.0)


def test_span_negative_start_clamped(tmp_path):
    entry = activitynet_entry(timestamps=[[-1.5, 5.0], [5.0, 12.0]])
    _, paragraphs, _ = read_annotations(write_json(tmp_path, {"v": entry}))
    assert paragraphs[0].timestamps[0] == (0.0, 5.0)


def test_span_start_equal_end_kept(tmp_path):
    entry = activitynet_entry(timestamps=[[0.0, 5.0], [7.5, 7.5]])
    _, paragraphs, rejected = read_annotations(write_json(tmp_path, {"v": entry}))
    assert rejected == []
    assert paragraphs[0].sentences[1] == "He sits down."
    assert paragraphs[0].timestamps[1] == (7.5, 7.5)


def test_span_start_after_end_zero_length(tmp_path):
    entry = activitynet_entry(timestamps=[[0.0, 5.0], [9.0, 6.0]])
    _, paragraphs, rejected = read_annotations(write_json(tmp_path, {"v": entry}))
    assert rejected == []
    assert paragraphs[0].sentences == ["A man walks in.", "He sits down."]
    assert paragraphs[0].timestamps[1] == (9.0, 9.0)


def test_span_start_after_duration_zero_length(tmp_path):
    entry = activitynet_entry(timestamps=[[0.0, 5.0], [25.0, 30.0]])
    _, paragraphs, _ = read_annotations(write_json(tmp_path, {"v": entry}))
    assert paragraphs[0].timestamps[1] == (20.0, 20.0)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (activitynet_entry(sentences=["only one"]), "1 sentences but 2 timestamps"),
        ({"timestamps": [[0, 1]], "sentences": ["a"]}, "missing 'duration'"),
        (activitynet_entry(duration=0), "duration must be positive"),
        (activitynet_entry(duration=-3.0), "duration must be positive"),
        (activitynet_entry(duration="20"), "duration must be a number"),
        (activitynet_entry(sentences=["A man walks in.", "   "]), "sentence 1 is empty"),
        (activitynet_entry(sentences=["A man walks in.", 7]), "sentence 1 must be a string"),
        (activitynet_entry(timestamps=[[0, 5], [5]]), "timestamp 1 must be a [start, end] pair"),
        (activitynet_entry(timestamps=[[0, 5], [5, "x"]]), "timestamp 1 end must be a number"),
        (activitynet_entry(timestamps=[], sentences=[]), "no sentences"),
        ("not an object", "entry must be a JSON object"),
    ],
)
def test_activitynet_rejects_malformed_entry(tmp_path, entry, reason):
    data = {"v_bad": entry, "v_good": activitynet_entry()}
    fmt, paragraphs, rejected = read_annotations(write_json(tmp_path, data))
    assert fmt == "activitynet"
    assert [p.id for p in paragraphs] == ["v_good"]
    assert [entry_id for entry_id, _ in rejected] == ["v_bad"]
    assert reason in rejected[0][1]


# TACoS


def test_tacos_converts_frames_to_seconds(tmp_path):
    entry = tacos_entry([0, 50, 100], fps=25.0, num_frames=1000)
    fmt, paragraphs, _ = read_annotations(write_json(tmp_path, {"s13-d21.avi": entry}))
    assert fmt == "tacos"
    assert paragraphs[0].duration == 40.0
    assert paragraphs[0].timestamps == [(0.0, 0.4), (2.0, 2.4), (4.0, 4.4)]


def test_tacos_keeps_raw_video_key(tmp_path):
    entry = tacos_entry([0, 50, 100])
    _, paragraphs, _ = read_annotations(write_json(tmp_path, {"s13-d21.avi": entry}))
    assert paragraphs[0].video == "s13-d21.avi"
    assert paragraphs[0].id == "s13-d21.avi#0"


def test_tacos_splits_annotators(tmp_path):
    # Two annotators: starts rise, fall back to 0, rise again (the list is not sorted).
    entry = tacos_entry([0, 50, 100, 0, 40, 90, 200])
    _, paragraphs, _ = read_annotations(write_json(tmp_path, {"s1-d1.avi": entry}))
    assert [p.id for p in paragraphs] == ["s1-d1.avi#0", "s1-d1.avi#1"]
    assert paragraphs[0].sentences == ["sentence 0", "sentence 1", "sentence 2"]
    assert paragraphs[1].sentences == ["sentence 3", "sentence 4", "sentence 5", "sentence 6"]


def test_tacos_drops_short_annotator_paragraphs(tmp_path):
    # Paragraphs of 3, 2 and 1 sentences. Only the first has the minimum of 3.
    entry = tacos_entry([0, 10, 20, 0, 10, 5])
    _, paragraphs, _ = read_annotations(write_json(tmp_path, {"s1-d1.avi": entry}))
    assert len(paragraphs) == 1
    assert paragraphs[0].sentences == ["sentence 0", "sentence 1", "sentence 2"]


def test_tacos_chunks_long_paragraph(tmp_path):
    entry = tacos_entry(list(range(0, 120, 10)))  # one annotator, 12 sentences
    _, paragraphs, _ = read_annotations(write_json(tmp_path, {"s1-d1.avi": entry}))
    assert [len(p.sentences) for p in paragraphs] == [8, 4]
    assert paragraphs[1].sentences[0] == "sentence 8"


def test_tacos_max_sentences_option(tmp_path):
    entry = tacos_entry(list(range(0, 120, 10)))
    path = write_json(tmp_path, {"s1-d1.avi": entry})
    _, paragraphs, _ = read_annotations(path, max_sentences=5)
    assert [len(p.sentences) for p in paragraphs] == [4, 4, 4]


def test_tacos_end_after_last_frame_clamped(tmp_path):
    entry = tacos_entry([0, 50, 995], fps=25.0, num_frames=1000)
    _, paragraphs, _ = read_annotations(write_json(tmp_path, {"s1-d1.avi": entry}))
    assert paragraphs[0].timestamps[2] == (39.8, 40.0)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("fps", None, "missing 'fps'"),
        ("fps", 0, "fps must be positive"),
        ("num_frames", None, "missing 'num_frames'"),
        ("num_frames", -1, "num_frames must be positive"),
    ],
)
def test_tacos_rejects_malformed_entry(tmp_path, field, value, reason):
    bad = tacos_entry([0, 10, 20])
    if value is None:
        del bad[field]
    else:
        bad[field] = value
    data = {"s1-d1.avi": bad, "s2-d2.avi": tacos_entry([0, 10, 20])}
    fmt, paragraphs, rejected = read_annotations(write_json(tmp_path, data))
    assert fmt == "tacos"
    assert [p.video for p in paragraphs] == ["s2-d2.avi"]
    assert [entry_id for entry_id, _ in rejected] == ["s1-d1.avi"]
    assert reason in rejected[0][1]


def test_split_annotators_equal_start_continues():
    assert split_annotator_paragraphs([0, 5, 5, 9, 2, 2, 8]) == [[0, 1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize(
    ("length", "sizes"),
    [(1, [1]), (8, [8]), (9, [9]), (10, [8, 2]), (16, [8, 8]), (17, [8, 9]), (18, [8, 8, 2])],
)
def test_chunk_paragraph_sizes(length, sizes):
    chunks = chunk_paragraph(list(range(length)), max_sentences=9)
    assert [len(c) for c in chunks] == sizes
    assert [i for c in chunks for i in c] == list(range(length))


# Paragraph lists


def paragraph_entry(video: str, **overrides: Any) -> dict[str, Any]:
    entry = {
        "video": video,
        "duration": 30.0,
        "sentences": ["First.", "Second."],
        "timestamps": [[10.0, 20.0], [0.0, 5.0]],
    }
    entry.update(overrides)
    return entry


def test_paragraph_list_ids_count_per_video(tmp_path):
    data = [paragraph_entry("v1"), paragraph_entry("v2"), paragraph_entry("v1")]
    fmt, paragraphs, _ = read_annotations(write_json(tmp_path, data))
    assert fmt == "paragraphs"
    assert [p.id for p in paragraphs] == ["v1#0", "v2#0", "v1#1"]


def test_paragraph_list_keeps_order(tmp_path):
    _, paragraphs, _ = read_annotations(write_json(tmp_path, [paragraph_entry("v1")]))
    assert paragraphs[0].sentences == ["First.", "Second."]
    assert paragraphs[0].timestamps == [(10.0, 20.0), (0.0, 5.0)]


def test_paragraph_list_rejected_entry_keeps_index(tmp_path):
    data = [paragraph_entry("v1", duration=None), paragraph_entry("v1"), {"duration": 3}]
    _, paragraphs, rejected = read_annotations(write_json(tmp_path, data))
    assert [p.id for p in paragraphs] == ["v1#1"]
    assert [entry_id for entry_id, _ in rejected] == ["v1#0", "entry 2"]


def test_paragraph_list_clamps_spans(tmp_path):
    data = [paragraph_entry("v1", timestamps=[[10.0, 31.0], [6.0, 4.0]])]
    _, paragraphs, _ = read_annotations(write_json(tmp_path, data))
    assert paragraphs[0].timestamps == [(10.0, 30.0), (6.0, 6.0)]


# Format detection and file errors


@pytest.mark.parametrize(
    "data",
    [[1, 2, 3], {"a": "b"}, [], {}, "text", [{"sentences": ["a"]}]],
    ids=["int-list", "str-dict", "empty-list", "empty-dict", "string", "list-without-video"],
)
def test_unknown_format_raises(tmp_path, data):
    path = write_json(tmp_path, data)
    with pytest.raises(InvalidInputError) as error:
        read_annotations(path)
    assert str(path) in str(error.value)
    for name in ("activitynet", "tacos", "paragraphs"):
        assert name in str(error.value)


def test_invalid_json_raises(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        read_annotations(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        read_annotations(tmp_path / "absent.json")


def test_detect_format_majority():
    data = {"a": tacos_entry([0]), "b": tacos_entry([0]), "c": activitynet_entry()}
    assert detect_format(data) == "tacos"


def test_max_sentences_below_two_raises(tmp_path):
    path = write_json(tmp_path, {"v": activitynet_entry()})
    with pytest.raises(ValueError, match="max_sentences"):
        read_annotations(path, max_sentences=1)


# Real annotation files (skipped when absent)

needs_data = pytest.mark.skipif(
    not ANNOTATIONS.is_dir(), reason=f"real annotations not found at {ANNOTATIONS}"
)


@needs_data
def test_real_activitynet_val2_counts():
    fmt, paragraphs, rejected = read_annotations(ANNOTATIONS / "activitynet_captions" / "val_2.json")
    assert fmt == "activitynet"
    assert len(paragraphs) == 4885
    assert sum(len(p.sentences) for p in paragraphs) == 17031
    assert rejected == []


@needs_data
def test_real_activitynet_train_quirks():
    _, paragraphs, rejected = read_annotations(ANNOTATIONS / "activitynet_captions" / "train.json")
    spans = [(s, e, p.duration) for p in paragraphs for s, e in p.timestamps]
    sentences = [s for p in paragraphs for s in p.sentences]
    assert rejected == []
    assert len(sentences) == 37421
    # The 4 spans with start >= end in the file are kept as zero-length spans.
    assert sum(s == e for s, e, _ in spans) == 4
    assert all(0.0 <= s <= e <= d for s, e, d in spans)
    assert all(s == s.strip() for s in sentences)
    assert all(
        p.timestamps == sorted(p.timestamps, key=lambda span: span[0]) for p in paragraphs
    )


def published_chunks(split: str) -> dict[str, Any]:
    _, paragraphs, _ = read_annotations(ANNOTATIONS / "paragraph_chunks" / f"tacos_{split}.json")
    return {p.id: p for p in paragraphs}


@needs_data
@pytest.mark.parametrize("split", ["train", "val"])
def test_real_tacos_reproduces_published_chunks(split):
    _, paragraphs, rejected = read_annotations(ANNOTATIONS / "tacos" / f"{split}.json")
    ours = {p.id: p for p in paragraphs}
    published = published_chunks(split)
    assert rejected == []
    assert len(ours) == len(paragraphs)
    assert sorted(ours) == sorted(published)
    mismatched = [key for key in published if ours[key] != published[key]]
    assert mismatched == []
