"""howard_core.hostcli, the host kit both adapters use: command lines, JSON progress, errors,
finding the written frames, and the background Job (driven here by small fake CLIs)."""

import json
import os
import shlex
import subprocess
import sys
import textwrap

import pytest

from howard_core import hostcli as h
from howard_core.cli import build_parser
from howard_core.settings import MatteSettings, parse_frames

RUNNER = ["/opt/howard env/bin/howard"]


def _matte_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["matte"]


# ---------------------------------------------------------------------------------------------------
# command lines
# ---------------------------------------------------------------------------------------------------


def test_matte_command_keeps_paths_with_spaces_as_single_arguments(tmp_path):
    plate = tmp_path / "shot 010" / "plate v2.####.exr"
    clean = tmp_path / "shot 010" / "clean plate.mov"
    argv = h.matte_command(plate, clean, tmp_path / "out put", runner=RUNNER)
    assert argv[:2] == [RUNNER[0], "matte"]
    assert argv[2] == str(plate) and argv[3] == str(clean)
    assert argv[4:6] == ["-o", str(tmp_path / "out put") + os.sep]  # a folder stays a folder
    assert argv[-2:] == ["--progress", "json"]
    # The display form survives a shell round trip unchanged, quotes and all.
    assert shlex.split(h.format_command(argv)) == argv


def test_matte_command_makes_paths_absolute_against_cwd(tmp_path):
    argv = h.matte_command("in/plate.%04d.dpx", "clean.mov", "out/matte.####.exr", runner=RUNNER, cwd=tmp_path)
    assert argv[2] == str(tmp_path / "in" / "plate.%04d.dpx")
    assert argv[3] == str(tmp_path / "clean.mov")
    assert argv[5] == str(tmp_path / "out" / "matte.####.exr")  # a file pattern gets no trailing separator


def test_matte_command_maps_every_option_and_the_cli_accepts_them():
    options = h.MatteSettings(frames="1001-1100x2", model="my weights.pth", preset="4k", backbone_scale=0.125,
                             refine_mode="thresholding", sample_pixels=40000, refine_threshold=0.2, device="cuda:1",
                             precision="fp16", colorspace="ACEScg", clean_colorspace="srgb",
                             ocio_config="/cfg/config.ocio", missing="hold", align=False, window=3, clean_offset=2.0,
                             clean_scale=0.5, batch_size=2, layers=("fg", "bg"), format="exr", resume=True)
    argv = h.matte_command("/p/plate.####.exr", "/p/clean.mov", "/o/", options, runner=RUNNER,
                           report="/r/report.json")
    args = _matte_parser().parse_args(argv[2:])  # the real `howard matte` parser, nothing run
    assert parse_frames(args.frames) == parse_frames("1001-1100x2") and args.frames == "1001-1099x2"
    assert args.model == "my weights.pth" and args.preset == "4k"
    assert args.backbone_scale == 0.125 and args.refine_mode == "thresholding" and args.sample_pixels == 40000
    assert args.refine_threshold == 0.2 and args.device == "cuda:1" and args.precision == "fp16"
    assert args.colorspace == "ACEScg" and args.clean_colorspace == "srgb" and args.ocio_config == "/cfg/config.ocio"
    assert args.missing == "hold" and args.align is False and args.window == 3
    assert args.clean_offset == 2.0 and args.clean_scale == 0.5 and args.batch_size == 2
    assert args.layers == "fg,bg" and args.format == "exr" and args.resume and args.report == "/r/report.json"
    assert args.progress == "json" and args.output == "/o/"


def test_default_options_leave_the_cli_defaults():
    argv = h.matte_command("/p/plate.####.exr", "/p/clean.mov", "/o", runner=RUNNER)
    args = _matte_parser().parse_args(argv[2:])
    defaults = _matte_parser().parse_args(["a", "b", "-o", "c"])
    for name in ("frames", "model", "preset", "refine_mode", "sample_pixels", "device", "precision", "missing",
                 "window", "batch_size", "layers", "resume", "align", "colorspace"):
        assert getattr(args, name) == getattr(defaults, name), name


def test_every_setting_goes_through_the_host_argv_and_the_cli_to_the_same_settings():
    """The one definition: whatever MatteSettings a host makes, `howard matte` parses back the same."""
    changed = {"frames": (1, 2, 3, 9), "format": "png", "layers": ("err", "bg"), "compression": "6",
               "model": "/m/w.pth", "preset": "hd", "backbone_scale": 0.5, "refine_mode": "full",
               "sample_pixels": 123, "refine_threshold": 0.3, "device": "cpu", "precision": "bf16",
               "colorspace": "ACEScg", "clean_colorspace": "srgb", "ocio_config": "/c.ocio", "missing": "hold",
               "resume": True, "align": False, "window": 0, "clean_offset": 1.5, "clean_scale": 2.0,
               "batch_size": 3, "threads": 1, "queue_size": 4}
    assert set(changed) == set(h.MatteSettings.names())  # a new option must be added here, and to the hosts
    settings = h.MatteSettings(**changed)
    argv = h.matte_command("/p/plate.####.png", "/p/clean.mov", "/o/", settings, runner=RUNNER)
    args = _matte_parser().parse_args(argv[2:])
    assert MatteSettings.from_namespace(args) == settings
    assert MatteSettings.from_json(settings.to_json()) == settings
    defaults = _matte_parser().parse_args(["a", "b", "-o", "c"])
    assert MatteSettings.from_namespace(defaults) == MatteSettings()


def test_choices_match_the_cli_parser():
    choices = {a.dest: tuple(a.choices) for a in _matte_parser()._actions if a.choices}
    assert choices["preset"] == h.PRESETS
    assert choices["refine_mode"] == h.REFINE_MODES
    assert choices["precision"] == h.PRECISIONS
    assert choices["format"] == h.FORMATS
    assert choices["missing"] == h.MISSING
    from howard_core.pipeline import LAYERS

    assert LAYERS == h.LAYERS


@pytest.mark.parametrize("options, words", [
    ({"preset": "2k"}, "preset '2k'"),
    ({"refine_mode": "smart"}, "refine mode 'smart'"),
    ({"layers": ("fg", "depth")}, "unknown layer(s) depth"),
    ({"sample_pixels": 0}, "sample pixels must be at least 1"),
    ({"batch_size": -1}, "batch size must be at least 1"),
    ({"frames": "first-last"}, "frame range 'first-last'"),
    ({"backbone_scale": True}, "expected a number"),
])
def test_bad_options_fail_before_a_process_starts(options, words):
    with pytest.raises(h.HostError) as err:
        h.matte_command("/p/a.exr", "/p/b.exr", "/o", h.MatteSettings(**options), runner=RUNNER)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_missing_paths_are_named():
    with pytest.raises(h.HostError, match="no clean plate given"):
        h.matte_command("/p/a.####.exr", "  ", "/o", runner=RUNNER)


def test_export_nuke_command_is_accepted_by_the_cli(tmp_path):
    settings = h.MatteSettings(model="resnet50", backbone_scale=0.25, refine_mode="sampling", sample_pixels=80000,
                               refine_threshold=0.2, preset="hd", window=4)  # the last two do not apply
    argv = h.export_nuke_command(tmp_path / "my model.pt", settings, runner=RUNNER)
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["export-nuke"]
    args = sub.parse_args(argv[2:])
    assert argv[1] == "export-nuke" and args.output == str(tmp_path / "my model.pt")
    assert (args.model, args.backbone_scale, args.refine_mode, args.sample_pixels) == ("resnet50", 0.25, "sampling",
                                                                                        80000)
    assert args.refine_threshold == 0.2 and "--preset" not in argv and "--window" not in argv


def test_resolve_runner_order(tmp_path):
    cli, py = tmp_path / "howard", tmp_path / "python"
    for f in (cli, py):
        f.write_text("")
    found = {"howard": "/usr/bin/howard"}.get
    env = {"HOWARD_CLI": str(cli), "HOWARD_PYTHON": str(py)}
    assert h.resolve_runner(cli=str(py), environ=env, which=found) == [str(py)]  # the host setting wins
    assert h.resolve_runner(python=str(py), environ=env, which=found) == [str(py), "-m", "howard_core.cli"]
    assert h.resolve_runner(environ=env, which=found) == [str(cli)]
    assert h.resolve_runner(environ={"HOWARD_PYTHON": str(py)}, which=found) == [str(py), "-m", "howard_core.cli"]
    assert h.resolve_runner(environ={}, which=found) == ["/usr/bin/howard"]
    with pytest.raises(h.HostError, match="set HOWARD_CLI"):
        h.resolve_runner(environ={}, which=lambda name: None)
    with pytest.raises(h.HostError, match=r"\$HOWARD_CLI names .*nope.* not an executable"):
        h.resolve_runner(environ={"HOWARD_CLI": str(tmp_path / "nope")}, which=lambda name: None)


def test_subprocess_env_drops_the_hosts_python_variables():
    env = h.subprocess_env({"PYTHONHOME": "/nuke/python", "PYTHONPATH": "/nuke/site", "OCIO": "/cfg.ocio", "A": "1"})
    assert "PYTHONHOME" not in env and "PYTHONPATH" not in env
    assert env["OCIO"] == "/cfg.ocio" and env["A"] == "1" and env["PYTHONUNBUFFERED"] == "1"


# ---------------------------------------------------------------------------------------------------
# reading the output
# ---------------------------------------------------------------------------------------------------


def test_parse_event_takes_progress_lines_and_ignores_everything_else():
    frame = {"event": "frame", "frame": 1001, "done": 1, "total": 3, "fps": 2.0, "eta_s": 1.0, "flagged": False,
             "reason": None, "output": "/o/m.1001.exr"}
    assert h.parse_event(json.dumps(frame) + "\n") == frame
    assert h.parse_event(b'  {"event": "done", "done": 3}  ') == {"event": "done", "done": 3}
    for noise in ("", "   ", "loading weights...", "{not json", '{"event": "frame"', "[1, 2]", '"frame"', "42",
                  '{"event": "progress"}', '{"frame": 1001}', "\x00\xff", "howard: error: x"):
        assert h.parse_event(noise) is None, noise


@pytest.mark.parametrize("lines, code, expected", [
    (["howard: error: plate.exr: file not found; check the path"], 2, "plate.exr: file not found; check the path"),
    (["usage: howard matte [-h] ...", "howard matte: error: argument --preset: invalid choice: 'zz'"], 2,
     "argument --preset: invalid choice: 'zz'"),
    (["howard: warning: untrained", "\n", "howard: error: first", "howard: error: second"], 2, "second"),
    (["howard: interrupted; completed frames are kept, rerun with --resume to continue"], 130,
     "interrupted; completed frames are kept, rerun with --resume to continue"),
    (["Traceback (most recent call last):", '  File "x.py", line 1', "MemoryError: out of memory"], 1,
     "howard stopped with exit code 1: MemoryError: out of memory"),
    (["howard: note: Howard's demo weights", "Traceback (most recent call last):", '  File "images.py", line 48',
      "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff"], 1,
     "howard stopped with exit code 1: UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff"),
    (["howard: note: Howard's demo weights"], -9, "howard stopped with exit code -9"),
    ([], -9, "howard stopped with exit code -9"),
    (["howard: warning: untrained weights"], 0, None),
])
def test_error_message(lines, code, expected):
    assert h.error_message(lines, code) == expected


def test_progress_folds_events_into_a_status_line():
    p = h.Progress()
    assert p.fraction == 0.0 and p.status() == "Howard: starting"
    p.feed({"event": "start", "total": 4, "skipped": 0, "output": "o/m.####.exr", "model": {"trained": False}})
    assert p.status() == "Howard: starting, 4 frames" and "UNTRAINED" in p.warnings[0]
    p.feed({"event": "frame", "frame": 1001, "done": 1, "total": 4, "fps": 2.04, "eta_s": 1.5, "flagged": False})
    p.feed({"event": "frame", "frame": 1002, "done": 2, "total": 4, "fps": 2.5, "eta_s": 0.8, "flagged": True,
            "reason": "too few features"})
    assert p.fraction == 0.5 and p.flagged == [1002] and p.last_reason == "too few features"
    assert p.status() == "Howard: frame 1002 (2/4), 2.5 fps, 1 s left, 1 flagged for review"
    p.feed({"event": "done", "done": 4, "total": 4, "report": "o/r.json", "output": "o/m.####.exr",
            "flagged_frames": [1002, 1004]})
    assert p.finished and p.fraction == 1.0 and p.flagged == [1002, 1004] and p.report == "o/r.json"
    assert p.status() == "Howard: done, 4 frames, 2 flagged for review"


# ---------------------------------------------------------------------------------------------------
# finding what was written
# ---------------------------------------------------------------------------------------------------


def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_frame_files_follows_howards_padding_rules(tmp_path):
    d = tmp_path / "out dir"
    _touch(d, "m.1001.exr", "m.1002.exr", "m.12345.exr", "m.01003.exr", "m.1004.exr.tmp", "n.1001.exr", "m.0999.exr")
    expected = {999: str(d / "m.0999.exr"), 1001: str(d / "m.1001.exr"), 1002: str(d / "m.1002.exr"),
                12345: str(d / "m.12345.exr")}
    assert h.frame_files(d / "m.####.exr") == expected
    assert h.frame_files(str(d / "m.%04d.exr")) == expected
    assert h.frame_files(d / "m.@@@@.exr") == expected
    assert h.frame_files(d / "m.%05d.exr") == {1003: str(d / "m.01003.exr"), 12345: str(d / "m.12345.exr")}
    assert h.frame_files("m.####.exr", cwd=d) == expected
    assert h.frame_files(d / "m.exr") == {}  # no frame token
    assert h.frame_files(tmp_path / "missing" / "m.####.exr") == {}


def test_frame_files_unpadded(tmp_path):
    _touch(tmp_path, "m.7.png", "m.10.png", "m.010.png")
    assert h.frame_files(tmp_path / "m.%d.png") == {7: str(tmp_path / "m.7.png"), 10: str(tmp_path / "m.10.png")}


def test_sequence_helpers(tmp_path):
    assert h.sequence_pattern_for_file("/s/plate v1.1001.exr") == "/s/plate v1.####.exr"
    assert h.sequence_pattern_for_file("/s/plate_0042.dpx") == "/s/plate_####.dpx"
    assert h.sequence_pattern_for_file("/s/clean.mov") is None
    assert h.frame_path("/s/m.####.exr", 1001) == "/s/m.1001.exr"
    assert h.frame_path("/s/m.%06d.exr", 12) == "/s/m.000012.exr"
    assert h.default_output_folder(tmp_path / "plate.####.exr") == str(tmp_path / "howard") + os.sep


def test_result_from_a_done_event(tmp_path):
    _touch(tmp_path / "o", "m.1001.exr", "m.1002.exr")
    p = h.Progress()
    p.feed({"event": "start", "total": 2, "skipped": 0, "output": "o/m.####.exr", "model": {"trained": True}})
    with pytest.raises(h.HostError, match="no `done` event"):
        h.result_from(p, tmp_path)
    p.feed({"event": "done", "done": 2, "total": 2, "report": "o/r.json", "output": "o/m.####.exr",
            "flagged_frames": [1002]})
    r = h.result_from(p, tmp_path)
    assert r.output == str(tmp_path / "o" / "m.####.exr") and r.report == str(tmp_path / "o" / "r.json")
    assert (r.first, r.last, r.first_file, r.flagged, r.is_sequence) == (1001, 1002, str(tmp_path / "o/m.1001.exr"),
                                                                         [1002], True)
    assert r.summary()[0] == f"Howard wrote 2 frame(s): {r.output}"
    assert "1 frame(s) flagged for review (alignment): 1002" in r.summary()[1]
    p.output = "o/gone.####.exr"
    with pytest.raises(h.HostError, match="no frames are on disk"):
        h.result_from(p, tmp_path)
    movie = h.MatteResult("/o/shot_matte.mov", None)
    assert not movie.is_sequence and movie.first_file == "/o/shot_matte.mov" and movie.first is None


def test_where_prints_this_file(capsys):
    assert h.main(["--where"]) == 0
    assert capsys.readouterr().out.strip() == os.path.abspath(h.__file__)
    assert h.main([]) == 2


# ---------------------------------------------------------------------------------------------------
# Job, against fake CLIs (small Python scripts), so these run in well under a second each
# ---------------------------------------------------------------------------------------------------


def _fake_cli(tmp_path, body):
    script = tmp_path / "fake howard.py"
    script.write_text("import json, sys, time\n" + textwrap.dedent(body))
    return [sys.executable, str(script)]


def test_job_reads_events_noise_and_a_one_line_error(tmp_path):
    argv = _fake_cli(tmp_path, """
        print("some library chatter")
        print(json.dumps({"event": "start", "total": 2, "skipped": 0, "output": "o/m.####.exr",
                          "model": {"trained": True}}), flush=True)
        print('{"event": "frame", "frame": 1001, "done": 1, "total": 2, "fps": 1.0, "eta_s": 1.0, "flagged": false}')
        print("{broken", flush=True)
        print("howard: warning: something", file=sys.stderr)
        print("howard: error: frame 1002: plate.1002.exr is truncated; re-render it", file=sys.stderr)
        sys.exit(2)
    """)
    job = h.Job(argv, cwd=tmp_path).start()
    seen = []
    while not job.finished:
        job.poll(lambda e, p: seen.append((e["event"], p.done)))
    assert seen == [("start", 0), ("frame", 1)]
    assert job.returncode == 2
    assert job.error == "frame 1002: plate.1002.exr is truncated; re-render it"
    assert list(job.noise) == ["some library chatter", "{broken"]
    with pytest.raises(h.HostError, match="truncated"):
        job.result()


def test_run_returns_the_result_and_reports_each_event_once(tmp_path):
    (tmp_path / "o").mkdir()
    argv = _fake_cli(tmp_path, """
        import os
        print(json.dumps({"event": "start", "total": 2, "skipped": 0, "output": "o/m.####.exr",
                          "model": {"trained": True}}), flush=True)
        for k, n in enumerate((1001, 1002)):
            open(f"o/m.{n}.exr", "wb").close()
            print(json.dumps({"event": "frame", "frame": n, "done": k + 1, "total": 2, "fps": 5.0, "eta_s": 0.0,
                              "flagged": False, "output": f"o/m.{n}.exr"}), flush=True)
        print(json.dumps({"event": "done", "done": 2, "total": 2, "report": "o/r.json", "output": "o/m.####.exr",
                          "flagged_frames": []}), flush=True)
    """)
    statuses = []
    result = h.run(argv, on_event=lambda e, p: statuses.append(p.status()), cwd=tmp_path, poll_interval=0.01)
    assert statuses == ["Howard: starting, 2 frames", "Howard: frame 1001 (1/2), 5.0 fps, 0 s left",
                        "Howard: frame 1002 (2/2), 5.0 fps, 0 s left", "Howard: done, 2 frames"]
    assert list(result.frames) == [1001, 1002] and result.report == str(tmp_path / "o" / "r.json")


def test_a_clean_exit_without_a_done_event_is_an_error(tmp_path):
    job = h.Job(_fake_cli(tmp_path, "print('nothing')\n")).start()
    assert job.wait(timeout=20, interval=0.01)
    assert job.error == "howard exited without finishing the job (no `done` event)"
    export = h.Job(_fake_cli(tmp_path, "print('wrote x.pt')\n"), expect_done=False).start()
    assert export.wait(timeout=20, interval=0.01)
    assert export.error is None


@pytest.mark.skipif(os.name == "nt", reason="SIGINT delivery is POSIX-only; Windows terminates")
def test_cancel_interrupts_the_job_between_frames(tmp_path):
    argv = _fake_cli(tmp_path, """
        print(json.dumps({"event": "start", "total": 1000, "skipped": 0, "output": "m.####.exr",
                          "model": {"trained": True}}), flush=True)
        try:
            for n in range(1000):
                print(json.dumps({"event": "frame", "frame": n, "done": n + 1, "total": 1000, "fps": 50.0,
                                  "eta_s": 1.0, "flagged": False}), flush=True)
                time.sleep(0.02)
        except KeyboardInterrupt:
            print("howard: interrupted; completed frames are kept, rerun with --resume to continue", file=sys.stderr)
            sys.exit(130)
    """)
    job = h.Job(argv).start()
    while job.progress.done < 3:
        job.poll()
    job.cancel()
    assert job.wait(timeout=20, interval=0.01)
    assert job.returncode == 130 and job.cancelled
    assert job.error.startswith("cancelled")
    assert job.progress.done < 1000


def test_a_runner_that_does_not_exist_is_one_line(tmp_path):
    with pytest.raises(h.HostError, match=r"could not start .*no such howard"):
        h.Job([str(tmp_path / "no such howard")]).start()


def test_hostcli_imports_nothing_beyond_the_standard_library():
    code = ("import sys; before = set(sys.modules); import howard_core.hostcli; "
            "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
            "print(sorted(new - set(sys.stdlib_module_names)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['howard_core']"


def test_job_passes_a_clean_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONHOME", str(tmp_path / "nuke python"))
    argv = _fake_cli(tmp_path, """
        import os
        print(json.dumps({"event": "done", "done": 0, "total": 0, "output": "x.exr", "report": None,
                          "flagged_frames": [], "home": os.environ.get("PYTHONHOME")}), flush=True)
    """)
    events = []
    job = h.Job(argv).start()
    while not job.finished:
        events += job.poll()
    assert events[0]["home"] is None and job.error is None
