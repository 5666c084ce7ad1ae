"""`howard align`: the aligned clean plate for every plate frame, written as EXR, plus the QC JSON.

Each output frame is RGBA in the plate's colour space: RGB the clean plate warped
into the plate and exposure-matched, A the validity mask (1 where the clean plate
covers the plate). Runs frame by frame, so memory is flat in clip length.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from howard_core.align.sequence import PlateFrames, SequenceAligner, qc_report


def align_clip(plate, clean_plate, output, *, frames=None, colorspace=None, clean_colorspace=None,
               ocio_config=None, missing="error", window=2, clean_offset=None, clean_scale=None,
               report=None, progress=None) -> dict:
    """Align `clean_plate` to every frame of `plate`, write RGBA EXRs to `output`; returns the QC report."""
    from howard_core.io import open_sink, open_source, write_json_atomic
    from howard_core.pipeline import _clean_colorspace, check_not_clean_plate

    with open_source(plate, frames=frames, colorspace=colorspace, ocio_config=ocio_config, missing=missing) as src, \
         open_source(clean_plate, colorspace=_clean_colorspace(plate, clean_plate, colorspace, clean_colorspace),
                     ocio_config=ocio_config) as clean, \
         open_sink(output, "exr", like=src, tag="aligned") as sink:
        check_not_clean_plate(sink, clean, src.frame_numbers)
        first, last = src.clip_range
        numbers = clean.frame_numbers
        history = PlateFrames(plate, first, last, colorspace=colorspace, ocio_config=ocio_config, missing=missing)
        seq = SequenceAligner(last - first + 1, len(numbers), lambda j: clean.read(numbers[j]), window=window,
                              offset=clean_offset, scale=clean_scale, keep_qc=False, history=history)
        if progress:
            progress({"event": "start", "total": len(src.frame_numbers), "skipped": 0, "output": sink.display,
                      "model": {"trained": True}})
        t0 = time.perf_counter()
        results = []
        for k, n in enumerate(src.frame_numbers):
            res = seq.align_frame(n - first, src.read(n))
            sink.write(n, src.from_working(res.background), res.valid.astype("float32"))
            qc = res.to_qc()
            qc.update(frame=n, output=sink.path_for(n))
            results.append(qc)
            if progress:
                fps = (k + 1) / (time.perf_counter() - t0)
                progress({"event": "frame", "frame": n, "done": k + 1, "total": len(src.frame_numbers),
                          "fps": round(fps, 3), "eta_s": round((len(src.frame_numbers) - k - 1) / fps, 1),
                          "flagged": bool(res.flagged), "reason": res.reason, "output": sink.path_for(n)})
        history.close()
        doc = qc_report(results, plate=str(plate), clean_plate=str(clean_plate), output=sink.display,
                        timing=dataclasses.asdict(seq.timing), window=window)
        folder = Path(sink.path_for(src.frame_numbers[0])).parent
        path = Path(report) if report else folder / f"howard_align.{src.frame_numbers[0]}-{src.frame_numbers[-1]}.json"
        write_json_atomic(path, doc, default=str)
        doc["report"] = str(path)
        if progress:
            flagged = [r["frame"] for r in results if r.get("flagged")]
            progress({"event": "done", "done": len(results), "total": len(results), "skipped": 0,
                      "report": str(path), "output": sink.display, "flagged_frames": flagged})
        return doc
