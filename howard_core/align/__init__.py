"""Clean-plate alignment: fit each plate frame's clean plate by candidate search, homography and exposure.

    from howard_core.align import AlignOptions, Aligner, SequenceAligner, qc_report

`Aligner(options, **overrides).align(plate, candidates)` aligns the best of a list of clean-plate frames
to one plate frame and returns an `AlignResult`; `AlignOptions` declares every option, with its default
and doc. `SequenceAligner(plate_count, clean_count, get_clean, window=...)`
walks a whole plate / clean-plate pair frame by frame (`align_frame(i, plate, subject_mask)`), choosing
each frame's candidates from the clean-plate timeline and caching their features. `qc_report(results)`
turns results into the QC JSON document.
"""

from howard_core.align.aligner import Aligner, AlignResult, Features, Fit, PreparedFrame
from howard_core.align.geometry import corner_error, corner_errors
from howard_core.align.options import AlignOptions
from howard_core.align.sequence import Segments, SequenceAligner, Timing, qc_report

__all__ = ["AlignOptions", "Aligner", "AlignResult", "Features", "Fit", "PreparedFrame", "Segments",
           "SequenceAligner", "Timing", "corner_error", "corner_errors", "qc_report"]
