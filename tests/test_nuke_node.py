"""The HowardMatte node's whole path, driven through a stand-in `nuke` module
(tests/nuke_standin/nuke.py, written from Foundry's Python API reference) with the real
`howard` CLI: create_node -> Pull matte -> the background job -> _finish -> the internal
Read's file, range, colourspace and proxy knobs; and the TorchScript export command.

The stand-in is strict where Nuke is: value() is the text as typed and only evaluate()
expands TCL and variables; nuke.filename follows root.proxy; node and knob calls from a
worker thread raise; executeInMainThread queues for the main thread, run here by
`_wait`. What it cannot cover is listed in nuke_plugin/README.md ("Never run in Nuke").
"""

import json
import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from adapters import NUKE_DIR

from howard_core.demo import make_inputs

ROOT = Path(__file__).resolve().parents[1]
HOWARD = Path(sys.executable).with_name("howard")
W, H, FRAMES = 96, 64, 4

pytestmark = pytest.mark.skipif(not HOWARD.exists(), reason="needs the venv's howard executable")


@pytest.fixture
def nk(monkeypatch):
    """The stand-in nuke module and a fresh import of the plugin, in a clean session."""
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "nuke_standin"))
    monkeypatch.syspath_prepend(str(NUKE_DIR))
    monkeypatch.setenv("HOWARD_CLI", str(HOWARD))
    for name in [m for m in sys.modules if m == "nuke" or m.startswith("howard_nuke")]:
        del sys.modules[name]
    import nuke

    nuke.reset()
    yield nuke
    nuke.ProgressTask.fail_on_message = False
    for name in [m for m in sys.modules if m == "nuke" or m.startswith("howard_nuke")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    """A generated shot (depth, parallax, a moving hand-held camera): linear EXR plate
    1001-1004, its half-size proxies, an sRGB PNG copy, and the clean plate as a movie."""
    import OpenImageIO as oiio

    from howard_core.io.color import srgb_encode

    folder = tmp_path_factory.mktemp("shot")
    plate, clean = make_inputs(folder, W, H, FRAMES, 5)
    (folder / "proxy").mkdir()
    (folder / "png").mkdir()
    for f in range(1001, 1001 + FRAMES):
        buf = oiio.ImageBuf(plate.replace("####", str(f)))
        half = oiio.ImageBufAlgo.resize(buf, roi=oiio.ROI(0, W // 2, 0, H // 2, 0, 1, 0, buf.nchannels))
        half.write(str(folder / "proxy" / f"plate.{f}.exr"))
        rgb = srgb_encode(np.clip(buf.get_pixels(oiio.FLOAT)[..., :3], 0, 1))
        out = oiio.ImageBuf(oiio.ImageSpec(W, H, 3, oiio.UINT8))
        out.set_pixels(oiio.ROI(0, W, 0, H, 0, 1, 0, 3), np.ascontiguousarray(rgb))
        out.write(str(folder / "png" / f"plate.{f}.png"))
    return {"folder": folder, "plate": plate, "clean": clean, "proxy": str(folder / "proxy" / "plate.####.exr"),
            "png": str(folder / "png" / "plate.####.png")}


def _graph(nk, shot, plate=None, **plate_knobs):
    import howard_nuke

    read = nk.nodes.Read(file=plate or shot["plate"], first=1001, last=1000 + FRAMES, **plate_knobs)
    clean = nk.nodes.Read(file=shot["clean"], first=1, last=FRAMES + 6)
    group = howard_nuke.create_node()
    group.setInput(0, read)
    group.setInput(1, clean)
    group["device"].setValue("cpu")
    group["precision"].setValue("fp32")
    group["extra_layers"].setValue(False)
    return group, read


def _state(group):
    return json.loads(group["howard_state"].value())


def _wait(nk, group=None, timeout=180):
    """Turn the stand-in's main-thread queue until the pull (or export) has handed over."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if nk.run_main_thread_queue() and (group is None or _state(group).get("state") != "pulling"):
            return
        time.sleep(0.05)
    pytest.fail("the job did not hand over to the main thread in time")


def _pull(nk, group):
    group["pull"].execute()
    assert not nk.messages, nk.messages  # nothing refused before the job started
    assert _state(group)["state"] == "pulling"
    _wait(nk, group)
    return _state(group)


def _size(path):
    import OpenImageIO as oiio

    spec = oiio.ImageInput.open(path).spec()
    return spec.width, spec.height


def _ocio_file(folder):
    import PyOpenColorIO as OCIO

    path = folder / "show config.ocio"
    path.write_text(OCIO.Config.CreateFromFile("ocio://studio-config-latest").serialize())
    return path


# ---------------------------------------------------------------------------------------------------
# 1. paths: evaluate(), not value()
# ---------------------------------------------------------------------------------------------------


def test_path_knobs_are_expanded_before_they_reach_howard(nk, shot, tmp_path, monkeypatch):
    monkeypatch.setenv("SHOT_ROOT", str(tmp_path))
    monkeypatch.setenv("HOWARD_SHOW", str(shot["folder"]))
    config = _ocio_file(tmp_path)
    group, _ = _graph(nk, shot, plate="$HOWARD_SHOW/plate/plate.####.exr")
    group["output_folder"].setValue("[getenv SHOT_ROOT]/mattes")
    group["ocio_config"].setValue("$env(SHOT_ROOT)/show config.ocio")
    state = _pull(nk, group)

    assert state["state"] == "done", state["status"]
    assert all((tmp_path / "mattes" / f"plate_matte.{f}.exr").is_file() for f in range(1001, 1005))
    assert "[getenv" not in state["command"] and "$" not in state["command"]
    assert f"--ocio-config '{config}'" in state["command"]
    read = group.node("HowardMatteRead")
    assert read["file"].value() == f"{tmp_path}/mattes/plate_matte.####.exr"


# ---------------------------------------------------------------------------------------------------
# 2. proxy mode: full-size mattes, and the internal Read shows them in place
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("puts_frame", [True, False], ids=["evaluate-puts-frame", "evaluate-keeps-token"])
def test_a_pull_in_proxy_mode_mattes_the_full_size_plate(nk, shot, puts_frame):
    nk.file_evaluate_puts_frame[0] = puts_frame
    nk.frame_now[0] = 1003
    nk.root()["proxy"].setValue(True)
    group, plate = _graph(nk, shot, proxy=shot["proxy"])
    assert nk.filename(plate) == shot["proxy"].replace("####", "%04d")  # what Nuke itself reads now
    state = _pull(nk, group)

    assert state["state"] == "done", state["status"]
    read = group.node("HowardMatteRead")
    first_matte = read["file"].value().replace("####", "1001")
    assert _size(first_matte) == (W, H)  # full size, not the proxies' W/2 x H/2
    assert read["format"].value() == nk.Format(W, H) and read["proxy"].value() == ""
    full = (shot["plate"].replace("####", "%04d"), shot["plate"])  # nuke.filename's form, or the knob's
    assert any(f in state["command"] for f in full) and "proxy" not in state["command"]
    # In proxy mode Nuke scales the full-size matte by the proxy scale: the alpha lines up with the proxy plate.
    pixels, _ = nk.read_pixels(read, 1001)
    proxy_plate, _ = nk.read_pixels(plate, 1001)
    assert pixels.shape[:2] == proxy_plate.shape[:2] == (H // 2, W // 2)


def test_an_input_rendered_in_proxy_mode_is_rendered_at_full_size(nk, shot):
    nk.root()["proxy"].setValue(True)
    group, plate = _graph(nk, shot, frame="frame")  # a frame expression: not a plain Read, so it is rendered
    state = _pull(nk, group)

    assert state["state"] == "done", state["status"]
    rendered = Path(state["folder"]) / "howard_inputs" / "plate.1001.exr"
    assert _size(str(rendered)) == (W, H)
    assert nk.root()["proxy"].value() is True  # switched back after the render
    assert "--colorspace linear" in state["command"]  # the working space the Write wrote


# ---------------------------------------------------------------------------------------------------
# 3. missing mattes: an error on the node (or black by choice), never a hold
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("choice", ["error", "black"])
def test_frames_without_a_matte_are_an_error_or_black_never_held(nk, shot, choice, tmp_path):
    group, _ = _graph(nk, shot)
    group["output_folder"].setValue(str(tmp_path / "mattes"))
    group["frame_range"].setValue("1002-1003")
    group["missing_mattes"].setValue(choice)
    state = _pull(nk, group)

    assert state["state"] == "done", state["status"]
    read = group.node("HowardMatteRead")
    assert (read["first"].value(), read["last"].value()) == (1001, 1004)  # the plate's range
    assert read["before"].value() == read["after"].value() == "black"
    assert state["missing"] == "1001, 1004" and "NO matte for 1001, 1004" in group["status"].value()
    assert nk.read_pixels(read, 1002) is not None
    for frame in (1001, 1004):  # in the plate's range, not pulled
        if choice == "error":
            with pytest.raises(nk.RenderError, match="No such file"):
                nk.read_pixels(read, frame)
        else:
            assert nk.read_pixels(read, frame) is None
    assert nk.read_pixels(read, 1010) is None  # past everything: black, not the last matte held


# ---------------------------------------------------------------------------------------------------
# 4. colour from Nuke
# ---------------------------------------------------------------------------------------------------


def test_the_plate_reads_colorspace_goes_to_howard_and_comes_back_on_the_internal_read(nk, shot):
    group, _ = _graph(nk, shot, plate=shot["png"], colorspace="sRGB")
    group["extra_layers"].setValue(True)
    state = _pull(nk, group)

    assert state["state"] == "done", state["status"]
    assert "--colorspace sRGB" in state["command"]
    read = group.node("HowardMatteRead")
    assert read["colorspace"].value() == "sRGB" and read["raw"].value() is False
    # Howard wrote the foreground in the plate's own encoding (sRGB code values), which the internal
    # Read decodes as the plate's Read does; written linear, it would sit far from the PNG's values.
    import OpenImageIO as oiio

    from howard_core.io.color import srgb_decode

    buf = oiio.ImageBuf(read["file"].value().replace("####", "1002"))
    names = list(buf.spec().channelnames)
    fg = buf.get_pixels(oiio.FLOAT)[..., [names.index(f"fg.{c}") for c in "RGB"]]
    png = oiio.ImageBuf(shot["png"].replace("####", "1002")).get_pixels(oiio.FLOAT)[..., :3]
    as_srgb, as_linear = np.median(np.abs(fg - png)), np.median(np.abs(fg - srgb_decode(png)))
    assert as_srgb < 0.5 * as_linear, (as_srgb, as_linear)


def test_an_ocio_script_offers_its_spaces_and_passes_its_config(nk, shot, tmp_path):
    config = _ocio_file(tmp_path)
    nk.root()["colorManagement"].setValue("OCIO")
    nk.root()["OCIO_config"].setValue("custom")
    nk.root()["customOCIOConfigPath"].setValue(str(config))
    group, _ = _graph(nk, shot, colorspace="ACEScg")
    assert "ACEScg" in group["plate_colorspace"].values() and group["plate_colorspace"].values()[0] == \
        "from input Read"
    state = _pull(nk, group)

    assert state["state"] == "done", state["status"]
    assert "--colorspace ACEScg" in state["command"] and f"--ocio-config '{config}'" in state["command"]
    assert group.node("HowardMatteRead")["colorspace"].value() == "ACEScg"


def test_a_raw_plate_is_read_back_raw_and_ocio_falls_back_to_the_environment(nk, shot, tmp_path, monkeypatch):
    config = _ocio_file(tmp_path)
    monkeypatch.setenv("OCIO", str(config))
    group, _ = _graph(nk, shot, raw=True)
    state = _pull(nk, group)

    assert state["state"] == "done", state["status"]
    assert "--colorspace" not in state["command"] and f"--ocio-config '{config}'" in state["command"]
    assert group.node("HowardMatteRead")["raw"].value() is True


# ---------------------------------------------------------------------------------------------------
# 5. status on the node; state through save and reopen; renames; the watchers
# ---------------------------------------------------------------------------------------------------


def test_a_pull_reports_on_the_node_with_a_log_and_no_dialog(nk, shot):
    group, _ = _graph(nk, shot)
    state = _pull(nk, group)

    assert nk.messages == []  # no modal dialog after a pull
    assert group["status"].value().startswith("done: 4 matte(s), 1001-1004")
    assert "demo weights" in group["status"].value()
    log = Path(group["log_file"].value())
    assert log.is_file() and state["command"] in log.read_text() and "Howard wrote 4 frame(s)" in log.read_text()
    assert group.node("CopyAlpha")["disable"].value() is False


def test_a_failed_pull_says_why_on_the_node(nk, shot):
    group, _ = _graph(nk, shot)
    group["model"].setValue("no-such-weights")
    state = _pull(nk, group)
    assert state["state"] == "failed" and "no-such-weights" in group["status"].value()
    assert nk.messages == [] and "\n" not in group["status"].value()


def test_a_renamed_node_still_gets_its_result(nk, shot):
    group, _ = _graph(nk, shot)
    group["pull"].execute()
    group.setName("Hero_matte")
    _wait(nk, group)
    assert _state(group)["state"] == "done"
    assert group.node("HowardMatteRead")["file"].value().endswith("plate_matte.####.exr")


def test_a_script_saved_mid_pull_reopens_as_interrupted_in_a_new_session(nk, shot, tmp_path):
    group, _ = _graph(nk, shot)
    group["pull"].execute()
    nk.scriptSave(str(tmp_path / "comp.nk"))
    _wait(nk, group)  # let the job end in this session

    # A new Nuke session: a fresh plugin import (no jobs), the script opened from disk.
    for name in [m for m in sys.modules if m.startswith("howard_nuke")]:
        del sys.modules[name]
    nk.scriptClear()
    nk.scriptOpen(str(tmp_path / "comp.nk"))
    reopened = nk.toNode("HowardMatte1")
    assert _state(reopened)["state"] == "interrupted"
    assert reopened["status"].value().startswith("interrupted") and "resume" in reopened["status"].value()


def test_a_script_reopened_while_its_pull_runs_gets_the_result(nk, shot, tmp_path):
    group, _ = _graph(nk, shot)
    group["pull"].execute()
    nk.scriptSave(str(tmp_path / "comp.nk"))
    nk.scriptClear()
    nk.scriptOpen(str(tmp_path / "comp.nk"))  # same session: the job is still running
    reopened = nk.toNode("HowardMatte1")
    assert _state(reopened)["state"] == "pulling"
    _wait(nk, reopened)
    assert _state(reopened)["state"] == "done"


def test_a_failing_progress_watcher_stops_the_job_and_says_so(nk, shot):
    group, _ = _graph(nk, shot)
    nk.ProgressTask.fail_on_message = True
    group["pull"].execute()
    _wait(nk, group)
    assert _state(group)["state"] == "failed"
    assert "progress watcher failed" in group["status"].value()


def test_export_writes_a_readable_torchscript_and_reports_once(nk, tmp_path):
    import howard_nuke

    nk.get_filename_answer[0] = str(tmp_path / "for nuke")
    old = os.umask(0o022)
    try:
        howard_nuke.export_torchscript(None)
        _wait(nk)
    finally:
        os.umask(old)
    path = tmp_path / "for nuke.pt"
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert len(nk.messages) == 1 and nk.messages[0].startswith(f"Howard: wrote {path}")
    assert nk.progress_tasks and nk.progress_tasks[0].messages == ["for nuke.pt"]


def test_a_failing_export_watcher_still_reports(nk, tmp_path):
    import howard_nuke

    nk.get_filename_answer[0] = str(tmp_path / "x.pt")
    nk.ProgressTask.fail_on_message = True
    howard_nuke.export_torchscript(None)
    _wait(nk)
    assert len(nk.messages) == 1 and "progress watcher failed" in nk.messages[0]


# ---------------------------------------------------------------------------------------------------
# the decisions, without a session
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def logic(monkeypatch):
    monkeypatch.syspath_prepend(str(NUKE_DIR))
    for name in [m for m in sys.modules if m.startswith("howard_nuke")]:
        del sys.modules[name]
    from howard_nuke import logic

    yield logic
    for name in [m for m in sys.modules if m.startswith("howard_nuke")]:
        del sys.modules[name]


def test_the_frame_token_comes_back_after_evaluate(logic):
    keep = logic.keep_frame_token
    assert keep("$S/plate.####.exr", "/s/plate.1003.exr", 1003) == "/s/plate.%04d.exr"
    assert keep("[getenv S]/p.%04d.exr", "/s/p.0007.exr", 7) == "/s/p.%04d.exr"
    assert keep("/s/v1001/p.%d.dpx", "/s/v1001/p.5.dpx", 5) == "/s/v1001/p.%d.dpx"
    assert keep("/s/p.####.exr", "/s/p.####.exr", 3) == "/s/p.####.exr"  # evaluate kept the token
    assert keep("/s/still.exr", "/s/still.exr", 3) == "/s/still.exr"
    assert keep("/s/p.####.exr", "/s/p.exr", 3) is None  # cannot tell: the node asks for proxy off


def test_colour_names_from_a_read(logic):
    nuke_default = ["default", "linear", "sRGB", "rec709", "Cineon"]
    aces = ["default", "ACES - ACEScg", "Utility - sRGB - Texture", "Utility - Linear - sRGB"]
    pc = logic.plate_colour
    assert pc("default", False, "/p.%04d.exr", None, nuke_default) == ("linear", "linear", False)
    assert pc("default", False, "/p.%04d.png", logic.FROM_INPUT, nuke_default) == ("srgb", "sRGB", False)
    assert pc("default", False, "/p.%04d.png", None, aces) == ("srgb", "Utility - sRGB - Texture", False)
    assert pc("default (Cineon)", False, "/p.%04d.dpx", None, nuke_default) == ("Cineon", "Cineon", False)
    assert pc("ACES - ACEScg", False, "/p.%04d.exr", None, aces) == ("ACES - ACEScg", "ACES - ACEScg", False)
    assert pc("sRGB", True, "/p.%04d.png", None, nuke_default) == (None, "default", True)
    assert pc("sRGB", False, "/p.%04d.png", "ACES - ACEScg", aces) == ("ACES - ACEScg", "ACES - ACEScg", False)
    assert logic.colour_choices(aces) == [logic.FROM_INPUT, "ACES - ACEScg", "Utility - sRGB - Texture",
                                          "Utility - Linear - sRGB"]


def test_the_ocio_config_comes_from_the_node_the_script_or_the_environment(logic, tmp_path):
    shipped = tmp_path / "plugins" / "OCIOConfigs" / "configs" / "aces_1.2" / "config.ocio"
    shipped.parent.mkdir(parents=True)
    shipped.write_text("ocio_profile_version: 1\n")
    cfg = logic.ocio_config
    assert cfg(" /show/x.ocio ", "custom", "/script.ocio", str(tmp_path), {"OCIO": "/env.ocio"}) == "/show/x.ocio"
    assert cfg("", "custom", "/script.ocio", str(tmp_path), {"OCIO": "/env.ocio"}) == "/script.ocio"
    assert cfg("", "aces_1.2", "", str(tmp_path), {}) == str(shipped)
    assert cfg("", "ocio://cg-config-latest", "", "", {}) == "ocio://cg-config-latest"
    assert cfg("", "nuke-default", "", str(tmp_path), {"OCIO": "/env.ocio"}) == "/env.ocio"  # not shipped here
    assert cfg("", "nuke-default", "", "", {}) is None


def test_the_internal_read_range_and_the_missing_list(logic):
    assert logic.read_range([1002, 1003], 1001, 1004) == (1001, 1004)
    assert logic.read_range([998, 999], 1001, 1004) == (998, 1004)
    assert logic.read_range([5, 6], None, None) == (5, 6)
    assert logic.missing_frames([1002, 1003, 1007], 1001, 1008) == "1001, 1004-1006, 1008"
    assert logic.missing_frames(range(1, 5), 1, 4) == ""


# --------------------------------------------------------------------------------------------------
# Submit to farm: the same pull through Howard's farm commands


def test_a_pull_on_a_dask_cluster_lands_like_a_local_one(nk, shot, tmp_path):
    group, _ = _graph(nk, shot)
    group["output_folder"].setValue(str(tmp_path / "dask"))
    group["farm"].setValue("Dask cluster")
    group["farm_address"].setValue("local:1")
    group["farm_chunk"].setValue(2)
    state = _pull(nk, group)
    assert state["state"] == "done", group["status"].value()
    assert "--cluster local:1" in state["command"] and "--chunk-size 2" in state["command"]
    assert group["status"].value().startswith("done: 4 matte(s), 1001-1004")
    assert group.node("HowardMatteRead")["file"].value() == str(tmp_path / "dask" / "plate_matte.####.exr")
    assert (tmp_path / "dask" / "howard_chunks" / "howard_report.1001-1002.json").is_file()


def test_an_openjd_bundle_is_written_and_its_mattes_load_when_the_farm_is_done(nk, shot, tmp_path, monkeypatch):
    import subprocess

    import howard_nuke.node as node_module

    monkeypatch.setattr(node_module, "_FARM_POLL_S", 0.1)
    group, _ = _graph(nk, shot)
    group["output_folder"].setValue(str(tmp_path / "out"))
    group["farm"].setValue("OpenJD bundle")
    group["farm_path"].setValue(str(tmp_path / "bundle"))
    state = _pull(nk, group)
    assert state["state"] == "on farm", group["status"].value()
    assert (tmp_path / "bundle" / "template.yaml").is_file()
    assert group.node("HowardMatteRead")["file"].value() == ""  # nothing to load until the farm is done
    # The farm: `openjd run` on the bundle, as a TD (or Deadline Cloud) would run it.
    run = subprocess.run([Path(sys.executable).with_name("openjd"), "run", tmp_path / "bundle" / "template.yaml"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:]
    deadline = time.monotonic() + 60
    while _state(group)["state"] != "done" and time.monotonic() < deadline:
        nk.run_main_thread_queue()
        time.sleep(0.05)
    assert group["status"].value().startswith("done: 4 matte(s), 1001-1004"), group["status"].value()
    assert group.node("HowardMatteRead")["file"].value() == str(tmp_path / "out" / "plate_matte.####.exr")
    assert group.node("CopyAlpha")["disable"].value() is False
