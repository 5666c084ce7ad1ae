"""Host kit: what the Nuke node and the Blender add-on share, with no host and no torch.

Host adapters run `howard matte ... --progress json` as a subprocess (a host's own Python
usually cannot import torch) and turn its output into progress, errors and a matte
sequence to load back. Everything here is the Python standard library only, so a host can
use this file even where the rest of `howard_core` cannot be imported:

    argv = matte_command(plate, clean_plate, out_folder, MatteSettings(preset="hd"))
    job = Job(argv).start()
    while not job.finished:           # a host polls from a timer or a worker thread
        for event in job.poll(): ...  # "start" / "frame" / "done" dicts, as the CLI prints them
    job.error                         # the CLI's one-line error, or None
    job.result()                      # MatteResult: the written pattern, frames on disk, report

`run(argv, on_event, should_cancel)` does the same loop, blocking.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


def _kit_module(name: str):
    """A module of the host kit beside this file (`settings`, `events`, standard library only): imported
    as part of howard_core where this file is, else (loaded by path inside a host's Python, see
    howard_hostboot) loaded by path the same way."""
    if __package__:
        return importlib.import_module(f"{__package__}.{name}")
    full = f"howard_hostkit_{name}"
    if full not in sys.modules:
        spec = importlib.util.spec_from_file_location(full, str(Path(__file__).with_name(f"{name}.py")))
        if spec is None or spec.loader is None:
            raise ImportError(f"Howard's host kit is incomplete: {name}.py is missing beside {__file__}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    return sys.modules[full]


settings = _kit_module("settings")
events = _kit_module("events")
MatteSettings = settings.MatteSettings
# The vocabulary hosts show and check against, defined once in settings and events.
PRESETS, REFINE_MODES, PRECISIONS = settings.PRESETS, settings.REFINE_MODES, settings.PRECISIONS
FORMATS, MISSING, LAYERS = settings.FORMATS, settings.MISSING, settings.LAYERS
EVENTS = events.EVENTS

# A killed job keeps every finished frame (they are renamed into place), so stopping is safe.
CANCEL_GRACE_S = 10.0
# Environment a host's Python sets for itself that would break another interpreter.
_HOST_PYTHON_ENV = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE")
_ERROR = re.compile(r"^howard(?: [\w-]+)?: error: (.*)$")
_NOTICE = re.compile(r"^howard: (?:note|warning): ")
_TOKEN = re.compile(r"#+|@+|%(0?\d*)d")
_NUMBERED = re.compile(r"^(.*?)(\d+)(\.[A-Za-z0-9]+)$")


# A failure a host shows to its user as one line (no traceback): a bad option (raised by
# MatteSettings itself) or anything else the kit refuses.
HostError = settings.SettingsError


# ---------------------------------------------------------------------------------------------------
# building command lines
# ---------------------------------------------------------------------------------------------------


def resolve_runner(cli: str | None = None, python: str | None = None, environ=None, which=shutil.which) -> list[str]:
    """The argv prefix that runs Howard's CLI.

    In order: `cli` (path to the `howard` executable), `python` (an interpreter with
    howard installed: `python -m howard_core.cli`), then $HOWARD_CLI, $HOWARD_PYTHON,
    then `howard` on PATH. Hosts pass their own setting (knob, preference) as cli/python.
    """
    env = os.environ if environ is None else environ
    candidates = ((cli, False, "the Howard CLI setting"), (python, True, "the Howard Python setting"),
                  (env.get("HOWARD_CLI"), False, "$HOWARD_CLI"), (env.get("HOWARD_PYTHON"), True, "$HOWARD_PYTHON"))
    for value, as_python, origin in candidates:
        if value and str(value).strip():
            path = os.path.expanduser(str(value).strip())
            found = path if os.path.isfile(path) else which(path)
            if not found:
                raise HostError(f"{origin} names {path}, which is not an executable file; fix the path")
            return [found, "-m", "howard_core.cli"] if as_python else [found]
    found = which("howard")
    if found:
        return [found]
    raise HostError("the howard command was not found: set HOWARD_CLI to the `howard` executable of the Python "
                    "environment where Howard is installed (or HOWARD_PYTHON to that environment's python)")


def _absolute(path, cwd) -> str:
    path = os.path.expanduser(os.fspath(path))
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(cwd or os.getcwd(), path))


def matte_command(plate, clean_plate, output, options: MatteSettings | None = None, runner: list[str] | None = None,
                  cwd=None, report: str | None = None) -> list[str]:
    """argv for `howard matte` with JSON progress; paths are made absolute (against `cwd`)
    so the events name files the host can open whatever the job's working folder. `options`:
    the job's MatteSettings (validated when made); `report`: the run report's path."""
    for name, value in (("plate", plate), ("clean plate", clean_plate), ("output", output)):
        if value is None or not str(value).strip():
            raise HostError(f"no {name} given; set the {name} path")
    out = str(output).strip()
    folder_like = out.endswith(("/", os.sep)) or not Path(out).suffix
    output_arg = _absolute(out, cwd)  # normalised: no trailing separator
    if folder_like and not output_arg.endswith(os.sep):
        output_arg += os.sep  # Howard reads a trailing separator as "this is a folder"
    args = (options or MatteSettings()).to_argv()
    if report is not None and str(report).strip():
        args += ["--report", str(report).strip()]
    return [*(runner or resolve_runner()), "matte", _absolute(str(plate).strip(), cwd),
            _absolute(str(clean_plate).strip(), cwd), "-o", output_arg, *args, "--progress", "json"]


FARM_KINDS = ("dask", "openjd", "opencue")


@dataclass
class FarmTarget:
    """Where a host's "Submit to farm" sends the job (see Howard's README, "Farms").

    kind "dask": `address` is a scheduler (tcp://host:8786, tls://..., local:N); the host runs the
    job's client like a local pull, so progress and loading the mattes work as for one. "openjd":
    `path` is the job bundle folder to write (for `openjd run` or `deadline bundle submit`).
    "opencue": `path` is the outline script to write (submitted where a Cuebot is configured).
    """

    kind: str
    address: str | None = None
    path: str | None = None
    chunk_size: int | None = None
    path_map: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.kind not in FARM_KINDS:
            raise HostError(f"farm {self.kind!r} is not one of {', '.join(FARM_KINDS)}")
        if self.kind == "dask" and not (self.address and str(self.address).strip()):
            raise HostError("no Dask scheduler address given; set it, e.g. tcp://scheduler:8786 or local:2")
        if self.kind != "dask" and not (self.path and str(self.path).strip()):
            what = "job bundle folder" if self.kind == "openjd" else "outline file"
            raise HostError(f"no {what} given for the {self.kind} job; set where to write it")
        if self.chunk_size is not None and int(self.chunk_size) < 1:
            raise HostError(f"chunk size must be at least 1, got {self.chunk_size}")


def farm_command(plate, clean_plate, output, options: MatteSettings | None, target: FarmTarget,
                 runner: list[str] | None = None, cwd=None, report: str | None = None) -> list[str]:
    """argv that sends a matte job to a farm: `howard matte --cluster` for Dask (JSON progress, run it
    as a Job), `howard farm openjd|opencue` for the others (it writes, or submits, the job and exits)."""
    target.validate()
    # Farm chunks always resume.
    options = (options or MatteSettings()).replace(resume=False)
    argv = matte_command(plate, clean_plate, output, options, runner=runner, cwd=cwd, report=report)
    extra = ["--chunk-size", str(int(target.chunk_size))] if target.chunk_size else []
    for rule in target.path_map:
        extra += ["--path-map", str(rule)]
    if target.kind == "dask":
        return [*argv, "--cluster", str(target.address).strip(), *extra]
    cut = argv.index("matte")
    flag = "--bundle" if target.kind == "openjd" else "--outline"
    # The same options as a local pull, minus --progress (the farm command sets it for every chunk).
    return [*argv[:cut], "farm", target.kind, *argv[cut + 1:-2], flag, _absolute(str(target.path).strip(), cwd),
            *extra]


def pull_command(plate, clean_plate, folder, options: MatteSettings | None = None, target: FarmTarget | None = None,
                 runner: list[str] | None = None, cwd=None) -> tuple[list[str], str | None]:
    """(argv, farm report) for a host's Pull into `folder`: `howard matte` here (target None), or
    through a farm (`farm_command`). An OpenJD or OpenCue job runs elsewhere; the report it writes
    when every chunk and the merge are done (`farm_report_path`) is returned as the sign to load
    its mattes, else None (the job's own events say when it is done)."""
    output = os.path.join(os.fspath(folder), "")  # a trailing separator: Howard reads it as a folder
    if target is None:
        return matte_command(plate, clean_plate, output, options, runner=runner, cwd=cwd), None
    report = farm_report_path(folder) if target.kind != "dask" else None
    return farm_command(plate, clean_plate, output, options, target, runner=runner, cwd=cwd, report=report), report


def export_nuke_command(output, options: MatteSettings | None = None, runner: list[str] | None = None,
                        cwd=None) -> list[str]:
    """argv for `howard export-nuke` (TorchScript for Nuke's Inference node): the file, and the
    network options of `options` (`settings.NETWORK_OPTIONS`; the others do not apply)."""
    if output is None or not str(output).strip():
        raise HostError("no output file given for the TorchScript export")
    skip = [name for name in MatteSettings.names() if name not in settings.NETWORK_OPTIONS]
    return [*(runner or resolve_runner()), "export-nuke", "-o", _absolute(str(output).strip(), cwd),
            *(options or MatteSettings()).to_argv(skip=skip)]


def format_command(argv: list[str]) -> str:
    """The argv as one line a user can paste into their shell (for logs and error reports)."""
    argv = [str(a) for a in argv]
    return subprocess.list2cmdline(argv) if os.name == "nt" else " ".join(shlex.quote(a) for a in argv)


def subprocess_env(environ=None) -> dict:
    """The environment for the howard process: the host's, minus the Python variables a host
    sets for its own interpreter, with unbuffered UTF-8 output."""
    env = dict(os.environ if environ is None else environ)
    for name in _HOST_PYTHON_ENV:
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


# ---------------------------------------------------------------------------------------------------
# reading the CLI's output
# ---------------------------------------------------------------------------------------------------


def parse_event(line) -> dict | None:
    """One `--progress json` line -> the event dict, or None for anything else (noise, blank)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    text = str(line).strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("event") not in EVENTS:
        return None
    return event


def error_message(stderr_lines, returncode: int | None) -> str | None:
    """The one line to show for a finished job: the CLI's `howard: error: ...` text (an
    argparse complaint, an interruption, else the last stderr line unless it is a notice); None on success."""
    lines = [str(x).strip() for x in stderr_lines if str(x).strip()]
    for line in reversed(lines):
        m = _ERROR.match(line)
        if m:
            return m.group(1).strip()
    if returncode in (0, None):
        return None
    # Only the last line says why it stopped: after a crash that is Python's exception line, and the
    # `howard: note:` / `warning:` lines printed earlier (the demo-weights note) are not the error.
    last = lines[-1] if lines else None
    if last and last.startswith("howard: ") and not _NOTICE.match(last):
        return last[len("howard: "):]
    tail = f": {last}" if last and not _NOTICE.match(last) else ""
    return f"howard stopped with exit code {returncode}{tail}"


class Progress:
    """Folds events into what a progress bar and status line need."""

    def __init__(self):
        self.total = 0
        self.done = 0
        self.skipped = 0
        self.frame: int | None = None
        self.fps: float | None = None
        self.eta_s: float | None = None
        self.flagged: list[int] = []
        self.output: str | None = None
        self.report: str | None = None
        self.finished = False
        self.warnings: list[str] = []
        self.last_reason: str | None = None

    def feed(self, event: dict) -> None:
        typed = events.parse(event)
        if isinstance(typed, events.Start):
            self.total, self.skipped = typed.total, typed.skipped
            self.output = typed.output or self.output
            notice = events.weights_notice(typed.model)
            if notice:
                self.warnings.append(f"Howard {notice[0]}: {notice[1]}")
        elif isinstance(typed, events.Frame):
            self.frame = typed.frame
            self.done = typed.done or self.done
            self.total = typed.total or self.total
            self.fps, self.eta_s = typed.fps, typed.eta_s
            if typed.flagged and self.frame not in self.flagged:
                self.flagged.append(self.frame)
                self.last_reason = typed.reason
        elif isinstance(typed, events.Done):
            self.finished = True
            self.done = typed.done or self.done
            self.total = typed.total or self.total
            self.output = typed.output or self.output
            self.report = typed.report or self.report
            self.flagged = sorted(set(self.flagged) | set(typed.flagged_frames))

    @property
    def fraction(self) -> float:
        if self.finished:
            return 1.0
        return min(1.0, self.done / self.total) if self.total else 0.0

    def status(self) -> str:
        """A short status line, e.g. `Howard: frame 1003 (3/12), 2.1 fps, 4 s left, 1 flagged`."""
        if self.finished:
            text = f"Howard: done, {self.done} frames"
        elif self.frame is None:
            text = f"Howard: starting, {self.total} frames" if self.total else "Howard: starting"
        else:
            text = f"Howard: frame {self.frame} ({self.done}/{self.total})"
            if self.fps:
                text += f", {self.fps:.1f} fps"
            if self.eta_s is not None:
                text += f", {self.eta_s:.0f} s left"
        if self.flagged:
            text += f", {len(self.flagged)} flagged for review"
        return text


# ---------------------------------------------------------------------------------------------------
# finding what was written
# ---------------------------------------------------------------------------------------------------


def _split_pattern(pattern: str):
    name = os.path.basename(pattern)
    tokens = list(_TOKEN.finditer(name))
    if len(tokens) != 1:
        return None
    tok = tokens[0]
    padding = len(tok.group(0)) if tok.group(0)[0] in "#@" else int(tok.group(1) or 0)
    return os.path.dirname(pattern), name[: tok.start()], name[tok.end():], 0 if padding == 1 else padding


def frame_files(pattern, cwd=None) -> dict[int, str]:
    """{frame: path} of the files on disk matching `plate.####.exr` / `%04d` / `@@@@` (as
    Howard names them: padding is a minimum width); {} for a name with no frame token."""
    parts = _split_pattern(_absolute(pattern, cwd))
    if parts is None:
        return {}
    folder, prefix, suffix, padding = parts
    rx = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
    found = {}
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return {}
    for name in names:
        m = rx.match(name)
        if not m:
            continue
        digits = m.group(1)
        if len(digits) == padding or (len(digits) > padding and (digits[0] != "0" or digits == "0")):
            found[int(digits)] = os.path.join(folder, name)
    return dict(sorted(found.items()))


def frame_path(pattern: str, frame: int) -> str:
    """The file of `frame` in `pattern` (`/x/matte.####.exr`, 1001 -> `/x/matte.1001.exr`)."""
    parts = _split_pattern(pattern)
    if parts is None:
        return pattern
    folder, prefix, suffix, padding = parts
    return os.path.join(folder, f"{prefix}{frame:0{padding}d}{suffix}")


def sequence_pattern_for_file(path) -> str | None:
    """`/x/plate.1001.exr` -> `/x/plate.####.exr` (one `#` per digit); None when the name
    carries no frame number. Hosts hold image sequences as one frame's file name."""
    path = os.fspath(path)
    m = _NUMBERED.match(os.path.basename(path))
    if not m:
        return None
    return os.path.join(os.path.dirname(path), m.group(1) + "#" * len(m.group(2)) + m.group(3))


def default_output_folder(plate) -> str:
    """Where mattes go when the user names no folder: `howard/` beside the plate."""
    return os.path.join(os.path.dirname(os.path.abspath(os.fspath(plate))), "howard") + os.sep


@dataclass
class MatteResult:
    """What a successful `howard matte` run wrote."""

    output: str  # pattern (`/x/plate_matte.####.exr`) or single file (movie, still)
    report: str | None
    frames: dict[int, str] = field(default_factory=dict)  # frame -> file, from the disk
    flagged: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def is_sequence(self) -> bool:
        return _split_pattern(self.output) is not None

    @property
    def first(self) -> int | None:
        return next(iter(self.frames), None)

    @property
    def last(self) -> int | None:
        return next(reversed(self.frames), None) if self.frames else None

    @property
    def first_file(self) -> str | None:
        if self.frames:
            return self.frames[self.first]
        return None if self.is_sequence else self.output

    def summary(self) -> list[str]:
        """Lines for the user: what was written, then flagged frames and warnings, if any."""
        lines = [f"Howard wrote {len(self.frames) or 1} frame(s): {self.output}"]
        if self.flagged:
            shown = ", ".join(str(f) for f in self.flagged[:12]) + (" ..." if len(self.flagged) > 12 else "")
            lines.append(f"{len(self.flagged)} frame(s) flagged for review (alignment): {shown}; see {self.report}")
        return lines + list(self.warnings)


def result_from(progress: Progress, cwd=None) -> MatteResult:
    """The MatteResult for a job whose `done` event has been seen."""
    if not progress.finished or not progress.output:
        raise HostError("howard finished without reporting its output (no `done` event); see the job log")
    output = _absolute(progress.output, cwd)
    report = _absolute(progress.report, cwd) if progress.report else None
    result = MatteResult(output, report, frame_files(output), list(progress.flagged), list(progress.warnings))
    if result.is_sequence and not result.frames:
        raise HostError(f"{output}: howard reported success but no frames are on disk; check the output folder")
    return result


def farm_report_path(output_folder) -> str:
    """Where a host asks a farm job (OpenJD, OpenCue) to write its merged report: the sign that the
    whole job, every chunk and the merge, has finished."""
    return os.path.join(os.fspath(output_folder), "howard_report.farm.json")


def result_from_report(path) -> MatteResult | None:
    """The MatteResult of a finished farm job from its merged report; None while it is not there."""
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise HostError(f"{path}: the farm job's report cannot be read ({exc}); see the farm's job log") from None
    output = report.get("output")
    if not output:
        raise HostError(f"{path}: the farm job's report names no output; see the farm's job log")
    return MatteResult(output, str(path), frame_files(output), list(report.get("flagged_frames") or []))


# ---------------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------------


class Job:
    """One howard process, read by background threads so a host's UI thread never blocks.

    `poll()` returns the events that arrived since the last call (and folds them into
    `progress`); `finished`, `error`, `cancelled` and `result()` tell how it ended.
    """

    def __init__(self, argv: list[str], cwd=None, environ=None, expect_done: bool = True):
        self.argv = [str(a) for a in argv]
        self.expect_done = expect_done  # False for commands without progress events (export-nuke)
        self.cwd = os.fspath(cwd) if cwd is not None else None
        self.env = subprocess_env(environ)
        self.progress = Progress()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=200)
        self.noise: collections.deque[str] = collections.deque(maxlen=50)  # non-JSON stdout lines
        self.cancelled = False
        self.proc: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._killer: threading.Timer | None = None

    def start(self) -> Job:
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # a Ctrl-C in the host's terminal is not the job's
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, cwd=self.cwd, env=self.env, text=True,
                                         encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        except OSError as exc:
            raise HostError(f"could not start {self.argv[0]}: {exc.strerror or exc}") from exc
        for target, stream in ((self._read_stdout, self.proc.stdout), (self._read_stderr, self.proc.stderr)):
            t = threading.Thread(target=target, args=(stream,), name="howard-job-reader", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _read_stdout(self, stream) -> None:
        for line in stream:
            event = parse_event(line)
            if event is not None:
                self._events.put(event)
            elif line.strip():
                self.noise.append(line.rstrip("\n"))
        stream.close()

    def _read_stderr(self, stream) -> None:
        for line in stream:
            self.stderr_tail.append(line.rstrip("\n"))
        stream.close()

    def poll(self, on_event=None) -> list[dict]:
        """New events since the last call, each folded into `progress` and then handed to
        `on_event(event, progress)` if given; never blocks."""
        events = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            self.progress.feed(event)
            events.append(event)
            if on_event is not None:
                on_event(event, self.progress)
        return events

    @property
    def finished(self) -> bool:
        """True once the process has exited and all its output has been read (and polled)."""
        if self.proc is None or self.proc.poll() is None:
            return False
        if any(t.is_alive() for t in self._threads):
            return False
        return self._events.empty()

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def error(self) -> str | None:
        """The one line to show when the job failed; None while running or on success."""
        if not self.finished:
            return None
        if self.cancelled:
            return "cancelled; finished frames are kept, pull again with resume on to continue"
        message = error_message(self.stderr_tail, self.returncode)
        if message is None and self.expect_done and not self.progress.finished:
            message = "howard exited without finishing the job (no `done` event)"
        return message

    def result(self) -> MatteResult:
        if self.error is not None:
            raise HostError(self.error)
        return result_from(self.progress, self.cwd)

    def cancel(self) -> None:
        """Ask the job to stop (SIGINT where there is one, so it stops between frames), then
        kill it if it is still running after CANCEL_GRACE_S. Never blocks."""
        self.cancelled = True
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            if os.name == "nt":
                proc.terminate()
            else:
                proc.send_signal(signal.SIGINT)
        except OSError:
            return
        self._killer = threading.Timer(CANCEL_GRACE_S, self._kill)
        self._killer.daemon = True
        self._killer.start()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> bool:
        """Block until finished, polling (for scripts and tests); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.poll()
            if self.finished:
                return True
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(interval)


def run(argv: list[str], on_event=None, should_cancel=None, poll_interval: float = 0.1, cwd=None,
        environ=None) -> MatteResult:
    """Run a matte job to the end, calling `on_event(event, progress)` for every event and
    stopping when `should_cancel()` turns true; returns the MatteResult or raises HostError."""
    job = Job(argv, cwd=cwd, environ=environ).start()
    while True:
        job.poll(on_event)
        if job.finished:
            break
        if should_cancel is not None and not job.cancelled and should_cancel():
            job.cancel()
        time.sleep(poll_interval)
    return job.result()


def main(argv=None) -> int:
    """`python -m howard_core.hostcli --where`: print this file's path (hosts locate it with this)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--where"]:
        print(os.path.abspath(__file__))
        return 0
    print("usage: python -m howard_core.hostcli --where", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
