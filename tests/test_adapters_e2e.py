"""The adapters' path end to end, for real: the host kit builds the `howard matte` command
for a tiny generated shot, runs the installed `howard` as a subprocess, follows its JSON
progress and finds the written mattes, exactly as the Nuke node and the Blender operator do
(they add only the host's progress bar and node wiring). About 5 s on two cores."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from howard_core import hostcli
from howard_core.demo import make_inputs


def _howard() -> str:
    beside = Path(sys.executable).with_name("howard")
    found = str(beside) if beside.exists() else shutil.which("howard")
    if not found:
        pytest.fail("the howard executable is not installed beside this Python; run `python3 build.py setup`")
    return found


def test_pull_a_matte_through_the_host_kit(tmp_path):
    plate, clean = make_inputs(tmp_path / "in put", 96, 64, 3, 11)
    options = hostcli.MatteSettings(device="cpu", precision="fp32", layers=("fg",))
    argv = hostcli.matte_command(plate, clean, tmp_path / "matte out", options, runner=[_howard()])
    events, statuses = [], []
    result = hostcli.run(argv, on_event=lambda e, p: (events.append(e), statuses.append((p.fraction, p.status()))),
                         poll_interval=0.05)

    assert [e["event"] for e in events] == ["start", "frame", "frame", "frame", "done"]
    assert [e["frame"] for e in events[1:4]] == [1001, 1002, 1003]
    assert [f for f, _ in statuses] == [0.0, 1 / 3, 2 / 3, 1.0, 1.0]
    assert statuses[-1][1].startswith("Howard: done, 3 frames")
    assert result.output == str(tmp_path / "matte out" / "plate_matte.####.exr")
    assert list(result.frames) == [1001, 1002, 1003] and result.first_file.endswith("plate_matte.1001.exr")
    assert all(Path(f).stat().st_size > 0 for f in result.frames.values())
    assert Path(result.report).is_file()
    # The default weights are the demo model: hosts say so, so artists know to install production weights.
    assert any("demo weights" in w and "synthetic" in w for w in result.warnings)
    assert not any("UNTRAINED" in w for w in result.warnings)

    import OpenImageIO as oiio  # what a host then reads: RGBA plus the requested layer

    buf = oiio.ImageBuf(result.first_file)
    assert buf.spec().channelnames[:4] == ("R", "G", "B", "A") and "fg.R" in buf.spec().channelnames
    alpha = buf.get_pixels(oiio.FLOAT)[..., 3]
    assert alpha.shape == (64, 96) and np.all((alpha >= 0) & (alpha <= 1))


def test_a_bad_input_comes_back_as_the_clis_one_line(tmp_path):
    argv = hostcli.matte_command(tmp_path / "no such plate.####.exr", tmp_path / "clean.mov", tmp_path / "out",
                                 hostcli.MatteSettings(device="cpu"), runner=[_howard()])
    with pytest.raises(hostcli.HostError) as err:
        hostcli.run(argv, poll_interval=0.05)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(str(tmp_path / "no such plate.####.exr"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
