"""Benchmark clean-plate alignment on synthetic hand-held HD frames; prints one JSON object.

    python -m howard_core.bench.align [--frames N] [--width W --height H] [--window K] [--seed S]

Measured in one run on the same frames (a `howard_core.synth` shot, so the true homographies are known):

- howard: `SequenceAligner` with a (2K+1)-candidate window. `ms_per_frame_warm` is one plate frame's
  whole search with its candidates' features already cached (the steady state of a long shot);
  `ms_per_frame_streaming` walks the shot from a cold cache, so it also pays for preparing each new
  clean-plate frame once. Corner error: misregistration at the plate's corners of the chosen candidate's
  homography, in plate pixels (`howard_core.align.corner_error`).
- orb_reference: the simple reference approach on the linearly mapped clean frame: ORB (500 features)
  on both full frames, the best 15% of matches by distance, RANSAC homography.
- sift_full_frame: SIFT on both full frames, Lowe ratio test (0.75), RANSAC homography.

Frame synthesis is not timed. Times are wall-clock on this machine with OpenCV's default threads.
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
from howard_core.synth import make_shot


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="howard bench align", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=6, help="plate frames to align (default 6)")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--window", type=int, default=2, help="candidates each side (default 2: 5 in all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-references", action="store_true", help="skip the ORB and SIFT references")
    args = parser.parse_args(argv)
    report = run(frames=max(1, args.frames), width=args.width, height=args.height, window=args.window,
                 seed=args.seed, references=not args.no_references)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
