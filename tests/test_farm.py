"""Howard on render farms, with the engines' real processes: `dask scheduler` and `dask worker`
on loopback (one worker killed with SIGKILL mid-run), `openjd run` on a generated job bundle, and
the OpenCue outline loaded by OpenCue's own library. Every farm run is compared, frame for frame,
with a one-machine run of the same shot.

Services are bounded: the scheduler closes itself after 600 s without work, each worker after
600 s (well past this module's half minute, even on a loaded machine), and the fixture stops both
at the end of the module.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest
from test_pipeline import write_sequence

from howard_core.cli import build_parser, main
from howard_core.farm import jobs
from howard_core.io import parse_frames
from howard_core.pipeline import matte
from howard_core.synth import make_shot, srgb_to_linear

BIN = Path(sys.executable).parent
FIRST = 1001
N_FRAMES = 12


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    """A hand-held plate (linear EXR) with its clean take, and the one-machine run's mattes."""
    root = tmp_path_factory.mktemp("farm")
    s = make_shot(192, 112, plate_frames=N_FRAMES, clean_frames=N_FRAMES + 3, seed=11, noise=0.01,
                  exposure_stops=0.25)
    plate = write_sequence(root / "plate", "plate", [srgb_to_linear(f) for f in s.plate], FIRST)
    clean = write_sequence(root / "clean", "clean", [srgb_to_linear(f) for f in s.clean], 1)
    matte(plate, clean, root / "single", threads=1, layers=["fg"])
    return {"root": root, "plate": plate, "clean": clean, "single": root / "single"}


def pixels(path) -> np.ndarray:
    buf = oiio.ImageBuf(str(path))
    assert not buf.has_error, buf.geterror()
    return buf.get_pixels(oiio.FLOAT)


def assert_same_mattes(single: Path, farm: Path) -> None:
    names = sorted(p.name for p in single.glob("plate_matte.*.exr"))
    assert len(names) == N_FRAMES
    assert sorted(p.name for p in farm.glob("plate_matte.*.exr")) == names
    for name in names:
        np.testing.assert_array_equal(pixels(farm / name), pixels(single / name), err_msg=name)
    assert not [p for p in farm.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"], "temporary files left"


# --------------------------------------------------------------------------------------------------
# one definition of the options: a farm chunk runs what `howard matte` would


def _matte_actions():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["matte"]._actions


def _non_default_argv() -> list[str]:
    """Every `howard matte` option that a farm job carries, each set to something other than its default."""
    argv = []
    skip = {"help", "plate", "clean_plate", "output", "frames", "progress", "resume", "report", "cluster",
            "chunk_size", "tls_ca_file", "tls_cert", "tls_key", "path_map"}
    for action in _matte_actions():
        if action.dest in skip:
            continue
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:
            argv.append(flag)
        elif action.choices:
            argv += [flag, next(c for c in action.choices if c != action.default)]
        elif action.type is int:
            argv += [flag, "3"]
        elif action.type is float:
            argv += [flag, "0.5"]
        elif action.dest == "layers":
            argv += [flag, "fg,err"]
        else:
            argv += [flag, f"value-of-{action.dest}"]
    return argv


def _parsed(argv: list[str]) -> dict:
    args = build_parser().parse_args(argv)
    return {k: v for k, v in vars(args).items()
            if k not in ("func", "frames", "progress", "resume", "report", "path_map")}


def test_farm_jobs_carry_every_matte_option_from_the_clis_own_definitions(tmp_path):
    from howard_core.settings import MatteSettings

    options = _non_default_argv()
    assert len(options) > 30  # every option of the matte command, not a hand-kept list
    args = build_parser().parse_args(["farm", "openjd", "p.####.exr", "c.mov", "-o", "out/", "--bundle", "b",
                                      *options])
    spec = jobs.FarmJob(plate="/p.####.exr", clean_plate="/c.mov", output="/out", frames=[1, 2, 3],
                        options=tuple(MatteSettings.from_namespace(args).to_argv(skip=MatteSettings.farm_sets())),
                        chunks=[[1, 2], [3]],
                        report_folder="/out/howard_chunks", merged_report="/out/r.json", howard="howard")
    chunk_cmd = spec.matte_argv("1-2", "/out/howard_chunks/r.json")
    direct = _parsed(["matte", "/p.####.exr", "/c.mov", "-o", "/out", *options])
    assert _parsed(chunk_cmd[1:]) == direct
    assert chunk_cmd[chunk_cmd.index("--frames") + 1] == "1-2" and "--resume" in chunk_cmd


def test_chunks_path_map_and_frame_texts():
    frames = list(range(1001, 1013))
    assert jobs.split_chunks(frames, 5) == [frames[:5], frames[5:10], frames[10:]]
    assert jobs.chunk_text([1001, 1003, 1005]) == "1001-1005x2"
    assert parse_frames(jobs.chunk_text([1, 2, 3, 7, 9])) == [1, 2, 3, 7, 9]
    pm = jobs.PathMap.parse(["/Volumes/show=/mnt/show", "/Volumes/show/plates=/fast/plates"])
    assert pm("/Volumes/show/sh010/out") == "/mnt/show/sh010/out"
    assert pm("/Volumes/show/plates/a.####.exr") == "/fast/plates/a.####.exr"
    assert pm("/Volumes/shows/x") == "/Volumes/shows/x"  # a prefix of a name is not a folder prefix
    with pytest.raises(Exception, match="WORKSTATION_PREFIX=FARM_PREFIX"):
        jobs.PathMap.parse(["/Volumes/show"])


# --------------------------------------------------------------------------------------------------
# Dask: real scheduler and worker processes on loopback


def _start(argv, log: Path):
    return subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask")
    sched_file = root / "scheduler.json"
    procs = [_start([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", sched_file, "--idle-timeout", "600"], root / "scheduler.log")]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sched_file.exists(), (root / "scheduler.log").read_text()
        for k in range(2):
            # No nanny: a killed worker stays dead, so its chunk must move to the other one.
            procs.append(_start([BIN / "dask", "worker", "--scheduler-file", sched_file, "--nthreads", "1",
                                 "--no-nanny", "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "30",
                                 "--lifetime", "600", "--name", f"w{k}"], root / f"worker{k}.log"))
        from distributed import Client

        with Client(scheduler_file=str(sched_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=90)
        yield {"file": sched_file, "address": json.loads(sched_file.read_text())["address"], "procs": procs}
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def test_dask_job_survives_a_worker_killed_mid_chunk_and_equals_one_machine(shot, dask_cluster, tmp_path):
    from distributed import Client

    import howard_core

    with Client(dask_cluster["address"], timeout=60) as client:
        pids = client.run(os.getpid)  # worker address -> its process
    events, killed = [], {}

    def progress(event):
        events.append(event)
        # The first frame a worker writes: kill that worker process outright, mid-chunk.
        if event["event"] == "frame" and not killed:
            os.kill(pids[event["worker"]], signal.SIGKILL)
            killed.update(worker=event["worker"], chunk=event["chunk"])

    out = tmp_path / "dask"
    rep = howard_core.matte(shot["plate"], shot["clean"], out, cluster=dask_cluster["address"], chunk_size=4,
                            threads=1, layers=["fg"], progress=progress)
    assert killed, "no frame event arrived from a worker"
    assert_same_mattes(shot["single"], out)
    frames = [e for e in events if e["event"] == "frame"]
    assert sorted(e["frame"] for e in frames) == list(range(FIRST, FIRST + N_FRAMES))  # each once, whole clip
    assert [e["done"] for e in frames] == list(range(1, N_FRAMES + 1)) and frames[-1]["total"] == N_FRAMES
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    chunk = next(c for c in rep["chunks"] if c["frames"] == killed["chunk"])
    assert chunk["retries"] >= 1 and chunk["worker"] != killed["worker"]
    assert {c["frames"] for c in rep["chunks"]} == {"1001-1004", "1005-1008", "1009-1012"}
    on_disk = json.loads(Path(rep["report"]).read_text())
    assert on_disk["engine"]["kind"] == "dask" and on_disk["frames_done"] + len(
        on_disk["frames_without_record"]) == N_FRAMES


def test_dask_cli_local_cluster_json_progress_and_merged_report(shot, tmp_path):
    out = tmp_path / "local"
    proc = subprocess.run([BIN / "howard", "matte", shot["plate"], shot["clean"], "-o", out, "--layers", "fg",
                           "--threads", "1", "--cluster", "local:2", "--chunk-size", "5", "--progress", "json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["event"] for e in events].count("start") == 1 and events[-1]["event"] == "done"
    assert sorted(e["frame"] for e in events if e["event"] == "frame") == list(range(FIRST, FIRST + N_FRAMES))
    assert_same_mattes(shot["single"], out)
    rep = json.loads((out / f"howard_report.{FIRST}-{FIRST + N_FRAMES - 1}.json").read_text())
    assert [c["frames"] for c in rep["chunks"]] == ["1001-1005", "1006-1010", "1011-1012"]
    assert all(c["worker"].startswith("tcp://127.0.0.1:") and c["retries"] == 0 for c in rep["chunks"])
    assert [r["frame"] for r in rep["frames"]] == list(range(FIRST, FIRST + N_FRAMES))


@pytest.mark.parametrize("argv, message", [
    (["--cluster", "local:0"], "local:N"),
    (["--cluster", "tcp://127.0.0.1:9"], "cannot reach the Dask scheduler"),
    (["--chunk-size", "3"], "give --cluster"),
    (["--cluster", "local:1", "-o", "OUT/m.mov"], "ProRes movie cannot be written in chunks"),
])
def test_dask_bad_input_is_one_line(shot, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "2s")
    import dask.config

    dask.config.refresh()
    out = ["-o", str(tmp_path / "out")] if "-o" not in argv else []
    argv = [a.replace("OUT", str(tmp_path)) for a in argv]
    assert main(["matte", shot["plate"], shot["clean"], *out, *argv, "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("howard: error:") and message in err[-1]
    assert not list(tmp_path.rglob("*.exr"))


# --------------------------------------------------------------------------------------------------
# Open Job Description: `openjd run` on the bundle, as written


def test_openjd_bundle_runs_with_openjd_run_and_equals_one_machine(shot, tmp_path):
    bundle, out = tmp_path / "bundle", tmp_path / "openjd"
    assert main(["farm", "openjd", shot["plate"], shot["clean"], "-o", str(out), "--layers", "fg", "--threads", "1",
                 "--chunk-size", "5", "--bundle", str(bundle), "--howard", str(BIN / "howard")]) == 0
    assert sorted(p.name for p in bundle.iterdir()) == ["parameter_values.yaml", "template.yaml"]
    check = subprocess.run([BIN / "openjd", "check", bundle / "template.yaml"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run([BIN / "openjd", "run", bundle / "template.yaml"], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "Chunks run: 4" in run.stdout  # three matte chunks and the merge
    assert_same_mattes(shot["single"], out)
    rep = json.loads((out / f"howard_report.{FIRST}-{FIRST + N_FRAMES - 1}.json").read_text())
    assert rep["engine"]["kind"] == "openjd" and rep["frames_without_record"] == []
    assert [r["frame"] for r in rep["frames"]] == list(range(FIRST, FIRST + N_FRAMES))
    import yaml

    values = yaml.safe_load((bundle / "parameter_values.yaml").read_text())["parameterValues"]
    assert {"name": "Plate", "value": shot["plate"]} in values


def test_openjd_bundle_with_path_map_names_the_farm_paths(shot, tmp_path):
    bundle = tmp_path / "bundle"
    root = str(shot["root"])
    assert main(["farm", "openjd", shot["plate"], shot["clean"], "-o", str(shot["root"] / "pm"), "--bundle",
                 str(bundle), "--path-map", f"{root}=/mnt/farm/show"]) == 0
    import yaml

    doc = yaml.safe_load((bundle / "template.yaml").read_text())
    defaults = {p["name"]: p["default"] for p in doc["parameterDefinitions"]}
    assert defaults["Plate"] == "/mnt/farm/show/plate/plate.####.exr"
    assert defaults["ReportFolder"] == "/mnt/farm/show/pm/howard_chunks"


# --------------------------------------------------------------------------------------------------
# OpenCue: the outline, as OpenCue's own library reads it (no Cuebot can run here)


def test_opencue_outline_loads_in_pyoutline_and_serializes_the_chunked_job(shot, tmp_path, monkeypatch):
    monkeypatch.delenv("CUEBOT_HOSTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # pyoutline keeps its sessions under ~/.opencue
    path = tmp_path / "matte.outline"
    assert main(["farm", "opencue", shot["plate"], shot["clean"], "-o", str(tmp_path / "cue"), "--chunk-size", "5",
                 "--outline", str(path), "--show", "demo", "--shot", "sh010", "--user", "artist", "--cores", "4",
                 "--memory-mib", "6144", "--preset", "hd", "--howard", "/opt/howard/bin/howard"]) == 0
    import xml.etree.ElementTree as ET

    import outline
    import outline.cuerun

    ol = outline.load_outline(str(path))
    spec = ET.fromstring(outline.cuerun.OutlineLauncher(ol).serialize(use_pycuerun=False).split("?>", 1)[1])
    assert spec.findtext("show") == "demo" and spec.findtext("shot") == "sh010" and spec.findtext("user") == "artist"
    layers = {layer.get("name"): layer for layer in spec.iter("layer")}
    matte_layer = layers["matte"]
    assert matte_layer.findtext("range") == f"{FIRST}-{FIRST + N_FRAMES - 1}" and matte_layer.findtext("chunk") == "5"
    assert matte_layer.findtext("cores") == "4.0" and matte_layer.findtext("memory") == "6144m"
    cmd = shlex.split(matte_layer.findtext("cmd"))
    assert cmd[0] == "/opt/howard/bin/howard" and "--preset" in cmd and "--resume" in cmd
    # What RQD runs for the second chunk, once it has replaced the chunk tokens:
    chunk = [a.replace("#FRAME_START#", "1006").replace("#FRAME_END#", "1010") for a in cmd]
    args = build_parser().parse_args(chunk[1:])
    assert parse_frames(args.frames) == list(range(1006, 1011)) and args.preset == "hd" and args.resume
    dep = spec.find("depends/depend")
    assert dep.findtext("deplayer") == "merge-reports" and dep.findtext("onlayer") == "matte"
    merge = shlex.split(layers["merge-reports"].findtext("cmd"))
    assert merge[1:3] == ["farm", "merge-reports"] and parse_frames(merge[merge.index("--frames") + 1]) == list(
        range(FIRST, FIRST + N_FRAMES))


def test_dask_workers_get_the_mapped_paths(shot, dask_cluster, tmp_path):
    import howard_core

    farm_mount = tmp_path / "farm_mount"
    farm_mount.symlink_to(shot["root"], target_is_directory=True)  # the same storage, mounted elsewhere
    out = shot["root"] / "mapped"
    rep = howard_core.matte(shot["plate"], shot["clean"], out, cluster=dask_cluster["address"], chunk_size=6,
                            frames=list(range(FIRST, FIRST + 6)), threads=1, layers=["fg"],
                            path_map=jobs.PathMap.parse([f"{shot['root']}={farm_mount}"]))
    chunk_report = json.loads((out / "howard_chunks" / "howard_report.1001-1006.json").read_text())
    assert chunk_report["plate"] == str(farm_mount / "plate" / "plate.####.exr")
    assert [r["output"] for r in rep["frames"]][0] == str(farm_mount / "mapped" / "plate_matte.1001.exr")
    for n in range(FIRST, FIRST + 6):
        np.testing.assert_array_equal(pixels(out / f"plate_matte.{n}.exr"),
                                      pixels(shot["single"] / f"plate_matte.{n}.exr"))


# --------------------------------------------------------------------------------------------------
# the host kit's "Submit to farm": the same core commands, the same options as a local pull


def test_host_kit_farm_commands_carry_the_pull_options_and_run(shot, tmp_path):
    from howard_core import hostcli

    options = hostcli.MatteSettings(preset="hd", precision="fp32", layers=("fg",), window=3, resume=True)
    runner = [str(BIN / "howard")]
    local = hostcli.matte_command(shot["plate"], shot["clean"], tmp_path / "o", options, runner=runner)
    local_args = _parsed(local[1:])
    for kind, where in (("dask", {"address": "local:2"}), ("openjd", {"path": str(tmp_path / "bundle")}),
                        ("opencue", {"path": str(tmp_path / "job.outline")})):
        argv = hostcli.farm_command(shot["plate"], shot["clean"], tmp_path / "o", options,
                                    hostcli.FarmTarget(kind, chunk_size=4, **where), runner=runner)
        args = build_parser().parse_args(argv[1:])
        assert args.chunk_size == 4
        for key in ("preset", "precision", "layers", "window", "output", "plate", "clean_plate"):
            assert getattr(args, key) == local_args[key], (kind, key)
    with pytest.raises(hostcli.HostError, match="scheduler address"):
        hostcli.farm_command(shot["plate"], shot["clean"], tmp_path / "o", options, hostcli.FarmTarget("dask"))

    # Dask: the host runs the client like a local pull and gets the mattes back.
    dask_argv = hostcli.farm_command(shot["plate"], shot["clean"], tmp_path / "dask",
                                     hostcli.MatteSettings(layers=("fg",), frames="1001-1006"),
                                     hostcli.FarmTarget("dask", address="local:1", chunk_size=3), runner=runner)
    result = hostcli.run([*dask_argv, "--threads", "1"])
    assert sorted(result.frames) == list(range(FIRST, FIRST + 6))
    for n in result.frames:
        np.testing.assert_array_equal(pixels(result.frames[n]), pixels(shot["single"] / f"plate_matte.{n}.exr"))
    # OpenJD: the bundle is written and says how to run it.
    bundle_argv = hostcli.farm_command(shot["plate"], shot["clean"], tmp_path / "ojd", hostcli.MatteSettings(),
                                       hostcli.FarmTarget("openjd", path=str(tmp_path / "bundle")), runner=runner)
    done = subprocess.run(bundle_argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "bundle" / "template.yaml").exists() and "openjd run" in done.stdout


@pytest.mark.parametrize("engine, where", [("openjd", "--bundle"), ("opencue", "--outline")])
@pytest.mark.parametrize("change, message", [
    (lambda a, tmp: [a[0], str(tmp / "nowhere" / "clean.####.exr")] + a[2:], "nowhere/clean.####.exr"),
    (lambda a, tmp: a + ["--chunk-size", "0"], "chunk size must be at least 1"),
])
def test_farm_job_bad_input_is_one_line_and_writes_no_job(shot, tmp_path, capsys, engine, where, change, message):
    target = tmp_path / ("bundle" if engine == "openjd" else "job.outline")
    argv = change([shot["plate"], shot["clean"], "-o", str(tmp_path / "out"), where, str(target)], tmp_path)
    assert main(["farm", engine, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("howard: error:") and message in err[-1]
    assert not target.exists()
