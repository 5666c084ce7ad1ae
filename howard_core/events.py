"""Progress events and user-facing notes: what a job tells the CLI, the hosts and the farms.

A job calls its `progress` callback with one plain dict per event (`as_dict(event)`), which is
also what `howard matte --progress json` prints one per line; `parse(dict)` reads one back into
its typed form. The three kinds, in order: `Start`, one `Frame` per frame written, `Done`.

Standard library only, like `settings`: the host kit (`hostcli`) loads this file by path inside
a host's own Python, so hosts read events and word notes exactly as the core writes them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

START, FRAME, DONE = "start", "frame", "done"
EVENTS = (START, FRAME, DONE)

UNTRAINED_NOTE = ("the bundled default weights are missing from this install, so an UNTRAINED stand-in ran: the "
                  "alpha is meaningless. Reinstall howard-core, or install the official BGMv2 weights for real "
                  "mattes: `howard weights install pytorch_resnet50.pth`, then `--model resnet50`")
DEMO_NOTE = ("the default weights are Howard's demo model (demo weights, trained on synthetic data only); for "
             "production mattes install the official BGMv2 weights: `howard weights install "
             "pytorch_resnet50.pth`, then `--model resnet50`")


def weights_notice(model: dict) -> tuple[str, str] | None:
    """(level "warning"|"note", text) saying what the default weights are, or None for weights the
    user chose. `model`: a start event's or run report's "model" record (trained, demo)."""
    if not model.get("trained", True):
        return "warning", UNTRAINED_NOTE
    if model.get("demo"):
        return "note", DEMO_NOTE
    return None


@dataclass(frozen=True)
class Start:
    """The job is about to write `total` frames (`skipped` were already complete) to `output`."""

    total: int
    skipped: int = 0
    output: str | None = None
    model: dict = field(default_factory=dict)  # backbone, source, trained, demo, settings
    plate: str | None = None
    clean_plate: str | None = None
    event: str = START


@dataclass(frozen=True)
class Frame:
    """Frame `frame` was written (`done` of `total`); `flagged` frames say why in `reason`."""

    frame: int
    done: int
    total: int
    fps: float = 0.0
    eta_s: float | None = None
    flagged: bool = False
    reason: str | None = None
    output: str | None = None
    event: str = FRAME

    @classmethod
    def after(cls, frame: int, done: int, total: int, elapsed_s: float, *, flagged: bool = False,
              reason: str | None = None, output: str | None = None) -> Frame:
        """The event for the `done`th frame of `total`, `elapsed_s` seconds into writing them."""
        fps = done / elapsed_s if elapsed_s > 0 else 0.0
        return cls(frame, done, total, round(fps, 3), round((total - done) / fps, 1) if fps else None,
                   bool(flagged), reason if flagged else None, output)


@dataclass(frozen=True)
class Done:
    """The job finished: `done` frames written, its report at `report`."""

    done: int
    total: int
    skipped: int = 0
    fps: float | None = None
    report: str | None = None
    output: str | None = None
    flagged_frames: list = field(default_factory=list)
    event: str = DONE


_KINDS = {START: Start, FRAME: Frame, DONE: Done}


def as_dict(event) -> dict:
    """The wire form: {"event": kind, field: value, ...}."""
    record = dataclasses.asdict(event)
    return {"event": record.pop("event"), **record}


def parse(record: dict):
    """A typed event from its wire form, or None for another kind (farm engines add their own).
    Fields an older Howard did not send take their defaults; unknown fields are ignored."""
    cls = _KINDS.get(record.get("event"))
    if cls is None:
        return None
    fields = dataclasses.fields(cls)
    values = {f.name: record[f.name] for f in fields if record.get(f.name) is not None}
    # Only the counts (frame, done, total) have no default: a sender that left one out counted nothing.
    values.update({f.name: 0 for f in fields if f.name not in values and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING})
    return cls(**values)
