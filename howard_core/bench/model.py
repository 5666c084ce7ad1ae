"""Benchmark: HD frames per second of the plain BGMv2 model and of `Matter`, printed as JSON.

    howard bench model [--backbones mobilenetv2,resnet50,resnet101] [--repeats 5] [--weights PATH]

Both run on the same synthetic 1920x1080 plate/clean-plate pair, sampling mode
with 80,000 refined pixels (the published HD setting), one frame per call.
Plain and Matter are timed alternately within each repeat so machine noise hits
both alike; the speed-ups are ratios of medians from the same run:
`speedup_vs_plain` against the plain model at the same precision (bf16 under
autocast), `speedup_vs_official` against the plain model in fp32, as the official
inference script runs it (fp32 rows: the same figure). Untrained
weights refine patches scattered over the frame (their error maps are noise),
which is the refiner's worst case; trained weights concentrate patches along
the subject's edges, where Matter's tiled first stage applies.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time

import torch

from howard_core.model import BACKBONES, Matter, MattingRefine, load_model
from howard_core.model.engine import cpu_supports_bf16


def _hd_pair(width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    from howard_core.synth import make_shot

    shot = make_shot(width=width, height=height, plate_frames=1, clean_frames=1, seed=7)
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).contiguous()  # noqa: E731
    return to_t(shot.plate[0]), to_t(shot.clean[0])


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _plain_call(model, src, bgr, dtype):
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        model(src, bgr)


def bench_backbone(model: MattingRefine, src, bgr, precisions, repeats: int) -> list[dict]:
    rows = []
    official = functools.partial(_plain_call, model, src, bgr, None)
    for precision in precisions:
        matter = Matter(model, device="cpu", precision=precision)
        plain = functools.partial(_plain_call, model, src, bgr, torch.bfloat16 if precision == "bf16" else None)
        # Each gets frames as its own job hands them over: the official script's loader makes NCHW
        # tensors, Howard's pipeline passes its H x W x 3 frames as channels-last views.
        fast = functools.partial(matter, src.contiguous(memory_format=torch.channels_last),
                                 bgr.contiguous(memory_format=torch.channels_last))
        plain(), fast()  # warm-up: oneDNN picks kernels on first use
        t_plain, t_fast, t_official = [], [], []
        for _ in range(repeats):
            t_plain.append(_time(plain))
            t_fast.append(_time(fast))
            if precision != "fp32":
                t_official.append(_time(official))
        p, f = statistics.median(t_plain), statistics.median(t_fast)
        o = statistics.median(t_official) if t_official else p
        rows.append({"backbone": model.backbone_name, "precision": precision,
                     "plain_s": round(p, 4), "matter_s": round(f, 4), "official_fp32_s": round(o, 4),
                     "plain_fps": round(1 / p, 3), "matter_fps": round(1 / f, 3),
                     "speedup_vs_plain": round(p / f, 2), "speedup_vs_official": round(o / f, 2),
                     "plain_min_s": round(min(t_plain), 4), "matter_min_s": round(min(t_fast), 4)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="howard bench model", description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", default=",".join(BACKBONES))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT (default 1920x1080)")
    ap.add_argument("--sample-pixels", type=int, default=80_000)
    ap.add_argument("--weights", help="benchmark this checkpoint instead of untrained weights")
    ap.add_argument("--precisions", default=None, help="comma list of fp32,bf16 (default: fp32 and bf16 if supported)")
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    precisions = args.precisions.split(",") if args.precisions else (
        ["fp32", "bf16"] if cpu_supports_bf16() else ["fp32"])
    src, bgr = _hd_pair(width, height)
    results = []
    if args.weights:
        models = [load_model(args.weights, refine_sample_pixels=args.sample_pixels)]
    else:
        torch.manual_seed(0)
        models = (MattingRefine(b, refine_sample_pixels=args.sample_pixels).eval() for b in args.backbones.split(","))
    for model in models:
        results += bench_backbone(model, src, bgr, precisions, args.repeats)
    print(json.dumps({
        "benchmark": "model", "size": [width, height], "refine_mode": "sampling",
        "refine_sample_pixels": args.sample_pixels, "weights": args.weights or "untrained (seed 0)",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "openmp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu": platform.processor() or platform.machine(),
        "bf16_supported": cpu_supports_bf16(), "repeats": args.repeats, "results": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
