"""Benchmark: the whole job (`howard_core.matte`) against the model alone, and its memory, as JSON.

    howard bench pipeline [--frames 8] [--size 1920x1080] [--clean-format exr|png] [--repeats 1]
                          [--memory-size 480x270] [--memory-frames 10,200] [--no-memory]
                          [--model M] [--precision auto] [--batch-size 1] [--workdir DIR]

Throughput: a synthetic hand-held shot (`howard_core.synth.make_shot`) is written to disk
first: the plate as a scene-linear half-float EXR sequence, the clean plate (a longer take
on its own camera path) as an EXR or 8-bit PNG sequence. Then, in the same process and
alternating within each repeat so machine noise hits both alike:

* pipeline: `matte()` on those files, read -> align -> matte -> write EXR, timed around the
  call (end to end, model load and report included) and as its report's streaming `fps`;
* model only: `Matter` (same model, device, precision, batch size) on the same plate frames
  and the clean-plate frames, already decoded and in memory.

`ratio` is pipeline fps / model-only fps (medians over repeats). Both are warmed up first
(oneDNN chooses kernels on first use). The report's per-stage seconds (read, align, matte,
write: busy time of each concurrent stage) come from the last pipeline run, and
`cpu_s_per_frame` gives the process's CPU time per frame for each path: where it is more
than the cores can supply, the stages around the model slow the model down. `cpu_bound`
spells that out: with inference on the same CPU, the pipeline can run at most at
cores / (its CPU-seconds per frame) (`pipeline_fps_ceiling`; `cores_busy` is the share of
that it reached), and so at most at `ratio_ceiling` = model CPU / pipeline CPU per frame of
the model-only rate. Only inference on another device (a GPU), or cheaper decode, alignment
and encode, lifts that ceiling.

Memory: for each clip length in `--memory-frames` the inputs are written at `--memory-size`
and `matte()` runs in a fresh subprocess that reports its peak resident memory (VmHWM
from /proc/self/status, else ru_maxrss) once after loading the model and again after the
run. The child prepares its process as the `howard` command does (`howard_core.runtime`).
A streaming pipeline's peak should not grow with clip length.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from howard_core.errors import HowardError
from howard_core.runtime import cpu_cores


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: write it as WIDTHxHEIGHT, e.g. 1920x1080") from None
    if w < 64 or h < 64:
        raise argparse.ArgumentTypeError(f"size {text!r}: at least 64x64")
    return w, h


def write_inputs(folder: Path, width: int, height: int, frames: int, clean_format: str = "exr",
                 seed: int = 2026) -> tuple[str, str]:
    """A synthetic plate (EXR, linear, frames 1001 on) and a longer clean take (EXR or PNG, frames 1 on),
    written one frame at a time; returns (plate pattern, clean pattern)."""
    from howard_core.io import open_sink
    from howard_core.synth import make_shot, srgb_to_linear

    clean_frames = frames + max(2, frames // 4)
    shot = make_shot(width=width, height=height, plate_frames=frames, clean_frames=clean_frames, seed=seed,
                     lazy=True)
    plate = folder / "plate" / "plate.####.exr"
    clean = folder / "clean" / f"clean.####.{clean_format}"
    opaque = np.ones((height, width), np.float32)
    with open_sink(plate, "exr", colorspace="linear") as sink:
        for k in range(frames):
            sink.write(1001 + k, srgb_to_linear(shot.plate[k]), opaque)
    if clean_format == "exr":
        with open_sink(clean, "exr", colorspace="linear") as sink:
            for k in range(clean_frames):
                sink.write(1 + k, srgb_to_linear(shot.clean[k]), opaque)
    else:
        with open_sink(clean, "png", colorspace="srgb") as sink:
            for k in range(clean_frames):
                sink.write(1 + k, shot.clean[k], opaque)
    return str(plate), str(clean)


def _frames_in_memory(plate: str, clean: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The plate frames and the clean frames the linear mapping pairs them with, decoded to the
    network's working space at plate size, as the (1, 3, H, W) tensors the pipeline hands `Matter`."""
    from howard_core.align.sequence import Timing
    from howard_core.io import open_source, resize_to
    from howard_core.pipeline import to_tensor as _to_tensor

    with open_source(plate) as src, open_source(clean, colorspace=None) as cln:
        numbers = cln.frame_numbers
        timing = Timing.linear(len(src), len(numbers))
        srcs, bgrs = [], []
        for i, n in enumerate(src.frame_numbers):
            srcs.append(_to_tensor([src.read(n)]))
            bg = cln.read(numbers[int(round(timing.position(i)))])
            bgrs.append(_to_tensor([resize_to(bg, src.width, src.height)]))
    return srcs, bgrs


def _model_only(matter, srcs, bgrs, batch_size: int) -> float:
    """Seconds for `matter` over all frames, in batches like the pipeline's (inputs from host memory,
    as the pipeline's are; on a GPU, until its last kernel has finished)."""
    start = time.perf_counter()
    for k in range(0, len(srcs), batch_size):
        matter(torch.cat(srcs[k:k + batch_size]), torch.cat(bgrs[k:k + batch_size]))
    if matter.device.type == "cuda":
        torch.cuda.synchronize(matter.device)
    return time.perf_counter() - start


def bench_throughput(args, work: Path) -> dict:
    from howard_core.model import Matter
    from howard_core.pipeline import matte
    from howard_core.weights import resolve_model

    width, height = args.size
    t0 = time.perf_counter()
    plate, clean = write_inputs(work / "hd", width, height, args.frames, args.clean_format)
    write_s = time.perf_counter() - t0
    srcs, bgrs = _frames_in_memory(plate, clean)
    net = resolve_model(args.model)
    matter = Matter(net, device=args.device, precision=args.precision)
    options = dict(model=net, device=args.device, precision=args.precision, batch_size=args.batch_size)

    # Warm-up: oneDNN picks kernels on first use, for both paths.
    matter(srcs[0], bgrs[0])
    matte(plate, clean, work / "warmup", frames=[1001], **options)

    pipe_fps, pipe_stream_fps, model_fps, pipe_cpu, model_cpu, report = [], [], [], [], [], None
    for r in range(args.repeats):
        start, cpu = time.perf_counter(), time.process_time()  # CPU time of all this process's threads
        report = matte(plate, clean, work / f"out{r}", **options)
        pipe_fps.append(args.frames / (time.perf_counter() - start))
        pipe_cpu.append((time.process_time() - cpu) / args.frames)
        pipe_stream_fps.append(report["timing"]["fps"])
        cpu = time.process_time()
        model_fps.append(args.frames / _model_only(matter, srcs, bgrs, args.batch_size))
        model_cpu.append((time.process_time() - cpu) / args.frames)
    p, s, m = (statistics.median(v) for v in (pipe_fps, pipe_stream_fps, model_fps))
    cpu_pipe, cpu_model = statistics.median(pipe_cpu), statistics.median(model_cpu)
    cores = cpu_cores()
    timing = report["timing"]
    return {
        "size": f"{width}x{height}", "frames": args.frames, "repeats": args.repeats,
        "clean_plate": f"{Path(clean).name}, {args.frames + max(2, args.frames // 4)} frames",
        "pipeline_fps": round(p, 3), "pipeline_stream_fps": round(s, 3), "model_only_fps": round(m, 3),
        "ratio": round(p / m, 3), "ratio_stream": round(s / m, 3), "target_ratio": 0.8,
        "meets_target": p / m >= 0.8,
        "runs": {"pipeline_fps": [round(v, 3) for v in pipe_fps],
                 "pipeline_stream_fps": [round(v, 3) for v in pipe_stream_fps],
                 "model_only_fps": [round(v, 3) for v in model_fps]},
        "stage_seconds": {k: timing[k] for k in ("wall_s", "read_s", "align_s", "matte_s", "write_s")},
        # CPU seconds per frame (all threads): with few cores, the stages around the model compete with it.
        "cpu_s_per_frame": {"pipeline": round(cpu_pipe, 3), "model_only": round(cpu_model, 3)},
        # Where inference shares the CPU with decoding, alignment and writing, a frame costs the
        # pipeline cpu_pipe CPU-seconds against the model's cpu_model: that bounds the ratio.
        "cpu_bound": {"cores": cores, "pipeline_fps_ceiling": round(cores / cpu_pipe, 3),
                      "cores_busy": round(p * cpu_pipe / cores, 3),
                      "ratio_ceiling": round(cpu_model / cpu_pipe, 3)},
        "flagged_frames": len(report["flagged_frames"]),
        "model": report["model"], "settings": report["settings"],
        "input_write_s": round(write_s, 2),
    }


# The child that runs one job and reports its memory. It loads the model before measuring the
# baseline, so the difference is what the streaming job itself holds.
_CHILD = r"""
import json, os, resource, sys, time

def peak_kib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

from howard_core.runtime import prepare_process
prepare_process()  # as the howard command does, before any thread starts
import torch
torch.set_num_threads(int(sys.argv[5]))
from howard_core.pipeline import matte
from howard_core.weights import resolve_model
net = resolve_model(sys.argv[4] or None)
base = peak_kib()
start = time.perf_counter()
report = matte(sys.argv[1], sys.argv[2], sys.argv[3], model=net)
print(json.dumps({"baseline_peak_kib": base, "peak_kib": peak_kib(), "wall_s": time.perf_counter() - start,
                  "frames_done": report["frames_done"], "fps": report["timing"]["fps"],
                  "stage_seconds": {k: report["timing"][k] for k in ("read_s", "align_s", "matte_s", "write_s")}}))
"""


def bench_memory(args, work: Path) -> dict:
    width, height = args.memory_size
    rows = []
    for frames in args.memory_frames:
        folder = work / f"mem{frames}"
        plate, clean = write_inputs(folder, width, height, frames, "exr")
        proc = subprocess.run([sys.executable, "-c", _CHILD, plate, clean, str(folder / "out"), args.model or "",
                               str(torch.get_num_threads())], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise HowardError(f"memory run of {frames} frames failed: {tail}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"frames": frames, "frames_done": res["frames_done"],
                     "peak_rss_mib": round(res["peak_kib"] / 1024, 1),
                     "after_model_load_mib": round(res["baseline_peak_kib"] / 1024, 1),
                     "job_increment_mib": round((res["peak_kib"] - res["baseline_peak_kib"]) / 1024, 1),
                     "fps": res["fps"], "wall_s": round(res["wall_s"], 2), "stage_seconds": res["stage_seconds"]})
    out = {"size": f"{width}x{height}", "runs": rows,
           "method": "peak RSS (VmHWM) of a fresh process running matte() on EXR files on disk"}
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        out["peak_growth_mib"] = round(last["peak_rss_mib"] - first["peak_rss_mib"], 1)
        out["peak_growth_per_frame_kib"] = round(
            (last["peak_rss_mib"] - first["peak_rss_mib"]) * 1024 / (last["frames"] - first["frames"]), 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="howard bench pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=8, help="plate frames for the throughput run (default 8)")
    ap.add_argument("--size", type=_size, default=(1920, 1080), help="throughput frame size (default 1920x1080)")
    ap.add_argument("--clean-format", choices=["exr", "png"], default="exr")
    ap.add_argument("--repeats", type=int, default=1, help="pipeline/model-only pairs; medians reported")
    ap.add_argument("--memory-size", type=_size, default=(480, 270), help="memory run frame size (default 480x270)")
    ap.add_argument("--memory-frames", default="10,200", help="clip lengths for the memory runs (default 10,200)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory runs")
    ap.add_argument("--no-throughput", action="store_true", help="skip the throughput runs")
    ap.add_argument("--model", help="checkpoint or installed weights name (default: bundled / untrained)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--workdir", help="keep the generated inputs and outputs here (default: a temp folder)")
    args = ap.parse_args(argv)
    if args.frames < 2 or args.repeats < 1:
        ap.error("--frames must be at least 2 and --repeats at least 1")
    try:
        args.memory_frames = sorted({int(v) for v in args.memory_frames.split(",") if v.strip()})
    except ValueError:
        ap.error(f"--memory-frames {args.memory_frames!r}: give clip lengths such as 10,200")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="howard_bench_") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        given = sys.argv[1:] if argv is None else list(argv)
        result = {"benchmark": "pipeline", "command": " ".join(["howard bench pipeline", *given]),
                  "machine": {"python": platform.python_version(), "torch": torch.__version__,
                              "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                              "processor": platform.processor() or platform.machine()}}
        try:
            if not args.no_throughput:
                result["throughput"] = bench_throughput(args, work)
            if not args.no_memory:
                result["memory"] = bench_memory(args, work)
        except HowardError as exc:
            print(f"howard: error: {exc}", file=sys.stderr)
            return exc.exit_code
    result["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
