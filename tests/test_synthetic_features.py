"""Tests of the synthetic clip features on real annotations and of the ablation benchmark script."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from hsc.extract.annotations import Paragraph, read_annotations
from hsc.extract.cache import read_settings
from hsc.extract.vectors import WordVectors, default_vectors
from hsc.model.config import HSCNetConfig
from hsc.pipeline.synthetic_features import (
    BACKGROUND,
    DISTRACTOR,
    PARAGRAPH_SENTENCE,
    REPEAT,
    GeneratorConfig,
    SentencePool,
    clip_membership,
    make_projection,
    paragraph_rng,
    plan_timeline,
    word_indices,
    write_split,
)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TACOS = DATA / "annotations" / "tacos"

pytestmark = pytest.mark.skipif(
    not (TACOS / "test.json").is_file(), reason=f"real TACoS annotations not found under {TACOS}"
)

CONFIG = GeneratorConfig(num_clips=32, video_dim=64, seed=3)


@pytest.fixture(scope="module")
def vectors() -> WordVectors:
    return default_vectors()


@pytest.fixture(scope="module")
def small_tacos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write train, val and test files of a few real TACoS videos each, to keep tests fast."""
    folder = tmp_path_factory.mktemp("tacos")
    for split, source, count in (("train", "train.json", 3), ("val", "val.json", 2), ("test", "test.json", 2)):
        data = json.loads((TACOS / source).read_text())
        subset = dict(list(data.items())[:count])
        (folder / f"{split}.json").write_text(json.dumps(subset))
    return folder


@pytest.fixture(scope="module")
def caches(small_tacos: Path, vectors: WordVectors, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("caches")
    write_split(small_tacos / "test.json", out / "video.h5", out / "text.h5", CONFIG, count=6, vectors=vectors)
    return out


def test_write_split_deterministic(caches: Path, small_tacos: Path, vectors: WordVectors, tmp_path: Path) -> None:
    write_split(small_tacos / "test.json", tmp_path / "video.h5", tmp_path / "text.h5", CONFIG, count=6, vectors=vectors)
    with h5py.File(caches / "video.h5", "r") as first, h5py.File(tmp_path / "video.h5", "r") as second:
        assert sorted(first) == sorted(second)
        for key in first:
            np.testing.assert_array_equal(first[key]["features"][()], second[key]["features"][()])


def test_write_split_seed_changes_features(caches: Path, small_tacos: Path, vectors: WordVectors, tmp_path: Path) -> None:
    other = GeneratorConfig(num_clips=32, video_dim=64, seed=4)
    write_split(small_tacos / "test.json", tmp_path / "video.h5", tmp_path / "text.h5", other, vectors=vectors)
    with h5py.File(caches / "video.h5", "r") as first, h5py.File(tmp_path / "video.h5", "r") as second:
        key = next(iter(first))
        assert not np.array_equal(first[key]["features"][()], second[key]["features"][()])


def test_video_cache_layout(caches: Path) -> None:
    settings = read_settings(caches / "video.h5")
    assert settings["kind"] == "video"
    assert settings["model"] == "synthetic"
    assert settings["num_clips"] == 32
    with h5py.File(caches / "video.h5", "r") as f:
        assert len(f) == 6
        for key, group in f.items():
            assert group["features"].shape == (32, 64)
            assert group["features"].dtype == np.float32
            assert group["clip_times"].shape == (32, 2)
            assert group["clip_times"].dtype == np.float64
            assert group["clip_times"][-1, 1] == pytest.approx(group.attrs["duration"])
            assert set(group.attrs) >= {"fps", "num_frames", "duration", "source", "decoder", "complete"}


def test_text_cache_layout(caches: Path) -> None:
    settings = read_settings(caches / "text.h5")
    assert settings["kind"] == "text"
    assert settings["dim"] == 50
    with h5py.File(caches / "text.h5", "r") as text, h5py.File(caches / "video.h5", "r") as video:
        assert sorted(text) == sorted(video)
        for key, group in text.items():
            words = group["word_vectors"].shape[0]
            assert group["word_vectors"].shape == (words, 50)
            assert group["word_sentence"].dtype == np.int32
            assert group["words"].shape == (words,)
            assert group["timestamps"].shape == (group["sentences"].shape[0], 2)
            assert group.attrs["video"] in video


def test_spans_inside_duration(caches: Path) -> None:
    with h5py.File(caches / "text.h5", "r") as f:
        for group in f.values():
            spans = group["timestamps"][()]
            assert spans.min() >= 0.0
            assert spans.max() <= group.attrs["duration"]
            assert (spans[:, 0] <= spans[:, 1]).all()


def test_clips_show_their_sentence_words(caches: Path, small_tacos: Path, vectors: WordVectors) -> None:
    """Clips inside a sentence's span match its words better than the clips outside all spans."""
    _, paragraphs, _ = read_annotations(small_tacos / "test.json")
    pool = SentencePool(paragraphs, vectors, CONFIG.max_word_share, CONFIG.distinctive_words)
    projection = make_projection(CONFIG, vectors.dim)
    with h5py.File(caches / "video.h5", "r") as f:
        keys = list(f)
        features = {key: f[key]["features"][()] for key in keys}
    inside_scores, outside_scores = [], []
    for paragraph in (p for p in paragraphs if p.id in keys):
        clips = features[paragraph.id]
        clips = clips / np.linalg.norm(clips, axis=1, keepdims=True).clip(min=1e-6)
        membership = clip_membership(paragraph.timestamps, paragraph.duration, CONFIG.num_clips)
        for words, row in zip(pool.paragraph_words(paragraph), membership):
            unit, _ = vectors.lookup(list(words))
            unit /= np.linalg.norm(unit, axis=1, keepdims=True)
            projected = np.einsum("wd,vd->wv", unit, projection)
            projected /= np.linalg.norm(projected, axis=1, keepdims=True).clip(min=1e-6)
            score = np.einsum("tv,wv->tw", clips, projected).max(1)  # best word per clip
            inside_scores.append(score[row].mean())
            outside_scores.append(score[~membership.any(0)].mean())
    assert np.mean(inside_scores) > np.mean(outside_scores) + 0.1


def test_timeline_tiles_every_clip(small_tacos: Path, vectors: WordVectors) -> None:
    _, paragraphs, _ = read_annotations(small_tacos / "test.json")
    pool = SentencePool(paragraphs, vectors, CONFIG.max_word_share, CONFIG.distinctive_words)
    for paragraph in paragraphs[:5]:
        words = pool.paragraph_words(paragraph)
        segments = plan_timeline(paragraph, words, pool, 32, paragraph_rng(CONFIG, paragraph.id), 0.5)
        covered = [t for s in segments for t in range(s.first_clip, s.last_clip + 1)]
        assert covered == list(range(32))
        assert {s.role for s in segments} <= {PARAGRAPH_SENTENCE, DISTRACTOR, BACKGROUND, REPEAT}
        owner = {t: s.sentence for s in segments for t in range(s.first_clip, s.last_clip + 1)}
        for index, (start, end) in enumerate(paragraph.timestamps):
            # A sentence without a clip of its own shares its midpoint clip with another one.
            midpoint = min(int(0.5 * (start + end) / paragraph.duration * 32), 31)
            assert index in owner.values() or owner[midpoint] >= 0


def test_repeats_stay_outside_paragraph(small_tacos: Path, vectors: WordVectors) -> None:
    _, paragraphs, _ = read_annotations(small_tacos / "test.json")
    pool = SentencePool(paragraphs, vectors, CONFIG.max_word_share, CONFIG.distinctive_words)
    repeats = 0
    for paragraph in paragraphs[:20]:
        words = pool.paragraph_words(paragraph)
        segments = plan_timeline(paragraph, words, pool, 32, paragraph_rng(CONFIG, paragraph.id), 1.0)
        own = [s for s in segments if s.role == PARAGRAPH_SENTENCE]
        for segment in (s for s in segments if s.role == REPEAT):
            repeats += 1
            assert segment.last_clip < own[0].first_clip or segment.first_clip > own[-1].last_clip
            assert segment.words in {tuple(w) for w in words}
    assert repeats > 0


def test_paragraph_words_drop_shared_words(vectors: WordVectors) -> None:
    paragraph = Paragraph(
        id="p#0", video="p", duration=30.0,
        sentences=["He took out a kiwi.", "He took out a plate.", "He took out a knife."],
        timestamps=[(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)],
    )
    distinctive = SentencePool([paragraph], vectors, distinctive=True).paragraph_words(paragraph)
    every = SentencePool([paragraph], vectors, distinctive=False).paragraph_words(paragraph)
    assert distinctive == [("kiwi",), ("plate",), ("knife",)]
    assert every[0] == ("took", "kiwi")


def test_paragraph_words_keep_all_when_none_own(vectors: WordVectors) -> None:
    paragraph = Paragraph(
        id="p#0", video="p", duration=20.0,
        sentences=["He cuts the kiwi.", "He cuts the kiwi."],
        timestamps=[(0.0, 10.0), (10.0, 20.0)],
    )
    words = SentencePool([paragraph], vectors, distinctive=True).paragraph_words(paragraph)
    assert words == [("cuts", "kiwi"), ("cuts", "kiwi")]


def test_word_indices_follow_sentence_order() -> None:
    indices = word_indices(3, 7, CONFIG, np.random.default_rng(0))[:, 0]
    assert indices[0] == 0
    assert indices[-1] == 2
    assert (np.diff(indices) >= 0).all()


def test_word_indices_random_mode() -> None:
    config = GeneratorConfig(ordered_words=False, words_per_clip=2)
    indices = word_indices(4, 50, config, np.random.default_rng(0))
    assert indices.shape == (50, 2)
    assert set(indices.ravel()) == {0, 1, 2, 3}


def test_generator_config_rejects_invalid() -> None:
    with pytest.raises(ValueError, match="repeat_share"):
        GeneratorConfig(repeat_share=1.5)


def load_bench():
    spec = importlib.util.spec_from_file_location("ablation_bench", REPO / "bench" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_main_end_to_end(small_tacos: Path, tmp_path: Path) -> None:
    bench = load_bench()
    results = bench.main([
        "--out", str(tmp_path), "--annotations", str(small_tacos), "--seeds", "0",
        "--levels", "SL", "SL+PL+WL", "--epochs", "1", "--num-train", "4", "--num-val", "2",
        "--num-test", "2", "--num-clips", "16", "--video-dim", "32", "--hidden", "16", "--jobs", "1",
    ])
    assert set(results["table"]) == {"SL", "SL+PL+WL", "even split"}
    assert set(results["table"]["SL"]) == {"R@0.1", "R@0.3", "R@0.5", "mIoU", "val mIoU"}
    assert (tmp_path / "results.json").is_file()
    assert (tmp_path / "runs" / "SL-PL-WL_seed0" / "best.pt").is_file()


def test_bench_rejects_unknown_levels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--out", str(tmp_path), "--levels", "SL+XL"])
    assert exit_info.value.code == 2
    assert "--levels SL+XL: invalid levels" in capsys.readouterr().err


def test_with_levels_matches_bench_names() -> None:
    bench = load_bench()
    for levels in bench.ALL_LEVELS:
        config = HSCNetConfig().with_levels(levels)
        assert config.word_level == ("WL" in levels)


def test_bench_align_and_decoder_switches() -> None:
    bench = load_bench()
    args = bench.parse_args(["--align", "sentence", "--decoders", "none"])
    config = bench.model_config(args, "SL+PL")
    assert config.paragraph_level
    assert not config.align_paragraph
    assert config.align_sentence
    assert not config.paragraph_decoder


def test_bench_rejects_alignment_of_absent_level(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--out", str(tmp_path), "--levels", "SL+PL", "--align", "word,sentence"])
    assert exit_info.value.code == 2
    assert "--levels SL+PL --align word,sentence: align_word needs word_level" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
