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
5. The winner is warped at full resolution (cubic by default), exposure-matched, and where it does not
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

from howard_core.align import dense
from howard_core.align import geometry as geo
from howard_core.align import photometric as pm
from howard_core.errors import HowardError

_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}
_LK_WINDOW = (21, 21)


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
    gray:        H x W luma for the sub-pixel refinement: float32 for a plate, uint8 for a clean plate.
    dense:       h x w x 3 float32 copy for the dense residual warp (`to_dense` frame px -> its px), or None
                 when the dense step is off.
    """

    label: str
    image: np.ndarray
    features: Features
    small: np.ndarray
    to_small: np.ndarray
    gray: np.ndarray
    dense: np.ndarray | None = None
    to_dense: np.ndarray | None = None

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
            "flagged": bool(self.flagged),
            "reason": self.reason,
            "homography": [[float(v) for v in row] for row in np.asarray(self.homography)],
            "ms": round(float(self.ms), 1),
            "candidates": self.candidates,
        }


def _round(x: float, digits: int) -> float | None:
    x = float(x)
    return round(x, digits) if np.isfinite(x) else None


class Aligner:
    """Aligns candidate clean-plate frames to a plate frame. Options (keywords, all optional):

    detector         "orb" (default, fast) or "sift" (slower, more tolerant of blur and big zoom changes).
    feature_size     long side, px, of the copy features are found on (default 640).
    score_size       long side, px, of the copy candidates are scored on (default 320).
    max_features     features per frame (default 600).
    ratio            Lowe ratio test threshold for matches (default 0.8).
    min_inliers      fewest matches consistent with a fit (default 24).
    max_scale        largest zoom between the takes, either way, before a fit counts as wild (default 2).
    min_overlap      smallest fraction of the plate a candidate must cover to be usable (default 0.2).
    min_ncc          smallest structural correlation for a fit to count as right (default 0.4).
    refine           sub-pixel refinement at full resolution (default True).
    refine_top       how many of the best coarse candidates get refined and compete on their refined
                     score (default 1: the coarse score already ranks candidates well; refining costs
                     about 15 ms per HD candidate).
    refine_points    background corners tracked by the refinement (default 400).
    coverage_weight  score penalty per unit of plate left uncovered (default 0.05, display units).
    flag_coverage    flag frames whose chosen candidate covers less than this (default 0.8).
    flag_inlier_ratio flag frames where fewer than this fraction of matches agree with the fit (default 0.2).
    subject_margin   growth of subject masks, fraction of the frame's long side (default 0.03).
    interpolation    final warp: "cubic" (default), "lanczos" or "linear".
    dense_interpolation  the final remap when the dense step applies: "linear" (default; a cubic remap
                     costs about 40 ms more per HD frame) or "cubic".
    exposure         match exposure (default True).
    dense            the dense residual warp after the homography (default True; False: homography only).
    dense_size       long side, px, of the copy the residual motion is measured on (default 480).
    hysteresis       keep the `prefer`red candidate (the sequence's previous choice) unless another aligns
                     the background better by more than this fraction (default 0.15), growing with the
                     frames the choice has held still (x (1 + log2 frames), at most 0.5).
    min_background   smallest share of the frame that must be agreed background for a frame's own exposure
                     fit; below it the exposure comes from `exposure_prior` (default 0.05).
    """

    def __init__(self, *, detector: str = "orb", feature_size: int = 640, score_size: int = 320,
                 max_features: int = 600, ratio: float = 0.8, min_inliers: int = 24, max_scale: float = 2.0,
                 min_overlap: float = 0.2, min_ncc: float = 0.4, refine: bool = True, refine_top: int = 1,
                 refine_points: int = 400, coverage_weight: float = 0.05, flag_coverage: float = 0.8,
                 flag_inlier_ratio: float = 0.2, subject_margin: float = 0.03, interpolation: str = "cubic",
                 exposure: bool = True, dense: bool = True, dense_size: int = 480, hysteresis: float = 0.15,
                 min_background: float = 0.05, dense_interpolation: str = "linear"):
        if detector not in ("orb", "sift"):
            raise HowardError(f"align: unknown detector {detector!r}; use 'orb' or 'sift'")
        if interpolation not in _INTERPOLATION:
            raise HowardError(f"align: unknown interpolation {interpolation!r}; use one of "
                              f"{', '.join(_INTERPOLATION)}")
        self.detector = detector
        self.feature_size = int(feature_size)
        self.score_size = int(score_size)
        self.max_features = int(max_features)
        self.ratio = float(ratio)
        self.min_inliers = int(min_inliers)
        self.max_scale = float(max_scale)
        self.min_overlap = float(min_overlap)
        self.min_ncc = float(min_ncc)
        self.refine = bool(refine)
        self.refine_top = max(1, int(refine_top))
        self.refine_points = int(refine_points)
        self.coverage_weight = float(coverage_weight)
        self.flag_coverage = float(flag_coverage)
        self.flag_inlier_ratio = float(flag_inlier_ratio)
        self.subject_margin = float(subject_margin)
        self.interpolation = interpolation
        self.exposure = bool(exposure)
        self.dense = bool(dense)
        self.dense_size = int(dense_size)
        self.hysteresis = float(hysteresis)
        self.min_background = float(min_background)
        if dense_interpolation not in ("linear", "cubic"):
            raise HowardError(f"align: unknown dense interpolation {dense_interpolation!r}; use 'linear' or 'cubic'")
        self.dense_interpolation = dense_interpolation
        if detector == "orb":
            # Six levels of 1.2 cover a zoom of 2x between the takes, which is all `max_scale` allows.
            self._detector = cv2.ORB_create(nfeatures=self.max_features, nlevels=6, fastThreshold=10)
            self._norm = cv2.NORM_HAMMING
        else:
            self._detector = cv2.SIFT_create(nfeatures=self.max_features)
            self._norm = cv2.NORM_L2
        self._matcher = cv2.BFMatcher(self._norm)

    # -- preparation ------------------------------------------------------------------------------------

    def prepare(self, image: np.ndarray, label: str = "clean-plate frame", subject: np.ndarray | None = None,
                for_plate: bool = False) -> PreparedFrame:
        """Features and downscaled copies of one frame (H x W x 3 float RGB 0..1), for `align`.

        `subject` (H x W bool, True = subject) keeps features off the subject. Raises HowardError
        naming `label` if the array is not a usable frame.
        """
        image = _as_frame(image, label)
        size = (image.shape[1], image.shape[0])
        small_size = geo.scaled_size(size, self.score_size)
        small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
        if not np.all(np.isfinite(small)):
            raise HowardError(f"{label} contains NaN or infinite pixels; fix or clamp the source frame")
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        features = self._describe(gray, subject)
        dense = to_dense = None
        if self.dense:
            dense_size = geo.scaled_size(size, self.dense_size)
            dense = small if dense_size == small_size else cv2.resize(image, dense_size, interpolation=cv2.INTER_AREA)
            to_dense = geo.resize_matrix(size, dense_size)
        # A plate's luma is rescaled to each candidate's exposure before tracking; a clean plate's is
        # tracked as it is, so it is stored as the 8 bits Lucas-Kanade wants.
        return PreparedFrame(label=label, image=image, features=features, small=small,
                             to_small=geo.resize_matrix(size, small_size),
                             gray=gray if for_plate else cv2.convertScaleAbs(gray, alpha=255),
                             dense=dense, to_dense=to_dense)

    def features(self, image: np.ndarray, label: str = "frame") -> Features:
        """Just the `Features` of a frame (H x W x 3 float RGB 0..1): cheap to keep many of."""
        image = _as_frame(image, label)
        return self._describe(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))

    def _describe(self, gray: np.ndarray, subject: np.ndarray | None = None) -> Features:
        size = (gray.shape[1], gray.shape[0])
        feat_size = geo.scaled_size(size, self.feature_size)
        feat_gray = cv2.convertScaleAbs(cv2.resize(gray, feat_size, interpolation=cv2.INTER_AREA), alpha=255)
        to_feature = geo.resize_matrix(size, feat_size)
        mask = None
        if subject is not None:
            mask = np.where(cv2.resize(subject.astype(np.uint8), feat_size, interpolation=cv2.INTER_NEAREST),
                            0, 255).astype(np.uint8)
        kps, desc = self._detector.detectAndCompute(feat_gray, mask)
        pts = np.array([k.pt for k in kps], np.float64).reshape(-1, 2)
        points = geo.project(np.linalg.inv(to_feature), pts).astype(np.float32)
        return Features(size=size, points=points, descriptors=desc, gray=feat_gray, to_feature=to_feature)

    # -- the search -------------------------------------------------------------------------------------

    def align(self, plate: np.ndarray, candidates: list, subject_mask: np.ndarray | None = None,
              prior: tuple[int, np.ndarray] | None = None, plate_label: str = "plate frame",
              candidate_labels: list[str] | None = None, prefer: int | None = None,
              exposure_prior: tuple | None = None, track: dict | None = None) -> AlignResult:
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
        Labels name the frames in error messages and QC. Frames that cannot be aligned do not raise: they
        come back with `fallback` set and `flagged`. Raises HowardError for unusable input arrays.
        """
        t0 = time.perf_counter()
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
        small_size = (pf.small.shape[1], pf.small.shape[0])
        subject_small = None
        if given_subject is not None:
            subject_small = cv2.resize(given_subject.astype(np.uint8), small_size,
                                       interpolation=cv2.INTER_NEAREST).astype(bool)
        # History counts only while the plate holds still (tracked against the previous plate frame):
        # a moving plate is judged on its own, frame by frame, so farm chunks agree with a whole run.
        still = track is not None and _still(track.get("plate_gray"), pf.features)
        if not still:
            prefer = None
        # The previous frames' exposure: a fit must beat it while the plate holds still, and it stands in
        # where a frame shows too little background for its own fit (below).
        priors = (("previous frames", *exposure_prior),) if still and exposure_prior is not None else ()

        # Coarse fits; the agreed background: where any fitting candidate has the plate's local structure
        # (the subject has none of theirs). Every candidate is then scored on it, so the subject never
        # counts against one.
        fits = [self.coarse_fit(c.features, pf.features) for c in cands]
        ok = [k for k, f in enumerate(fits) if f.h is not None and f.failure is None]
        agreed = np.logical_or.reduce([self._own_background(fits[k].h, cands[k], pf, subject_small)
                                       for k in ok]) if ok else None
        for k in ok:
            self._score_fit(fits[k], cands[k], pf, subject_small, agreed=agreed, priors=priors)
        ok = [k for k, f in enumerate(fits) if f.h is not None and f.failure is None]

        coarse_total = {k: fits[k].score.total for k in ok}
        # Hysteresis margin: changing frames shows as a jump in the matte, so the longer a choice has
        # held still (a still plate), the more it takes to change it.
        held = int(track.get("held", 1)) if prefer is not None and track.get("index") == prefer else 1
        margin = min(0.5, self.hysteresis * (1 + np.log2(held)))
        subject = subject_small
        grow = max(1, int(self.subject_margin * max(small_size)))
        if ok:
            best = min(ok, key=lambda k: fits[k].score.total)
            est = pm.subject_estimate(fits[best].score.residual, fits[best].score.valid, grow)
            est |= _grow(fits[best].score.valid & ~agreed, grow)
            subject = est if subject is None else (subject | est)
            if self.refine:
                corners = self._plate_corners(pf, subject)
                # The best coarse fits, in order, until `refine_top` refinements succeed (one spare try).
                # The preferred candidate goes first; the others compete with it only when their coarse
                # score is clearly better (each refinement costs two full-resolution warps).
                order = sorted(ok, key=lambda k: fits[k].score.total)
                if prefer in ok:
                    rivals = [k for k in order if k != prefer and
                              fits[k].score.total * (1 + margin) < fits[prefer].score.total]
                    need = 1 + min(self.refine_top, len(rivals))
                    todo = [prefer] + rivals + [k for k in order if k != prefer and k not in rivals]
                else:
                    todo, need = order, self.refine_top
                done = 0
                for k in todo[:need + 1]:  # one spare try
                    if done >= need:
                        break
                    refined = self._refine(cands[k], pf, fits[k], corners)
                    if refined is not None:
                        self._score_fit(refined, cands[k], pf, subject, agreed=agreed, priors=priors)
                        if refined.failure is None:
                            fits[k] = refined
                            done += 1
            else:
                for k in ok:
                    self._score_fit(fits[k], cands[k], pf, subject, agreed=agreed, priors=priors)

        ok = [k for k, f in enumerate(fits) if f.h is not None and f.failure is None]
        fallback = None
        dense_cache: dict = {}  # candidate -> (homography, dense result, flow, applied)
        if ok:
            # Refined fits are more accurate than coarse ones and were scored with the better subject
            # mask, so they win whenever there is one.
            pool = [k for k in ok if fits[k].refined] or ok
            chosen = min(pool, key=lambda k: fits[k].score.total)
            how = (f"lowest refined score of {len(pool)}" if len(pool) > 1 else
                   f"lowest coarse score ({coarse_total.get(chosen, float('nan')):.4f})")
            if prefer in pool and prefer != chosen:
                # Hysteresis, judged on what each would deliver: after the dense step where it runs
                # (homography scores differ by parallax the dense step removes), on the pixels both
                # take as background.
                if self.dense:
                    for k in (chosen, prefer):
                        dense_cache[k] = (fits[k].h, *self._dense(cands[k], pf, fits[k].h, fits[k].score))
                    bg = ~dense_cache[chosen][1].subject & ~dense_cache[prefer][1].subject
                    err = {k: self._aligned_error(cands[k], pf, fits[k].h, dense_cache[k][2] if dense_cache[k][3]
                                                  else None, fits[k].score, bg) for k in (chosen, prefer)}
                    keep = err[chosen] >= (1 - margin) * err[prefer]
                    detail = f"background error after the dense step {err[prefer]:.4f} vs {err[chosen]:.4f}"
                else:
                    keep = fits[prefer].score.total <= fits[chosen].score.total * (1 + margin)
                    detail = f"score {fits[prefer].score.total:.4f} vs {fits[chosen].score.total:.4f}"
                if keep:
                    how = f"previous frame's choice, within {margin:.0%} of the best ({detail})"
                    chosen = prefer
            fit = fits[chosen]
            by_coarse = sorted(coarse_total, key=coarse_total.get)
            runner = next((k for k in by_coarse if k != chosen), None)
            reason = (f"{len(ok)} of {len(cands)} candidates fitted; chosen for the {how}; score "
                      f"{fit.score.total:.4f} (photometric {fit.score.photometric:.4f}, coverage "
                      f"{fit.score.coverage:.3f})")
            if runner is not None:
                reason += f"; runner-up {labels[runner]}, coarse score {coarse_total[runner]:.4f}"
            if not fit.refined and self.refine:
                reason += "; sub-pixel refinement failed, coarse fit used"
            # A clean plate already in register (locked-off takes) stays exactly in register: the plain
            # resize is kept unless the fit is clearly better on the agreed background.
            same = geo.resize_matrix(cands[chosen].size, pf.size)
            if geo.corner_errors(fit.h, same, pf.size).max() < 0.5:
                plain = Fit(h=same, matches=fit.matches, inliers=fit.inliers, refined=fit.refined,
                            refined_points=fit.refined_points)
                self._score_fit(plain, cands[chosen], pf, subject, agreed=agreed, priors=priors, check=False)
                if plain.score.total <= fit.score.total * 1.02:
                    fit = fits[chosen] = plain
                    reason += "; in register as it is (the fit does no better)"
        else:
            chosen, fit, fallback, reason = self._fallback(cands, pf, fits, prior, subject, labels)

        flagged = fallback is not None
        score = fit.score
        if score.coverage < self.flag_coverage:
            flagged = True
            reason += f"; flagged: covers only {score.coverage:.0%} of the plate"
        if fallback is None and fit.refined is False and self.refine:
            flagged = True
        if fallback is None and fit.matches and fit.inliers < self.flag_inlier_ratio * fit.matches:
            # Most matches disagreeing with the fit is what repeated patterns (or a subject filling the
            # frame) look like: the fit may be off by a whole pattern repeat.
            flagged = True
            reason += f"; flagged: only {fit.inliers} of {fit.matches} matches agree (repeated texture?)"
        if score.background_share < self.min_background and exposure_prior is not None:
            score.gain, score.bias = np.asarray(exposure_prior[0], float), np.asarray(exposure_prior[1], float)
            score.exposure_source = "previous frames"
            reason += f"; only {score.background_share:.0%} of the frame is background: exposure of previous frames"

        h, steady = fit.h, 1
        dense_state, flow, res = ("off" if not self.dense else "not run"), None, None
        if self.dense and fallback is None:
            if chosen in dense_cache and np.array_equal(dense_cache[chosen][0], h):
                res, flow, applied = dense_cache[chosen][1:]
            else:
                res, flow, applied = self._dense(cands[chosen], pf, h, score)
            dense_state = "applied" if applied else "no gain"
            if not applied:
                flow = None
        # While the plate holds still, the previous frame's alignment of the same clean frame is kept
        # unless this frame's own is clearly better on the background. With depth a homography is ambiguous (which
        # layer dominates) and refits wander by a pixel; the whole alignment, not the fit, is compared,
        # so a still plate gets a still clean plate.
        if still and fallback is None and track.get("index") == chosen:
            h_prev, f_prev = np.asarray(track["homography"], np.float64), track.get("flow")
            if geo.corner_errors(h, h_prev, pf.size).max() < 0.01 * max(pf.size):
                bg = self._dense_background(pf, score, res)
                new = self._aligned_error(cands[chosen], pf, h, flow, score, bg)
                old = self._aligned_error(cands[chosen], pf, h_prev, f_prev, score, bg)
                # Like the choice of frame, a kept alignment gets harder to overturn the longer it holds.
                if old <= (1 + min(0.1, 0.03 * (1 + np.log2(int(track.get("count", 1)))))) * new:
                    h, flow, steady = h_prev, f_prev, int(track.get("count", 1)) + 1
                    if self.dense:
                        dense_state = "applied" if flow is not None else "no gain"
                    reason += f"; alignment of the previous frame kept (background error {old:.4f} vs {new:.4f})"
        background, valid = self._render(cands[chosen], pf, h, score, flow)
        shares = res.shares() if res is not None else None
        return AlignResult(
            background=background, valid=valid, homography=h, index=chosen, inliers=fit.inliers,
            matches=fit.matches, refined_points=fit.refined_points, score=score.photometric, ncc=score.ncc,
            coverage=score.coverage, gain=tuple(float(g) for g in score.gain),
            bias=tuple(float(b) for b in score.bias), fallback=fallback, flagged=flagged, reason=reason,
            candidates=[_candidate_qc(k, f, labels[k]) for k, f in enumerate(fits)],
            ms=(time.perf_counter() - t0) * 1000, dense=dense_state,
            residual_px=res.magnitude if flow is not None else 0.0,
            background_share=shares["background"] if shares else score.background_share,
            subject_share=shares["subject"] if shares else 1 - score.background_share,
            homography_share=shares["fallback"] if flow is not None else 1.0,
            exposure_source=score.exposure_source, flow=flow, steady=steady, plate_gray=pf.features.gray,
            still=still, held=held + 1 if prefer is not None and chosen == prefer else 1)

    def _dense(self, clean: PreparedFrame, plate: PreparedFrame, h: np.ndarray, score: _Score):
        """The residual warp of `clean` (fitted by `h`) to `plate` at the dense size: (`dense.Residual`,
        flow, whether it lines the background up better than `h` alone)."""
        dsize = (plate.dense.shape[1], plate.dense.shape[0])
        hd = plate.to_dense @ h @ np.linalg.inv(clean.to_dense)
        csize = (clean.dense.shape[1], clean.dense.shape[0])
        warped = cv2.warpPerspective(clean.dense, hd, dsize, flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE)
        valid = geo.coverage_mask(hd, csize, dsize)
        matched = pm.apply_exposure(warped, score.gain, score.bias) if self.exposure else pm.clip01(warped)
        noise = 1.25 * float(score.photometric) if np.isfinite(score.photometric) else 0.01
        grow = max(1, int(self.subject_margin * max(dsize)))
        res = dense.estimate(plate.dense, matched, valid, noise, plate.size[0] / dsize[0], grow=grow)
        bg = valid & ~res.subject
        before = self._aligned_error(clean, plate, h, None, score, bg)
        after = self._aligned_error(clean, plate, h, res.flow, score, bg)
        return res, res.flow, bool(after < 0.97 * before)

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
        matched = pm.apply_exposure(warped, score.gain, score.bias) if self.exposure else pm.clip01(warped)
        blur = [cv2.GaussianBlur(x, (0, 0), 1.0) for x in (p_img, matched)]
        return float(pm.residual_map(*blur)[bg].mean())

    # -- steps ------------------------------------------------------------------------------------------

    def coarse_fit(self, clean: Features, plate: Features) -> Fit:
        """Feature-based homography, clean px -> plate px, with its match statistics (`Fit`); a failed fit
        has `failure` set (too few features or matches, implausible, too little overlap)."""
        if clean.descriptors is None or plate.descriptors is None or len(clean.points) < 8 \
                or len(plate.points) < 8:
            n = min(len(clean.points), len(plate.points))
            return Fit(failure=f"too few features ({n}); blank or featureless frame")
        # Ratio test, then one-to-one: a plate feature claimed by several clean features keeps only its
        # closest (a cheap stand-in for a full reverse cross-check, which would double the matching time).
        best: dict[int, cv2.DMatch] = {}
        for pair in self._matcher.knnMatch(clean.descriptors, plate.descriptors, k=2):
            if len(pair) == 2 and pair[0].distance < self.ratio * pair[1].distance:
                m = pair[0]
                if m.trainIdx not in best or m.distance < best[m.trainIdx].distance:
                    best[m.trainIdx] = m
        src = [clean.points[m.queryIdx] for m in best.values()]
        dst = [plate.points[m.trainIdx] for m in best.values()]
        fit = Fit(matches=len(src))
        if len(src) < self.min_inliers:
            fit.failure = f"too few matches ({len(src)} < {self.min_inliers})"
            return fit
        # Threshold in full-resolution pixels, ~2 pixels of the feature copy.
        h, inl = cv2.findHomography(np.float32(src), np.float32(dst), cv2.USAC_MAGSAC, 2.0 * plate.pixel,
                                    maxIters=5000, confidence=0.999)
        fit.inliers = int(inl.sum()) if inl is not None else 0
        if h is None or fit.inliers < self.min_inliers:
            fit.failure = f"too few inliers ({fit.inliers} < {self.min_inliers})"
            return fit
        fit.h = h / h[2, 2]
        fit.failure = self._implausible(fit.h, clean, plate)
        return fit

    def _implausible(self, h: np.ndarray, clean, plate) -> str | None:
        """Why `h` is not a usable clean -> plate fit (frames or `Features`, anything with `.size`)."""
        why = geo.implausibility(h, clean.size, plate.size, self.max_scale)
        if why is None and geo.coverage(h, clean.size, plate.size) < self.min_overlap:
            why = f"overlaps less than {self.min_overlap:.0%} of the plate"
        return why

    def _small_warp(self, h: np.ndarray, clean: PreparedFrame, plate: PreparedFrame):
        """`clean`'s score-size copy warped into `plate`'s by `h` (clean px -> plate px), and its cover."""
        small_size = (plate.small.shape[1], plate.small.shape[0])
        hs = plate.to_small @ h @ np.linalg.inv(clean.to_small)
        warped = cv2.warpPerspective(clean.small, hs, small_size, flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE)
        return warped, geo.coverage_mask(hs, (clean.small.shape[1], clean.small.shape[0]), small_size)

    def _own_background(self, h: np.ndarray, clean: PreparedFrame, plate: PreparedFrame,
                        subject: np.ndarray | None) -> np.ndarray:
        """Where `clean`, fitted by `h`, has the structure of `plate` (small size, bool)."""
        warped, valid = self._small_warp(h, clean, plate)
        return pm.agreeing_background(warped, plate.small, valid if subject is None else valid & ~subject)

    def _score_fit(self, fit: Fit, clean: PreparedFrame, plate: PreparedFrame, subject: np.ndarray | None,
                   agreed: np.ndarray | None = None, priors: tuple = (), check: bool = True) -> None:
        """Photometric score of a fit on the small copies, on background only; fails the fit (when
        `check`) if the background's structure does not match.

        subject: known subject (small size) to leave out; agreed: the background agreed among the
        candidates (small size), else the fit's own. Exposure comes from that background only
        (`photometric.background_exposure`), with `priors` as the alternatives it must beat.
        """
        warped, valid = self._small_warp(fit.h, clean, plate)
        base = valid if subject is None else valid & ~subject
        if agreed is not None:
            base = base & agreed
        source = "off"
        if self.exposure:
            # An agreed background is already clean of the subject: one fit on it.
            gain, bias, bg, source = pm.background_exposure(
                warped, plate.small, base, priors=priors, iterations=2 if agreed is None else 0,
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
        total = photometric + self.coverage_weight * (1 - cover) if np.isfinite(photometric) else np.inf
        fit.score = _Score(total, photometric, cover, corr, gain, bias, residual, valid, bg, source)
        if check and fit.failure is None and corr < self.min_ncc:
            fit.failure = (f"images do not match once aligned (correlation {corr:.2f} < {self.min_ncc:g} "
                           f"on the {bg.mean():.0%} of the frame taken as background)")

    def _plate_corners(self, plate: PreparedFrame, subject_small: np.ndarray | None) -> np.ndarray:
        """Well-spread background corners of the plate (N x 2 float32, plate px) for the refinement."""
        fh, fw = plate.features.gray.shape
        mask = np.zeros((fh, fw), np.uint8)
        border = _LK_WINDOW[0] // 2 + 2
        mask[border:fh - border, border:fw - border] = 255
        if subject_small is not None:
            mask[cv2.resize(subject_small.astype(np.uint8), (fw, fh), interpolation=cv2.INTER_NEAREST) > 0] = 0
        pts = cv2.goodFeaturesToTrack(plate.features.gray, self.refine_points, 0.005, max(fw, fh) / 45,
                                      mask=mask, blockSize=5)
        if pts is None:
            return np.zeros((0, 2), np.float32)
        return geo.project(np.linalg.inv(plate.features.to_feature), pts.reshape(-1, 2)).astype(np.float32)

    def _refine(self, clean: PreparedFrame, plate: PreparedFrame, coarse: Fit, corners: np.ndarray,
                levels: int = 1, passes: int = 2) -> Fit | None:
        """Sub-pixel refit of `coarse` from Lucas-Kanade tracks at full resolution; None if it cannot.

        corners: N x 2 float32 background corners of the plate (plate px) to track.
        levels:  pyramid levels above full resolution for the first pass: 1 reaches a few pixels, enough
                 after a feature fit (about a pixel off); more for starting points further away.
        passes:  track-and-refit rounds; the second removes most of what the first left (about a
                 quarter of the error), later ones add nothing measurable.
        """
        if len(corners) < self.min_inliers:
            return None
        # Bring the plate to the candidate's exposure: Lucas-Kanade assumes equal brightness.
        g = float(np.mean(coarse.score.gain))
        b = float(np.mean(coarse.score.bias))
        plate_u8 = cv2.convertScaleAbs(plate.gray, alpha=255 / g, beta=-255 * b / g)
        x = np.clip(np.round(corners[:, 0]).astype(int), 0, plate.size[0] - 1)
        y = np.clip(np.round(corners[:, 1]).astype(int), 0, plate.size[1] - 1)
        h_full, used = coarse.h, 0
        for p in range(passes):
            # Track against the candidate warped into the plate by the current fit, not the candidate as
            # it is: what remains is a small, locally translational displacement, which is what
            # Lucas-Kanade measures without bias (a zoom, roll or resolution change between the takes
            # would distort every tracking window).
            warped = cv2.warpPerspective(clean.gray, h_full, plate.size, flags=cv2.INTER_LINEAR)
            inside = geo.coverage_mask(h_full, clean.size, plate.size, inset=_LK_WINDOW[0] // 2 + 4)
            src = corners[inside[y, x]]
            if len(src) < self.min_inliers:
                return None
            tracked, status, _ = cv2.calcOpticalFlowPyrLK(
                plate_u8, warped, src, src.copy(), winSize=_LK_WINDOW, maxLevel=levels if p == 0 else 0,
                criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.003),
                flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
            good = status.ravel() == 1
            src, tracked = src[good], tracked[good]
            if len(src) < self.min_inliers:
                return None
            # The correction, warped candidate px -> plate px.
            h_fix, inl = cv2.findHomography(tracked, src, cv2.USAC_MAGSAC, 1.0, maxIters=2000,
                                            confidence=0.999)
            if h_fix is None or inl is None or inl.sum() < self.min_inliers:
                return None
            keep = inl.ravel().astype(bool)
            # A plain least-squares (Levenberg-Marquardt) polish on the inliers: MAGSAC's weighting is
            # tuned for outlier rejection, the tracks' errors are small and Gaussian-like.
            h_ls, _ = cv2.findHomography(tracked[keep], src[keep], 0)
            if h_ls is not None and np.all(np.isfinite(h_ls)):
                h_fix = h_ls
            h_full = h_fix @ h_full
            h_full, used = h_full / h_full[2, 2], int(keep.sum())
        fit = Fit(h=h_full, matches=coarse.matches, inliers=coarse.inliers, refined_points=used, refined=True)
        fit.failure = self._implausible(h_full, clean, plate)
        # A refinement that moves far from its starting point has locked onto something else.
        drift = geo.corner_errors(h_full, coarse.h, plate.size).max()
        if fit.failure is None and drift > 0.05 * max(plate.size):
            fit.failure = f"refinement drifted {drift:.1f} px from the feature fit"
        return fit

    def _fallback(self, cands, plate, fits, prior, subject, labels):
        """No candidate fitted. Refit from a starting guess by tracking alone, which needs texture but not
        distinctive features (so it copes with repeated patterns): the previous frame's homography, then
        a plain resize of the middle candidate. Failing that, use the first guess as it stands."""
        failures = "; ".join(f"{labels[k]}: {f.failure}" for k, f in enumerate(fits))
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
            refined = self._refine(cands[k], plate, seed, corners, levels=3)
            if refined is not None:
                self._score_fit(refined, cands[k], plate, subject)
                if refined.failure is None:
                    return k, refined, f"{name}_refined", \
                        f"no candidate fitted ({failures}); refitted {labels[k]} from {what}"
        name, k, h0, what = seeds[0]
        seed = Fit(h=h0)
        self._score_fit(seed, cands[k], plate, subject)
        return k, seed, name, f"no candidate fitted ({failures}); used {what}"

    def _render(self, clean: PreparedFrame, plate: PreparedFrame, h: np.ndarray, score: _Score,
                flow: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        w, hh = plate.size
        if flow is None and clean.size == plate.size and np.array_equal(h, np.eye(3)):
            # Already in register: the clean frame itself, every pixel of it.
            background = clean.image.copy()
            if self.exposure:
                background = pm.apply_exposure(background, score.gain, score.bias)
            return background, np.ones((hh, w), bool)
        if flow is None:
            warped = cv2.warpPerspective(clean.image, h, (w, hh), flags=_INTERPOLATION[self.interpolation],
                                         borderMode=cv2.BORDER_REPLICATE)
        else:
            # One resampling of the clean frame through homography and residual motion together.
            where = dense.sampling_map(h, flow, plate.size, plate.to_dense)
            interp = cv2.INTER_CUBIC if self.dense_interpolation == "cubic" else cv2.INTER_LINEAR
            warped = cv2.remap(clean.image, where, None, interp, borderMode=cv2.BORDER_REPLICATE)
        valid = geo.coverage_mask(h, clean.size, plate.size)
        background = pm.apply_exposure(warped, score.gain, score.bias) if self.exposure else pm.clip01(warped)
        cv2.copyTo(plate.image, (~valid).view(np.uint8), dst=background)
        return background, valid

    def _subject_from_mask(self, mask, plate_size, label) -> np.ndarray | None:
        if mask is None:
            return None
        mask = np.asarray(mask)
        if mask.shape != (plate_size[1], plate_size[0]):
            raise HowardError(f"{label}: subject mask is {mask.shape[1::-1]} but the plate is {plate_size}; "
                              "pass the previous frame's matte at plate size")
        hot = (mask > 0.1).astype(np.uint8)
        grow = int(self.subject_margin * max(plate_size))
        # The matte is a frame old and the subject has moved since: grow it generously.
        if grow > 0 and hot.any():
            hot = cv2.dilate(hot, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
        return hot.astype(bool)


def _still(previous: np.ndarray | None, plate: Features, tolerance: float = 0.15) -> bool:
    """Whether the plate has not moved since the frame whose feature-size luma is `previous`: corners of
    that frame tracked into this one (Lucas-Kanade) move less than `tolerance` plate pixels (median,
    so a moving subject does not count)."""
    if previous is None or previous.shape != plate.gray.shape:
        return False
    pts = cv2.goodFeaturesToTrack(previous, 200, 0.01, 8)
    if pts is None or len(pts) < 16:
        return False
    moved, status, _ = cv2.calcOpticalFlowPyrLK(previous, plate.gray, pts, None, winSize=_LK_WINDOW, maxLevel=2)
    ok = status.ravel() == 1
    if ok.sum() < 16:
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
