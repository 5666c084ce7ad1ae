"""Benchmark: the main job on a Dask cluster of 1 and 2 local worker processes, against one process, as JSON.

    howard bench farm [--frames 24] [--size 960x540] [--chunk-size 6] [--workers 1,2] [--workdir DIR]

A synthetic hand-held shot (`bench.pipeline.write_inputs`: linear half-float EXR plate and clean
take) is matted three ways, each as a whole `howard matte` process launched as a user would: on
one machine with no cluster, then `--cluster local:N` for each N. Reported per run: wall seconds,
frames per second, and from the merged report each chunk's worker and seconds. Also measured:

* `process_start_s`: a one-frame `howard matte` run's wall time, the cost a command-line farm
  engine (OpenJD, OpenCue: one process per chunk) pays per chunk before its frames, model load
  included;
* `storage_mib_per_frame`: what one frame moves to and from shared storage (the plate frame, its
  share of the clean take, which the aligner reads once, and the output), from file sizes on disk.

`extrapolate` applies those to a clip of `--clip-frames` on `--nodes` nodes (default 10,000 on 100):
wall time = frames per node x seconds per frame + chunks per node x start-up, and the storage
traffic the whole job moves. On a 2-core machine two workers share the cores with each other, so
do not expect 2x from 1 to 2 workers here: `scaling` says what it was.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from howard_core.bench.pipeline import _size, write_inputs


def _howard() -> list[str]:
    return [sys.executable, "-m", "howard_core.cli"]


def _run(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"howard bench farm: {' '.join(map(str, argv[3:6]))} failed: {proc.stderr.strip()[-500:]}")
    return time.perf_counter() - start


def _mib(paths) -> float:
    return sum(p.stat().st_size for p in paths) / 2**20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="howard bench farm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=_size, default=(960, 540))
    ap.add_argument("--chunk-size", type=int, default=6)
    ap.add_argument("--workers", default="1,2", help="local worker counts to run (default 1,2)")
    ap.add_argument("--clip-frames", type=int, default=10_000, help="clip length for the extrapolation")
    ap.add_argument("--nodes", type=int, default=100, help="farm nodes for the extrapolation")
    ap.add_argument("--workdir", help="keep inputs and outputs here (default: a temp folder)")
    args = ap.parse_args(argv)
    counts = sorted({int(v) for v in args.workers.split(",") if v.strip()})

    with tempfile.TemporaryDirectory(prefix="howard_bench_farm_") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        plate, clean = write_inputs(work, *args.size, args.frames)
        base = [*_howard(), "matte", plate, clean, "--progress", "none", "--threads", "1"]
        start_s = _run([*base, "-o", str(work / "start"), "--frames", "1001"])
        runs = {"one_process": {"wall_s": round(_run([*base, "-o", str(work / "single")]), 3)}}
        for n in counts:
            out = work / f"local{n}"
            wall = _run([*base, "-o", str(out), "--cluster", f"local:{n}", "--chunk-size", str(args.chunk_size)])
            rep = json.loads(next(out.glob("howard_report.*.json")).read_text())
            runs[f"local_{n}"] = {"wall_s": round(wall, 3), "engine_wall_s": rep["engine"]["wall_s"],
                                  "chunks": [{k: c[k] for k in ("frames", "worker", "seconds", "retries")}
                                             for c in rep["chunks"]]}
        for run in runs.values():
            run["fps"] = round(args.frames / run["wall_s"], 3)

        single = work / "single"
        clean_files = sorted(Path(clean).parent.glob("clean.*.exr"))
        plate_files = sorted(Path(plate).parent.glob("plate.*.exr"))
        # The aligner reads each clean frame of the take once (it caches its window), so the take's
        # size spread over the plate frames is what one plate frame costs.
        traffic = {"plate": _mib(plate_files) / args.frames, "clean": _mib(clean_files) / args.frames,
                   "output": _mib(single.glob("plate_matte.*.exr")) / args.frames}
        traffic["total"] = sum(traffic.values())

    s_per_frame = runs["one_process"]["wall_s"] / args.frames
    chunk = args.chunk_size
    chunks_per_node = math.ceil(args.clip_frames / chunk / args.nodes)
    frames_per_node = math.ceil(args.clip_frames / args.nodes)
    result = {
        "benchmark": "farm", "command": " ".join(["howard bench farm", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
        "shot": {"frames": args.frames, "size": f"{args.size[0]}x{args.size[1]}", "chunk_size": chunk},
        "runs": runs,
        "scaling": {f"local_{n}_vs_one_process": round(runs["one_process"]["wall_s"] / runs[f"local_{n}"]["wall_s"], 3)
                    for n in counts},
        "process_start_s": round(start_s, 3),
        "storage_mib_per_frame": {k: round(v, 3) for k, v in traffic.items()},
        "extrapolate": {
            "clip_frames": args.clip_frames, "nodes": args.nodes, "chunk_size": chunk,
            "assumes": "each node as fast as this machine's one-process run; storage not the bottleneck",
            "seconds_per_frame_per_node": round(s_per_frame, 3),
            "wall_s_command_line_engines": round(frames_per_node * s_per_frame + chunks_per_node * start_s, 1),
            "wall_s_dask_model_loaded_once": round(frames_per_node * s_per_frame + start_s, 1),
            "storage_gib_total": round(traffic["total"] * args.clip_frames / 1024, 2),
            "storage_mib_s_at_full_speed": round(traffic["total"] * args.nodes / s_per_frame, 1),
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
