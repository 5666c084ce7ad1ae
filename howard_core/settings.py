"""Matte settings: every `howard matte` option, defined once.

    from howard_core.settings import MatteSettings
    s = MatteSettings(preset="hd", layers=("fg",))       # validated on construction
    s.replace(window=3)                                  # a changed copy, validated again
    MatteSettings.from_json(s.to_json()) == s            # what run reports and farm jobs carry
    s.to_argv()                                          # the `howard matte` flags for what differs

`MatteSettings` is the one definition of each option: its name, type, default, choices and help.
The CLI's `howard matte` flags are generated from it (`add_arguments` / `from_namespace`), the
host kit (`hostcli`) builds its argv with `to_argv`, the farm engines carry it, and the run
report records it. The network's own keys follow from it in one place (`network_settings`).

This module is the Python standard library only (no numpy, no torch, nothing else of Howard's),
like the host kit: a host's own Python loads it by path through `hostcli` (see
`howard_hostboot`), so that Nuke and Blender validate and spell options exactly as the CLI does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import numbers
import os
import re
from dataclasses import dataclass, field

try:
    from howard_core.errors import HowardError as _ErrorBase
except ImportError:  # loaded by path inside a host's Python, where howard_core cannot be imported
    _ErrorBase = Exception  # type: ignore[misc,assignment]

# The choice lists, for the CLI, the network, the hosts' menus and their tests.
PRESETS = ("hd", "4k")
REFINE_MODES = ("sampling", "thresholding", "full")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FORMATS = ("exr", "png", "alpha", "prores")
MISSING = ("error", "hold")
LAYERS = ("fg", "err", "ref", "bg")

# The options that shape the network's output, for `howard export-nuke` (a TorchScript file keeps them).
NETWORK_OPTIONS = ("model", "backbone_scale", "refine_mode", "sample_pixels", "refine_threshold")

# A job longer than this is a typo (`1-1000000000`), not a shot.
MAX_FRAMES = 1_000_000
_RANGE = re.compile(r"^(\d+)(?:-(\d+)(?:x(\d+))?)?$")


class SettingsError(_ErrorBase):
    """A bad option value: one line naming the option, the value and what is allowed. Inside Howard
    it is a `HowardError` (the CLI prints it as one line); a host sees it as `hostcli.HostError`."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def parse_frames(text: str) -> list[int]:
    """`--frames` text -> sorted unique frame numbers: comma-separated `12`, `1001-1100` (inclusive)
    and `1001-1100x2` (every second frame), e.g. `1,5,7-9` -> [1, 5, 7, 8, 9]."""
    items = [part.strip() for part in str(text).split(",")]
    if not any(items):
        raise SettingsError("--frames is empty; give a range such as 1001-1100 or a list such as 1,5,7-9")
    frames: set[int] = set()
    for item in items:
        m = _RANGE.match(item.replace(" ", ""))
        if not m:
            raise SettingsError(f"frame range {text!r} (--frames): cannot read {item!r}; use forms like 12, 1001-1100, "
                                f"1001-1100x2 or 1,5,7-9")
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) is not None else start
        step = int(m.group(3)) if m.group(3) is not None else 1
        if end < start:
            raise SettingsError(f"--frames {text!r}: {item!r} ends before it starts; write {end}-{start}")
        if step < 1:
            raise SettingsError(f"--frames {text!r}: step in {item!r} must be 1 or more")
        if (end - start) // step + 1 + len(frames) > MAX_FRAMES:
            raise SettingsError(f"--frames {text!r} asks for more than {MAX_FRAMES} frames; check the range")
        frames.update(range(start, end + 1, step))
    return sorted(frames)


def format_frames(frames, steps: bool = False) -> str:
    """Compact text that `parse_frames` reads back: [1, 2, 3, 7] -> '1-3,7'; with `steps` also
    every-nth runs, [1, 3, 5, 7] -> '1-7x2' (for command lines; messages keep the plain form)."""
    frames = sorted(frames)
    parts: list[str] = []
    i = 0
    while i < len(frames):
        j = i
        step = frames[i + 1] - frames[i] if i + 1 < len(frames) else 1
        if step != 1 and not steps:
            step = 1
        while j + 1 < len(frames) and frames[j + 1] == frames[j] + step:
            j += 1
        if step != 1 and j - i < 2:  # two frames a step apart read better as a list
            j, step = i, 1
        if i == j:
            parts.append(str(frames[i]))
        else:
            parts.append(f"{frames[i]}-{frames[j]}" + (f"x{step}" if step != 1 else ""))
        i = j + 1
    return ",".join(parts)


def _option(default, help: str, *, choices=None, flag: str | None = None, number=None, files: bool = False,
            farm_sets: bool = False):
    """A MatteSettings field with what the CLI and the hosts need to know about it.
    number: int or float for numeric options (also the CLI's type); files: the value may name a
    file (farm nodes may see it under another path); farm_sets: each farm chunk sets it itself."""
    meta = {"help": help, "choices": choices, "flag": flag, "number": number, "files": files,
            "farm_sets": farm_sets}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class MatteSettings:
    """Every option of a matte job. None leaves the choice to Howard (documented per option)."""

    frames: tuple[int, ...] | None = _option(
        None, "frame range, e.g. 1001-1100, 1001-1100x2 or 1,5,7-9 (default: all)", farm_sets=True)
    format: str | None = _option(None, "output kind (default: from -o; a folder gives EXR)", choices=FORMATS)
    layers: tuple[str, ...] = _option((), "extra EXR layers, comma list of fg,err,ref,bg", choices=LAYERS)
    compression: str | None = _option(
        None, "EXR codec: none, rle, zips, zip (default), piz, pxr24, or lossy b44, b44a (alpha too), dwaa, dwab "
        "(colour only); PNG: deflate level 0-9 (default 1, 9 smallest)")
    # A checkpoint path or installed weights name; from Python also a loaded network (not JSON, not farm).
    model: object = _option(None, "checkpoint file or installed weights name (default: bundled weights)",
                            files=True)
    preset: str | None = _option(None, "published settings for HD or 4K plates", choices=PRESETS)
    backbone_scale: float | None = _option(None, "resolution of the coarse pass (default 0.25)", number=float)
    refine_mode: str | None = _option(None, "which patches the refiner recomputes (default sampling)",
                                      choices=REFINE_MODES)
    sample_pixels: int | None = _option(None, "pixels refined per frame in sampling mode (default 80000)",
                                        number=int)
    refine_threshold: float | None = _option(None, "error threshold in thresholding mode (default 0.1)",
                                             number=float)
    device: str = _option("auto", "auto, cpu, cuda or cuda:N")
    precision: str = _option("auto", "network precision (auto: fp32 on the CPU, fp16 on a GPU)", choices=PRECISIONS)
    colorspace: str | None = _option(None, "plate colour space: linear, srgb or any OCIO name (default: by file "
                                     "type)")
    clean_colorspace: str | None = _option(None, "clean-plate colour space (default: the plate's, by file type)")
    ocio_config: str | None = _option(None, "OCIO config file (default: $OCIO, else the built-in studio config)",
                                      files=True)
    missing: str = _option("error", "what to do with a missing plate frame", choices=MISSING)
    resume: bool = _option(False, "skip frames whose outputs are already complete", flag="--resume",
                           farm_sets=True)
    align: bool = _option(True, "the clean plate already lines up (locked-off)", flag="--no-align")
    window: int = _option(2, "clean-plate candidates each side of the mapped frame", number=int)
    clean_offset: float | None = _option(None, "clean-plate frame for plate frame 0 of the clip", number=float)
    clean_scale: float | None = _option(None, "clean-plate frames per plate frame", number=float)
    batch_size: int = _option(1, "frames per network call", number=int)
    threads: int | None = _option(None, "CPU threads for inference, shared by two frames at once from 2 up "
                                  "(default: measured per frame)", number=int)
    # Each HD frame in flight holds 50-100 MB; on 2 cores a queue of 1 or 2 ran as fast as 3 and
    # peaked 60-210 MiB lower.
    queue_size: int = _option(2, "frames waiting between two stages of the job", number=int)

    def __post_init__(self):
        # Normalised here so equal settings compare equal and serialize the same, however given.
        if self.frames is not None:
            frames = parse_frames(self.frames) if isinstance(self.frames, str) else sorted({int(f) for f in
                                                                                            self.frames})
            object.__setattr__(self, "frames", tuple(frames))
        layers = self.layers.split(",") if isinstance(self.layers, str) else self.layers
        object.__setattr__(self, "layers", tuple(x.strip() for x in layers if str(x).strip()))
        if isinstance(self.model, os.PathLike):
            object.__setattr__(self, "model", os.fspath(self.model))
        for f in dataclasses.fields(self):  # a blank text field (an empty host knob) is the default
            value = getattr(self, f.name)
            if isinstance(value, str) and f.name not in ("frames", "layers"):
                object.__setattr__(self, f.name, value.strip() or f.default)
        self._validate()
        for f in dataclasses.fields(self):  # numpy scalars and the like as plain Python numbers (JSON)
            value = getattr(self, f.name)
            if f.metadata["number"] is not None and value is not None:
                object.__setattr__(self, f.name, f.metadata["number"](value))

    def _validate(self) -> None:
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None:
                continue
            if meta["number"] is not None:
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise SettingsError(f"{_label(f.name)}: expected a number, got {value!r}")
                if meta["number"] is int and not isinstance(value, numbers.Integral) and value != int(value):
                    raise SettingsError(f"{_label(f.name)}: expected a whole number, got {value!r}")
            if meta["choices"] and f.name != "layers" and value not in meta["choices"]:
                raise SettingsError(f"{_label(f.name)} {value!r} is not one of {', '.join(meta['choices'])}")
        unknown = [x for x in self.layers if x not in LAYERS]
        if unknown:
            raise SettingsError(f"unknown layer(s) {', '.join(unknown)}; choose from {', '.join(LAYERS)}")
        for name in ("sample_pixels", "batch_size", "threads", "queue_size"):
            value = getattr(self, name)
            # queue.Queue(0) would be unbounded: memory would grow with the clip.
            if value is not None and value < 1:
                raise SettingsError(f"{_label(name)} must be at least 1, got {value}")
        if self.window < 0:
            raise SettingsError(f"window must be 0 or more, got {self.window}")
        for name in ("backbone_scale", "refine_threshold", "clean_scale"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise SettingsError(f"{_label(name)} must be above 0, got {value}")

    # -- copies and names ----------------------------------------------------------------------------

    @classmethod
    def build(cls, settings: MatteSettings | None = None, **overrides) -> MatteSettings:
        """`settings` (default: all defaults) with `overrides` by option name; unknown names refused."""
        unknown = sorted(set(overrides) - set(cls.names()))
        if unknown:
            raise SettingsError(f"unknown matte option(s) {', '.join(unknown)}; the options are "
                                f"{', '.join(cls.names())}")
        base = settings if settings is not None else cls()
        return dataclasses.replace(base, **overrides) if overrides else base

    def replace(self, **overrides) -> MatteSettings:
        return self.build(self, **overrides)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def network_settings(self) -> dict:
        """The keyword arguments `howard_core.model.Matter` takes for these settings."""
        return {"preset": self.preset, "backbone_scale": self.backbone_scale, "refine_mode": self.refine_mode,
                "refine_sample_pixels": self.sample_pixels, "refine_threshold": self.refine_threshold}

    # -- JSON --------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain JSON values (tuples as lists). A loaded network in `model` is recorded by its class
        name: such settings describe a run but cannot be run again from JSON (`to_json` refuses)."""
        out = {}
        for name in self.names():
            value = getattr(self, name)
            if name == "model" and value is not None and not isinstance(value, str):
                value = f"<loaded {type(value).__name__}>"
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_json(self) -> str:
        if self.model is not None and not isinstance(self.model, str):
            raise SettingsError("settings with a loaded network cannot be written as JSON; give the model as a "
                                "checkpoint path or installed weights name")
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> MatteSettings:
        return cls.build(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str) -> MatteSettings:
        return cls.from_dict(json.loads(text))

    # -- the command line --------------------------------------------------------------------------

    def to_argv(self, skip=(), file_option=None) -> list[str]:
        """`howard matte` flags for every option that differs from its default, in field order.
        `skip`: option names left out; `file_option(path) -> path` rewrites options naming files."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in skip or value == f.default or value is None:
                continue
            if f.metadata["flag"]:  # a switch: present when the value differs from its default
                argv.append(f.metadata["flag"])
                continue
            if not isinstance(value, str) and f.name == "model":
                raise SettingsError("a loaded network cannot be passed to another process; give the model as "
                                    "a checkpoint path or installed weights name")
            if f.metadata["files"] and file_option is not None:
                value = file_option(value)
            argv += [_flag(f), _text(f.name, value)]
        return argv

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, names=None) -> None:
        """Add a flag for each option (or each of `names`) to an argparse parser; `from_namespace`
        reads them back. Values are checked by MatteSettings itself, so errors read the same in
        every host."""
        for f in dataclasses.fields(cls):
            if names is not None and f.name not in names:
                continue
            meta = f.metadata
            if meta["flag"]:
                parser.add_argument(meta["flag"], dest=f.name, action="store_const", const=not f.default,
                                    default=f.default, help=meta["help"])
            else:
                choices = meta["choices"] if f.name != "layers" else None
                parser.add_argument(_flag(f), dest=f.name, default=f.default, choices=choices,
                                    type=meta["number"] or str, help=meta["help"])

    @classmethod
    def from_namespace(cls, args: argparse.Namespace, names=None) -> MatteSettings:
        return cls.build(**{name: getattr(args, name) for name in cls.names() if names is None or name in names})

    @classmethod
    def farm_sets(cls) -> tuple[str, ...]:
        """The options a farm engine sets for each chunk itself (never passed on from the user)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["farm_sets"])

    @classmethod
    def file_options(cls) -> tuple[str, ...]:
        """The options whose value may name a file (farm nodes may see it under another path)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["files"])


def _label(name: str) -> str:
    return name.replace("_", " ")


def _flag(f) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def _text(name: str, value) -> str:
    if name == "frames":
        return format_frames(value, steps=True)
    if name == "layers":
        return ",".join(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
