"""Walk a whole plate / clean-plate pair: map each plate frame onto the clean-plate timeline, align the
clean-plate frames around that point, and keep their features in a small cache.

    seq = SequenceAligner(plate_count, clean_count, get_clean, window=2)
    for i, plate in enumerate(plates):
        result = seq.align_frame(i, plate, subject_mask=previous_matte)
    report = seq.qc_report()          # JSON-ready; or qc_report(results) for results you kept

Timeline mapping: plate frame i looks for clean-plate frame `offset + scale * i`. By default the two
frame ranges are mapped linearly onto each other (first to first, last to last); pass `offset`/`scale`
when the takes start or run differently, or call `estimate_timing` to measure them from a few key frames.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from howard_core.align import geometry as geo
from howard_core.align.aligner import Aligner, AlignResult, Features, PreparedFrame
from howard_core.errors import HowardError


@dataclass
class Timing:
    """How the clean-plate timeline relates to the plate's: clean frame = offset + scale * plate frame.

    `estimated` is False when the numbers are the default linear mapping (or were given), and `keys`
    lists the (plate frame, best clean frame) pairs an estimate was fitted to.
    """

    offset: float
    scale: float
    estimated: bool = False
    keys: tuple[tuple[int, int], ...] = ()
    note: str = ""


class SequenceAligner:
    """Aligns a clean-plate clip to a plate clip frame by frame, for streaming pipelines.

    plate_count, clean_count: clip lengths in frames.
    get_clean:   callable, j -> clean-plate frame j as H x W x 3 float32 RGB 0..1 (read lazily; each frame is
                 requested about once while it stays in the cache).
    window:      candidates each side of the mapped clean frame (default 2, i.e. up to 5 candidates).
    offset, scale: timeline mapping (see the module docstring); default: linear over the two ranges.
    cache_frames: prepared clean-plate frames kept (default 2 * window + 3); memory is flat in clip length.
    aligner:     an `Aligner` to use; otherwise one is built from the remaining keyword options.
    """

    def __init__(self, plate_count: int, clean_count: int, get_clean: Callable[[int], np.ndarray], *,
                 window: int = 2, offset: float | None = None, scale: float | None = None,
                 cache_frames: int | None = None, aligner: Aligner | None = None, **options):
        if plate_count < 1 or clean_count < 1:
            raise HowardError(f"align: need at least one plate frame and one clean-plate frame, got "
                              f"{plate_count} and {clean_count}; check both sequences were found")
        self.plate_count = int(plate_count)
        self.clean_count = int(clean_count)
        self.get_clean = get_clean
        self.window = max(0, int(window))
        default_scale = (clean_count - 1) / (plate_count - 1) if plate_count > 1 else 1.0
        self.timing = Timing(offset=0.0 if offset is None else float(offset),
                             scale=default_scale if scale is None else float(scale))
        self.cache_frames = max(1, int(cache_frames) if cache_frames is not None else 2 * self.window + 3)
        self.aligner = aligner if aligner is not None else Aligner(**options)
        self._cache: OrderedDict[int, PreparedFrame] = OrderedDict()
        self._last_good: tuple[int, np.ndarray] | None = None
        self._qc: list[dict] = []

    # -- timeline ---------------------------------------------------------------------------------------

    def clean_position(self, i: int) -> float:
        """Where plate frame i falls on the clean-plate timeline (fractional frame number)."""
        return self.timing.offset + self.timing.scale * i

    def candidates(self, i: int) -> list[int]:
        """Clean-plate frame numbers searched for plate frame i: the window around its mapped position,
        slid (not shrunk) where it would run off either end of the clip."""
        n = min(2 * self.window + 1, self.clean_count)
        centre = int(round(float(np.clip(self.clean_position(i), 0, self.clean_count - 1))))
        start = int(np.clip(centre - self.window, 0, self.clean_count - n))
        return list(range(start, start + n))

    # -- alignment --------------------------------------------------------------------------------------

    def align_frame(self, i: int, plate: np.ndarray, subject_mask: np.ndarray | None = None) -> AlignResult:
        """Align plate frame i (H x W x 3 float32 RGB 0..1). `subject_mask`: H x W float or bool, 1 = subject,
        typically the previous frame's matte. Never raises for frames that merely fail to align: those
        fall back to the last good fit and come back flagged."""
        if not 0 <= i < self.plate_count:
            raise HowardError(f"plate frame {i} is outside the plate clip (0..{self.plate_count - 1})")
        plate_size = (np.shape(plate)[1], np.shape(plate)[0]) if np.ndim(plate) == 3 else None
        js = self.candidates(i)
        cands = [self._prepared(j, plate_size) for j in js]
        prior = None
        if self._last_good is not None:
            # The previous good fit, on the candidate nearest to the frame it was made with.
            j_prev, h_prev = self._last_good
            prior = (int(np.argmin([abs(j - j_prev) for j in js])), h_prev)
        result = self.aligner.align(plate, cands, subject_mask=subject_mask, prior=prior,
                                    plate_label=f"plate frame {i}",
                                    candidate_labels=[f"clean-plate frame {j}" for j in js])
        result.plate_index = i
        result.clean_index = js[result.index]
        for c in result.candidates:
            c["clean_frame"] = js[c["candidate"]]
        if result.fallback is None:
            self._last_good = (result.clean_index, result.homography)
        self._qc.append(result.to_qc())
        return result

    def _prepared(self, j: int, plate_size: tuple[int, int] | None) -> PreparedFrame:
        frame = self._cache.get(j)
        if frame is not None and (plate_size is None or frame.lk_size == plate_size):
            self._cache.move_to_end(j)
            return frame
        frame = self.aligner.prepare(self.get_clean(j), f"clean-plate frame {j}", plate_size=plate_size)
        self._cache[j] = frame
        while len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)
        return frame

    def prefetch(self, i: int, plate_size: tuple[int, int]) -> None:
        """Prepare (and cache) plate frame i's candidates ahead of time, e.g. to measure a warm cache."""
        for j in self.candidates(i):
            self._prepared(j, plate_size)

    # -- QC ---------------------------------------------------------------------------------------------

    def qc_report(self, **info) -> dict:
        """The QC document for every frame aligned so far (see `qc_report`)."""
        return qc_report(self._qc, timing=_timing_qc(self.timing), window=self.window, **info)

    # -- timing estimate --------------------------------------------------------------------------------

    def estimate_timing(self, get_plate: Callable[[int], np.ndarray], keys: int = 5,
                        samples: int = 24) -> Timing:
        """Measure the timeline mapping from a few key plate frames and adopt it; returns it.

        Each of `keys` plate frames, spread over the clip, is fitted to `samples` clean-plate frames spread
        over the whole clean clip, then to ever closer frames around the best so far. A key's partner is
        the clean frame whose fit overlaps the plate most (intersection over union of the two frames'
        footprints: largest when the camera poses agree). A line through the partners, robust to a key
        that went wrong, gives offset and scale. When the keys do not agree, or every clean frame overlaps
        a key about equally (a locked-off clean plate), the mapping is left unchanged.
        Reads about `samples + 8 * keys` clean-plate frames and `keys` plate frames.
        """
        step = max(1, int(np.ceil(self.clean_count / max(1, samples))))
        key_frames = sorted({int(round(x)) for x in np.linspace(0, self.plate_count - 1, max(1, keys))})
        sampled = {j: self.aligner.features(self.get_clean(j), f"clean-plate frame {j}")
                   for j in range(0, self.clean_count, step)}
        pairs, flat = [], 0
        for i in key_frames:
            plate = self.aligner.features(get_plate(i), f"plate frame {i}")
            tried = {j: self._overlap(clean, plate) for j, clean in sampled.items()}
            values = np.array(list(tried.values()))
            if values.max() <= 0:
                continue
            if len(values) > 2 and values.min() > 0.9 * values.max():
                flat += 1
            # Narrow down around the best: a quarter of the step each round, down to single frames.
            span = step
            while span > 1:
                best = max(tried, key=tried.get)
                span = max(1, span // 4)
                for j in range(best - 2 * span, best + 2 * span + 1, span):
                    if 0 <= j < self.clean_count and j not in tried:
                        clean = self.aligner.features(self.get_clean(j), f"clean-plate frame {j}")
                        tried[j] = self._overlap(clean, plate)
            pairs.append((i, max(tried, key=tried.get)))

        timing = _fit_line(pairs, tolerance=2.0)
        if timing is None or flat > len(key_frames) // 2:
            note = ("the clean plate overlaps every key frame about equally (locked off?)" if flat
                    else "the key frames did not agree on a mapping")
            self.timing = Timing(self.timing.offset, self.timing.scale, False, tuple(pairs),
                                 f"kept the previous mapping: {note}")
        else:
            timing.keys = tuple(pairs)
            self.timing = timing
        return self.timing


    def _overlap(self, clean: Features, plate: Features) -> float:
        fit = self.aligner.coarse_fit(clean, plate)
        return geo.overlap(fit.h, clean.size, plate.size) if fit.failure is None else 0.0


def _fit_line(pairs: list[tuple[int, int]], tolerance: float) -> Timing | None:
    """Robust line j = offset + scale * i through (i, j) pairs: the pair-defined line with most support,
    refitted by least squares on its supporters. Needs two supporters and a forward-running clean clip."""
    if len(pairs) < 2:
        return None
    pts = np.array(pairs, float)
    best = None
    for a in range(len(pts)):
        for b in range(a + 1, len(pts)):
            (ia, ja), (ib, jb) = pts[a], pts[b]
            if ia == ib:
                continue
            scale = (jb - ja) / (ib - ia)
            if not 0.2 <= scale <= 5:
                continue
            resid = np.abs(pts[:, 1] - (ja + scale * (pts[:, 0] - ia)))
            support = resid <= tolerance
            key = (support.sum(), -resid[support].sum())
            if best is None or key > best[0]:
                best = (key, support)
    if best is None or best[0][0] < 2:
        return None
    sel = pts[best[1]]
    scale, offset = np.polyfit(sel[:, 0], sel[:, 1], 1)
    return Timing(offset=float(offset), scale=float(scale), estimated=True)


def _timing_qc(t: Timing) -> dict:
    return {"offset": round(t.offset, 3), "scale": round(t.scale, 5), "estimated": t.estimated,
            "keys": [list(k) for k in t.keys], "note": t.note}


def qc_report(results: Iterable[AlignResult | dict], **info) -> dict:
    """The QC JSON document (a dict) for aligned frames: `json.dump(qc_report(results), f, indent=1)`.

    results: `AlignResult`s or their `to_qc()` dicts, in frame order. Extra keywords (paths, options) are
    stored as they are at the top level. The summary lists flagged frames and the fallbacks used.
    """
    frames = [r.to_qc() if isinstance(r, AlignResult) else dict(r) for r in results]
    scores = [f["score"] for f in frames if f.get("score") is not None]
    covers = [f["coverage"] for f in frames if f.get("coverage") is not None]
    fallbacks: dict[str, int] = {}
    for f in frames:
        if f.get("fallback"):
            fallbacks[f["fallback"]] = fallbacks.get(f["fallback"], 0) + 1
    summary = {
        "frames": len(frames),
        "flagged": [f.get("plate_frame") for f in frames if f.get("flagged")],
        "fallbacks": fallbacks,
        "mean_score": round(float(np.mean(scores)), 5) if scores else None,
        "worst_score": round(float(np.max(scores)), 5) if scores else None,
        "min_coverage": round(float(np.min(covers)), 4) if covers else None,
        "mean_ms": round(float(np.mean([f.get("ms", 0.0) for f in frames])), 1) if frames else None,
    }
    return {"howard_align_qc": 1, **info, "summary": summary, "frames": frames}
