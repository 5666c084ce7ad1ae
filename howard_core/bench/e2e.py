"""Benchmark: the whole job as a user runs it, one process from launch to exit, printed as JSON.

    howard bench e2e [--frames 12] [--size 1920x1080] [--inputs movie,sequence] [--outputs png,exr,alpha]
                     [--official PATH [--official-python PY]] [--model M] [--precision P] [--workdir DIR]

A synthetic hand-held shot with depth (`howard_core.synth.make_shot`) is written first: the plate
as an MPEG-4 movie (`movie`) and as an 8-bit PNG sequence (`sequence`), and the clean plate as one
still PNG from the clean take (the official script takes one background image). Then every
input x output pair runs as `howard matte PLATE CLEAN -o OUT` in a fresh process, timed from launch
to exit; outputs: `png` (RGBA PNG), `exr` (RGBA EXR), `alpha` (alpha-only PNG).

Per run: wall seconds launch to exit, time to first frame (launch to the first finished output
file appearing in the output folder, polled every 10 ms), peak resident memory of the process
(wait4's ru_maxrss), the per-stage split and CPU budget from Howard's own report, and the matte
error against the shot's true alpha (mean absolute difference, and SAD per frame in thousands
of pixels as the BGMv2 paper counts it).

`--official PATH` runs the official BGMv2 code found at PATH (a checkout the user has; this tool
never downloads it) on the same movie and still, side by side: `inference_video.py
--preprocess-alignment --output-format image_sequences` with `--output-types com` (RGBA PNG)
and `pha` (alpha JPEG), the published HD settings, on the CPU, with the same MobileNetV2
weights (the model Howard loads, saved as an official-format state_dict in a temp file). It runs
from a temp copy with one change its alignment needs on current OpenCV (`matcher.match` returns
a tuple, which has no `.sort`). `--official-python` names the interpreter that has the official
code's dependencies (torch, torchvision, OpenCV, Pillow, tqdm); default: this one.
`speedup` compares each Howard run with each official run, all from this one invocation, by wall
time; `cpu_speedup` by CPU seconds (less sensitive to other load on a shared machine).

Before each tool's runs its Python imports torch, torchvision, OpenCV and NumPy once, untimed
(`warm_up`): a tool launched after its libraries left the page cache otherwise pays for reading them
from disk (`import torch` took 4.0 s there against 1.7 s warm), and whichever tool ran first paid it.

`--long-frames N` adds the movie -> RGBA PNG run on an N-frame shot of the same kind, and reports
the peak memory of both lengths side by side (`memory`): a streaming job's peak should not grow with
the clip.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from howard_core.errors import HowardError

INPUTS = ("movie", "sequence")
OUTPUTS = {"png": "matte.####.png", "exr": "matte.####.exr", "alpha": "alpha.####.png"}
OFFICIAL_OUTPUTS = {"com": "RGBA PNG", "pha": "alpha JPEG"}
_ALIGN_FIX = ("matches.sort(key=lambda x: x.distance, reverse=False)",
              "matches = sorted(matches, key=lambda x: x.distance)")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: write it as WIDTHxHEIGHT, e.g. 1920x1080") from None
    if w < 64 or h < 64 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"size {text!r}: at least 64x64, even width and height (MPEG-4)")
    return w, h


def _choices(text: str, allowed, what: str) -> list[str]:
    picked = [v for v in text.split(",") if v]
    bad = [v for v in picked if v not in allowed]
    if bad or not picked:
        raise argparse.ArgumentTypeError(f"{what} {text!r}: choose from {', '.join(allowed)}")
    return picked


def write_inputs(folder: Path, width: int, height: int, frames: int, seed: int = 2026) -> dict:
    """The shot on disk: plate.mp4 (MPEG-4), plate/plate.####.png (frames 1001 on), clean.png (one
    still of the clean take) and truth_alpha.npy (frames x H x W uint8, the true alpha).
    Returns their paths."""
    import av
    import OpenImageIO as oiio

    from howard_core.io import images, open_sink
    from howard_core.synth import make_shot

    folder.mkdir(parents=True, exist_ok=True)
    shot = make_shot(width=width, height=height, plate_frames=frames, clean_frames=3, seed=seed, lazy=True)
    movie = folder / "plate.mp4"
    truth = np.empty((frames, height, width), np.uint8)
    opaque = np.ones((height, width), np.float32)
    with av.open(str(movie), "w") as container, \
         open_sink(folder / "plate" / "plate.####.png", "png", colorspace="srgb") as seq:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 40_000_000  # a high-quality delivery: coding noise well below the plate's own
        for k in range(frames):
            rgb = shot.plate[k]
            frame = av.VideoFrame.from_ndarray(np.round(rgb * 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            seq.write(1001 + k, rgb, opaque)
            truth[k] = np.round(shot.alpha[k] * 255)
        for packet in stream.encode(None):
            container.mux(packet)
    clean = folder / "clean.png"
    images.write_image(clean, shot.clean[1], ["R", "G", "B"], oiio.UINT8)
    np.save(folder / "truth_alpha.npy", truth)
    return {"movie": str(movie), "sequence": str(folder / "plate" / "plate.####.png"), "clean": str(clean),
            "truth": str(folder / "truth_alpha.npy")}


def _howard_command() -> list[str]:
    """The `howard` console script of this environment, as a user would type it."""
    script = Path(sys.executable).with_name("howard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "howard_core.cli"]


def _first_file_watch(folder: Path, suffixes: tuple[str, ...], started: float, found: dict, stop: threading.Event):
    # Howard renames finished frames into place (temp files are hidden); the official script writes in place.
    while not stop.is_set():
        try:
            names = os.listdir(folder)
        except OSError:
            names = []
        if any(not n.startswith(".") and n.endswith(suffixes) for n in names):
            found["first_frame_s"] = time.perf_counter() - started
            return
        time.sleep(0.01)


def user_environment(drop=()) -> dict:
    """This process's environment as the user gave it: without what `howard_core.runtime` set for this
    process (each tool sets up its own), and without the names in `drop`."""
    from howard_core.runtime import SET_HERE

    return {k: v for k, v in os.environ.items() if k not in SET_HERE and k not in drop}


def warm_up(python: str, env=None) -> None:
    """Import the heavy libraries once in `python`, untimed, so the timed runs find them in the page cache."""
    code = ("import importlib\n"
            "for name in ('numpy', 'cv2', 'torch', 'torchvision'):\n"
            "    try:\n        importlib.import_module(name)\n    except ImportError:\n        pass\n")
    try:
        subprocess.run([python, "-c", code], env=user_environment() if env is None else env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300,
                       check=False)
    except (OSError, subprocess.TimeoutExpired):
        pass  # a Python that cannot start is reported by the run itself, with the error it gives


def run_process(cmd: list[str], out_dir: Path, suffixes: tuple[str, ...], cwd=None, env=None) -> dict:
    """Run `cmd` to exit in `env` (default: `user_environment()`): wall seconds, time to the first
    output file in `out_dir`, peak RSS (MiB), CPU seconds (user+system of the process and its children)."""
    found: dict = {}
    stop = threading.Event()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=user_environment() if env is None else env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watcher = threading.Thread(target=_first_file_watch, args=(out_dir, suffixes, started, found, stop), daemon=True)
    watcher.start()
    # Drain both pipes as the process writes them, so a chatty process never blocks on a full pipe.
    chunks = {"out": [], "err": []}
    readers = [threading.Thread(target=lambda s=s, k=k: chunks[k].append(s.read()), daemon=True)
               for s, k in ((proc.stdout, "out"), (proc.stderr, "err"))]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    stop.set()
    watcher.join()
    if proc.returncode != 0:
        tail = (b"".join(chunks["err"]).decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise HowardError(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}): {tail}")
    return {"wall_s": round(wall, 3), "first_frame_s": round(found["first_frame_s"], 3) if found else None,
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "stdout": b"".join(chunks["out"]).decode(errors="replace")}


def _read_alpha(path: Path) -> np.ndarray:
    """HxW float32 alpha 0..1 of an output: the A channel of RGBA, else the only channel."""
    import OpenImageIO as oiio

    inp = oiio.ImageInput.open(str(path))
    if inp is None:
        raise HowardError(f"{path}: cannot read back ({oiio.geterror()})")
    try:
        spec = inp.spec()
        data = inp.read_image(format=oiio.FLOAT)
    finally:
        inp.close()
    names = list(spec.channelnames)
    index = names.index("A") if "A" in names else (spec.alpha_channel if spec.alpha_channel >= 0 else 0)
    return np.asarray(data, np.float32).reshape(spec.height, spec.width, spec.nchannels)[:, :, index]


def matte_error(files: list[Path], truth: np.ndarray) -> dict:
    """Mean absolute alpha error against the true alpha (0..1), and SAD per frame / 1000."""
    if len(files) != truth.shape[0]:
        raise HowardError(f"expected {truth.shape[0]} output frames, found {len(files)}")
    errs = [np.abs(_read_alpha(f) - truth[k].astype(np.float32) / 255.0) for k, f in enumerate(files)]
    mad = float(np.mean([e.mean() for e in errs]))
    return {"alpha_mad": round(mad, 5), "sad_per_frame_k": round(float(np.mean([e.sum() for e in errs])) / 1000, 2)}


def run_howard(inputs: dict, source: str, output: str, work: Path, options: list[str], truth: np.ndarray) -> dict:
    out_dir = work / f"howard_{source}_{output}"
    shutil.rmtree(out_dir, ignore_errors=True)
    report = out_dir / "report.json"
    cmd = [*_howard_command(), "matte", inputs[source], inputs["clean"], "-o", str(out_dir / OUTPUTS[output]),
           "--report", str(report), "--progress", "none", *options]
    res = run_process(cmd, out_dir, (".png", ".exr"))
    rep = json.loads(report.read_text())
    files = sorted(p for p in out_dir.iterdir() if p.suffix in (".png", ".exr") and not p.name.startswith("."))
    timing = rep["timing"]
    res.pop("stdout")
    return {"tool": "howard", "input": source, "output": output, **res,
            "command": " ".join(["howard", *cmd[len(_howard_command()):]]),
            "stages_s": {k: timing.get(k) for k in ("wall_s", "startup_s", "read_s", "align_s", "matte_s",
                                                    "write_s") if k in timing},
            "cpu_budget": rep["settings"].get("cpu_budget", {"threads": rep["settings"].get("threads")}),
            "flagged_frames": len(rep["flagged_frames"]), **matte_error(files, truth)}


def official_checkpoint(model: str | None, path: Path) -> tuple[Path, str, dict]:
    """The model Howard would load, saved as a plain state_dict in the official layout (Howard's
    networks keep the official key names); returns (path, backbone, its refiner settings)."""
    import torch

    from howard_core.model import MattingRefine
    from howard_core.weights import resolve_model

    net = resolve_model(model)
    if not isinstance(net, MattingRefine):
        raise HowardError("the side-by-side run needs a refining (MattingRefine) checkpoint")
    torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, path)
    settings = {"backbone_scale": net.backbone_scale, "refine_mode": net.refiner.mode,
                "refine_sample_pixels": net.refiner.sample_pixels, "refine_threshold": net.refiner.threshold}
    return path, net.backbone_name, settings


def prepare_official(official: Path, work: Path) -> Path:
    """A temp copy of the official code, with the one change its alignment needs on current OpenCV."""
    script = official / "inference_video.py"
    if not script.is_file():
        raise HowardError(f"{official}: no inference_video.py here; give the folder of the official "
                          f"BackgroundMattingV2 code")
    copy = work / "official_code"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(official, copy, ignore=shutil.ignore_patterns(".git", "images", "doc", "*.pth"))
    utils = copy / "inference_utils.py"
    text = utils.read_text()
    if _ALIGN_FIX[0] in text:
        utils.write_text(text.replace(_ALIGN_FIX[0], _ALIGN_FIX[1]))
    return copy


def run_official(code: Path, python: str, inputs: dict, checkpoint: Path, backbone: str, kind: str, work: Path,
                 truth: np.ndarray, settings: dict) -> dict:
    out_dir = work / f"official_{kind}"
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [python, "inference_video.py", "--model-type", "mattingrefine", "--model-backbone", backbone,
           "--model-backbone-scale", str(settings["backbone_scale"]), "--model-refine-mode",
           settings["refine_mode"], "--model-refine-sample-pixels", str(settings["refine_sample_pixels"]),
           "--model-refine-threshold", str(settings["refine_threshold"]),
           "--model-checkpoint", str(checkpoint), "--video-src", inputs["movie"], "--video-bgr", inputs["clean"],
           "--device", "cpu", "--preprocess-alignment", "--output-dir", str(out_dir), "--output-types", kind,
           "--output-format", "image_sequences"]
    res = run_process(cmd, out_dir / kind, (".png", ".jpg"), cwd=code, env=user_environment(drop=("PYTHONPATH",)))
    res.pop("stdout")
    files = sorted((out_dir / kind).iterdir())
    return {"tool": "official", "input": "movie", "output": f"{kind} ({OFFICIAL_OUTPUTS[kind]})", **res,
            "command": " ".join(["python", *cmd[1:]]), **matte_error(files, truth)}


def memory_in_length(work: Path, args, options: list[str], inputs: dict, truth: np.ndarray) -> dict:
    """Peak memory of movie -> RGBA PNG at the shot's length and at --long-frames."""
    long_inputs = write_inputs(work / "inputs_long", *args.size, args.long_frames, args.seed)
    short = run_howard(inputs, "movie", "png", work, options, truth)
    long = run_howard(long_inputs, "movie", "png", work / "long", options, np.load(long_inputs["truth"]))
    rows = [{"frames": n, "peak_rss_mib": r["peak_rss_mib"], "wall_s": r["wall_s"], "alpha_mad": r["alpha_mad"]}
            for n, r in ((args.frames, short), (args.long_frames, long))]
    return {"runs": rows, "peak_growth_mib": round(rows[1]["peak_rss_mib"] - rows[0]["peak_rss_mib"], 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="howard bench e2e", description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=12, help="plate frames (default 12)")
    ap.add_argument("--size", type=_size, default=(1920, 1080), help="frame size (default 1920x1080)")
    ap.add_argument("--inputs", type=lambda t: _choices(t, INPUTS, "--inputs"), default=list(INPUTS),
                    help="comma list of movie,sequence (default: both)")
    ap.add_argument("--outputs", type=lambda t: _choices(t, OUTPUTS, "--outputs"), default=list(OUTPUTS),
                    help="comma list of png,exr,alpha (default: all three)")
    ap.add_argument("--official", help="folder of the official BackgroundMattingV2 code, run side by side")
    ap.add_argument("--official-python", default=sys.executable,
                    help="Python with the official code's dependencies (default: this one)")
    ap.add_argument("--model", help="checkpoint or installed weights name (default: the bundled weights)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--sample-pixels", type=int,
                    help="pixels refined per frame, both tools (default: the model's, 80,000 for HD)")
    ap.add_argument("--long-frames", type=int, default=0,
                    help="also run movie -> PNG on a shot this long and compare peak memory (default: off)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--workdir", help="keep the generated inputs and outputs here (default: a temp folder)")
    args = ap.parse_args(argv)
    if args.frames < 2:
        ap.error("--frames must be at least 2")
    official = Path(args.official) if args.official else None
    if official is not None and not official.is_dir():
        print(f"howard: error: {official}: not a folder; give the official BackgroundMattingV2 checkout",
              file=sys.stderr)
        return 2
    if official is not None and not shutil.which(args.official_python):
        print(f"howard: error: --official-python {args.official_python}: no such interpreter; give the Python "
              f"that has the official code's dependencies", file=sys.stderr)
        return 2

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="howard_e2e_") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        given = sys.argv[1:] if argv is None else list(argv)
        result = {"benchmark": "e2e", "command": " ".join(["howard bench e2e", *given]),
                  "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                              "processor": platform.processor() or platform.machine(),
                              "load_avg_before": [round(v, 2) for v in os.getloadavg()]},
                  "shot": {"size": f"{args.size[0]}x{args.size[1]}", "frames": args.frames,
                           "plate": "MPEG-4 movie / 8-bit PNG sequence", "clean_plate": "one still PNG"}}
        try:
            inputs = write_inputs(work / "inputs", *args.size, args.frames, args.seed)
            truth = np.load(inputs["truth"])
            options = ["--precision", args.precision] + (["--model", args.model] if args.model else []) + (
                ["--sample-pixels", str(args.sample_pixels)] if args.sample_pixels else [])
            warm_up(sys.executable)
            runs = [run_howard(inputs, source, output, work, options, truth)
                    for source in args.inputs for output in args.outputs]
            if args.long_frames:
                result["memory"] = memory_in_length(work, args, options, inputs, truth)
            if official is not None:
                checkpoint, backbone, settings = official_checkpoint(args.model, work / "official_weights.pth")
                if args.sample_pixels:
                    settings["refine_sample_pixels"] = args.sample_pixels
                result["official_settings"] = {"backbone": backbone, **settings}
                code = prepare_official(official, work)
                warm_up(args.official_python, env=user_environment(drop=("PYTHONPATH",)))
                for kind in OFFICIAL_OUTPUTS:
                    runs.append(run_official(code, args.official_python, inputs, checkpoint, backbone, kind, work,
                                             truth, settings))
        except HowardError as exc:
            print(f"howard: error: {exc}", file=sys.stderr)
            return exc.exit_code
    result["runs"] = runs
    officials = [r for r in runs if r["tool"] == "official"]
    if officials:
        result["speedup"] = {f"{r['input']} {r['output']} vs official {o['output'].split()[0]}":
                             round(o["wall_s"] / r["wall_s"], 2)
                             for r in runs if r["tool"] == "howard" and r["input"] == "movie" for o in officials}
        # CPU seconds (all threads, children included) are less sensitive than wall time to other load.
        result["cpu_speedup"] = {f"{r['input']} {r['output']} vs official {o['output'].split()[0]}":
                                 round(o["cpu_s"] / r["cpu_s"], 2)
                                 for r in runs if r["tool"] == "howard" and r["input"] == "movie" for o in officials}
    result["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
