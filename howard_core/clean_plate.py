"""`howard align`: the aligned clean plate for every plate frame, written as EXR, plus the QC JSON.

Each output frame is RGBA in the plate's colour space: RGB the clean plate warped into the plate
and exposure-matched, A the validity mask (1 where the clean plate covers the plate). Runs frame
by frame, so memory is flat in clip length. The same inputs, guards and events as the matte job
(`howard_core.job`), without the network.
"""

from __future__ import annotations

import dataclasses

from howard_core import events
from howard_core.job import Emitter, Inputs, report_path
from howard_core.settings import MatteSettings

# The matte options this job uses (the `howard align` flags): which frames, how the inputs are
# read, and the clean-plate candidate search.
OPTIONS = ("frames", "colorspace", "clean_colorspace", "ocio_config", "missing", "window", "clean_offset",
           "clean_scale")


def align_clip(plate, clean_plate, output, settings: MatteSettings | None = None, *, report=None, progress=None,
               **overrides) -> dict:
    """Align `clean_plate` to every frame of `plate`, write RGBA EXRs to `output`; returns the QC report.
    `settings` / `overrides`: the `OPTIONS` of `MatteSettings` (others are ignored)."""
    from howard_core.align.sequence import qc_report
    from howard_core.io import open_sink, write_json_atomic

    settings = MatteSettings.build(settings, **overrides)
    with Inputs.open(plate, clean_plate, settings) as inputs, \
         open_sink(output, "exr", like=inputs.plate, tag="aligned") as sink:
        inputs.guard(sink)
        seq = inputs.sequence_aligner()
        numbers = inputs.plate.frame_numbers
        emitter = Emitter(progress, len(numbers))
        emitter.send(events.Start(len(numbers), 0, sink.display))
        results = []
        for n in numbers:
            res = seq.align_frame(n - inputs.first, inputs.plate.read(n))
            sink.write(n, inputs.plate.from_working(res.background), res.valid.astype("float32"))
            qc = res.to_qc()
            qc.update(frame=n, output=sink.path_for(n))
            results.append(qc)
            emitter.frame(n, bool(res.flagged), res.reason, sink.path_for(n))
        doc = qc_report(results, plate=str(plate), clean_plate=str(clean_plate), output=sink.display,
                        timing=dataclasses.asdict(seq.timing), window=settings.window)
        path = report_path(report, sink, numbers, stem="howard_align")
        write_json_atomic(path, doc, default=str)
        doc["report"] = str(path)
        emitter.send(events.Done(len(results), len(results), report=str(path), output=sink.display,
                                 flagged_frames=[r["frame"] for r in results if r.get("flagged")]))
        return doc
