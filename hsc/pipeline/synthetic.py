"""Generate a small synthetic video paragraph grounding dataset for the demo.

Each video is a paragraph of 2 to 4 events of 1.5 to 3 s, in temporal order on a dark
background, with background-only gaps of random length before, between and after them. In each
event one shape of one color performs one action: it moves left, right, up or down, grows,
shrinks, blinks or spins. Every event of a paragraph has its own color, so each sentence
("A red circle moves to the left.") names exactly one event. All words are in the GloVe 6B
vocabulary.

The videos are H.264 mp4 files written with PyAV (MPEG-4 Part 2 where libx264 is missing). The
annotations follow the ActivityNet Captions format,
``{video_id: {"duration": s, "timestamps": [[start, end], ...], "sentences": [...]}}``, with
times in seconds on the frame grid. Shapes stay inside the region that the video feature
extractor keeps after it resizes frames to 128x171 and crops the central 112x112.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from hsc.extract.cache import InvalidInputError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

# Demo sizes, bounded by the cost of C3D on the demo's target of a 2-core CPU, where a randomly
# initialized C3D in torch 2.13 computes about 2 clips/s (measured, batch of 1 to 8 clips).
# At 8 fps a video of the default timeline has about 9 C3D clips of 16 frames every 8 frames,
# so these 44 videos come to about 400 clips.
DEFAULT_NUM_TRAIN = 30
DEFAULT_NUM_VAL = 6
DEFAULT_NUM_TEST = 8
DEFAULT_FPS = 8.0
DEFAULT_HEIGHT = 128
DEFAULT_WIDTH = 170

# Bump when sampling or rendering changes, so that an old dataset on disk is not reused.
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

# Saturated colors far apart in RGB (at least 130 apart in some channel), so that a pixel test
# with a tolerance of 50 per channel distinguishes them after lossy encoding.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 60),
    "blue": (40, 90, 255),
    "yellow": (245, 225, 20),
    "white": (235, 235, 235),
    "purple": (170, 60, 230),
    "cyan": (20, 220, 230),
}
SHAPES = ("circle", "square", "triangle", "diamond", "ring")
# A spin of a circle or a ring would leave every frame unchanged.
ROTATION_SYMMETRIC_SHAPES = frozenset({"circle", "ring"})

ACTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("moves to the left", "slides to the left", "moves left"),
    "right": ("moves to the right", "slides to the right", "moves right"),
    "up": ("moves up", "rises", "moves upward"),
    "down": ("moves down", "falls", "drops down"),
    "grow": ("grows", "gets bigger", "expands"),
    "shrink": ("shrinks", "gets smaller", "contracts"),
    "blink": ("blinks", "flashes on and off", "flickers"),
    "spin": ("spins", "rotates", "spins around"),
}
ACTIONS = tuple(ACTION_PHRASES)
# Prefixes of every sentence after the first one of a paragraph.
CONNECTIVES = ("", "then ", "after that, ", "next, ")

# Timeline. Short events and uneven background gaps keep the baseline that splits a video evenly
# among its sentences at a mean IoU of about 0.44 (measured over 2000 drawn videos), while
# videos last 10.7 s on average. Events of 1.5 to 5 s raised it to about 0.6 in a trial.
EVENT_COUNT_PROBABILITIES = {2: 0.5, 3: 0.3, 4: 0.2}
MIN_EVENT_S, MAX_EVENT_S = 1.5, 3.0
MIN_INNER_GAP_S = 0.5  # background between two events
# Background time on top of the minimum inner gaps, spread over the leading, inner and trailing
# gaps by a Dirichlet draw. A concentration below 1 makes the spread uneven.
MIN_EXTRA_GAP_S, MAX_EXTRA_GAP_S = 3.0, 5.0
GAP_CONCENTRATION = 0.2
MIN_DURATION_S, MAX_DURATION_S = 6.0, 14.0

# Geometry of the video extractor: frames are resized to 128x171 and cropped to the central
# 112x112, so only that part of a frame reaches the model.
EXTRACTOR_HEIGHT, EXTRACTOR_WIDTH, EXTRACTOR_CROP = 128, 171, 112
# Pixels kept free between a shape and the edge of the cropped region.
CROP_MARGIN = 3.0

MIN_RADIUS, MAX_RADIUS = 16.0, 22.0  # circumradius in pixels of a 128-pixel-high frame
GROW_SCALES = (0.45, 1.25)  # radius factor at the start and end of a "grow" event
SPIN_SPEED = 2.0 * math.pi / 3.0  # radians per second
BLINK_HALF_PERIOD_S = 0.25  # the shape is shown, then hidden, for this long each
BACKGROUND_LEVELS = (8, 28)  # range of the gray level of the background
BACKGROUND_NOISE = 3  # amplitude of the static per-pixel noise on the background


@dataclass(frozen=True)
class EventSpec:
    """One event: a shape of one color doing one action during frames [start_frame, end_frame).

    Positions are pixel offsets (row, column) of the shape center from the frame center,
    ``radius`` is the shape's circumradius in pixels and ``angle`` its initial rotation in radians.
    """

    color: str
    shape: str
    action: str
    start_frame: int
    end_frame: int
    radius: float
    center_start: tuple[float, float]
    center_end: tuple[float, float]
    angle: float
    spin_direction: int
    sentence: str


@dataclass(frozen=True)
class ParagraphSpec:
    """Everything needed to render one video and write its annotation."""

    fps: float
    num_frames: int
    height: int
    width: int
    background_level: int
    noise_seed: int
    events: tuple[EventSpec, ...]

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    @property
    def timestamps(self) -> list[list[float]]:
        """Event spans in seconds; an event covers the frames whose time lies in [start, end)."""
        return [[e.start_frame / self.fps, e.end_frame / self.fps] for e in self.events]

    @property
    def sentences(self) -> list[str]:
        return [e.sentence for e in self.events]

    def annotation(self) -> dict[str, Any]:
        """Return the ActivityNet Captions record of this video."""
        return {"duration": self.duration, "timestamps": self.timestamps, "sentences": self.sentences}


@dataclass(frozen=True)
class DemoDataset:
    """Paths of a generated dataset: one folder of videos and one annotation file per split."""

    root: Path
    videos_dir: Path
    annotation_paths: dict[str, Path]
    manifest_path: Path
    fps: float

    @property
    def train_annotations(self) -> Path:
        return self.annotation_paths["train"]

    @property
    def val_annotations(self) -> Path:
        return self.annotation_paths["val"]

    @property
    def test_annotations(self) -> Path:
        return self.annotation_paths["test"]

    def video_path(self, video_id: str) -> Path:
        return self.videos_dir / f"{video_id}.mp4"


def visible_box(height: int, width: int) -> tuple[float, float, float, float]:
    """Return the region (top, bottom, left, right) of a frame that the extractor's crop keeps.

    The extractor resizes a frame to 128x171 and keeps the central 112x112 pixels. Mapped back
    to a ``height`` x ``width`` frame, that crop covers the central 112/128 of the rows and
    112/171 of the columns.
    """
    half_rows = 0.5 * height * EXTRACTOR_CROP / EXTRACTOR_HEIGHT
    half_cols = 0.5 * width * EXTRACTOR_CROP / EXTRACTOR_WIDTH
    center_row, center_col = 0.5 * height, 0.5 * width
    return center_row - half_rows, center_row + half_rows, center_col - half_cols, center_col + half_cols


def sample_timeline(rng: np.random.Generator, fps: float) -> tuple[int, list[tuple[int, int]]]:
    """Draw a video length and its event spans, both in frames.

    Returns ``(num_frames, [(start_frame, end_frame), ...])``: 2 to 4 events of 1.5 to 3 s in
    order, background gaps of uneven length around them, and a total length of 6 to 14 s.
    Draws outside that length are redrawn.
    """
    counts = list(EVENT_COUNT_PROBABILITIES)
    num_events = int(rng.choice(counts, p=[EVENT_COUNT_PROBABILITIES[c] for c in counts]))
    for _ in range(10_000):
        event_s = rng.uniform(MIN_EVENT_S, MAX_EVENT_S, num_events)
        extra_gap_s = rng.uniform(MIN_EXTRA_GAP_S, MAX_EXTRA_GAP_S)
        duration_s = event_s.sum() + MIN_INNER_GAP_S * (num_events - 1) + extra_gap_s
        if MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
            break
    else:
        raise RuntimeError(f"no timeline of {MIN_DURATION_S}-{MAX_DURATION_S} s found")
    gap_s = rng.dirichlet([GAP_CONCENTRATION] * (num_events + 1)) * extra_gap_s
    gap_s[1:-1] += MIN_INNER_GAP_S

    # Rounding the boundaries, not the lengths, keeps every span within one frame of its draw.
    spans = []
    time_s = gap_s[0]
    for length_s, gap_after_s in zip(event_s, gap_s[1:]):
        spans.append((round(time_s * fps), round((time_s + length_s) * fps)))
        time_s += length_s + gap_after_s
    return round(duration_s * fps), spans


def _sample_motion(
    rng: np.random.Generator, action: str, radius: float, half_rows: float, half_cols: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Draw the start and end center offsets of a shape so that it stays in the visible box."""
    extent = radius * (GROW_SCALES[1] if action in ("grow", "shrink") else 1.0)
    row_room = max(half_rows - CROP_MARGIN - extent, 0.0)
    col_room = max(half_cols - CROP_MARGIN - extent, 0.0)
    if action in ("left", "right"):
        travel = col_room * rng.uniform(0.75, 1.0)
        row = rng.uniform(-0.5, 0.5) * row_room
        sign = 1.0 if action == "right" else -1.0
        return (row, -sign * travel), (row, sign * travel)
    if action in ("up", "down"):
        travel = row_room * rng.uniform(0.75, 1.0)
        col = rng.uniform(-0.5, 0.5) * col_room
        sign = 1.0 if action == "down" else -1.0  # rows grow downwards
        return (-sign * travel, col), (sign * travel, col)
    center = (rng.uniform(-0.5, 0.5) * row_room, rng.uniform(-0.5, 0.5) * col_room)
    return center, center


def _make_sentence(rng: np.random.Generator, color: str, shape: str, action: str, first: bool) -> str:
    phrases = ACTION_PHRASES[action]
    phrase = phrases[int(rng.integers(len(phrases)))]
    connective = "" if first else CONNECTIVES[int(rng.integers(len(CONNECTIVES)))]
    sentence = f"{connective}a {color} {shape} {phrase}."
    return sentence[0].upper() + sentence[1:]


def sample_paragraph(
    rng: np.random.Generator,
    fps: float = DEFAULT_FPS,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
) -> ParagraphSpec:
    """Draw one video: its timeline, one shape, color and action per event, and the sentences."""
    num_frames, spans = sample_timeline(rng, fps)
    top, bottom, left, right = visible_box(height, width)
    half_rows, half_cols = 0.5 * (bottom - top), 0.5 * (right - left)
    scale = min(height / DEFAULT_HEIGHT, width / DEFAULT_WIDTH)

    color_names = list(COLORS)
    color_indices = rng.choice(len(color_names), size=len(spans), replace=False)
    events = []
    for index, ((start, end), color_index) in enumerate(zip(spans, color_indices)):
        color = color_names[int(color_index)]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        actions = [a for a in ACTIONS if not (a == "spin" and shape in ROTATION_SYMMETRIC_SHAPES)]
        action = actions[int(rng.integers(len(actions)))]
        radius = rng.uniform(MIN_RADIUS, MAX_RADIUS) * scale
        center_start, center_end = _sample_motion(rng, action, radius, half_rows, half_cols)
        events.append(
            EventSpec(
                color=color,
                shape=shape,
                action=action,
                start_frame=start,
                end_frame=end,
                radius=float(radius),
                center_start=(float(center_start[0]), float(center_start[1])),
                center_end=(float(center_end[0]), float(center_end[1])),
                angle=float(rng.uniform(0.0, 2.0 * math.pi)),
                spin_direction=1 if rng.random() < 0.5 else -1,
                sentence=_make_sentence(rng, color, shape, action, first=index == 0),
            )
        )
    return ParagraphSpec(
        fps=fps,
        num_frames=num_frames,
        height=height,
        width=width,
        background_level=int(rng.integers(BACKGROUND_LEVELS[0], BACKGROUND_LEVELS[1] + 1)),
        noise_seed=int(rng.integers(2**31)),
        events=tuple(events),
    )


def shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Return the pixels covered by ``shape`` given each pixel's offset (dy, dx) from its center.

    Every shape fits in the circle of ``radius``; ``angle`` rotates it (radians).
    """
    cos, sin = math.cos(angle), math.sin(angle)
    u = dx * cos + dy * sin
    v = -dx * sin + dy * cos
    if shape == "circle":
        return u * u + v * v <= radius * radius
    if shape == "ring":
        squared = u * u + v * v
        return (squared <= radius * radius) & (squared >= (0.55 * radius) ** 2)
    if shape == "square":
        half_side = radius / math.sqrt(2.0)
        return (np.abs(u) <= half_side) & (np.abs(v) <= half_side)
    if shape == "diamond":
        return np.abs(u) / (0.65 * radius) + np.abs(v) / radius <= 1.0
    if shape == "triangle":
        # An equilateral triangle is the intersection of three half-planes at the inradius r/2.
        mask = np.ones(u.shape, dtype=bool)
        for k in range(3):
            normal = math.pi / 2 + k * 2.0 * math.pi / 3.0
            mask &= u * math.cos(normal) + v * math.sin(normal) <= 0.5 * radius
        return mask
    raise InvalidInputError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def _event_state(event: EventSpec, frame: int, fps: float) -> tuple[float, float, float, float, bool]:
    """Return (row offset, column offset, radius, angle, visible) of ``event`` at ``frame``."""
    offset = frame - event.start_frame
    progress = offset / max(event.end_frame - event.start_frame - 1, 1)
    row = event.center_start[0] + progress * (event.center_end[0] - event.center_start[0])
    col = event.center_start[1] + progress * (event.center_end[1] - event.center_start[1])
    radius, angle, visible = event.radius, event.angle, True
    if event.action == "grow":
        radius *= GROW_SCALES[0] + progress * (GROW_SCALES[1] - GROW_SCALES[0])
    elif event.action == "shrink":
        radius *= GROW_SCALES[1] - progress * (GROW_SCALES[1] - GROW_SCALES[0])
    elif event.action == "spin":
        angle += event.spin_direction * SPIN_SPEED * offset / fps
    elif event.action == "blink":
        half_period = max(1, round(BLINK_HALF_PERIOD_S * fps))
        visible = (offset // half_period) % 2 == 0
    return row, col, radius, angle, visible


def render_paragraph(spec: ParagraphSpec) -> np.ndarray:
    """Render the frames of ``spec`` as a uint8 array of shape (num_frames, height, width, 3)."""
    noise_rng = np.random.default_rng(spec.noise_seed)
    noise = noise_rng.integers(-BACKGROUND_NOISE, BACKGROUND_NOISE + 1, (spec.height, spec.width, 1))
    background = np.clip(spec.background_level + noise, 0, 255).astype(np.uint8)
    frames = np.empty((spec.num_frames, spec.height, spec.width, 3), dtype=np.uint8)
    frames[:] = background

    rows, cols = np.mgrid[0 : spec.height, 0 : spec.width].astype(np.float64)
    center_row, center_col = 0.5 * (spec.height - 1), 0.5 * (spec.width - 1)
    for event in spec.events:
        color = np.array(COLORS[event.color], dtype=np.uint8)
        for frame in range(event.start_frame, event.end_frame):
            row, col, radius, angle, visible = _event_state(event, frame, spec.fps)
            if not visible:
                continue
            dy, dx = rows - (center_row + row), cols - (center_col + col)
            frames[frame][shape_mask(event.shape, dy, dx, radius, angle)] = color
    return frames


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> None:
    """Encode RGB ``frames`` (uint8, shape (N, H, W, 3), even H and W) as an H.264 mp4 at ``fps``.

    Falls back to MPEG-4 Part 2 where the PyAV build has no libx264 encoder.
    """
    path = Path(path)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidInputError(
            f"frames for {path} have dtype {frames.dtype} and shape {frames.shape}; "
            "expected uint8 RGB frames of shape (N, H, W, 3)"
        )
    num_frames, height, width, _ = frames.shape
    if num_frames == 0 or height % 2 or width % 2:
        raise InvalidInputError(
            f"frames for {path} have shape {frames.shape}; expected at least one frame and an even "
            "height and width, because yuv420p stores color at half resolution"
        )
    if not fps > 0:
        raise InvalidInputError(f"fps for {path} is {fps}; expected a positive frame rate")

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.height = height
        stream.width = width
        stream.pix_fmt = "yuv420p"
        # Near-lossless settings keep colors within the tolerance of the pixel tests.
        stream.options = {"crf": "18"} if codec == "libx264" else {"qscale": "2"}
        for frame in frames:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _video_id(split: str, index: int) -> str:
    return f"demo_{split}_{index:03d}"


def _paragraph_rng(seed: int, split: str, index: int) -> np.random.Generator:
    # One stream per video, so a video does not change when the size of its split changes.
    return np.random.default_rng([seed, SPLITS.index(split), index])


def _dataset_paths(root: Path, fps: float) -> DemoDataset:
    return DemoDataset(
        root=root,
        videos_dir=root / "videos",
        annotation_paths={split: root / "annotations" / f"{split}.json" for split in SPLITS},
        manifest_path=root / MANIFEST_NAME,
        fps=fps,
    )


def _validate_parameters(parameters: dict[str, Any]) -> None:
    for split in SPLITS:
        count = parameters[f"num_{split}"]
        if count < 0:
            raise InvalidInputError(f"num_{split} is {count}; expected 0 or more videos")
    if parameters["num_train"] < 1:
        raise InvalidInputError("num_train is 0; expected at least one training video")
    # The shortest video must still hold one 16-frame clip.
    min_fps = 16 / MIN_DURATION_S
    if not parameters["fps"] >= min_fps:
        raise InvalidInputError(
            f"fps is {parameters['fps']}; expected at least {min_fps:.2f} so that every video "
            f"of {MIN_DURATION_S} s or more has 16 frames"
        )
    height, width = parameters["height"], parameters["width"]
    if height < 32 or width < 32 or height % 2 or width % 2:
        raise InvalidInputError(f"frame size {height}x{width}; expected even sizes of 32 pixels or more")


def _read_manifest(dataset: DemoDataset) -> dict[str, Any] | None:
    """Return the manifest under ``dataset.root``, or None where no finished dataset is there."""
    if not dataset.manifest_path.is_file():
        return None
    try:
        manifest = json.loads(dataset.manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise InvalidInputError(
            f"{dataset.manifest_path} is not valid JSON ({error}); delete {dataset.root} to "
            "generate the demo dataset again"
        ) from error
    if not isinstance(manifest, dict) or not isinstance(manifest.get("parameters"), dict):
        raise InvalidInputError(
            f"{dataset.manifest_path} has no 'parameters' record; delete {dataset.root} to "
            "generate the demo dataset again"
        )
    return manifest


def _is_complete(dataset: DemoDataset, manifest: dict[str, Any]) -> bool:
    videos = [dataset.video_path(video_id) for video_id in manifest.get("videos", {})]
    missing = [path for path in [*videos, *dataset.annotation_paths.values()] if not path.is_file()]
    if missing:
        log.warning(
            "demo dataset in %s is missing %d files (first: %s); generating it again",
            dataset.root,
            len(missing),
            missing[0],
        )
    return not missing


def make_demo_dataset(
    root: str | Path,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    num_test: int = DEFAULT_NUM_TEST,
    fps: float = DEFAULT_FPS,
    seed: int = 0,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    progress: Callable[[str], None] | None = None,
) -> DemoDataset:
    """Generate the demo videos and annotations under ``root``, or reuse them if already there.

    Writes ``root/videos/<id>.mp4`` for every split, ``root/annotations/{train,val,test}.json``
    and, last, ``root/manifest.json`` with the parameters and per-video frame counts. A root whose
    manifest has the same parameters and whose files all exist is reused as is. A root made
    with other parameters raises ``InvalidInputError``, because caches built from its videos
    would no longer match. Annotations and decoded frames depend only on the parameters.

    Sizes: the defaults (seed 0) give 44 videos of 6-14 s at 8 fps, 407 C3D clips of 16 frames
    every 8 frames in all (273 train, 62 val, 72 test), generated in about 3 s on 2 CPU cores.
    ``progress(video_id)`` is called after each video written.
    """
    root = Path(root)
    parameters: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "num_test": int(num_test),
        "fps": float(fps),
        "seed": int(seed),
        "height": int(height),
        "width": int(width),
    }
    _validate_parameters(parameters)
    dataset = _dataset_paths(root, float(fps))

    manifest = _read_manifest(dataset)
    if manifest is not None:
        stored = manifest["parameters"]
        if stored != parameters:
            diffs = [
                f"{key}: dataset has {stored.get(key)!r}, requested {parameters.get(key)!r}"
                for key in sorted(set(stored) | set(parameters))
                if stored.get(key) != parameters.get(key)
            ]
            raise InvalidInputError(
                f"{root} contains a demo dataset made with other parameters ({'; '.join(diffs)}). "
                "Choose another folder, or delete this one to generate it again."
            )
        if _is_complete(dataset, manifest):
            log.info("reusing the demo dataset in %s", root)
            return dataset
        dataset.manifest_path.unlink()

    videos: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        annotations: dict[str, Any] = {}
        for index in range(parameters[f"num_{split}"]):
            video_id = _video_id(split, index)
            rng = _paragraph_rng(seed, split, index)
            spec = sample_paragraph(rng, float(fps), int(height), int(width))
            write_video(dataset.video_path(video_id), render_paragraph(spec), float(fps))
            annotations[video_id] = spec.annotation()
            videos[video_id] = {"split": split, "num_frames": spec.num_frames, "duration": spec.duration}
            if progress is not None:
                progress(video_id)
        path = dataset.annotation_paths[split]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(annotations, indent=1))

    # Videos left by an interrupted run with larger splits would otherwise be picked up by
    # anything that reads the whole folder.
    for stale in dataset.videos_dir.glob("demo_*.mp4"):
        if stale.stem not in videos:
            log.info("removing %s, which is not part of this dataset", stale)
            stale.unlink()

    manifest = {"generator": __name__, "parameters": parameters, "videos": videos}
    partial = dataset.manifest_path.with_suffix(".json.partial")
    partial.write_text(json.dumps(manifest, indent=1))
    partial.replace(dataset.manifest_path)
    log.info("wrote %d demo videos to %s", len(videos), dataset.videos_dir)
    return dataset
