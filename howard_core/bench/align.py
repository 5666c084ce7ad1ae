"""Benchmark clean-plate alignment on synthetic shots with known truth; prints one JSON object per shot kind.

    howard bench align [--kinds planar,parallax,closeup,still] [--frames N] [--width W --height H]
                       [--speed-frames N] [--window K] [--seed S] [--no-references] [--no-matte]

Shot kinds (`howard_core.synth`; seeds the tests do not use):

- planar: `make_shot`, one textured plane, where a homography is exact (corner error in plate pixels,
  `howard_core.align.corner_error`, plus the ORB and SIFT full-frame references below).
- parallax: `make_depth_shot`, a far wall, a mid panel and a near pillar through a hand-held pinhole camera.
- closeup: the same set, a head-and-shoulders subject covering 70% of the frame.
- still: a locked-off plate where nothing moves but sensor noise, with a hand-held clean take.

For each kind, homography-only (`Aligner(dense=False)`) and the default (dense residual warp) side by side,
measured in one run on the same frames:

- background_error: mean absolute error of the aligned clean plate against the plate's true, noise-free
  background, over the pixels the clean plate covers (subject included), 8-bit levels.
- matte_sad: sum of absolute alpha errors per frame (thousands), the bundled demo network
  (howard_core/weights/howard_mobilenetv2.pt) given this clean plate; `true_background.matte_sad` is the
  same network given the true background (what `--no-align` with a perfect clean plate gets), and
  `sad_ratio` the quotient.
- flicker: 100 x RMS alpha change from one frame to the next, mean and worst (meaningful on `still`,
  where the true alpha does not change; on moving shots it includes the subject's own motion).
- ms_per_hd_frame: one plate frame's whole alignment at 1920x1080 with its candidates' features cached
  (the steady state of a long shot: the mean over the timed frames after the first), on a shot of the
  same kind; frame synthesis is not timed. first_frame_ms: the shot's first frame, which also pays
  one-off costs (first use of buffers and OpenCV objects).
- QC shares: mean fraction of the frame used as background and left to the homography, flagged frames.

Times are wall-clock on this machine with OpenCV's default threads; on a shared machine compare the two
columns of one run rather than runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import cv2
import numpy as np

from howard_core.align import SequenceAligner, corner_error
from howard_core.synth import make_depth_shot, make_shot

KINDS = ("planar", "parallax", "closeup", "still")


def _gray_u8(img: np.ndarray) -> np.ndarray:
    return cv2.convertScaleAbs(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), alpha=255)


def orb_reference(plate: np.ndarray, clean: np.ndarray) -> np.ndarray | None:
    """The reference method: ORB on full frames, best 15% of matches, RANSAC; clean px -> plate px."""
    orb = cv2.ORB_create(500)
    kp_p, d_p = orb.detectAndCompute(_gray_u8(plate), None)
    kp_c, d_c = orb.detectAndCompute(_gray_u8(clean), None)
    if d_p is None or d_c is None:
        return None
    matches = sorted(cv2.BFMatcher(cv2.NORM_HAMMING).match(d_c, d_p), key=lambda m: m.distance)
    matches = matches[: int(len(matches) * 0.15)]
    if len(matches) < 4:
        return None
    src = np.float32([kp_c[m.queryIdx].pt for m in matches])
    dst = np.float32([kp_p[m.trainIdx].pt for m in matches])
    h, _ = cv2.findHomography(src, dst, cv2.RANSAC)
    return h


def sift_full_frame(plate: np.ndarray, clean: np.ndarray) -> np.ndarray | None:
    """SIFT on full frames, ratio test, RANSAC; clean px -> plate px."""
    sift = cv2.SIFT_create()
    kp_p, d_p = sift.detectAndCompute(_gray_u8(plate), None)
    kp_c, d_c = sift.detectAndCompute(_gray_u8(clean), None)
    if d_p is None or d_c is None:
        return None
    good = [p[0] for p in cv2.BFMatcher(cv2.NORM_L2).knnMatch(d_c, d_p, k=2)
            if len(p) == 2 and p[0].distance < 0.75 * p[1].distance]
    if len(good) < 4:
        return None
    src = np.float32([kp_c[m.queryIdx].pt for m in good])
    dst = np.float32([kp_p[m.trainIdx].pt for m in good])
    h, _ = cv2.findHomography(src, dst, cv2.RANSAC, 3.0)
    return h


def _errors(values: list[float]) -> dict:
    arr = np.array(values, float)
    finite = arr[np.isfinite(arr)]
    return {"mean": round(float(finite.mean()), 4) if len(finite) else None,
            "max": round(float(finite.max()), 4) if len(finite) else None,
            "failed": int((~np.isfinite(arr)).sum())}


def _error(h, shot, j: int, i: int) -> float:
    if h is None or not np.all(np.isfinite(h)):
        return float("inf")
    return corner_error(h, shot.clean_to_plate(j, i), shot.plate_size)


def run(frames: int = 6, width: int = 1920, height: int = 1080, window: int = 2, seed: int = 0,
        references: bool = True) -> dict:
    # A longer clean take, mapped linearly, with room for a full window at every frame.
    clean_frames = max(frames + max(2, frames // 2), 2 * window + 2)
    shot = make_shot(width, height, plate_frames=frames, clean_frames=clean_frames, seed=seed, lazy=True)
    plates = [shot.plate[i] for i in range(frames)]
    cleans = [shot.clean[j] for j in range(clean_frames)]

    # Howard, warm cache: each frame's candidates prepared beforehand, untimed.
    seq = SequenceAligner(frames, clean_frames, cleans.__getitem__, window=window)
    warm_ms, errors, flagged, chosen = [], [], 0, []
    for i, plate in enumerate(plates):
        seq.prefetch(i)
        t0 = time.perf_counter()
        result = seq.align_frame(i, plate)
        warm_ms.append((time.perf_counter() - t0) * 1000)
        errors.append(_error(result.homography, shot, result.clean_index, i))
        flagged += result.flagged
        chosen.append(result.clean_index)

    # Howard, streaming from a cold cache.
    seq = SequenceAligner(frames, clean_frames, cleans.__getitem__, window=window)
    t0 = time.perf_counter()
    for i, plate in enumerate(plates):
        seq.align_frame(i, plate)
    stream_ms = (time.perf_counter() - t0) * 1000 / frames

    report = {
        "benchmark": "align",
        "size": [width, height],
        "frames": frames,
        "clean_frames": clean_frames,
        "candidates_per_frame": len(seq.candidates(frames // 2)),
        "seed": seed,
        "howard": {
            "ms_per_frame_warm": round(float(np.mean(warm_ms)), 1),
            "ms_per_frame_warm_max": round(float(np.max(warm_ms)), 1),
            "ms_per_frame_streaming": round(stream_ms, 1),
            "corner_error_px": _errors(errors),
            "flagged": int(flagged),
            "chosen_clean_frames": chosen,
        },
    }
    if references:
        for name, method in (("orb_reference", orb_reference), ("sift_full_frame", sift_full_frame)):
            ms, errs = [], []
            for i, plate in enumerate(plates):
                j = int(round(seq.clean_position(i)))
                t0 = time.perf_counter()
                h = method(plate, cleans[j])
                ms.append((time.perf_counter() - t0) * 1000)
                errs.append(_error(h, shot, j, i))
            report[name] = {"ms_per_pair": round(float(np.mean(ms)), 1), "corner_error_px": _errors(errs)}
    report["machine"] = {"cpu_threads_opencv": cv2.getNumThreads(), "python": platform.python_version(),
                         "opencv": cv2.__version__}
    return report


def kind_shot(kind: str, width: int, height: int, frames: int, seed: int, lazy: bool = False):
    """The synthetic shot of one kind (see the module docstring) and its clean-take length."""
    clean = frames + max(2, frames // 2)
    if kind == "planar":
        return make_shot(width, height, plate_frames=frames, clean_frames=clean, seed=seed, lazy=lazy), clean
    if kind == "parallax":
        return make_depth_shot(width, height, frames, clean, seed=seed, lazy=lazy), clean
    if kind == "closeup":
        return make_depth_shot(width, height, frames, clean, seed=seed, subject="closeup", subject_cover=0.7,
                               lazy=lazy), clean
    if kind == "still":
        return make_depth_shot(width, height, frames, clean, seed=seed, plate_still=True, subject_still=True,
                               lazy=lazy), clean
    raise ValueError(f"unknown shot kind {kind!r}; use one of {', '.join(KINDS)}")


class _Matte:
    """The bundled demo network on the CPU: alpha (H x W float32) of a plate given a clean plate."""

    def __init__(self):
        import torch

        from howard_core.model import load_model
        from howard_core.model.engine import Matter

        self.torch = torch
        self.matter = Matter(load_model())

    def __call__(self, plate: np.ndarray, background: np.ndarray) -> np.ndarray:
        t = self.torch

        def tensor(x):
            return t.from_numpy(np.ascontiguousarray(x)[None]).permute(0, 3, 1, 2)

        return self.matter(tensor(plate), tensor(background)).alpha[0, 0].numpy()


def _flicker(alphas: list[np.ndarray]) -> dict:
    steps = [100 * float(np.sqrt(np.mean((b - a) ** 2))) for a, b in zip(alphas, alphas[1:], strict=False)]
    return {"mean": round(float(np.mean(steps)), 3) if steps else None,
            "worst": round(float(np.max(steps)), 3) if steps else None}


def _sad(alpha: np.ndarray, truth: np.ndarray) -> float:
    return float(np.abs(alpha - truth).sum()) / 1000


def _hd_ms(kind: str, frames: int, seed: int, window: int, dense: bool) -> tuple[float, float]:
    """(steady-state mean ms per HD frame over frames 1.., the first frame's ms): the first frame of a
    shot also pays one-off costs (first use of every buffer and OpenCV object), once per shot."""
    shot, clean = kind_shot(kind, 1920, 1080, frames, seed, lazy=True)
    cleans = [shot.clean[j] for j in range(clean)]
    seq = SequenceAligner(frames, clean, cleans.__getitem__, window=window, dense=dense)
    ms = []
    for i in range(frames):
        plate = shot.plate[i]
        seq.prefetch(i)
        t0 = time.perf_counter()
        seq.align_frame(i, plate)
        ms.append((time.perf_counter() - t0) * 1000)
    return round(float(np.mean(ms[1:] or ms)), 1), round(ms[0], 1)


def run_kind(kind: str, frames: int = 8, width: int = 960, height: int = 540, window: int = 2, seed: int = 1000,
             speed_frames: int = 4, matte: bool = True, references: bool = True, matter=None) -> dict:
    """The figures of one shot kind, homography-only and the default side by side (module docstring)."""
    shot, clean = kind_shot(kind, width, height, frames, seed + KINDS.index(kind))
    net = (matter or _Matte()) if matte else None
    report = {"benchmark": "align", "kind": kind, "size": [width, height], "frames": frames, "clean_frames": clean,
              "seed": seed + KINDS.index(kind), "window": window}
    if net is not None:
        truth = [net(shot.plate[i], shot.plate_background(i)) for i in range(frames)]
        report["true_background"] = {"matte_sad": round(float(np.mean([_sad(a, shot.alpha[i])
                                                                          for i, a in enumerate(truth)])), 3),
                                     "flicker": _flicker(truth)}
    for name, dense in (("homography_only", False), ("default", True)):
        seq = SequenceAligner(frames, clean, lambda j: shot.clean[j], window=window, dense=dense)
        errors, sads, alphas, corner, qc = [], [], [], [], []
        for i in range(frames):
            r = seq.align_frame(i, shot.plate[i])
            qc.append(r)
            diff = np.abs(r.background - shot.plate_background(i))[r.valid]
            errors.append(float(diff.mean()) * 255 if diff.size else float("nan"))
            if kind == "planar":
                corner.append(_error(r.homography, shot, r.clean_index, i))
            if net is not None:
                alphas.append(net(shot.plate[i], r.background))
                sads.append(_sad(alphas[-1], shot.alpha[i]))
        out = {"background_error": round(float(np.nanmean(errors)), 3)}
        if net is not None:
            out["matte_sad"] = round(float(np.mean(sads)), 3)
            out["sad_ratio"] = round(out["matte_sad"] / max(report["true_background"]["matte_sad"], 1e-9), 3)
            out["flicker"] = _flicker(alphas)
        if corner:
            out["corner_error_px"] = _errors(corner)
        steady, first = (_hd_ms(kind, speed_frames, seed + 50 + KINDS.index(kind), window, dense)
                         if speed_frames else (None, None))
        out.update({
            "ms_per_hd_frame": steady,
            "first_frame_ms": first,
            "background_share": round(float(np.mean([r.background_share for r in qc])), 4),
            "homography_share": round(float(np.mean([r.homography_share for r in qc])), 4),
            "residual_px": round(float(np.mean([r.residual_px for r in qc])), 3),
            "flagged": int(sum(r.flagged for r in qc)),
            "fallback_frames": int(sum(r.fallback is not None for r in qc)),
            "chosen_clean_frames": [int(r.clean_index) for r in qc],
        })
        report[name] = out
    if kind == "planar" and references:
        cleans = [shot.clean[j] for j in range(clean)]
        seq = SequenceAligner(frames, clean, cleans.__getitem__, window=window)
        for name, method in (("orb_reference", orb_reference), ("sift_full_frame", sift_full_frame)):
            errs = []
            for i in range(frames):
                j = int(round(seq.clean_position(i)))
                errs.append(_error(method(shot.plate[i], cleans[j]), shot, j, i))
            report[name] = {"corner_error_px": _errors(errs)}
    report["machine"] = {"cpu_threads_opencv": cv2.getNumThreads(), "python": platform.python_version(),
                         "opencv": cv2.__version__}
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="howard bench align", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--frames", type=int, default=8, help="plate frames per shot (default 8)")
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--height", type=int, default=540)
    parser.add_argument("--speed-frames", type=int, default=4,
                        help="HD frames timed per kind: the first, then the steady state (0: no timing)")
    parser.add_argument("--window", type=int, default=2, help="candidates each side (default 2: 5 in all)")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--no-references", action="store_true", help="skip the ORB and SIFT references")
    parser.add_argument("--no-matte", action="store_true", help="skip the matte figures (no network)")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown shot kind {unknown[0]!r}; use one of {', '.join(KINDS)}")
    net = None if args.no_matte else _Matte()
    for kind in kinds:
        report = run_kind(kind, frames=max(2, args.frames), width=args.width, height=args.height,
                          window=args.window, seed=args.seed, speed_frames=max(0, args.speed_frames),
                          matte=not args.no_matte, references=not args.no_references, matter=net)
        print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
