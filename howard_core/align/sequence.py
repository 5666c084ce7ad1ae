"""Walk a whole plate / clean-plate pair: map each plate frame onto the clean-plate timeline, align the
clean-plate frames around that point, and keep their features in a small cache.

    seq = SequenceAligner(plate_count, clean_count, get_clean, window=2)
    for i, plate in enumerate(plates):
        result = seq.align_frame(i, plate, subject_mask=previous_matte)
    report = seq.qc_report()          # JSON-ready; or qc_report(results) for results you kept

Timeline mapping: plate frame i looks for clean-plate frame `offset + scale * i`. By default the two
frame ranges are mapped linearly onto each other (first to first, last to last); pass `offset`/`scale`
when the takes start or run differently, or call `estimate_timing` to measure them from a few key frames.

Chunks: alignment carries state from one frame to the next (the last good fit a failing frame falls
back to), so a run over part of a clip, a farm chunk or a resumed run, would otherwise start from
another state than a whole-clip run has at that frame. The state therefore starts afresh at fixed
points of the clip, every `SEGMENT_FRAMES` plate frames from its first, each time from the
`LEAD_IN_FRAMES` before that point; and given the plate's other frames (`history`), a run that starts
or resumes inside a segment first aligns the frames it skipped since then. Every frame then comes
out the same whatever run it is part of.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from howard_core.align import geometry as geo
from howard_core.align.aligner import Aligner, AlignResult, Features, PreparedFrame
from howard_core.errors import HowardError

# Where alignment state starts afresh (see the module docstring). A chunk that starts inside a segment
# aligns up to SEGMENT_FRAMES - 1 + LEAD_IN_FRAMES frames more (about 80 ms each at HD); a whole-clip
# run aligns LEAD_IN_FRAMES more per segment. Farm chunks that are multiples of a segment skip the first.
SEGMENT_FRAMES = 24
LEAD_IN_FRAMES = 3


@dataclass(frozen=True)
class Segments:
    """Where alignment state starts afresh (see the module docstring): every `frames` plate frames from
    the clip's first (at least 1), each time from the `lead_in` frames before that point (at least 0)."""

    frames: int = SEGMENT_FRAMES
    lead_in: int = LEAD_IN_FRAMES

    def __post_init__(self):
        object.__setattr__(self, "frames", max(1, int(self.frames)))
        object.__setattr__(self, "lead_in", max(0, int(self.lead_in)))


class PlateFrames:
    """The plate's frames by clip index, for `SequenceAligner(history=...)`: read through a source of
    their own (opened on first use), since a pipeline's reader thread owns the main one.

    spec / first / last: the plate (as `open_source` takes it) and its clip's frame range;
    source_options: open_source's colorspace, ocio_config, missing. With missing="hold" every frame
    of the range is aligned (a missing one as the frame held in its place), so every one "exists".
    `read(k)` gives clip frame k in the working space, as the pipeline gives the aligner its frames
    (H x W x 3 float32 sRGB 0..1).
    """

    def __init__(self, spec, first: int, last: int, **source_options):
        self.spec, self.first, self.last, self.options = spec, int(first), int(last), source_options
        self._source = None
        self._numbers: set[int] = set()

    def _open(self):
        if self._source is None:
            from howard_core.io import open_source

            every = list(range(self.first, self.last + 1)) if self.options.get("missing") == "hold" else None
            self._source = open_source(self.spec, frames=every, **self.options)
            self._numbers = set(self._source.frame_numbers)
        return self._source

    def exists(self, k: int) -> bool:
        self._open()
        return self.first + k in self._numbers

    def read(self, k: int) -> np.ndarray:
        return self._open().read(self.first + k)

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None


@dataclass
class Timing:
    """How the clean-plate timeline relates to the plate's: clean frame = offset + scale * plate frame.

    `estimated` is False when the numbers are the default linear mapping (or were given); an estimate
    lists its key plate frames with the clean frames it maps them to in `keys`; `note` says why.
    """

    offset: float
    scale: float
    estimated: bool = False
    keys: tuple[tuple[int, int], ...] = ()
    note: str = ""

    @classmethod
    def linear(cls, plate_count: int, clean_count: int, offset: float | None = None,
               scale: float | None = None) -> Timing:
        """The mapping as given, each part left None defaulting to linear over the two clips (first
        frame to first frame, last to last)."""
        default_scale = (clean_count - 1) / (plate_count - 1) if plate_count > 1 else 1.0
        return cls(offset=0.0 if offset is None else float(offset),
                   scale=default_scale if scale is None else float(scale))

    def position(self, i: int) -> float:
        """Where plate clip frame i falls on the clean-plate timeline (fractional frame number)."""
        return self.offset + self.scale * i


class SequenceAligner:
    """Aligns a clean-plate clip to a plate clip frame by frame, for streaming pipelines.

    plate_count, clean_count: clip lengths in frames.
    get_clean:   callable, j -> clean-plate frame j as H x W x 3 float32 RGB 0..1 (read lazily; each frame is
                 requested about once while it stays in the cache).
    window:      candidates each side of the mapped clean frame (default 2, i.e. up to 5 candidates).
    offset, scale: timeline mapping (see the module docstring); default: linear over the two ranges.
    cache_frames: prepared clean-plate frames kept (default 2 * window + 3, about 30 MB each at HD);
                 memory is flat in clip length apart from the QC records (a few kB per frame).
    aligner:     an `Aligner` to use; otherwise one is built from the remaining keyword options
                 (`AlignOptions` names, e.g. dense=False).
    keep_qc:     keep every frame's QC record for `qc_report()` (default). Callers that keep their own
                 records pass False, so a long clip does not hold two copies.
    history:     the plate's frames (`PlateFrames`, or anything with exists(k) and read(k)), so a run
                 that starts or resumes inside a segment catches up; None: frames are taken to come
                 from the clip's first frame on, in order (see the module docstring).
    `segments` (an attribute, set after construction to change it): where alignment state starts afresh
    (`Segments`; default SEGMENT_FRAMES, LEAD_IN_FRAMES).
    """

    def __init__(self, plate_count: int, clean_count: int, get_clean: Callable[[int], np.ndarray], *,
                 window: int = 2, offset: float | None = None, scale: float | None = None,
                 cache_frames: int | None = None, aligner: Aligner | None = None, keep_qc: bool = True,
                 history=None, **options):
        if plate_count < 1 or clean_count < 1:
            raise HowardError(f"align: need at least one plate frame and one clean-plate frame, got "
                              f"{plate_count} and {clean_count}; check both sequences were found")
        self.plate_count = int(plate_count)
        self.clean_count = int(clean_count)
        self.get_clean = get_clean
        self.window = max(0, int(window))
        self.timing = Timing.linear(plate_count, clean_count, offset, scale)
        self.cache_frames = max(1, int(cache_frames) if cache_frames is not None else 2 * self.window + 3)
        self.aligner = aligner if aligner is not None else Aligner(**options)
        self._cache: OrderedDict[int, PreparedFrame] = OrderedDict()
        self._last_good: tuple[int, np.ndarray] | None = None
        self._last_index: int | None = None
        # Along the shot: the previous frame's choice, fit and flow (hysteresis, smoothing) and the
        # exposure of recent frames (the prior a frame's own exposure fit must beat).
        self._previous: AlignResult | None = None
        self._exposure: tuple[np.ndarray, np.ndarray] | None = None
        # The fused clean plate of the frame where the alignment started afresh, held while it holds.
        self._fused: AlignResult | None = None
        self._qc: list[dict] = []
        self.keep_qc = keep_qc
        self.history = history
        self.segments = Segments()

    # -- timeline ---------------------------------------------------------------------------------------

    def clean_position(self, i: int) -> float:
        """Where plate frame i falls on the clean-plate timeline (fractional frame number)."""
        return self.timing.position(i)

    def candidates(self, i: int, window: int | None = None) -> list[int]:
        """Clean-plate frame numbers searched for plate frame i: the window (default `self.window`) around
        its mapped position, slid (not shrunk) where it would run off either end of the clip."""
        window = self.window if window is None else window
        n = min(2 * window + 1, self.clean_count)
        centre = int(round(float(np.clip(self.clean_position(i), 0, self.clean_count - 1))))
        start = int(np.clip(centre - window, 0, self.clean_count - n))
        return list(range(start, start + n))

    # -- alignment --------------------------------------------------------------------------------------

    def align_frame(self, i: int, plate: np.ndarray, subject_mask: np.ndarray | None = None) -> AlignResult:
        """Align plate frame i (H x W x 3 float32 RGB 0..1). `subject_mask`: H x W float or bool, 1 = subject,
        typically the previous frame's matte. Never raises for frames that merely fail to align: those
        fall back to the last good fit and come back flagged."""
        if not 0 <= i < self.plate_count:
            raise HowardError(f"plate frame {i} is outside the plate clip (0..{self.plate_count - 1})")
        self._catch_up(i)
        result = self._step(i, plate, subject_mask)
        if self.keep_qc:
            self._qc.append(result.to_qc())
        return result

    def _reset(self) -> None:
        """Forget what earlier frames left: the state a segment starts from."""
        self._last_good = self._previous = self._exposure = self._fused = None

    def _catch_up(self, i: int) -> None:
        """Give frame i the state a whole-clip run has there: at a segment's start, the state from its
        lead-in alone; inside a segment, after a gap (a chunk's or a resumed run's start), the state
        from aligning the skipped frames since the segment's lead-in (aligned, then discarded)."""
        seg = i - i % self.segments.frames
        if i != seg and self._follows_on(i, seg):
            return
        self._reset()
        if self.history is None:
            return  # a caller without the other frames aligns the clip in order, from its start
        for k in range(max(0, seg - self.segments.lead_in), seg if i == seg else i):
            if self.history.exists(k):
                self._step(k, self.history.read(k), None)

    def _follows_on(self, i: int, seg: int) -> bool:
        """True when this run's last frame was the frame on disk before i, in i's segment."""
        last = self._last_index
        if last is None or not seg <= last < i:
            return False
        return self.history is None or not any(self.history.exists(k) for k in range(last + 1, i))

    def _step(self, i: int, plate: np.ndarray, subject_mask: np.ndarray | None) -> AlignResult:
        self._last_index = i
        js = self.candidates(i)
        prev = self._previous
        if prev is not None and prev.still and prev.clean_index not in js:
            # Hysteresis across the sliding window: while the plate holds still, the previous choice
            # stays a candidate after the window has moved past it,
            # until another is clearly better; a still plate has no reason to change frames, whatever
            # the timeline mapping says.
            js = sorted(js + [prev.clean_index])
        result = self._align(i, plate, subject_mask, js)
        if result.fallback in ("previous", "identity"):
            # Nothing in the window could be fitted, not even by tracking from a guess: look further
            # along the clean plate for the nearest frame that can.
            wider = [j for j in self.candidates(i, 2 * self.window + 2) if j not in js]
            if wider:
                retry = self._align(i, plate, subject_mask, wider)
                if retry.fallback is None:
                    retry.fallback, retry.flagged = "wider_window", True
                    retry.reason = f"nothing in the window fitted ({result.reason}); {retry.reason}"
                    result = retry
        self._hold_fused(result)
        if result.fallback not in ("previous", "identity"):
            # A verified fit, however it was found: the next frame's fallback starts from here.
            self._last_good = (result.clean_index, result.homography)
            self._previous = result
            if result.exposure_source != "previous frames":
                self._exposure = (np.asarray(result.gain), np.asarray(result.bias))
        return result

    def _held(self, js: list[int]) -> tuple[int, AlignResult] | None:
        """The fused clean plate being held, as (its position in `js`, its result), if it is among them."""
        held = self._fused
        return (js.index(held.clean_index), held) if held is not None and held.clean_index in js else None

    def _hold_fused(self, result: AlignResult) -> None:
        """Keep the fused clean plate (`AlignOptions.fuse_frames`) of the frame where the alignment started
        afresh while the plate holds still and keeps that alignment (same clean frame, homography, flow
        and exposure): the aligner then takes that background, bit for bit, apart from the uncovered
        border, which is this plate's own (`Aligner.align(held=...)`). Anything else ends the hold."""
        if result.fused:
            self._fused = result
            return
        held = self._fused
        if held is None or not result.kept_background:
            self._fused = None
            return
        result.fused = held.fused
        result.reason += (f"; fused clean plate of plate frame {held.plate_index} kept (clean-plate frames "
                          f"{', '.join(str(j) for j in held.fused)})")

    def _align(self, i: int, plate: np.ndarray, subject_mask: np.ndarray | None, js: list[int]) -> AlignResult:
        cands = [self._prepared(j) for j in js]
        prior = None
        if self._last_good is not None:
            # The previous good fit, on the candidate nearest to the frame it was made with.
            j_prev, h_prev = self._last_good
            prior = (int(np.argmin([abs(j - j_prev) for j in js])), h_prev)
        prefer = track = None
        prev = self._previous
        if prev is not None and prev.clean_index in js:
            prefer = js.index(prev.clean_index)
            track = {"index": prefer, "homography": prev.homography, "flow": prev.flow, "count": prev.steady,
                     "held": prev.held, "plate_gray": prev.plate_gray}
        result = self.aligner.align(plate, cands, subject_mask=subject_mask, prior=prior,
                                    plate_label=f"plate frame {i}",
                                    candidate_labels=[f"clean-plate frame {j}" for j in js], prefer=prefer,
                                    exposure_prior=self._exposure, track=track,
                                    fuse=self._previous is None, held=self._held(js))
        result.plate_index = i
        result.clean_index = js[result.index]
        result.fused = tuple(js[k] for k in result.fused)
        for c in result.candidates:
            c["clean_frame"] = js[c["candidate"]]
        return result

    def _prepared(self, j: int) -> PreparedFrame:
        frame = self._cache.get(j)
        if frame is not None:
            self._cache.move_to_end(j)
            return frame
        frame = self.aligner.prepare(self.get_clean(j), f"clean-plate frame {j}")
        self._cache[j] = frame
        while len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)
        return frame

    def prefetch(self, i: int) -> None:
        """Prepare (and cache) plate frame i's candidates ahead of time, e.g. to measure a warm cache."""
        for j in self.candidates(i):
            self._prepared(j)

    # -- QC ---------------------------------------------------------------------------------------------

    def qc_report(self, **info) -> dict:
        """The QC document for every frame aligned so far (see `qc_report`)."""
        return qc_report(self._qc, timing=_timing_qc(self.timing), window=self.window, **info)

    # -- timing estimate --------------------------------------------------------------------------------

    def estimate_timing(self, get_plate: Callable[[int], np.ndarray], keys: int = 6,
                        samples: int = 30) -> Timing:
        """Measure the timeline mapping from a few key plate frames and adopt it; returns it.

        Each of `keys` plate frames, spread over the plate clip, is fitted to `samples` clean-plate frames
        spread over the clean clip; how well a pair's framings agree is the intersection over union of
        their footprints under the fit (high when the camera poses agree). A hand-held move revisits
        similar poses, so single pairs mislead: instead the line `clean = offset + scale * plate` is
        chosen along which all the keys agree best at once, then searched again at single-frame
        resolution around that line. When the default linear mapping does as well, or nothing varies
        (a locked-off clean plate), the mapping is left as it was (`estimated` False, with a note).
        Reads `keys` plate frames and about `samples + 2 * keys * clean_count / samples` clean frames.
        """
        step = max(1, int(np.ceil(self.clean_count / max(1, samples))))
        key_frames = sorted({int(round(x)) for x in np.linspace(0, self.plate_count - 1, max(2, keys))})
        clean_feats = {j: self.aligner.features(self.get_clean(j), f"clean-plate frame {j}")
                       for j in range(0, self.clean_count, step)}
        plates = {i: self.aligner.features(get_plate(i), f"plate frame {i}") for i in key_frames}
        curves = {i: {j: self._overlap(c, plates[i]) for j, c in clean_feats.items()} for i in key_frames}

        def keep(note: str) -> Timing:
            self.timing = Timing(self.timing.offset, self.timing.scale, False, (), f"kept the mapping: {note}")
            return self.timing

        if len(key_frames) < 2 or max(max(c.values()) for c in curves.values()) <= 0:
            return keep("no key frame could be fitted to the clean plate")
        spread = [max(c.values()) - min(c.values()) for c in curves.values()]
        if np.median(spread) < 0.02:
            return keep("the clean plate overlaps every key frame about equally (locked off?)")

        first, last = key_frames[0], key_frames[-1]
        ends = np.arange(0, self.clean_count - 0.5, max(0.5, step / 2))
        line = _best_line(curves, first, last, ends, ends)
        if step > 1:
            # Every clean frame near the line, then the line again at half-frame resolution.
            for i in key_frames:
                centre = int(round(line[0] + line[1] * i))
                for j in range(centre - step, centre + step + 1):
                    if 0 <= j < self.clean_count and j not in curves[i]:
                        curves[i][j] = self._overlap(self._clean_features(j, clean_feats), plates[i])
            a, b = line[0] + line[1] * first, line[0] + line[1] * last
            line = _best_line(curves, first, last, np.arange(a - step, a + step + 0.25, 0.5),
                              np.arange(b - step, b + step + 0.25, 0.5))
        offset, scale, agreement = line
        default = _line_agreement(curves, self.timing.offset, self.timing.scale)
        if agreement <= default + 0.005:
            return keep(f"the current mapping agrees as well ({default:.3f} vs {agreement:.3f})")
        self.timing = Timing(offset=offset, scale=scale, estimated=True,
                             keys=tuple((i, int(round(offset + scale * i))) for i in key_frames),
                             note=f"key frames agree at {agreement:.3f} (current mapping {default:.3f})")
        return self.timing

    def _clean_features(self, j: int, known: dict[int, Features]) -> Features:
        return known[j] if j in known else self.aligner.features(self.get_clean(j), f"clean-plate frame {j}")

    def _overlap(self, clean: Features, plate: Features) -> float:
        fit = self.aligner.coarse_fit(clean, plate)
        return geo.overlap(fit.h, clean.size, plate.size) if fit.failure is None else 0.0


def _line_agreement(curves: dict[int, dict[int, float]], offset, scale) -> np.ndarray:
    """Mean over keys of each key's overlap curve read (interpolated) where the line(s) put it."""
    total = 0.0
    for i, curve in curves.items():
        js = np.array(sorted(curve))
        total = total + np.interp(offset + scale * i, js, [curve[j] for j in js], left=0.0, right=0.0)
    return total / len(curves)


def _best_line(curves, first: int, last: int, at_first: np.ndarray,
               at_last: np.ndarray) -> tuple[float, float, float]:
    """The line through (first, a) and (last, b), a from `at_first`, b from `at_last`, along which the keys
    agree best; (offset, scale, agreement). Only forward-running lines, scale 1/4..4."""
    a, b = np.meshgrid(at_first, at_last, indexing="ij")
    scale = (b - a) / max(last - first, 1)
    offset = a - scale * first
    score = _line_agreement(curves, offset, scale)
    score = np.where((scale >= 0.25) & (scale <= 4), score, -1.0)
    k = np.unravel_index(int(np.argmax(score)), score.shape)
    return float(offset[k]), float(scale[k]), float(score[k])


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
