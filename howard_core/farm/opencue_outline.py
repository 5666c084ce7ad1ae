"""OpenCue jobs for Howard, built with OpenCue's own outline library (opencue-pyoutline).

The job has two layers:

- "matte": the clip's frame range in chunks of `chunk` frames; each chunk runs
  `howard matte ... --frames #FRAME_START#-#FRAME_END# --resume`, OpenCue's RQD replacing the
  tokens with the chunk's first and last frame;
- "merge-reports", after the whole of "matte": `howard farm merge-reports`.

`write_outline` writes an outline script for `pycuerun FILE` (OpenCue's launcher) and returns the
outline; `job_spec` is the XML job specification Cuebot receives, used to check a job without one.
`submit` launches it where a Cuebot is configured (`CUEBOT_HOSTS`, or OpenCue's own config file).
"""

from __future__ import annotations

import os
from pathlib import Path

from howard_core.errors import HowardError
from howard_core.farm import jobs

HEADER = '''"""OpenCue outline for a Howard matte job, written by `howard farm opencue`.

Launch it with `pycuerun {name}`.
"""
from outline import current_outline
from outline.modules.shell import Shell

'''


def _outline_lib():
    try:
        import outline
        import outline.cuerun
        from outline.modules.shell import Shell
    except ImportError:
        raise HowardError("OpenCue jobs need opencue-pyoutline, part of Howard's farm extra: "
                          "pip install 'howard-core[farm]'") from None
    return outline, Shell


def frame_range(frames: list[int]) -> tuple[str, str]:
    """(OpenCue range, --frames text with the chunk tokens) for a clip of evenly spaced frames."""
    step = frames[1] - frames[0] if len(frames) > 1 else 1
    if any(b - a != step for a, b in zip(frames, frames[1:], strict=False)):
        raise HowardError(f"frames {jobs.chunk_text(frames)}: an OpenCue layer takes an evenly spaced range; "
                          f"submit each run of frames as its own job")
    suffix = f"x{step}" if step > 1 else ""
    span = f"{frames[0]}-{frames[-1]}{suffix}" if len(frames) > 1 else str(frames[0])
    return span, f"#FRAME_START#-#FRAME_END#{suffix}"


def layer_args(spec: jobs.FarmJob, chunk_size: int, cores: float, memory: str) -> list[dict]:
    """Each layer's name and Shell arguments."""
    span, tokens = frame_range(spec.frames)
    report = f"{spec.report_folder}/howard_report.#FRAME_START#-#FRAME_END#.json"
    matte = {"name": "matte", "command": spec.matte_argv(tokens, report), "range": span, "chunk": chunk_size,
             "cores": cores, "memory": memory}
    merge = {"name": "merge-reports", "command": spec.merge_argv() + ["--engine", "opencue"],
             "range": str(spec.frames[0]), "chunk": 1, "cores": 1, "memory": "1g"}
    return [matte, merge]


def build(spec: jobs.FarmJob, chunk_size: int, *, name: str, show: str | None = None, shot: str | None = None,
          user: str | None = None, cores: float = 2, memory: str = "4g"):
    """The outline (an `outline.Outline`) for `spec`."""
    outline, shell = _outline_lib()
    ol = outline.Outline(name, frame_range=frame_range(spec.frames)[0], show=show, shot=shot, user=user)
    layers = []
    for args in layer_args(spec, chunk_size, cores, memory):
        layer = shell(args.pop("name"), **args)
        ol.add_layer(layer)
        layers.append(layer)
    layers[1].depend_all(layers[0])
    return ol


def job_spec(ol) -> str:
    """The XML job specification Cuebot receives for `ol`, with the layers' commands as they run."""
    outline, _ = _outline_lib()
    return outline.cuerun.OutlineLauncher(ol).serialize(use_pycuerun=False)


def write_outline(spec: jobs.FarmJob, path, chunk_size: int, **options) -> Path:
    """An outline script for pycuerun with the same layers as `build`; returns its path."""
    from howard_core.io import write_text_atomic

    path = Path(path)
    cores, memory = options.get("cores", 2), options.get("memory", "4g")
    lines = [HEADER.format(name=path.name)]
    names = []
    for args in layer_args(spec, chunk_size, cores, memory):
        name = args.pop("name")
        var = name.replace("-", "_")
        names.append(var)
        kwargs = ", ".join(f"{k}={v!r}" for k, v in args.items())
        lines.append(f"{var} = Shell({name!r}, {kwargs})\n")
    lines.append(f"{names[1]}.depend_all({names[0]})\n")
    lines.append("\njob = current_outline()  # the outline pycuerun is loading this script into\n")
    for key in ("name", "show", "shot", "user"):
        if options.get(key):
            lines.append(f"job.set_{key}({options[key]!r})\n")
    write_text_atomic(path, "".join(lines))
    build(spec, chunk_size, **options)  # the same layers through the library: fails here, not on the farm
    return path


def cuebot_configured() -> bool:
    return bool(os.environ.get("CUEBOT_HOSTS") or os.environ.get("OPENCUE_CONFIG_FILE"))


def submit(ol):
    """Launches `ol` on the configured Cuebot; returns the launched jobs."""
    outline, _ = _outline_lib()
    try:
        # Through pycuerun, OpenCue's own runner: it runs each command as an argument list, no shell.
        return outline.cuerun.launch(ol)
    except Exception as exc:  # noqa: BLE001 - Cuebot's errors reach the user as one line
        raise HowardError(f"OpenCue submission failed ({type(exc).__name__}: {exc}); check CUEBOT_HOSTS, or "
                          f"launch the written outline with pycuerun") from None
