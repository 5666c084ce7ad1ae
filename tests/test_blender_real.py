"""The Blender add-on in real Blender: the `bpy` wheels of build.BLENDER_VERSIONS, each in the
virtualenv `python3 build.py setup-blender` makes (`build.py test` makes them first).

Per version, one Blender session (tests/blender_session.py) installs the zip `build.py dist`
makes as an extension, pulls mattes through the operator for a plate given as a file path,
an Image sequence and a Movie Clip (with its own start frame and offset), renders the
compositor to RGBA EXRs, cancels with Esc, meets bad inputs and loads another file; a second
session quits Blender during a pull. Here the records are checked against the `howard`
command's own output for the same frames.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from adapters import BUILD
from test_pipeline import linear_plates, read_channels, stored, write_sequence

from howard_core.synth import make_shot, srgb_to_linear

ROOT = Path(__file__).resolve().parents[1]
HOWARD = ROOT / ".venv" / ("Scripts/howard.exe" if os.name == "nt" else "bin/howard")
SESSION = Path(__file__).with_name("blender_session.py")
PLATE_FIRST = 1001
SIZE = (384, 216)  # plate width, height




def blender(version):
    python = BUILD.blender_python(version)
    if not python.exists():
        message = f"bpy {version} is not set up at {python}; run python3 build.py setup-blender"
        if os.environ.get("HOWARD_REQUIRE_BLENDER"):
            pytest.fail(message)
        pytest.skip(message)
    return python


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """A 4-frame linear EXR plate (1001-1004), a 5-frame clean plate and the add-on zip. Large enough
    for the demo weights to matte the subject (at 96x64 their alpha was all but 0 on every frame, and
    a black render cannot say which frame it shows)."""
    tmp = tmp_path_factory.mktemp("blender")
    shot = make_shot(SIZE[0], SIZE[1], plate_frames=4, clean_frames=5, seed=21)
    plates = linear_plates(shot)
    plate = write_sequence(tmp / "plate", "plate", plates, PLATE_FIRST)
    clean = write_sequence(tmp / "clean", "clean", [srgb_to_linear(f) for f in shot.clean], 1)
    return {"tmp": tmp, "plate": plate, "clean": clean, "zip": BUILD.adapter_zip("blender_addon", tmp),
            "plates": {PLATE_FIRST + k: stored(p) for k, p in enumerate(plates)}, "cli": {}}


def cli_alpha(footage, frames):
    """{plate frame: alpha} from `howard matte plate clean --frames FRAMES` in a terminal, with the
    default weights as the add-on uses them. The frame range is part of the job: the clean
    frames each plate frame is aligned to are chosen across the range."""
    if frames not in footage["cli"]:
        out = footage["tmp"] / f"cli_{frames}"
        proc = subprocess.run([HOWARD, "matte", footage["plate"], footage["clean"], "-o", out, "--frames", frames,
                               "--progress", "none"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        footage["cli"][frames] = {int(p.name.split(".")[1]): read_channels(p)[0]["A"]
                                  for p in sorted(out.glob("plate_matte.*.exr"))}
    return footage["cli"][frames]


def _job(footage, scratch):
    scratch.mkdir()
    job = {"zip": str(footage["zip"]), "howard_cli": str(HOWARD), "plate": footage["plate"],
           "plate_first": footage["plate"].replace("####", str(PLATE_FIRST)), "clean": footage["clean"],
           "scratch": str(scratch), "width": SIZE[0], "height": SIZE[1]}
    path = scratch / "job.json"
    path.write_text(json.dumps(job))
    return path


def _run_session(python, mode, footage, name):
    scratch = footage["tmp"] / name
    job = _job(footage, scratch)
    result = scratch / "result.json"
    # Blender's user folders (preferences, installed extensions) and its thumbnail cache in the scratch
    # folder, not the user's.
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(scratch / "blender_user"), XDG_CACHE_HOME=str(scratch / "cache"))
    proc = subprocess.run([python, SESSION, mode, job, result], capture_output=True, text=True, timeout=600,
                          env=env, cwd=scratch)
    assert result.exists(), f"blender session wrote nothing (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(result.read_text()), proc


@pytest.fixture(scope="module", params=BUILD.BLENDER_VERSIONS)
def session(request, footage):
    python = blender(request.param)
    records, proc = _run_session(python, "session", footage, f"session_{request.param}")
    assert "crashed" not in records, records.get("crashed")
    records["log"] = proc.stdout + proc.stderr
    return records


def _scenario(session, name):
    record = session[name]
    assert "crashed" not in record, f"{name} raised in Blender:\n{record['crashed']}"
    return record


def _alive(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
    return b"howard" in cmdline and not zombie


def _gone_within(pid, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_the_zip_passes_blenders_validation_and_installs_as_an_extension(session):
    install = _scenario(session, "install")
    assert install["validate_rc"] == 0, install["validate_out"]
    assert install["install"] == ["FINISHED"]
    assert install["enabled"] and install["operator"] and install["panel"] and install["settings"]


def _alpha_comparison(footage, record, path):
    """A rendered EXR against the CLI run for the same frames: which plate frame its colour is (the
    render is the plate premultiplied by Howard's alpha) and the max abs differences there."""
    frames = record["argv"][record["argv"].index("--frames") + 1]
    reference = cli_alpha(footage, frames)
    channels, spec = read_channels(path)
    assert spec.channelnames[:4] == ("R", "G", "B", "A") and (spec.width, spec.height) == SIZE
    rgb = np.stack([channels[c] for c in "RGB"], axis=2)
    colour_error = {n: float(np.abs(rgb - footage["plates"][n] * a[..., None]).max()) for n, a in reference.items()}
    shown = min(colour_error, key=colour_error.get)
    others = [e for n, e in colour_error.items() if n != shown]
    assert min(others) > 0.05, colour_error  # the frames' renders differ: the one shown is told apart
    return shown, float(np.abs(channels["A"] - reference[shown]).max()), colour_error[shown]


@pytest.mark.parametrize("case, scene_frames, plate_frames", [
    ("file", (1, 3), 1001),  # file path; the scene (1-3) starts at the plate's first frame
    ("image", (1001, 1003), 1001),  # Image sequence
    ("clip", (5, 7), 1002),  # Movie Clip starting at scene frame 5, offset 1 frame
    ("fresh", (1001, 1003), 1001),  # file path, in a scene whose compositor the add-on turns on
    ("farm_dask", (1, 3), 1001),  # Submit to farm: a Dask cluster (local:1), chunks of 2 frames
    ("farm_openjd", (1, 3), 1001),  # Submit to farm: an OpenJD bundle, run by `openjd run`, loaded after
])
def test_render_alpha_equals_the_cli_alpha_for_the_same_frame(session, footage, case, scene_frames, plate_frames):
    record = _scenario(session, case)
    assert record.get("result") == ["FINISHED"], record
    renders = {int(f): path for f, path in record["renders"].items()}
    assert sorted(renders) == list(range(scene_frames[0], scene_frames[1] + 1))
    for scene_frame, path in sorted(renders.items()):
        shown, alpha_diff, colour_diff = _alpha_comparison(footage, record, path)
        print(json.dumps({"blender": session["version"], "plate": case, "scene_frame": scene_frame,
                          "plate_frame": shown, "max_abs_alpha_diff": alpha_diff, "max_abs_rgb_diff": colour_diff}))
        assert shown == plate_frames + scene_frame - scene_frames[0]
        assert alpha_diff == 0.0
        assert colour_diff < 1e-3 * 12.5  # the plate's brightest value is 12.5; half floats on both sides


def test_scene_range_sets_the_frames_and_the_matte_is_wired_to_the_output(session):
    file, image, clip = _scenario(session, "file"), _scenario(session, "image"), _scenario(session, "clip")
    assert file["argv"][file["argv"].index("--frames") + 1] == "1001-1003"  # scene 1-3 from the plate's first
    assert image["argv"][image["argv"].index("--frames") + 1] == "1001-1003"
    assert clip["argv"][clip["argv"].index("--frames") + 1] == "1002-1004"  # scene 5-7, clip offset 1
    for record in (file, image, clip):
        added = set(record["after"]["nodes"]) - set(record["before"]["nodes"])
        assert {"Howard Plate", "Howard Matte", "Howard Set Alpha", "Howard Viewer"} <= added
        assert set(record["before"]["nodes"]) <= set(record["after"]["nodes"])  # the artist's nodes stay
        output = "Composite" if "Composite" in record["before"]["nodes"] else "Group Output"
        assert f"Howard Set Alpha:Image->{output}:Image" in record["after"]["links"]
    assert image["argv"][image["argv"].index("--colorspace") + 1] == "linear"  # the Image's Linear Rec.709
    fresh = _scenario(session, "fresh")  # no compositor before: the add-on's tree, wired to its output
    assert fresh["before"]["nodes"] == [] and any(
        link.startswith("Howard Set Alpha:Image->") and link.split("->")[1] in ("Composite:Image", "Group Output:Image")
        for link in fresh["after"]["links"])


def test_submit_to_farm_runs_the_same_pull_through_the_farm_commands(session):
    dask = _scenario(session, "farm_dask")
    assert dask["argv"][dask["argv"].index("--cluster") + 1] == "local:1" and "--chunk-size" in dask["argv"]
    openjd = _scenario(session, "farm_openjd")
    assert openjd["argv"][1:3] == ["farm", "openjd"] and openjd.get("result") == ["FINISHED"], openjd
    assert openjd["submitted"].startswith("Howard: submitted to the farm")
    assert "Howard Matte" not in openjd["loaded_before"]["nodes"] and openjd["check_before"] == 5.0
    assert openjd["openjd_rc"] == 0, openjd["openjd_tail"]
    assert openjd["check_after"] is None and "Howard Matte" in openjd["after"]["nodes"]
    assert openjd["status"].startswith("Howard wrote 3 frame(s)")


def test_a_still_plate_gives_one_matte_whatever_the_scene_range(session):
    record = _scenario(session, "still")  # plate.1001.exr alone: a still, so no --frames from the scene
    assert record.get("result") == ["FINISHED"], record
    assert "--frames" not in record["argv"] and record["status"].startswith("Howard wrote 1 frame(s)")
    assert "Howard Matte" in record["after"]["nodes"]


def test_the_plates_colour_space_goes_to_howard_and_comes_back(session):
    record = _scenario(session, "colour")
    assert record.get("result") == ["FINISHED"], record
    argv = record["argv"]
    assert argv[argv.index("--colorspace") + 1] == "ACEScg"
    config = argv[argv.index("--ocio-config") + 1]
    assert config.endswith(os.path.join("datafiles", "colormanagement", "config.ocio")) and os.path.isfile(config)
    assert record["matte_colorspace"] == "ACEScg" and record["matte_alpha_mode"] == "PREMUL"


def test_a_pull_is_one_undo_step(session):
    undo = _scenario(session, "undo")
    assert undo["undone"] == _scenario(session, "file")["before"]
    assert undo["redone"] == undo["after"] == _scenario(session, "file")["after"]


def test_esc_cancels_ends_howard_and_leaves_the_graph(session):
    record = _scenario(session, "cancel")
    assert record["result"] == ["CANCELLED"] and record["exited"] and record["running"] == 0
    assert "cancelled" in record["status"]
    assert record["after"] == record["before"]


@pytest.mark.parametrize("case, must_name", [
    ("no_howard", "nowhere/howard"), ("no_howard_on_path", None), ("missing_clean", None), ("truncated", None),
    ("garbled", None),
    ("unexpected", "unexpected error"),
])
def test_bad_input_is_one_line_naming_it_and_the_scene_stays(session, case, must_name):
    record = _scenario(session, case)
    must_name = must_name or record["must_name"]
    message = record.get("refused") or record["status"]
    assert must_name in message, message
    assert "\n" not in message and "Traceback" not in message
    assert record["after"] == record["before"]
    assert record["status"].startswith("Howard: ")
    if case.startswith("no_howard"):
        assert "Preferences > Add-ons > Howard Matte" in message
    if "pid" in record:
        assert record["exited"] and record.get("result") == ["CANCELLED"]


def _stopped_early(record):
    """howard is gone at once and never finished: a job left running would still be at work (it
    needs seconds), or would have written its report and frames."""
    assert _gone_within(record["pid"], 1.0)
    output = Path(record["output"])
    assert not output.exists() or not any(output.glob("howard_report*")), sorted(output.iterdir())


def test_loading_another_file_ends_howard(session):
    record = _scenario(session, "load")
    assert record["running_after_load"] == 0 and not record["alive_after"]
    _stopped_early(record)


def test_disabling_the_addon_ends_howard(session):
    record = _scenario(session, "disable")
    assert not record["alive_after"]
    _stopped_early(record)


@pytest.mark.parametrize("version", BUILD.BLENDER_VERSIONS)
def test_quitting_blender_ends_howard(footage, version):
    record, proc = _run_session(blender(version), "quit", footage, f"quit_{version}")
    assert proc.returncode == 0, proc.stderr
    _stopped_early(record)


@pytest.mark.parametrize("version", BUILD.BLENDER_VERSIONS)
def test_the_zip_also_installs_as_a_legacy_addon(footage, version):
    record, proc = _run_session(blender(version), "legacy", footage, f"legacy_{version}")
    assert record == {"enabled": True, "operator": True, "settings": True, "preferences": True}, proc.stderr
