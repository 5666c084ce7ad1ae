"""Align a clean plate to one plate frame: pick the best of several candidate clean-plate frames, fit a
homography to it, warp it into the plate and match its exposure.

The search, per plate frame:

1. Features (ORB by default, or SIFT) on a downscaled copy of every frame, once per frame
   (`Aligner.prepare`; the sequence helper caches clean-plate frames). A known subject mask (e.g. the
   previous frame's matte) keeps the subject out of the plate's features.
2. Coarse fit per candidate: matches passing Lowe's ratio test, made one-to-one, then a MAGSAC++
   homography (OpenCV USAC); rejected with too few inliers or when it is not a plausible camera move
   (folded, mirrored, zoomed beyond `max_scale`, or barely overlapping the plate).
3. Every coarse fit is scored on a small copy: exposure fitted robustly on background pixels, then the
   trimmed mean absolute difference, plus a penalty for plate area left uncovered; a fit whose
   structure does not correlate is rejected. The best one also yields a coarse subject mask: where plate
   and clean plate disagree beyond the noise.
4. The best-scoring candidate is refined to sub-pixel accuracy at full resolution: it is warped into the
   plate by its fit, background corners of the (exposure-normalised) plate are tracked into it by
   pyramidal Lucas-Kanade, and a MAGSAC++ then least-squares correction is composed onto the fit; twice.
5. The winner is warped at full resolution (bilinear by default), exposure-matched, and where it does not
   cover the plate, the plate itself fills in (the reference method's choice: no difference, no matte).

When no candidate fits, the frame falls back, and is flagged: tracking alone from the previous frame's
homography (`prior`) or from a plain resize of the middle candidate (tracking needs texture, not
distinctive features, so it copes with repeated patterns), else the previous homography as it stands,
else the plain resize.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from howard_core.align import dense, fusion
from howard_core.align import geometry as geo
from howard_core.align import photometric as pm
from howard_core.align.options import DENSE_INTERPOLATIONS, INTERPOLATIONS, OPTION_NAMES, AlignOptions, align_options
from howard_core.errors import HowardError

# -- tuning constants (the options a user may want to change are in `AlignOptions`) ----------------------
# ORB: six pyramid levels of 1.2 cover a zoom of 2x between the takes, which is all `max_scale` allows; a
# FAST threshold of 10 (OpenCV's default is 20) still finds corners on soft, low-contrast plates.
_ORB_LEVELS = 6
_ORB_FAST_THRESHOLD = 10
# Fewer features than this in either frame: blank or featureless, no homography search.
_MIN_FEATURES = 8
# MAGSAC++ inlier threshold of the coarse fit, in feature-copy pixels (features are located to about a
# pixel there), and its iterations; the refinement's, in plate pixels (sub-pixel tracks), and its iterations.
_COARSE_THRESHOLD = 2.0
_COARSE_ITERATIONS = 5000
_REFINE_THRESHOLD = 1.0
_REFINE_ITERATIONS = 2000
_FIT_CONFIDENCE = 0.999
# Lucas-Kanade: the window (px) is wide enough to hold texture on a soft plate; tracking stops after 30
# iterations or below a 0.003 px step (far under the accuracy the refit reaches).
_LK_WINDOW = (21, 21)
_LK_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.003)
# Refinement corners: a low quality level (relative to the strongest corner) so that flat sets still
# give some; at least 1/45 of the long side apart, so they spread over the frame (and its depths);
# kept a tracking window (plus a margin) inside the frame, and inside the warped candidate.
_CORNER_QUALITY = 0.005
_CORNERS_ACROSS = 45
_CORNER_BLOCK = 5
_CORNER_BORDER = _LK_WINDOW[0] // 2 + 2
_TRACK_INSET = _LK_WINDOW[0] // 2 + 4
# A refinement that moves a corner by more than this share of the long side locked onto something else.
_MAX_DRIFT = 0.05
# Pyramid levels for tracking from a fallback guess, which may be tens of pixels off (a feature fit is
# about one pixel off and gets one level).
_FALLBACK_LEVELS = 3
# Rounds of fit -> residual -> subject estimate for a fit's own exposure (an agreed background needs none).
_EXPOSURE_ROUNDS = 2
# A subject mask (a matte) counts as subject above this alpha: soft edges and motion blur included.
_MATTE_SUBJECT = 0.1
# The hysteresis margin stops growing here: a clearly better frame (by half) always wins.
_HYSTERESIS_CAP = 0.5
# A fit within half a pixel of the plain resize at every corner may be a take already in register: the
# plain resize is kept if it scores within 2% of the fit (the fit's own noise).
_IN_REGISTER_PX = 0.5
_IN_REGISTER_SLACK = 1.02
# While the plate holds still: a fit within 1% of the long side (every corner) of the previous frame's
# counts as the same alignment; the previous one is kept unless the new one is better by 3%, growing
# with the frames held (x (1 + log2 frames)) up to 10%.
_HOLD_SAME = 0.01
_HOLD_MARGIN = 0.03
_HOLD_CAP = 0.1
# The dense step's photometric noise level: a little above the trimmed score (which leaves out the
# worst 10%); 0.01 when the score is unknown. It is applied only if it cuts the background error by 3%.
_NOISE_PER_SCORE = 1.25
_NOISE_DEFAULT = 0.01
_DENSE_GAIN = 0.97
# Blur (sigma, dense-size px) before comparing alignments: resampling lowers a noisy plate's noise.
_ERROR_BLUR = 1.0
# The plate holds still when the median corner moves less than this (plate px): well under the noise of
# a refit, well over that of tracking noise-only frames. Corners: up to 200, quality 0.01, 8 px apart;
# at least 16 tracked; 2 pyramid levels.
_STILL_PX = 0.15
_STILL_CORNERS = 200
_STILL_QUALITY = 0.01
_STILL_SPACING = 8
_STILL_MIN_TRACKS = 16
_STILL_LEVELS = 2
# The final warp works in bands of this many rows (about 1.5 MB of HD float RGB: it stays in cache).
_RENDER_ROWS = 64


@dataclass
class Features:
    """Keypoints of one frame, found on its feature-sized copy.

    size:        (width, height) of the frame.
    points:      N x 2 float32 positions in frame pixels.
    descriptors: N x D (uint8 for ORB, float32 for SIFT), or None when nothing was found.
    gray:        h x w uint8 luma of the feature-sized copy; `to_feature` maps frame px -> its px.
    """

    size: tuple[int, int]
    points: np.ndarray
    descriptors: np.ndarray | None
    gray: np.ndarray
    to_feature: np.ndarray

    @property
    def pixel(self) -> float:
        """Frame pixels per feature-copy pixel."""
        return self.size[0] / self.gray.shape[1]


@dataclass
class PreparedFrame:
    """What alignment needs from one frame, computed once (`Aligner.prepare`); cache it for clean plates.

    image:       the frame, H x W x 3 float32 sRGB 0..1.
    features:    its `Features`.
    small:       h x w x 3 float32 copy for photometric scoring, `to_small` maps frame px -> its px.
    gray:        luma for the sub-pixel refinement at the tracking size (`to_track` maps frame px -> its
                 px): float32 for a plate, uint8 for a clean plate.
    dense:       h x w x 3 float32 copy for the dense residual warp (`to_dense` frame px -> its px), or None
                 when the dense step is off.
    blurred:     a plate's working copy (`dense`, else `small`) lightly blurred, for comparing alignments
                 (`Aligner._aligned_error`); made on first use.
    """

    label: str
    image: np.ndarray
    features: Features
    small: np.ndarray
    to_small: np.ndarray
    gray: np.ndarray
    to_track: np.ndarray
    dense: np.ndarray | None = None
    to_dense: np.ndarray | None = None
    blurred: np.ndarray | None = field(default=None, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]


@dataclass
class Fit:
    """One candidate's fit: the homography `h` (clean px -> plate px, 3x3 float64) and how it was obtained:
    tentative feature `matches`, `inliers` among them, `refined_points` tracks of a sub-pixel refit, and
    `failure` (None, or why the fit cannot be used)."""

    h: np.ndarray | None = None
    matches: int = 0
    inliers: int = 0
    refined_points: int = 0
    refined: bool = False
    failure: str | None = None
    score: _Score | None = None


@dataclass
class _Score:
    total: float
    photometric: float
    coverage: float
    ncc: float
    gain: np.ndarray
    bias: np.ndarray
    residual: np.ndarray = field(repr=False)
    valid: np.ndarray = field(repr=False)
    background: np.ndarray | None = field(default=None, repr=False)
    exposure_source: str = "fit"

    @property
    def background_share(self) -> float:
        return float(self.background.mean()) if self.background is not None else float(self.valid.mean())


@dataclass
class AlignResult:
    """The aligned clean plate for one plate frame, and the QC record of how it was obtained.

    background:  H x W x 3 float32 sRGB 0..1 (plate size): the chosen clean-plate frame warped into the
                 plate and exposure-matched; the plate itself where `valid` is False.
    valid:       H x W bool, where the warped clean plate covers the plate.
    homography:  3x3 float64, chosen clean-plate frame pixels -> plate pixels.
    index:       position of the chosen frame in the candidate list given to `Aligner.align`.
    clean_index: the chosen frame's number in the clean-plate clip (sequence helper), else None.
    plate_index: the plate frame's number (sequence helper), else None.
    inliers, matches:  feature matches consistent with the coarse fit, of those tentatively matched.
    refined_points:    sub-pixel tracks used by the refined fit (0: not refined).
    score:       robust photometric error over the covered background after exposure matching (mean
                 absolute RGB difference, display units, measured on the downscaled copy).
    ncc:         structural correlation of plate and aligned clean plate there (1 = identical).
    coverage:    fraction of the plate covered by the clean plate.
    gain, bias:  per-channel exposure match applied (RGB), `plate ~= gain * clean + bias`.
    fallback:    None, or how the homography was obtained when no candidate fitted: "previous_refined" /
                 "identity_refined" (tracked from the previous frame's fit / a plain resize), "previous"
                 or "identity" (that starting guess as it stands), "wider_window" (sequence helper:
                 a clean-plate frame outside the usual window).
    flagged:     True when the frame needs a human look (fallback used, or poor coverage/match).
    reason:      one line saying why this candidate and why flagged, if so.
    candidates:  per-candidate QC dicts.
    dense:       the dense residual warp: "applied", "no gain" (measured, but it did not improve the
                 background, so the homography alone was used), "off", or "not run" (fallback frames).
    residual_px: mean residual motion beyond the homography over the measured background, plate px.
    background_share: fraction of the frame agreed to be background (exposure and scores use only it).
    subject_share:    fraction of the frame taken as subject (motion there filled from the background).
    homography_share: fraction of the frame where the homography alone was kept (unreliable motion,
                 disocclusion; 1 when the dense step was not applied).
    exposure_source:  where gain and bias came from: "fit", "identity", "previous frames".
    flow:        the dense residual flow at the reduced size (h x w x 2 float32, reduced px) or None; not
                 in the QC, kept for the sequence helper's temporal smoothing.
    steady:      frames in a row this alignment has been kept (1: fitted on this frame).
    plate_gray:  the plate's feature-size luma (uint8), for the next frame's stillness test; not in the QC.
    still:       the plate had not moved since the previous frame given in `track`.
    held:        frames in a row this clean frame has been chosen while the plate held still.
    fused:       further candidates fused into `background` (`Aligner.align(fuse=True)`; positions in the
                 candidate list, clean-plate frame numbers from the sequence helper); () when none.
    kept_background: `background` is that of the result given as `Aligner.align(held=...)`, not rendered.
    """

    background: np.ndarray
    valid: np.ndarray
    homography: np.ndarray
    index: int
    clean_index: int | None = None
    plate_index: int | None = None
    inliers: int = 0
    matches: int = 0
    refined_points: int = 0
    score: float = float("nan")
    ncc: float = 0.0
    coverage: float = 0.0
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    fallback: str | None = None
    flagged: bool = False
    reason: str = ""
    candidates: list[dict] = field(default_factory=list)
    ms: float = 0.0
    dense: str = "off"
    residual_px: float = 0.0
    background_share: float = 0.0
    subject_share: float = 0.0
    homography_share: float = 1.0
    exposure_source: str = "fit"
    flow: np.ndarray | None = field(default=None, repr=False)
    steady: int = 1
    plate_gray: np.ndarray | None = field(default=None, repr=False)
    still: bool = False
    held: int = 1
    fused: tuple = ()
    kept_background: bool = False

    @property
    def inlier_ratio(self) -> float:
        return self.inliers / self.matches if self.matches else 0.0

    def to_qc(self) -> dict:
        """The QC record as a JSON-serialisable dict (no arrays)."""
        return {
            "plate_frame": self.plate_index,
            "clean_frame": self.clean_index if self.clean_index is not None else self.index,
            "candidate": self.index,
            "inliers": int(self.inliers),
            "matches": int(self.matches),
            "inlier_ratio": round(self.inlier_ratio, 4),
            "refined_points": int(self.refined_points),
            "score": _round(self.score, 5),
            "ncc": _round(self.ncc, 4),
            "coverage": _round(self.coverage, 4),
            "gain": [_round(g, 4) for g in self.gain],
            "bias": [_round(b, 4) for b in self.bias],
            "fallback": self.fallback,
            "dense": self.dense,
            "residual_px": _round(self.residual_px, 3),
            "background_share": _round(self.background_share, 4),
            "subject_share": _round(self.subject_share, 4),
            "homography_share": _round(self.homography_share, 4),
            "exposure_source": self.exposure_source,
            "steady_frames": int(self.steady),
            "plate_still": bool(self.still),
            "fused": [int(k) for k in self.fused],
            "flagged": bool(self.flagged),
            "reason": self.reason,
            "homography": [[float(v) for v in row] for row in np.asarray(self.homography)],
            "ms": round(float(self.ms), 1),
            "candidates": self.candidates,
        }


def _round(x: float, digits: int) -> float | None:
    x = float(x)
    return round(x, digits) if np.isfinite(x) else None


@dataclass
class _Search:
    """One `Aligner.align` call: the prepared plate and candidates, what the sequence knows of the frames
    before, and what the stages find (small-size masks are at the score size)."""

    plate: PreparedFrame
    cands: list[PreparedFrame]
    labels: list[str]
    subject: np.ndarray | None  # known subject, small size: the given mask, then with the estimate
    still: bool  # the plate has not moved since the previous frame of `track`
    prefer: int | None  # the previous choice, heeded only while `still`
    priors: tuple  # (name, gain, bias) exposures a frame's own fit must beat
    exposure_prior: tuple | None
    track: dict | None
    held: int  # frames in a row `prefer` has been chosen while still
    margin: float  # the hysteresis margin that follows from `held`
    fits: list[Fit] = field(default_factory=list)
    agreed: np.ndarray | None = None  # small size: background agreed among the fitting candidates
    coarse_total: dict[int, float] = field(default_factory=dict)
    # candidate -> (homography, `Aligner._dense`'s result), when the choice already ran the dense step
    dense_cache: dict = field(default_factory=dict)

    def usable(self) -> list[int]:
        """Positions of the candidates whose current fit can be used."""
        return [k for k, f in enumerate(self.fits) if f.h is not None and f.failure is None]


@dataclass
class _Choice:
    """The candidate chosen (`index` into the search's candidates), its fit, the fallback used (None, or
    how the fit was obtained when no candidate fitted) and the QC's reason and flag."""

    index: int
    fit: Fit
    fallback: str | None
    reason: str
    flagged: bool = False


@dataclass
class _Warp:
    """How the chosen frame is warped: homography `h`, residual `flow` at the dense size (None: the
    homography alone), the dense step's `res` (`dense.Residual` or None), its QC `state`, `steady`, the
    frames in a row this alignment has been kept, and `error`, its background error (`_aligned_error`
    over the dense step's background) where the dense step measured it with the final exposure."""

    h: np.ndarray
    flow: np.ndarray | None
    res: dense.Residual | None
    state: str
    steady: int = 1
    error: float | None = None


class Aligner:
    """Aligns candidate clean-plate frames to a plate frame.

    `Aligner(options=None, **overrides)`: an `AlignOptions` (default: every default) and single options
    as keywords on top (`Aligner(dense=False)`); an unknown name raises HowardError. `self.options` holds
    the options it runs with (read-only; option names also read as attributes, `aligner.dense`).
    """

    def __init__(self, options: AlignOptions | None = None, **overrides):
        self.options = align_options(options, **overrides)
        o = self.options
        if o.detector == "orb":
            self._detector = cv2.ORB_create(nfeatures=o.max_features, nlevels=_ORB_LEVELS,
                                            fastThreshold=_ORB_FAST_THRESHOLD)
            self._norm = cv2.NORM_HAMMING
        else:
            self._detector = cv2.SIFT_create(nfeatures=o.max_features)
            self._norm = cv2.NORM_L2
        self._matcher = cv2.BFMatcher(self._norm)

    def __getattr__(self, name: str):
        # Only reached for names that are not attributes: the options, read as before they had a class.
        options = self.__dict__.get("options")
        if options is not None and name in OPTION_NAMES:
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- preparation ------------------------------------------------------------------------------------

    def prepare(self, image: np.ndarray, label: str = "clean-plate frame", subject: np.ndarray | None = None,
                for_plate: bool = False) -> PreparedFrame:
        """Features and downscaled copies of one frame (H x W x 3 float RGB 0..1), for `align`.

        `subject` (H x W bool, True = subject) keeps features off the subject. Raises HowardError
        naming `label` if the array is not a usable frame.
        """
        image = _as_frame(image, label)
        size = (image.shape[1], image.shape[0])
        o = self.options
        track_size = geo.scaled_size(size, o.track_size)
        # Every reduced copy comes from the tracking-size one: one pass over the full frame instead of one
        # per copy (area averages of area averages, the same up to rounding at the usual integer ratios).
        track = image if track_size == size else cv2.resize(image, track_size, interpolation=cv2.INTER_AREA)
        small_size = geo.scaled_size(size, o.score_size)
        small = cv2.resize(track, small_size, interpolation=cv2.INTER_AREA)
        if not np.all(np.isfinite(small)):
            raise HowardError(f"{label} contains NaN or infinite pixels; fix or clamp the source frame")
        gray = cv2.cvtColor(track, cv2.COLOR_RGB2GRAY)
        to_track = geo.resize_matrix(size, track_size)
        features = self._describe(gray, size, subject)
        dense_copy = to_dense = None
        if o.dense:
            dense_size = geo.scaled_size(size, o.dense_size)
            dense_copy = small if dense_size == small_size else cv2.resize(track, dense_size,
                                                                           interpolation=cv2.INTER_AREA)
            to_dense = geo.resize_matrix(size, dense_size)
        # A plate's luma is rescaled to each candidate's exposure before tracking; a clean plate's is
        # tracked as it is, so it is stored as the 8 bits Lucas-Kanade wants.
        return PreparedFrame(label=label, image=image, features=features, small=small,
                             to_small=geo.resize_matrix(size, small_size),
                             gray=gray if for_plate else cv2.convertScaleAbs(gray, alpha=255), to_track=to_track,
                             dense=dense_copy, to_dense=to_dense)

    def features(self, image: np.ndarray, label: str = "frame") -> Features:
        """Just the `Features` of a frame (H x W x 3 float RGB 0..1): cheap to keep many of."""
        image = _as_frame(image, label)
        return self._describe(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (image.shape[1], image.shape[0]))

    def _describe(self, gray: np.ndarray, size: tuple[int, int], subject: np.ndarray | None = None) -> Features:
        """Features of a frame of `size` (W, H) from its luma `gray` (float32 0..1, that size or reduced);
        `subject` (H x W bool, frame size) keeps them off the subject."""
        feat_size = geo.scaled_size(size, self.options.feature_size)
        feat_gray = cv2.convertScaleAbs(cv2.resize(gray, feat_size, interpolation=cv2.INTER_AREA), alpha=255)
        to_feature = geo.resize_matrix(size, feat_size)
        mask = None
        if subject is not None:
            mask = np.where(cv2.resize(subject.astype(np.uint8), feat_size, interpolation=cv2.INTER_NEAREST),
                            0, 255).astype(np.uint8)
        kps, desc = self._detector.detectAndCompute(feat_gray, mask)
        pts = cv2.KeyPoint_convert(kps).astype(np.float64).reshape(-1, 2) if kps else np.zeros((0, 2))
        points = geo.project(np.linalg.inv(to_feature), pts).astype(np.float32)
        return Features(size=size, points=points, descriptors=desc, gray=feat_gray, to_feature=to_feature)

    # -- the search: fit -> choose -> flag, then warp -----------------------------------------------------

    def align(self, plate: np.ndarray, candidates: list, subject_mask: np.ndarray | None = None,
              prior: tuple[int, np.ndarray] | None = None, plate_label: str = "plate frame",
              candidate_labels: list[str] | None = None, prefer: int | None = None,
              exposure_prior: tuple | None = None, track: dict | None = None, fuse: bool = False,
              held: tuple[int, AlignResult] | None = None) -> AlignResult:
        """Align the best of `candidates` to `plate`.

        plate:        H x W x 3 float32 sRGB 0..1.
        candidates:   clean-plate frames, each Hc x Wc x 3 float32 (any size) or a `PreparedFrame`.
        subject_mask: optional H x W float or bool, 1 = subject (e.g. the previous frame's matte); it is
                      grown by `subject_margin` since the subject has moved since.
        prior:        optional (candidate position, homography clean px -> plate px) to fall back on when
                      nothing fits, e.g. the previous frame's result.
        prefer:       optional candidate position kept unless another aligns better by more than
                      `hysteresis` (the previous frame's choice, so a still plate keeps one clean frame);
                      heeded only while the plate holds still (see `track`).
        exposure_prior: optional (gain, bias) of neighbouring frames, used when too little background is
                      visible for this frame's own fit (`min_background`), and while the plate holds
                      still an alternative the fit must beat.
        track:        optional state of the previous frame on the same candidate list (`SequenceAligner`
                      keeps it): {"index", "homography", "flow", "count", "held", "plate_gray"}. When the same
                      candidate is chosen and the plate has not moved since, the previous alignment
                      (homography and flow) is kept unless this frame's own lines the background up
                      better by more than 3% (up to 10% as it keeps holding), so that a still plate
                      gets a still clean plate.
        fuse:         also align up to `fuse_frames` further candidates that fitted, as the chosen one
                      is, and fuse them into its background (`howard_core.align.fusion`); `fused` in
                      the result lists them.
        held:         optional (candidate position, an earlier result on that candidate, e.g. a fused
                      one): while the plate holds still and this frame's alignment is that result's
                      (the same candidate, homography, flow and exposure), its background is taken
                      as it is instead of rendered again (`kept_background` in the result).
        Labels name the frames in error messages and QC. Frames that cannot be aligned do not raise: they
        come back with `fallback` set and `flagged`. Raises HowardError for unusable input arrays.
        """
        t0 = time.perf_counter()
        s = self._search(plate, candidates, subject_mask, plate_label, candidate_labels, prefer, exposure_prior,
                         track)
        self._fit(s)
        choice = self._choose(s) if s.usable() else self._fallback(s, prior)
        self._flag(s, choice)
        warp = self._warp(s, choice)
        self._hold_still(s, choice, warp)
        kept = held is not None and self._same_as(s, choice, warp, *held)
        if kept:
            background, valid = self._kept(held[1], s.cands[choice.index], s.plate, warp.h)
        else:
            background, valid = self._render(s.cands[choice.index], s.plate, warp.h, choice.fit.score, warp.flow)
        fused = self._fuse(s, choice, warp, background, valid) if fuse and not kept else ()
        if fused:
            background = fused[0]
        result = self._result(s, choice, warp, background, valid, t0)
        result.fused = fused[1] if fused else ()
        result.kept_background = kept
        return result

    @staticmethod
    def _same_as(s: _Search, c: _Choice, w: _Warp, k: int, earlier: AlignResult) -> bool:
        """Whether this frame's alignment is `earlier`'s, made on candidate `k`, while the plate holds still."""
        score = c.fit.score
        same_flow = (w.flow is None and earlier.flow is None) or (
            w.flow is not None and earlier.flow is not None and np.array_equal(w.flow, earlier.flow))
        return (s.still and c.fallback is None and c.index == k and same_flow
                and np.array_equal(w.h, earlier.homography)
                and tuple(float(g) for g in score.gain) == tuple(earlier.gain)
                and tuple(float(b) for b in score.bias) == tuple(earlier.bias)
                and earlier.background.shape[:2] == s.plate.image.shape[:2])

    @staticmethod
    def _kept(earlier: AlignResult, clean: PreparedFrame, plate: PreparedFrame, h: np.ndarray):
        """`earlier`'s background for this plate: its own where the clean frame covers, this plate elsewhere."""
        background = earlier.background.copy()
        return background, _plate_outside_cover(background, clean, plate, h)

    def _search(self, plate, candidates, subject_mask, plate_label, candidate_labels, prefer, exposure_prior,
                track) -> _Search:
        """Check and prepare the inputs of `align` (see there) and read the sequence's state."""
        if not candidates:
            raise HowardError(f"{plate_label}: no clean-plate candidates to align; check the clean-plate "
                              "sequence is not empty")
        labels = candidate_labels or [f"clean-plate candidate {k}" for k in range(len(candidates))]
        plate_img = _as_frame(plate, plate_label)
        plate_size = (plate_img.shape[1], plate_img.shape[0])
        given_subject = self._subject_from_mask(subject_mask, plate_size, plate_label)
        pf = self.prepare(plate_img, plate_label, subject=given_subject, for_plate=True)
        cands = [c if isinstance(c, PreparedFrame) else self.prepare(c, labels[k])
                 for k, c in enumerate(candidates)]
        subject_small = None
        if given_subject is not None:
            subject_small = cv2.resize(given_subject.astype(np.uint8), (pf.small.shape[1], pf.small.shape[0]),
                                       interpolation=cv2.INTER_NEAREST).astype(bool)
        # History counts only while the plate holds still (tracked against the previous plate frame):
        # a moving plate is judged on its own, frame by frame, so farm chunks agree with a whole run.
        still = track is not None and _still(track.get("plate_gray"), pf.features)
        if not still:
            prefer = None
        # The previous frames' exposure: a fit must beat it while the plate holds still, and it stands in
        # where a frame shows too little background for its own fit (`_flag`).
        priors = (("previous frames", *exposure_prior),) if still and exposure_prior is not None else ()
        # Hysteresis margin: changing frames shows as a jump in the matte, so the longer a choice has
        # held still (a still plate), the more it takes to change it.
        held = int(track.get("held", 1)) if prefer is not None and track.get("index") == prefer else 1
        margin = min(_HYSTERESIS_CAP, self.options.hysteresis * (1 + np.log2(held)))
        return _Search(plate=pf, cands=cands, labels=labels, subject=subject_small, still=still, prefer=prefer,
                       priors=priors, exposure_prior=exposure_prior, track=track, held=held, margin=margin)

    def _fit(self, s: _Search) -> None:
        """Fit every candidate (`s.fits`): coarse fits, scored on the agreed background; then the subject
        estimate, and the sub-pixel refinement of the best ones (or a rescore with that subject)."""
        # The agreed background: where any fitting candidate has the plate's local structure (the subject
        # has none of theirs). Every candidate is then scored on it, so the subject never counts against one.
        pf, cands = s.plate, s.cands
        s.fits = [self.coarse_fit(c.features, pf.features) for c in cands]
        ok = s.usable()
        # Each candidate warped once, for both its own background and its score.
        warps = {k: self._small_warp(s.fits[k].h, cands[k], pf) for k in ok}
        s.agreed = np.logical_or.reduce([self._own_background(warps[k], pf, s.subject)
                                         for k in ok]) if ok else None
        for k in ok:
            self._score_fit(s.fits[k], cands[k], pf, s.subject, agreed=s.agreed, priors=s.priors, warp=warps[k])
        ok = s.usable()
        s.coarse_total = {k: s.fits[k].score.total for k in ok}
        if not ok:
            return
        best = s.fits[min(ok, key=lambda k: s.fits[k].score.total)].score
        grow = max(1, int(self.options.subject_margin * max(pf.small.shape[1], pf.small.shape[0])))
        est = pm.subject_estimate(best.residual, best.valid, grow)
        est |= _grow(best.valid & ~s.agreed, grow)
        s.subject = est if s.subject is None else (s.subject | est)
        if self.options.refine:
            self._refine_best(s, ok)
        else:
            for k in ok:
                self._score_fit(s.fits[k], cands[k], pf, s.subject, agreed=s.agreed, priors=s.priors)

    def _refine_best(self, s: _Search, ok: list[int]) -> None:
        """Refine the best coarse fits, in order, until `refine_top` refinements succeed (one spare try).
        The preferred candidate goes first; the others compete with it only when their coarse score is
        clearly better (each refinement costs two full-resolution warps)."""
        fits = s.fits
        corners = self._plate_corners(s.plate, s.subject)
        order = sorted(ok, key=lambda k: fits[k].score.total)
        if s.prefer in ok:
            rivals = [k for k in order if k != s.prefer and
                      fits[k].score.total * (1 + s.margin) < fits[s.prefer].score.total]
            need = 1 + min(self.options.refine_top, len(rivals))
            todo = [s.prefer] + rivals + [k for k in order if k != s.prefer and k not in rivals]
        else:
            todo, need = order, self.options.refine_top
        done = 0
        for k in todo[:need + 1]:  # one spare try
            if done >= need:
                break
            refined = self._refine(s.cands[k], s.plate, fits[k], corners)
            if refined is not None:
                self._score_fit(refined, s.cands[k], s.plate, s.subject, agreed=s.agreed, priors=s.priors)
                if refined.failure is None:
                    fits[k] = refined
                    done += 1

    def _choose(self, s: _Search) -> _Choice:
        """The candidate to use, of those that fitted: the best refined score, unless the previous choice
        is within the hysteresis margin; a plain resize when that is as good (takes in register)."""
        fits, ok = s.fits, s.usable()
        # Refined fits are more accurate than coarse ones and were scored with the better subject
        # mask, so they win whenever there is one.
        pool = [k for k in ok if fits[k].refined] or ok
        chosen = min(pool, key=lambda k: fits[k].score.total)
        how = (f"lowest refined score of {len(pool)}" if len(pool) > 1 else
               f"lowest coarse score ({s.coarse_total.get(chosen, float('nan')):.4f})")
        if s.prefer in pool and s.prefer != chosen:
            keep, detail = self._keep_preferred(s, chosen)
            if keep:
                how = f"previous frame's choice, within {s.margin:.0%} of the best ({detail})"
                chosen = s.prefer
        fit = fits[chosen]
        by_coarse = sorted(s.coarse_total, key=s.coarse_total.get)
        runner = next((k for k in by_coarse if k != chosen), None)
        reason = (f"{len(ok)} of {len(s.cands)} candidates fitted; chosen for the {how}; score "
                  f"{fit.score.total:.4f} (photometric {fit.score.photometric:.4f}, coverage "
                  f"{fit.score.coverage:.3f})")
        if runner is not None:
            reason += f"; runner-up {s.labels[runner]}, coarse score {s.coarse_total[runner]:.4f}"
        if not fit.refined and self.options.refine:
            reason += "; sub-pixel refinement failed, coarse fit used"
        # A clean plate already in register (locked-off takes) stays exactly in register: the plain
        # resize is kept unless the fit is clearly better on the agreed background.
        same = geo.resize_matrix(s.cands[chosen].size, s.plate.size)
        if geo.corner_errors(fit.h, same, s.plate.size).max() < _IN_REGISTER_PX:
            plain = Fit(h=same, matches=fit.matches, inliers=fit.inliers, refined=fit.refined,
                        refined_points=fit.refined_points)
            self._score_fit(plain, s.cands[chosen], s.plate, s.subject, agreed=s.agreed, priors=s.priors,
                            check=False)
            if plain.score.total <= fit.score.total * _IN_REGISTER_SLACK:
                fit = fits[chosen] = plain
                reason += "; in register as it is (the fit does no better)"
        return _Choice(chosen, fit, None, reason)

    def _keep_preferred(self, s: _Search, chosen: int) -> tuple[bool, str]:
        """Hysteresis: whether the preferred candidate stays, and the figures compared. Judged on what each
        would deliver: after the dense step where it runs (homography scores differ by parallax the dense
        step removes), on the pixels both take as background."""
        fits, prefer, margin = s.fits, s.prefer, s.margin
        if not self.options.dense:
            keep = fits[prefer].score.total <= fits[chosen].score.total * (1 + margin)
            return keep, f"score {fits[prefer].score.total:.4f} vs {fits[chosen].score.total:.4f}"
        cache = s.dense_cache
        for k in (chosen, prefer):
            cache[k] = (fits[k].h, self._dense(s.cands[k], s.plate, fits[k].h, fits[k].score))
        bg = ~cache[chosen][1][0].subject & ~cache[prefer][1][0].subject
        err = {k: self._aligned_error(s.cands[k], s.plate, fits[k].h, cache[k][1][1] if cache[k][1][2] else None,
                                      fits[k].score, bg) for k in (chosen, prefer)}
        keep = err[chosen] >= (1 - margin) * err[prefer]
        return keep, f"background error after the dense step {err[prefer]:.4f} vs {err[chosen]:.4f}"

    def _flag(self, s: _Search, c: _Choice) -> None:
        """Flag the choice for a human look where it needs one, and take the exposure from the previous
        frames where too little background is visible for the frame's own."""
        o, fit, score = self.options, c.fit, c.fit.score
        c.flagged = c.fallback is not None
        if score.coverage < o.flag_coverage:
            c.flagged = True
            c.reason += f"; flagged: covers only {score.coverage:.0%} of the plate"
        if c.fallback is None and fit.refined is False and o.refine:
            c.flagged = True
        if c.fallback is None and fit.matches and fit.inliers < o.flag_inlier_ratio * fit.matches:
            # Most matches disagreeing with the fit is what repeated patterns (or a subject filling the
            # frame) look like: the fit may be off by a whole pattern repeat.
            c.flagged = True
            c.reason += f"; flagged: only {fit.inliers} of {fit.matches} matches agree (repeated texture?)"
        if score.background_share < o.min_background and s.exposure_prior is not None:
            score.gain = np.asarray(s.exposure_prior[0], float)
            score.bias = np.asarray(s.exposure_prior[1], float)
            score.exposure_source = "previous frames"
            c.reason += (f"; only {score.background_share:.0%} of the frame is background: exposure of "
                         "previous frames")

    def _warp(self, s: _Search, c: _Choice) -> _Warp:
        """The chosen fit's homography and, where it runs and helps, the dense residual warp."""
        h = c.fit.h
        if not self.options.dense:
            return _Warp(h, None, None, "off")
        if c.fallback is not None:
            return _Warp(h, None, None, "not run")
        cached = s.dense_cache.get(c.index)
        if cached is not None and np.array_equal(cached[0], h):
            # Measured before `_flag`, which may change the exposure: its error is not this one's.
            (res, flow, applied, _), error = cached[1], None
        else:
            res, flow, applied, error = self._dense(s.cands[c.index], s.plate, h, c.fit.score)
        return _Warp(h, flow if applied else None, res, "applied" if applied else "no gain", error=error)

    def _hold_still(self, s: _Search, c: _Choice, w: _Warp) -> None:
        """While the plate holds still, keep the previous frame's alignment of the same clean frame unless
        this frame's own is clearly better on the background. With depth a homography is ambiguous
        (which layer dominates) and refits wander by a pixel; the whole alignment, not the fit, is
        compared, so a still plate gets a still clean plate."""
        track, pf = s.track, s.plate
        if not (s.still and c.fallback is None and track.get("index") == c.index):
            return
        h_prev, f_prev = np.asarray(track["homography"], np.float64), track.get("flow")
        if not geo.corner_errors(w.h, h_prev, pf.size).max() < _HOLD_SAME * max(pf.size):
            return
        score, clean = c.fit.score, s.cands[c.index]
        bg = self._dense_background(pf, score, w.res)
        # The dense step's own figure is this one: the same alignment, exposure and background.
        new = w.error if w.error is not None else self._aligned_error(clean, pf, w.h, w.flow, score, bg)
        old = self._aligned_error(clean, pf, h_prev, f_prev, score, bg)
        # Like the choice of frame, a kept alignment gets harder to overturn the longer it holds.
        count = int(track.get("count", 1))
        if old <= (1 + min(_HOLD_CAP, _HOLD_MARGIN * (1 + np.log2(count)))) * new:
            w.h, w.flow, w.steady = h_prev, f_prev, count + 1
            if self.options.dense:
                w.state = "applied" if f_prev is not None else "no gain"
            c.reason += f"; alignment of the previous frame kept (background error {old:.4f} vs {new:.4f})"

    def _fuse(self, s: _Search, c: _Choice, w: _Warp, background: np.ndarray,
              valid: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]] | tuple:
        """The chosen frame's `background` fused with up to `fuse_frames` further candidates that fitted
        (best coarse score first), each warped as the chosen one is (its fit, its own dense step and
        exposure): (fused background, their positions), or () when there are none."""
        n = self.options.fuse_frames
        if n <= 0 or c.fallback is not None or not self.options.dense:
            return ()  # without the dense step the others are off along every depth but one
        if w.flow is None and np.array_equal(w.h, geo.resize_matrix(s.cands[c.index].size, s.plate.size)):
            return ()  # a take in register as it is stays exact
        picks = sorted((k for k in s.usable() if k != c.index), key=lambda k: s.coarse_total.get(k, np.inf))[:n]
        if not picks:
            return ()
        others = []
        for k in picks:
            fit, clean = s.fits[k], s.cands[k]
            _, flow, applied, _ = self._dense(clean, s.plate, fit.h, fit.score)
            others.append(self._render(clean, s.plate, fit.h, fit.score, flow if applied else None))
        subject = w.res.subject if w.res is not None else s.subject
        if subject is not None:
            subject = cv2.resize(subject.astype(np.uint8), s.plate.size, interpolation=cv2.INTER_NEAREST) > 0
        c.reason += "; fused with " + ", ".join(s.labels[k] for k in picks)
        return fusion.fuse(background, valid, others, s.plate.image, subject), tuple(picks)

    def _result(self, s: _Search, c: _Choice, w: _Warp, background: np.ndarray, valid: np.ndarray,
                t0: float) -> AlignResult:
        """The `AlignResult` of a search (`t0`: its `time.perf_counter()` start)."""
        fit, score = c.fit, c.fit.score
        shares = w.res.shares() if w.res is not None else None
        return AlignResult(
            background=background, valid=valid, homography=w.h, index=c.index, inliers=fit.inliers,
            matches=fit.matches, refined_points=fit.refined_points, score=score.photometric, ncc=score.ncc,
            coverage=score.coverage, gain=tuple(float(g) for g in score.gain),
            bias=tuple(float(b) for b in score.bias), fallback=c.fallback, flagged=c.flagged, reason=c.reason,
            candidates=[_candidate_qc(k, f, s.labels[k]) for k, f in enumerate(s.fits)],
            ms=(time.perf_counter() - t0) * 1000, dense=w.state,
            residual_px=w.res.magnitude if w.flow is not None else 0.0,
            background_share=shares["background"] if shares else score.background_share,
            subject_share=shares["subject"] if shares else 1 - score.background_share,
            homography_share=shares["fallback"] if w.flow is not None else 1.0,
            exposure_source=score.exposure_source, flow=w.flow, steady=w.steady, plate_gray=s.plate.features.gray,
            still=s.still, held=s.held + 1 if s.prefer is not None and c.index == s.prefer else 1)

    def _dense(self, clean: PreparedFrame, plate: PreparedFrame, h: np.ndarray, score: _Score):
        """The residual warp of `clean` (fitted by `h`) to `plate` at the dense size: (`dense.Residual`,
        flow, whether it lines the background up better than `h` alone, the background error
        (`_aligned_error` over valid background) of the better of the two)."""
        dsize = (plate.dense.shape[1], plate.dense.shape[0])
        hd = plate.to_dense @ h @ np.linalg.inv(clean.to_dense)
        csize = (clean.dense.shape[1], clean.dense.shape[0])
        warped = cv2.warpPerspective(clean.dense, hd, dsize, flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE)
        valid = geo.coverage_mask(hd, csize, dsize)
        matched = self._matched(warped, score)
        noise = _NOISE_PER_SCORE * float(score.photometric) if np.isfinite(score.photometric) else _NOISE_DEFAULT
        grow = max(1, int(self.options.subject_margin * max(dsize)))
        res = dense.estimate(plate.dense, matched, valid, noise, plate.size[0] / dsize[0], grow=grow)
        bg = valid & ~res.subject
        # `matched` is what `_aligned_error(clean, plate, h, None, score, bg)` would warp again.
        before = self._blurred_error(plate, matched, bg)
        after = self._aligned_error(clean, plate, h, res.flow, score, bg)
        applied = bool(after < _DENSE_GAIN * before)
        return res, res.flow, applied, after if applied else before

    def _matched(self, warped: np.ndarray, score: _Score) -> np.ndarray:
        """`warped` (float32 RGB, a warp's fresh output) brought to the plate's exposure in place, or just
        clipped to 0..1 when exposure matching is off; returns it."""
        if self.options.exposure:
            return pm.apply_exposure(warped, score.gain, score.bias, out=warped)
        return pm.clip01(warped)

    def _dense_background(self, plate: PreparedFrame, score: _Score, res) -> np.ndarray:
        """Background at the dense size (the score size when the dense step is off): outside the dense
        step's subject, else the agreed background."""
        if res is not None:
            return ~res.subject
        img, _ = _working_copy(plate)
        return cv2.resize(score.background.astype(np.uint8), (img.shape[1], img.shape[0]),
                          interpolation=cv2.INTER_NEAREST).astype(bool)

    def _aligned_error(self, clean: PreparedFrame, plate: PreparedFrame, h: np.ndarray, flow, score: _Score,
                       bg: np.ndarray) -> float:
        """Mean residual over `bg` (dense size) of `clean` aligned by `h` and `flow` (or None), exposure
        matched. On lightly blurred copies: interpolating a noisy clean plate at fractional offsets
        lowers its noise, which would otherwise pass for better alignment."""
        (p_img, p_to), (c_img, c_to) = _working_copy(plate), _working_copy(clean)
        dsize = (p_img.shape[1], p_img.shape[0])
        hd = p_to @ h @ np.linalg.inv(c_to)
        if flow is None:
            warped = cv2.warpPerspective(c_img, hd, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        else:
            where = dense.sampling_map(hd, flow, dsize, np.eye(3))
            warped = cv2.remap(c_img, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        bg = bg & geo.coverage_mask(hd, (c_img.shape[1], c_img.shape[0]), dsize)
        if not bg.any():
            return float("inf")
        return self._blurred_error(plate, self._matched(warped, score), bg)

    def _blurred_error(self, plate: PreparedFrame, matched: np.ndarray, bg: np.ndarray) -> float:
        """Mean residual over `bg` between `plate`'s working copy and `matched` (the clean plate aligned
        and exposure-matched at that size), both lightly blurred; inf when `bg` is empty."""
        if not bg.any():
            return float("inf")
        if plate.blurred is None:
            plate.blurred = cv2.GaussianBlur(_working_copy(plate)[0], (0, 0), _ERROR_BLUR)
        return float(pm.residual_map(plate.blurred, cv2.GaussianBlur(matched, (0, 0), _ERROR_BLUR))[bg].mean())

    # -- steps ------------------------------------------------------------------------------------------

    def coarse_fit(self, clean: Features, plate: Features) -> Fit:
        """Feature-based homography, clean px -> plate px, with its match statistics (`Fit`); a failed fit
        has `failure` set (too few features or matches, implausible, too little overlap)."""
        o = self.options
        if clean.descriptors is None or plate.descriptors is None or len(clean.points) < _MIN_FEATURES \
                or len(plate.points) < _MIN_FEATURES:
            n = min(len(clean.points), len(plate.points))
            return Fit(failure=f"too few features ({n}); blank or featureless frame")
        # Ratio test, then one-to-one: a plate feature claimed by several clean features keeps only its
        # closest (a cheap stand-in for a full reverse cross-check, which would double the matching time).
        best: dict[int, cv2.DMatch] = {}
        for pair in self._matcher.knnMatch(clean.descriptors, plate.descriptors, k=2):
            if len(pair) == 2 and pair[0].distance < o.ratio * pair[1].distance:
                m = pair[0]
                if m.trainIdx not in best or m.distance < best[m.trainIdx].distance:
                    best[m.trainIdx] = m
        # Gathered by index: the same N x 2 float32 rows, in the same order, without a list of arrays.
        src = clean.points[np.fromiter((m.queryIdx for m in best.values()), np.intp, len(best))]
        dst = plate.points[np.fromiter((m.trainIdx for m in best.values()), np.intp, len(best))]
        fit = Fit(matches=len(src))
        if len(src) < o.min_inliers:
            fit.failure = f"too few matches ({len(src)} < {o.min_inliers})"
            return fit
        h, inl = cv2.findHomography(src, dst, cv2.USAC_MAGSAC,
                                    _COARSE_THRESHOLD * plate.pixel, maxIters=_COARSE_ITERATIONS,
                                    confidence=_FIT_CONFIDENCE)
        fit.inliers = int(inl.sum()) if inl is not None else 0
        if h is None or fit.inliers < o.min_inliers:
            fit.failure = f"too few inliers ({fit.inliers} < {o.min_inliers})"
            return fit
        fit.h = h / h[2, 2]
        fit.failure = self._implausible(fit.h, clean, plate)
        return fit

    def _implausible(self, h: np.ndarray, clean, plate) -> str | None:
        """Why `h` is not a usable clean -> plate fit (frames or `Features`, anything with `.size`)."""
        o = self.options
        why = geo.implausibility(h, clean.size, plate.size, o.max_scale)
        if why is None and geo.coverage(h, clean.size, plate.size) < o.min_overlap:
            why = f"overlaps less than {o.min_overlap:.0%} of the plate"
        return why

    def _small_warp(self, h: np.ndarray, clean: PreparedFrame, plate: PreparedFrame):
        """`clean`'s score-size copy warped into `plate`'s by `h` (clean px -> plate px), and its cover."""
        small_size = (plate.small.shape[1], plate.small.shape[0])
        hs = plate.to_small @ h @ np.linalg.inv(clean.to_small)
        warped = cv2.warpPerspective(clean.small, hs, small_size, flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE)
        return warped, geo.coverage_mask(hs, (clean.small.shape[1], clean.small.shape[0]), small_size)

    def _own_background(self, warp: tuple, plate: PreparedFrame, subject: np.ndarray | None) -> np.ndarray:
        """Where a candidate, warped into `plate` (`_small_warp`'s (warped, valid)), has the structure of
        `plate` (small size, bool)."""
        warped, valid = warp
        return pm.agreeing_background(warped, plate.small, valid if subject is None else valid & ~subject)

    def _score_fit(self, fit: Fit, clean: PreparedFrame, plate: PreparedFrame, subject: np.ndarray | None,
                   agreed: np.ndarray | None = None, priors: tuple = (), check: bool = True,
                   warp: tuple | None = None) -> None:
        """Photometric score of a fit on the small copies, on background only; fails the fit (when
        `check`) if the background's structure does not match.

        subject: known subject (small size) to leave out; agreed: the background agreed among the
        candidates (small size), else the fit's own. Exposure comes from that background only
        (`photometric.background_exposure`), with `priors` as the alternatives it must beat.
        warp: `_small_warp(fit.h, clean, plate)` when already made (read, not changed).
        """
        o = self.options
        warped, valid = warp if warp is not None else self._small_warp(fit.h, clean, plate)
        base = valid if subject is None else valid & ~subject
        if agreed is not None:
            base = base & agreed
        source = "off"
        if o.exposure:
            # An agreed background is already clean of the subject: one fit on it.
            gain, bias, bg, source = pm.background_exposure(
                warped, plate.small, base, priors=priors, iterations=_EXPOSURE_ROUNDS if agreed is None else 0,
                seeded=agreed is None)
        else:
            gain, bias, bg = np.ones(3), np.zeros(3), base
        if agreed is not None:
            bg = base  # every candidate is judged on the same pixels
        matched = pm.apply_exposure(warped, gain, bias)
        residual = pm.residual_map(plate.small, matched)
        photometric = pm.trimmed_mean(residual[bg])
        cover = geo.coverage(fit.h, clean.size, plate.size)
        corr = pm.ncc(cv2.cvtColor(plate.small, cv2.COLOR_RGB2GRAY), cv2.cvtColor(matched, cv2.COLOR_RGB2GRAY),
                      bg)
        total = photometric + o.coverage_weight * (1 - cover) if np.isfinite(photometric) else np.inf
        fit.score = _Score(total, photometric, cover, corr, gain, bias, residual, valid, bg, source)
        if check and fit.failure is None and corr < o.min_ncc:
            fit.failure = (f"images do not match once aligned (correlation {corr:.2f} < {o.min_ncc:g} "
                           f"on the {bg.mean():.0%} of the frame taken as background)")

    def _plate_corners(self, plate: PreparedFrame, subject_small: np.ndarray | None) -> np.ndarray:
        """Well-spread background corners of the plate (N x 2 float32, plate px) for the refinement."""
        fh, fw = plate.features.gray.shape
        mask = np.zeros((fh, fw), np.uint8)
        border = _CORNER_BORDER
        mask[border:fh - border, border:fw - border] = 255
        if subject_small is not None:
            mask[cv2.resize(subject_small.astype(np.uint8), (fw, fh), interpolation=cv2.INTER_NEAREST) > 0] = 0
        pts = cv2.goodFeaturesToTrack(plate.features.gray, self.options.refine_points, _CORNER_QUALITY,
                                      max(fw, fh) / _CORNERS_ACROSS, mask=mask, blockSize=_CORNER_BLOCK)
        if pts is None:
            return np.zeros((0, 2), np.float32)
        return geo.project(np.linalg.inv(plate.features.to_feature), pts.reshape(-1, 2)).astype(np.float32)

    def _refine(self, clean: PreparedFrame, plate: PreparedFrame, coarse: Fit, corners: np.ndarray,
                levels: int = 1, passes: int = 2) -> Fit | None:
        """Sub-pixel refit of `coarse` from Lucas-Kanade tracks on the tracking copies; None if it cannot.

        corners: N x 2 float32 background corners of the plate (plate px) to track.
        levels:  pyramid levels above the tracking size for the first pass: 1 reaches a few pixels, enough
                 after a feature fit (about a pixel off); more for starting points further away.
        passes:  track-and-refit rounds; the second removes most of what the first left (about a
                 quarter of the error), later ones add nothing measurable.
        """
        min_inliers = self.options.min_inliers
        if len(corners) < min_inliers:
            return None
        # Bring the plate to the candidate's exposure: Lucas-Kanade assumes equal brightness.
        g = float(np.mean(coarse.score.gain))
        b = float(np.mean(coarse.score.bias))
        plate_u8 = cv2.convertScaleAbs(plate.gray, alpha=255 / g, beta=-255 * b / g)
        # All tracking is in the two tracking copies' pixels; the fit is carried back to frame px at the end.
        p_to, c_to = plate.to_track, clean.to_track
        p_size, c_size = (plate.gray.shape[1], plate.gray.shape[0]), (clean.gray.shape[1], clean.gray.shape[0])
        corners = geo.project(p_to, corners).astype(np.float32)
        x = np.clip(np.round(corners[:, 0]).astype(int), 0, p_size[0] - 1)
        y = np.clip(np.round(corners[:, 1]).astype(int), 0, p_size[1] - 1)
        h_track, used = p_to @ coarse.h @ np.linalg.inv(c_to), 0
        for p in range(passes):
            # Track against the candidate warped into the plate by the current fit, not the candidate as
            # it is: what remains is a small, locally translational displacement, which is what
            # Lucas-Kanade measures without bias (a zoom, roll or resolution change between the takes
            # would distort every tracking window).
            warped = cv2.warpPerspective(clean.gray, h_track, p_size, flags=cv2.INTER_LINEAR)
            inside = geo.coverage_mask(h_track, c_size, p_size, inset=_TRACK_INSET)
            src = corners[inside[y, x]]
            if len(src) < min_inliers:
                return None
            tracked, status, _ = cv2.calcOpticalFlowPyrLK(
                plate_u8, warped, src, src.copy(), winSize=_LK_WINDOW, maxLevel=levels if p == 0 else 0,
                criteria=_LK_CRITERIA, flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
            good = status.ravel() == 1
            src, tracked = src[good], tracked[good]
            if len(src) < min_inliers:
                return None
            # The correction, warped candidate px -> plate px.
            h_fix, inl = cv2.findHomography(tracked, src, cv2.USAC_MAGSAC, _REFINE_THRESHOLD,
                                            maxIters=_REFINE_ITERATIONS, confidence=_FIT_CONFIDENCE)
            if h_fix is None or inl is None or inl.sum() < min_inliers:
                return None
            keep = inl.ravel().astype(bool)
            # A plain least-squares (Levenberg-Marquardt) polish on the inliers: MAGSAC's weighting is
            # tuned for outlier rejection, the tracks' errors are small and Gaussian-like.
            h_ls, _ = cv2.findHomography(tracked[keep], src[keep], 0)
            if h_ls is not None and np.all(np.isfinite(h_ls)):
                h_fix = h_ls
            h_track = h_fix @ h_track
            used = int(keep.sum())
        h_full = np.linalg.inv(p_to) @ h_track @ c_to
        h_full = h_full / h_full[2, 2]
        fit = Fit(h=h_full, matches=coarse.matches, inliers=coarse.inliers, refined_points=used, refined=True)
        fit.failure = self._implausible(h_full, clean, plate)
        # A refinement that moves far from its starting point has locked onto something else.
        drift = geo.corner_errors(h_full, coarse.h, plate.size).max()
        if fit.failure is None and drift > _MAX_DRIFT * max(plate.size):
            fit.failure = f"refinement drifted {drift:.1f} px from the feature fit"
        return fit

    def _fallback(self, s: _Search, prior: tuple[int, np.ndarray] | None) -> _Choice:
        """No candidate fitted. Refit from a starting guess by tracking alone, which needs texture but not
        distinctive features (so it copes with repeated patterns): the previous frame's homography, then
        a plain resize of the middle candidate. Failing that, use the first guess as it stands."""
        cands, plate, labels, subject = s.cands, s.plate, s.labels, s.subject
        failures = "; ".join(f"{labels[k]}: {f.failure}" for k, f in enumerate(s.fits))
        seeds = []
        if prior is not None:
            k, h0 = prior
            h0 = np.asarray(h0, np.float64)
            seeds.append(("previous", int(np.clip(k, 0, len(cands) - 1)), h0 / h0[2, 2],
                          "the previous frame's homography"))
        mid = len(cands) // 2
        seeds.append(("identity", mid, geo.resize_matrix(cands[mid].size, plate.size),
                      f"{labels[mid]} unaligned"))
        corners = self._plate_corners(plate, subject)
        for name, k, h0, what in seeds:
            seed = Fit(h=h0)
            self._score_fit(seed, cands[k], plate, subject)
            refined = self._refine(cands[k], plate, seed, corners, levels=_FALLBACK_LEVELS)
            if refined is not None:
                self._score_fit(refined, cands[k], plate, subject)
                if refined.failure is None:
                    return _Choice(k, refined, f"{name}_refined",
                                   f"no candidate fitted ({failures}); refitted {labels[k]} from {what}")
        name, k, h0, what = seeds[0]
        seed = Fit(h=h0)
        self._score_fit(seed, cands[k], plate, subject)
        return _Choice(k, seed, name, f"no candidate fitted ({failures}); used {what}")

    def _render(self, clean: PreparedFrame, plate: PreparedFrame, h: np.ndarray, score: _Score,
                flow: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`clean` warped into `plate` by `h` (and `flow`), exposure-matched, the plate where it does not
        cover: (H x W x 3 float32 background, H x W bool valid)."""
        w, hh = plate.size
        if flow is None and clean.size == plate.size and np.array_equal(h, np.eye(3)):
            # Already in register: the clean frame itself, every pixel of it.
            if self.options.exposure:
                background = pm.apply_exposure(clean.image, score.gain, score.bias)
            else:
                background = clean.image.copy()
            return background, np.ones((hh, w), bool)
        # In bands of rows, each warped, exposure-matched and clipped while it is still in cache: at HD the
        # whole-frame passes cost more in memory traffic than in arithmetic.
        background = np.empty((hh, w, 3), np.float32)
        if flow is not None:
            # One resampling of the clean frame through homography and residual motion together.
            where = dense.sampling_map(h, flow, plate.size, plate.to_dense)
        for r0 in range(0, hh, _RENDER_ROWS):
            band = background[r0:r0 + _RENDER_ROWS]
            if flow is None:
                shift = np.array([[1, 0, 0], [0, 1, -r0], [0, 0, 1]], np.float64)
                cv2.warpPerspective(clean.image, shift @ h, (w, band.shape[0]), dst=band,
                                    flags=INTERPOLATIONS[self.options.interpolation],
                                    borderMode=cv2.BORDER_REPLICATE)
            else:
                cv2.remap(clean.image, where[r0:r0 + _RENDER_ROWS], None, dst=band,
                          interpolation=DENSE_INTERPOLATIONS[self.options.dense_interpolation],
                          borderMode=cv2.BORDER_REPLICATE)
            self._matched(band, score)
        return background, _plate_outside_cover(background, clean, plate, h)

    def _subject_from_mask(self, mask, plate_size, label) -> np.ndarray | None:
        if mask is None:
            return None
        mask = np.asarray(mask)
        if mask.shape != (plate_size[1], plate_size[0]):
            raise HowardError(f"{label}: subject mask is {mask.shape[1::-1]} but the plate is {plate_size}; "
                              "pass the previous frame's matte at plate size")
        hot = (mask > _MATTE_SUBJECT).astype(np.uint8)
        grow = int(self.options.subject_margin * max(plate_size))
        # The matte is a frame old and the subject has moved since: grow it generously.
        if grow > 0 and hot.any():
            hot = cv2.dilate(hot, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
        return hot.astype(bool)


def _plate_outside_cover(background: np.ndarray, clean: PreparedFrame, plate: PreparedFrame,
                         h: np.ndarray) -> np.ndarray:
    """Where `clean` warped by `h` does not cover `plate`, `background` (plate size, changed in place) takes
    the plate's own pixels; returns the cover (H x W bool)."""
    valid = geo.coverage_mask(h, clean.size, plate.size)
    if not valid.all():
        cv2.copyTo(plate.image, (~valid).view(np.uint8), dst=background)
    return valid


def _still(previous: np.ndarray | None, plate: Features, tolerance: float = _STILL_PX) -> bool:
    """Whether the plate has not moved since the frame whose feature-size luma is `previous`: corners of
    that frame tracked into this one (Lucas-Kanade) move less than `tolerance` plate pixels (median,
    so a moving subject does not count)."""
    if previous is None or previous.shape != plate.gray.shape:
        return False
    pts = cv2.goodFeaturesToTrack(previous, _STILL_CORNERS, _STILL_QUALITY, _STILL_SPACING)
    if pts is None or len(pts) < _STILL_MIN_TRACKS:
        return False
    moved, status, _ = cv2.calcOpticalFlowPyrLK(previous, plate.gray, pts, None, winSize=_LK_WINDOW,
                                                maxLevel=_STILL_LEVELS)
    ok = status.ravel() == 1
    if ok.sum() < _STILL_MIN_TRACKS:
        return False
    shift = np.linalg.norm((moved - pts).reshape(-1, 2)[ok], axis=1)
    return float(np.median(shift)) * plate.pixel < tolerance


def _working_copy(frame: PreparedFrame) -> tuple[np.ndarray, np.ndarray]:
    """The copy alignments are compared on, and frame px -> its px: the dense one, else the score one."""
    return (frame.dense, frame.to_dense) if frame.dense is not None else (frame.small, frame.to_small)


def _grow(mask: np.ndarray, r: int) -> np.ndarray:
    """`mask` (bool) dilated by a disc of radius r."""
    if r <= 0 or not mask.any():
        return mask.copy()
    return cv2.dilate(mask.astype(np.uint8),
                      cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))).astype(bool)


def _candidate_qc(k: int, f: Fit, label: str) -> dict:
    s = f.score
    return {
        "candidate": k,
        "label": label,
        "status": "ok" if f.failure is None and f.h is not None else f"rejected: {f.failure}",
        "matches": int(f.matches),
        "inliers": int(f.inliers),
        "refined_points": int(f.refined_points),
        "refined": bool(f.refined),
        "score": None if s is None else _round(s.total, 5),
        "photometric": None if s is None else _round(s.photometric, 5),
        "coverage": None if s is None else _round(s.coverage, 4),
        "ncc": None if s is None else _round(s.ncc, 4),
    }


def _as_frame(image, label: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 16:
        raise HowardError(f"{label}: expected an H x W x 3 RGB frame of at least 16 x 16 pixels, got shape "
                          f"{arr.shape}; convert it to 3-channel RGB")
    if not np.issubdtype(arr.dtype, np.floating):
        raise HowardError(f"{label}: expected float RGB in 0..1, got {arr.dtype}; convert the frame to "
                          "float32 (divide integer code values by their maximum)")
    return np.ascontiguousarray(arr, dtype=np.float32)
