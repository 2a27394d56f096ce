"""Measure video feature extraction speed: clips per second for decoding alone and with C3D.

Example:
    .venv/bin/python bench/extract_speed.py --video ../shared/data/videos/v_GGSY1Qvo990.mp4

Both numbers come from one run on the same video. Decoding runs first and alone; the second
pass decodes again and runs C3D, as ``hsc.extract.video.extract_video`` does. Without
``--weights`` C3D has random weights, which costs the same time as pretrained ones.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from hsc.extract.c3d import load_c3d
from hsc.extract.video import VideoSettings, extract_video, open_clip_reader


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, required=True, help="video file to extract")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per C3D forward pass")
    parser.add_argument("--device", default="cpu", help="torch device, for example cpu or cuda")
    parser.add_argument("--weights", type=Path, default=None, help="C3D state dict (optional)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    settings = VideoSettings()

    start = time.perf_counter()
    model, description = load_c3d(args.weights, args.device)
    load_s = time.perf_counter() - start

    start = time.perf_counter()
    with open_clip_reader(args.video, settings) as reader:
        decoded_clips = sum(len(batch) for batch in reader.batches(args.batch_size))
        decoder = reader.decoder
    decode_s = time.perf_counter() - start

    start = time.perf_counter()
    result = extract_video(args.video, model, settings, args.device, args.batch_size)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    extract_s = time.perf_counter() - start

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load_average = "n/a"
    if hasattr(os, "getloadavg"):
        load_average = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"video            {args.video} ({result.num_frames} frames, {result.fps:.2f} fps, "
          f"{result.duration:.2f} s, decoder {decoder})")
    print(f"machine          {platform.processor() or platform.machine()}, {cores} usable cores, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"device {args.device}, load average {load_average}")
    print(f"weights          {description} (loaded in {load_s:.2f} s)")
    print(f"batch size       {args.batch_size}")
    print(f"decode only      {decoded_clips} clips in {decode_s:.2f} s = "
          f"{decoded_clips / decode_s:.1f} clips/s")
    print(f"decode + C3D     {len(result.features)} clips in {extract_s:.2f} s = "
          f"{len(result.features) / extract_s:.2f} clips/s ({settings.layer})")


if __name__ == "__main__":
    main()
