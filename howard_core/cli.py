"""`howard`: the command line, a thin layer over the Python API.

    howard matte PLATE CLEAN_PLATE -o OUTPUT [options]    the main job
    howard align PLATE CLEAN_PLATE -o OUTPUT              aligned clean plate + QC JSON only
    howard demo [--out DIR]                               the main job on a generated shot
    howard info                                           versions, devices, weights
    howard weights list|install FILE|verify|download NAME --url URL
    howard export-nuke -o FILE [--model M]                TorchScript for Nuke's Inference node
    howard train ... | howard eval ...                    training and evaluation (see --help)
    howard train bundle RUN                               a finished run -> the bundled default weights
    howard bench model|align|pipeline|e2e                 benchmarks printing JSON

Any failure a user can fix prints one line, `howard: error: ...`, and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import NoReturn

from howard_core.errors import HowardError
from howard_core.events import weights_notice
from howard_core.settings import MatteSettings


def _print_weights_notice(model: dict, stream) -> None:
    notice = weights_notice(model)
    if notice:
        print(f"howard: {notice[0]}: {notice[1]}", file=stream)


# ---------------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------------


class TerminalProgress:
    """A one-line progress bar on stderr; flagged frames are listed as they happen."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.start = time.perf_counter()

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "start":
            _print_weights_notice(event["model"], self.stream)
            skipped = f" ({event['skipped']} already complete, skipped)" if event["skipped"] else ""
            print(f"howard: {event['total']} frames -> {event['output']}{skipped}", file=self.stream)
        elif kind == "frame":
            if event["flagged"]:
                print(f"\rhoward: frame {event['frame']} flagged: {event['reason']}", file=self.stream)
            width = 30
            filled = int(width * event["done"] / max(event["total"], 1))
            eta = f"{event['eta_s']:.0f}s" if event["eta_s"] is not None else "?"
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {event['done']}/{event['total']} "
                              f"frame {event['frame']}  {event['fps']:.2f} fps  eta {eta}   ")
            self.stream.flush()
        elif kind == "done":
            self.stream.write("\n")
            flagged = event["flagged_frames"]
            note = f"; {len(flagged)} frames flagged for review ({frame_list(flagged)})" if flagged else ""
            print(f"howard: done, {event['done']} frames{note}; report {event['report']}", file=self.stream)


def frame_list(frames: list, limit: int = 12) -> str:
    """Frame numbers for a one-line message: the first `limit`, then how many more."""
    shown = ", ".join(str(f) for f in frames[:limit])
    return shown + (f" and {len(frames) - limit} more" if len(frames) > limit else "")


def warn_alignment_fallbacks(report: dict, stream=None) -> None:
    """Say on `stream` (default stderr) which frames' alignment fell back (no clean-plate candidate
    fitted), loudly when every frame did: the mattes of such a run are not to be trusted, however
    quietly it finished."""
    stream = stream or sys.stderr
    frames = report.get("frames") or []
    fell = [r.get("frame", r.get("plate_frame")) for r in frames if r.get("fallback") not in (None, "wider_window")]
    if not fell:
        return
    where = f"; each frame's reason is in {report['report']}" if report.get("report") else ""
    if len(fell) == len(frames):
        print(f"howard: WARNING: alignment fell back on EVERY frame ({len(fell)} of {len(frames)}): no clean-plate "
              "frame could be fitted to the plate, so the clean plate is not lined up and the mattes cannot be "
              "trusted. Check that the clean plate shows the same set from the same camera, and its timing "
              f"(--clean-offset / --clean-scale){where}", file=stream)
    else:
        print(f"howard: alignment fell back on {len(fell)} of {len(frames)} frames ({frame_list(fell)}); check "
              f"their mattes{where}", file=stream)


def json_progress(event: dict) -> None:
    """One JSON object per line on stdout, for host adapters."""
    print(json.dumps(event, default=str), flush=True)


def _progress(mode: str):
    if mode == "json":
        return json_progress
    if mode == "none" or (mode == "auto" and not sys.stderr.isatty()):
        return None
    return TerminalProgress()


def _with_weights_notice(progress):
    """Wrap a progress callback (or None) so untrained or demo weights are reported on stderr in
    every progress mode, not only by the terminal bar (which says it itself): farm logs need it too."""
    if isinstance(progress, TerminalProgress):
        return progress

    def report(event: dict) -> None:
        if event["event"] == "start":
            _print_weights_notice(event["model"], sys.stderr)
        if progress is not None:
            progress(event)

    return report


# ---------------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------------


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", default="auto", choices=["auto", "bar", "json", "none"])


def _security(args):
    """Dask TLS settings from --tls-* (None: Dask's own configuration)."""
    if not (args.tls_ca_file or args.tls_cert or args.tls_key):
        return None
    try:
        from distributed.security import Security
    except ImportError:
        raise HowardError("--tls-* need Dask's distributed, part of Howard's farm extra: "
                          "pip install 'howard-core[farm]'") from None
    return Security(tls_ca_file=args.tls_ca_file, tls_client_cert=args.tls_cert, tls_client_key=args.tls_key,
                    require_encryption=True)


def cmd_matte(args) -> int:
    from howard_core.runtime import import_in_background

    # torch, the slowest import, alongside the I/O modules; this process only runs eager inference.
    import_in_background("howard_core.model", eager_only=True)
    from howard_core import matte

    if args.cluster is None and args.chunk_size is not None:
        raise HowardError("--chunk-size splits a --cluster job; give --cluster local:N or a scheduler address too")
    farm = {}
    if args.cluster:
        from howard_core.farm.jobs import PathMap

        farm = {"cluster": args.cluster, "chunk_size": args.chunk_size, "security": _security(args),
                "path_map": PathMap.parse(args.path_map)}
    report = matte(args.plate, args.clean_plate, args.output, MatteSettings.from_namespace(args),
                   report=args.report, progress=_with_weights_notice(_progress(args.progress)), **farm)
    warn_alignment_fallbacks(report)
    return 0


def cmd_align(args) -> int:
    from howard_core.clean_plate import OPTIONS, align_clip

    report = align_clip(args.plate, args.clean_plate, args.output, MatteSettings.from_namespace(args, OPTIONS),
                        report=args.report, progress=_progress(args.progress))
    warn_alignment_fallbacks(report)
    return 0


def cmd_demo(args) -> int:
    from howard_core.demo import run_demo

    report = run_demo(args.out, width=args.width, height=args.height, frames=args.frames,
                      device=args.device, precision=args.precision, progress=_progress(args.progress))
    print(f"howard demo: plate      {report['inputs']['plate']}")
    print(f"howard demo: clean plate {report['inputs']['clean_plate']}")
    print(f"howard demo: mattes     {report['output']} (RGBA premultiplied + fg/err/ref/bg layers)")
    print(f"howard demo: report     {report['report']}")
    print(f"howard demo: contact sheet {report['contact_sheet']}")
    print(f"howard demo: {report['frames_done']} frames at {report['timing']['fps']} fps")
    notice = weights_notice(report["model"])
    if notice:
        print(f"howard demo: NOTE {notice[1]}")
    return 0


def cmd_info(args) -> int:
    import torch

    from howard_core import weights
    from howard_core.model import checkpoint
    from howard_core.model.engine import cpu_supports_bf16
    from howard_core.runtime import versions

    devices = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    bundled = checkpoint.DEFAULT_WEIGHTS
    info = {"versions": versions(), "devices": devices, "cpu_bf16": cpu_supports_bf16(),
            "threads": torch.get_num_threads(),
            "default_weights": weights.default_weights_info(bundled),
            "weights_dir": str(weights.weights_dir()), "weights": weights.list_weights()}
    print(json.dumps(info, indent=2))
    return 0


def cmd_weights(args) -> int:
    from howard_core import weights

    if args.action == "list":
        rows = weights.list_weights()
        print(f"weights folder: {weights.weights_dir()}")
        for r in rows:
            state = "installed" if r["installed"] else "not installed"
            sha = f" sha256 {r['sha256']}" if r["sha256"] else ""
            print(f"  {r['name']:<24} {r['backbone'] or '?':<12} {state}{sha}")
        if not any(r["installed"] for r in rows):
            print(f"get the official checkpoints from {weights.SOURCE_PAGE}, then `howard weights install FILE`")
        return 0
    if args.action == "install":
        if not args.file:
            raise HowardError("howard weights install needs the checkpoint FILE to install")
        rec = weights.install(args.file, name=args.name)
        print(f"installed {rec['name']} ({rec['backbone']} {rec['kind']}, {rec['format']}) -> {rec['path']}")
        print(f"sha256 {rec['sha256']}")
        return 0
    if args.action == "verify":
        rows = weights.verify()
        for r in rows:
            print(f"  {r['name']:<24} {'ok' if r['ok'] else 'FAILED: ' + r['problem']}")
        if not rows:
            print("no weights installed")
        return 0 if all(r["ok"] for r in rows) else 1
    if not args.file or not args.url:
        raise HowardError("howard weights download NAME --url URL: give the weights name and the file's address")
    rec = weights.download(args.file, args.url)
    print(f"downloaded and installed {rec['name']} -> {rec['path']} (sha256 {rec['sha256']})")
    return 0


def cmd_export_nuke(args) -> int:
    from howard_core.model import export_torchscript, load_model
    from howard_core.settings import NETWORK_OPTIONS
    from howard_core.weights import resolve, weights_status

    settings = MatteSettings.from_namespace(args, NETWORK_OPTIONS)
    model = load_model(resolve(settings.model) if settings.model else None)
    network = {k: v for k, v in settings.network_settings().items() if v is not None}
    path = export_torchscript(model, args.output, **network)
    print(f"wrote {path}: 6-channel input (plate RGB, aligned clean-plate RGB, sRGB 0..1) -> "
          f"4-channel output (foreground RGB, alpha); convert it to .cat with Nuke's CatFileCreator")
    _print_weights_notice(weights_status(model), sys.stderr)
    return 0


def _farm_job(args, path_map):
    from howard_core.farm import jobs

    settings = MatteSettings.from_namespace(args)
    clip = jobs.survey(args.plate, args.clean_plate, args.output, settings)
    size = jobs.chunk_size_for(args.chunk_size, len(clip.frames), args.workers_hint)
    argv = settings.to_argv(skip=MatteSettings.farm_sets(), file_option=path_map.file_option)
    spec = jobs.FarmJob(plate=path_map(args.plate), clean_plate=path_map(args.clean_plate),
                        output=path_map(args.output), options=tuple(argv),
                        frames=clip.frames, chunks=jobs.split_chunks(clip.frames, size),
                        report_folder=path_map(clip.folder / jobs.REPORT_FOLDER),
                        merged_report=path_map(args.report or clip.merged_report),
                        howard=args.howard or jobs.howard_command())
    return spec, size


def cmd_farm(args) -> int:
    from howard_core.farm import jobs

    spec, size = _farm_job(args, jobs.PathMap.parse(args.path_map))
    name = args.name or f"howard-{os.path.basename(args.plate).split('.')[0] or 'matte'}"
    if args.engine == "openjd":
        from howard_core.farm import openjd_bundle

        path = openjd_bundle.write_bundle(spec, args.bundle, name=name, cores=args.cores,
                                          memory_mib=args.memory_mib)
        print(f"wrote {path} ({len(spec.chunks)} chunks of up to {size} frames) and its parameter values; "
              f"run it here with `openjd run {path}`, or send it to Deadline Cloud with "
              f"`deadline bundle submit {path.parent}`")
        return 0
    from howard_core.farm import opencue_outline

    options = {"name": name, "show": args.show, "shot": args.shot, "user": args.user,
               "cores": args.cores or 2, "memory": f"{args.memory_mib}m" if args.memory_mib else "4g"}
    path = opencue_outline.write_outline(spec, args.outline, size, **options)
    print(f"wrote {path}: OpenCue job {name}, {len(spec.chunks)} chunks of up to {size} frames")
    if opencue_outline.cuebot_configured() and not args.no_submit:
        jobs_launched = opencue_outline.submit(opencue_outline.build(spec, size, **options))
        print(f"submitted to Cuebot: {', '.join(j.name() for j in jobs_launched)}")
    else:
        print(f"no Cuebot configured (CUEBOT_HOSTS); launch it with `pycuerun {path}`")
    return 0


def cmd_merge_reports(args) -> int:
    from pathlib import Path

    from howard_core.farm import jobs
    from howard_core.settings import parse_frames

    folder = Path(args.folder)
    if not folder.is_dir():
        raise HowardError(f"{folder}: no such chunk-report folder; run the farm job's chunks first")
    expected = parse_frames(args.frames) if args.frames else None
    merged = jobs.merge_reports(sorted(folder.glob("howard_report.*.json")), Path(args.output),
                                engine={"kind": args.engine}, expected=expected)
    lost = merged["frames_without_record"]
    print(f"merged {merged['frames_done']} frames into {merged['report']}"
          + (f"; no record for {len(lost)} frames ({lost[0]}...)" if lost else ""))
    return 1 if lost else 0


def _add_path_map(p) -> None:
    p.add_argument("--path-map", action="append", metavar="FROM=TO",
                   help="farm jobs: workstation prefix -> farm prefix for every path the job carries (repeatable)")


def _add_farm_parser(sub) -> None:
    farm = sub.add_parser("farm", help="render-farm jobs: OpenJD (Deadline Cloud) bundles, OpenCue outlines")
    engines = farm.add_subparsers(dest="engine", required=True)
    for engine, text in (("openjd", "write an Open Job Description job bundle (Deadline Cloud)"),
                         ("opencue", "write (and with a Cuebot, submit) an OpenCue job")):
        p = engines.add_parser(engine, help=text)
        p.add_argument("plate")
        p.add_argument("clean_plate")
        p.add_argument("-o", "--output", required=True, help="output pattern or folder, as the farm nodes see it "
                       "after --path-map")
        MatteSettings.add_arguments(p)
        p.add_argument("--report", help="the merged report's path (default: beside the outputs)")
        p.add_argument("--chunk-size", type=int, help="frames per task (default: about two chunks per node)")
        p.add_argument("--workers-hint", type=int, default=10, help="nodes expected, for the default chunk size")
        p.add_argument("--howard", help="the howard command on the farm nodes (default: this install's)")
        _add_path_map(p)
        p.add_argument("--name", help="job name")
        p.add_argument("--cores", type=int, help="CPU cores each task asks for")
        p.add_argument("--memory-mib", type=int, help="memory each task asks for, MiB")
        if engine == "openjd":
            p.add_argument("--bundle", required=True, help="folder for template.yaml and parameter_values.yaml")
        else:
            p.add_argument("--outline", required=True, help="outline script to write (for pycuerun)")
            p.add_argument("--show")
            p.add_argument("--shot")
            p.add_argument("--user")
            p.add_argument("--no-submit", action="store_true", help="only write the outline, even with a Cuebot")
        _add_progress(p)  # accepted for a command line shared with `howard matte`; chunks set their own
        p.set_defaults(func=cmd_farm)
    p = engines.add_parser("merge-reports", help="one report from a farm job's chunk reports")
    p.add_argument("folder", help="the folder of chunk reports (howard_report.*.json)")
    p.add_argument("-o", "--output", required=True, help="merged report path")
    p.add_argument("--frames", help="the job's frames; frames outside are ignored, missing ones are named")
    p.add_argument("--engine", default="farm", help="engine name recorded in the report")
    p.set_defaults(func=cmd_merge_reports)


def cmd_bench(args) -> int:
    import importlib

    module = importlib.import_module(f"howard_core.bench.{args.what}")
    return module.main(args.rest)


def cmd_train(args) -> int:
    if args.rest[:1] == ["bundle"]:
        from howard_core.train.bundle import main as bundle_main

        return bundle_main(args.rest[1:])
    from howard_core.train.trainer import main

    return main(args.rest)


def cmd_eval(args) -> int:
    from howard_core.train.evaluate import main

    return main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    from howard_core.clean_plate import OPTIONS as ALIGN_OPTIONS
    from howard_core.settings import NETWORK_OPTIONS

    ap = argparse.ArgumentParser(prog="howard", description="Background matting from a plate and a clean plate.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("matte", help="pull mattes for a plate using its clean plate")
    p.add_argument("plate", help="plate: plate.####.exr, plate.%%04d.dpx, a folder, a movie or a still")
    p.add_argument("clean_plate", help="clean plate: sequence, movie or a single still")
    p.add_argument("-o", "--output", required=True, help="output pattern, file or folder")
    MatteSettings.add_arguments(p)
    p.add_argument("--report", help="run report JSON path (default: beside the outputs)")
    _add_progress(p)
    p.add_argument("--cluster", help="run on Dask: local:N (N worker processes here), tcp://HOST:8786 or "
                   "tls://HOST:8786 (a running scheduler) or a scheduler file")
    p.add_argument("--chunk-size", type=int, help="frames per Dask task (default: about two chunks per worker)")
    p.add_argument("--tls-ca-file", help="Dask TLS: CA certificate (default: Dask's configuration)")
    p.add_argument("--tls-cert", help="Dask TLS: this client's certificate")
    p.add_argument("--tls-key", help="Dask TLS: this client's private key")
    _add_path_map(p)
    p.set_defaults(func=cmd_matte)

    _add_farm_parser(sub)

    p = sub.add_parser("align", help="write the clean plate aligned to every plate frame, plus QC JSON")
    p.add_argument("plate")
    p.add_argument("clean_plate")
    p.add_argument("-o", "--output", required=True, help="output pattern or folder (EXR in the plate's space)")
    p.add_argument("--report", help="QC JSON path (default: beside the outputs)")
    MatteSettings.add_arguments(p, ALIGN_OPTIONS)
    _add_progress(p)
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("demo", help="run the main job on a generated shot (nothing downloaded)")
    p.add_argument("--out", default="howard_demo", help="folder for inputs, outputs and the contact sheet")
    p.add_argument("--width", type=int, default=960)
    p.add_argument("--height", type=int, default=540)
    p.add_argument("--frames", type=int, default=12)
    MatteSettings.add_arguments(p, ("device", "precision"))
    _add_progress(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("info", help="versions, devices and weights as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("weights", help="list, install, verify or download checkpoints")
    p.add_argument("action", choices=["list", "install", "verify", "download"])
    p.add_argument("file", nargs="?", help="install: checkpoint file; download: weights name")
    p.add_argument("--name", help="install under this name (default: the official name, else the file's)")
    p.add_argument("--url", help="download: the checkpoint file's address")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("export-nuke", help="TorchScript file for Nuke's Inference node")
    p.add_argument("-o", "--output", required=True)
    MatteSettings.add_arguments(p, NETWORK_OPTIONS)
    p.set_defaults(func=cmd_export_nuke)

    for name, func, text in (("bench", cmd_bench, "benchmarks printing JSON"),
                             ("train", cmd_train, "train or fine-tune weights; `train bundle RUN` ships a run"),
                             ("eval", cmd_eval, "evaluate weights on a held-out synthetic set (JSON)")):
        p = sub.add_parser(name, help=text, add_help=False)
        if name == "bench":
            p.add_argument("what", choices=["model", "align", "pipeline", "e2e", "farm"])
        p.set_defaults(func=func, passthrough=True)
    return ap


def main(argv=None) -> int:
    from howard_core.runtime import prepare_process

    prepare_process()  # before any thread exists: allocator settings only reach threads started later
    parser = build_parser()
    # bench/train/eval hand their own options (and --help) on to the module that owns them.
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args)
    except HowardError as exc:
        print(f"\nhoward: error: {exc}" if getattr(args, "progress", None) in ("auto", "bar") and
              sys.stderr.isatty() else f"howard: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("howard: interrupted; completed frames are kept, rerun with --resume to continue", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """The `howard` command: `main` on sys.argv, then the process ends with its exit code
    (`runtime.exit_process`: without the interpreter's slow teardown)."""
    from howard_core.runtime import exit_process

    exit_process(main())


if __name__ == "__main__":
    run()
