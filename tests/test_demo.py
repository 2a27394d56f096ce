"""The demo pipeline on three generated videos (the full demo takes minutes)."""

from contextlib import contextmanager

from hsc.pipeline.demo import run_demo


@contextmanager
def no_progress(description, total):
    yield lambda item: None


def test_demo_runs_every_stage_and_resumes(tmp_path):
    run_demo(tmp_path / "demo", no_progress, lambda line: None, epochs=1, num_videos=(1, 1, 1))
    lines = []
    result = run_demo(tmp_path / "demo", no_progress, lines.append, epochs=2, num_videos=(1, 1, 1))

    assert set(result.metrics) == {"R@0.3", "R@0.5", "R@0.7", "mIoU"}
    assert set(result.baseline) == set(result.metrics)
    assert len(result.grounding["sentences"]) == len(result.truth)
    for sentence in result.grounding["sentences"]:
        assert 0.0 <= sentence["start"] <= sentence["end"] <= result.grounding["duration"]
    assert (tmp_path / "demo" / "test_predictions.json").is_file()
    # The rerun reused the first run's epoch and trained one more.
    history = (tmp_path / "demo" / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(history) == 2
    assert "train (1 of 2 epochs, the rest done by an earlier run)" in [line.split(":")[0] for line in lines]
