"""The alignment options: one frozen, validated `AlignOptions`, each option declared once with its doc.

    from howard_core.align import AlignOptions, Aligner
    aligner = Aligner(AlignOptions(detector="sift"))      # or Aligner(detector="sift")
    lean = Aligner(aligner.options, dense=False)           # a copy with overrides

Sizes are in pixels of a frame's long side; error and score figures are in display units (sRGB 0..1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2

from howard_core.errors import HowardError

DETECTORS = ("orb", "sift")
# The final homography warp's resampling, by option value.
INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}
# The final remap's resampling when the dense step applies.
DENSE_INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}

_COERCE = {"int": int, "float": float, "bool": bool}
# The long sides of the working copies.
_SIZES = ("feature_size", "score_size", "track_size", "dense_size")


@dataclass(frozen=True)
class AlignOptions:
    """Every option of `Aligner`, with its default. Numbers are coerced to the declared type;
    an unknown choice raises HowardError (one line naming the option and the choices)."""

    detector: str = "orb"
    """"orb" (fast) or "sift" (slower, more tolerant of blur and big zoom changes)."""
    feature_size: int = 640
    """Long side, px, of the copy features are found on."""
    score_size: int = 320
    """Long side, px, of the copy candidates are scored on."""
    max_features: int = 600
    """Features per frame."""
    ratio: float = 0.8
    """Lowe ratio test threshold for matches."""
    min_inliers: int = 24
    """Fewest matches consistent with a fit."""
    max_scale: float = 2.0
    """Largest zoom between the takes, either way, before a fit counts as wild."""
    min_overlap: float = 0.2
    """Smallest fraction of the plate a candidate must cover to be usable."""
    min_ncc: float = 0.4
    """Smallest structural correlation for a fit to count as right."""
    refine: bool = True
    """Sub-pixel refinement by tracking background corners (on the `track_size` copy)."""
    refine_top: int = 1
    """How many of the best coarse candidates get refined and compete on their refined score (at least 1;
    the coarse score already ranks candidates well, and refining costs about 15 ms per HD candidate)."""
    refine_points: int = 400
    """Background corners tracked by the refinement."""
    track_size: int = 960
    """Long side, px, of the luma the refinement tracks on (frames no larger are tracked as they are). At
    HD, half size halves the cost of the warps and tracking it needs and still measures to about 0.02 px."""
    coverage_weight: float = 0.05
    """Score penalty per unit of plate left uncovered (display units)."""
    flag_coverage: float = 0.8
    """Flag frames whose chosen candidate covers less than this."""
    flag_inlier_ratio: float = 0.2
    """Flag frames where fewer than this fraction of matches agree with the fit."""
    subject_margin: float = 0.03
    """Growth of subject masks, fraction of the frame's long side."""
    interpolation: str = "linear"
    """Final homography warp: "linear", "cubic" or "lanczos". Linear, as the dense step's remap: in
    `howard bench align --kinds planar,parallax,closeup,still --frames 8 --speed-frames 0 --no-references`
    cubic's mattes were no better on any kind of shot (SAD planar 4.194 against 4.172, closeup 27.89
    against 27.87, parallax and still the same), its background error was higher (planar 1.73 against
    1.50: it keeps the clean take's own noise sharper), and its HD warp took 29 against 12 ms per frame
    on one core."""
    exposure: bool = True
    """Match exposure."""
    dense: bool = True
    """The dense residual warp after the homography (False: homography only)."""
    dense_size: int = 480
    """Long side, px, of the copy the residual motion is measured on."""
    hysteresis: float = 0.15
    """Keep the preferred candidate (the sequence's previous choice) unless another aligns the background
    better by more than this fraction, growing with the frames the choice has held still
    (x (1 + log2 frames), up to the cap `aligner._HYSTERESIS_CAP`)."""
    min_background: float = 0.05
    """Smallest share of the frame that must be agreed background for a frame's own exposure fit; below
    it the exposure comes from the neighbouring frames' (`Aligner.align(exposure_prior=...)`)."""
    fuse_frames: int = 4
    """Further clean-plate frames fused into the clean plate where a sequence's alignment starts afresh
    (its first frame, each segment's), and held, bit for bit, while the plate holds still and keeps that
    alignment (`howard_core.align.fusion`): less noise and fewer misaligned spots, so a locked-off plate's
    matte flickers less. Each costs one more dense step and warp at those frames; only with `dense`;
    0: off."""
    dense_interpolation: str = "linear"
    """The final remap when the dense step applies: "linear" (a cubic remap costs about 40 ms more per HD
    frame) or "cubic"."""

    def __post_init__(self):
        if self.detector not in DETECTORS:
            raise HowardError(f"align: unknown detector {self.detector!r}; use 'orb' or 'sift'")
        if self.interpolation not in INTERPOLATIONS:
            raise HowardError(f"align: unknown interpolation {self.interpolation!r}; use one of "
                              f"{', '.join(INTERPOLATIONS)}")
        for f in dataclasses.fields(self):
            kind = _COERCE.get(f.type)
            if kind is not None:
                try:
                    object.__setattr__(self, f.name, kind(getattr(self, f.name)))
                except (TypeError, ValueError):
                    raise HowardError(f"align: {f.name} must be {f.type}, got {getattr(self, f.name)!r}") from None
        for name in _SIZES:
            if getattr(self, name) <= 0:
                raise HowardError(f"align: {name} must be a positive number of pixels, got {getattr(self, name)}")
        object.__setattr__(self, "refine_top", max(1, self.refine_top))
        object.__setattr__(self, "fuse_frames", max(0, self.fuse_frames))
        if self.dense_interpolation not in DENSE_INTERPOLATIONS:
            raise HowardError(f"align: unknown dense interpolation {self.dense_interpolation!r}; use 'linear' or "
                              "'cubic'")

    def replace(self, **overrides) -> AlignOptions:
        """A copy with `overrides` (option names as keywords); HowardError for a name that is not one."""
        unknown = sorted(set(overrides) - set(OPTION_NAMES))
        if unknown:
            raise HowardError(f"align: unknown option {unknown[0]!r}; the options are {', '.join(OPTION_NAMES)}")
        return dataclasses.replace(self, **overrides) if overrides else self


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(AlignOptions))


def align_options(options: AlignOptions | None = None, **overrides) -> AlignOptions:
    """`options` (default: all defaults) with `overrides`, validated: what `Aligner(options, **overrides)`
    runs with."""
    if options is None:
        options = AlignOptions()
    elif not isinstance(options, AlignOptions):
        raise HowardError(f"align: options must be an AlignOptions, got {type(options).__name__}; pass "
                          "single options as keywords, e.g. Aligner(dense=False)")
    return options.replace(**overrides)
