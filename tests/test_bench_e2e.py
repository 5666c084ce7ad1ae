"""`howard bench e2e`: the real command run as a user runs it, timed, its outputs read back and scored.

The side-by-side run needs the official BGMv2 code and a Python with its dependencies, which this
project never installs: set HOWARD_BGMV2_OFFICIAL (the checkout) and HOWARD_BGMV2_PYTHON to run it.
"""

import json
import os
from pathlib import Path

import pytest

from howard_core.bench import e2e
from howard_core.cli import main


def test_bench_e2e_runs_every_input_and_output(tmp_path, capsys):
    code = main(["bench", "e2e", "--size", "160x96", "--frames", "2", "--sample-pixels", "2000",
                 "--workdir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(out)
    runs = res["runs"]
    assert [(r["input"], r["output"]) for r in runs] == [(i, o) for i in ("movie", "sequence")
                                                         for o in ("png", "exr", "alpha")]
    for r in runs:
        assert r["tool"] == "howard" and r["wall_s"] > 0 and 0 < r["first_frame_s"] <= r["wall_s"]
        assert r["peak_rss_mib"] > 50 and r["cpu_s"] > 0 and r["flagged_frames"] >= 0
        assert set(r["stages_s"]) >= {"wall_s", "read_s", "align_s", "matte_s", "write_s"}
        assert r["cpu_budget"]["mode"] == "measured" and r["cpu_budget"]["threads"] >= 1
        # A matte of the bundled weights on the synthetic shot: far from a constant guess.
        assert 0 <= r["alpha_mad"] < 0.2
        assert r["command"].startswith("howard matte ") and "--sample-pixels 2000" in r["command"]
    # The same movie through PNG, EXR and alpha outputs: the same matte, to within 8-bit rounding.
    movie = [r["alpha_mad"] for r in runs if r["input"] == "movie"]
    assert max(movie) - min(movie) < 0.002
    assert "speedup" not in res  # no official run asked for
    assert len(list((tmp_path / "howard_movie_png").glob("matte.*.png"))) == 2
    assert (tmp_path / "inputs" / "plate.mp4").stat().st_size > 0


def test_bad_official_folder_is_one_line(tmp_path, capsys):
    assert main(["bench", "e2e", "--official", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    (tmp_path / "empty").mkdir()
    assert main(["bench", "e2e", "--official", str(tmp_path / "empty"), "--official-python",
                 str(tmp_path / "no-python")]) == 2  # before any shot is made
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-python: no such interpreter" in err
    with pytest.raises(e2e.HowardError, match="no inference_video.py here"):
        e2e.prepare_official(tmp_path / "empty", tmp_path / "work")


def test_official_copy_gets_the_opencv_fix_and_the_checkout_stays_as_it_was(tmp_path):
    official = tmp_path / "official"
    official.mkdir()
    (official / "inference_video.py").write_text("print('hi')\n")
    original = "        matches = self.matcher.match(d1, d2, None)\n        " + e2e._ALIGN_FIX[0] + "\n"
    (official / "inference_utils.py").write_text(original)
    copy = e2e.prepare_official(official, tmp_path / "work")
    assert e2e._ALIGN_FIX[1] in (copy / "inference_utils.py").read_text()
    assert e2e._ALIGN_FIX[0] not in (copy / "inference_utils.py").read_text()
    assert (official / "inference_utils.py").read_text() == original


@pytest.mark.skipif(not (os.environ.get("HOWARD_BGMV2_OFFICIAL") and os.environ.get("HOWARD_BGMV2_PYTHON")),
                    reason="set HOWARD_BGMV2_OFFICIAL and HOWARD_BGMV2_PYTHON to run the official code")
def test_official_side_by_side(tmp_path, capsys):
    code = main(["bench", "e2e", "--size", "320x192", "--frames", "2", "--sample-pixels", "4000", "--inputs",
                 "movie", "--outputs", "exr", "--official", os.environ["HOWARD_BGMV2_OFFICIAL"],
                 "--official-python", os.environ["HOWARD_BGMV2_PYTHON"], "--workdir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(out)
    official = [r for r in res["runs"] if r["tool"] == "official"]
    assert [r["output"] for r in official] == ["com (RGBA PNG)", "pha (alpha JPEG)"]
    assert all(0 <= r["alpha_mad"] < 0.2 for r in official)
    assert set(res["speedup"]) == set(res["cpu_speedup"]) == {"movie exr vs official com", "movie exr vs official pha"}
    assert not Path(os.environ["HOWARD_BGMV2_OFFICIAL"], "inference_utils.py").read_text().count("sorted(matches")


def test_bench_e2e_memory_in_clip_length(tmp_path, capsys):
    assert main(["bench", "e2e", "--size", "160x96", "--frames", "2", "--long-frames", "6", "--sample-pixels",
                 "2000", "--inputs", "movie", "--outputs", "exr", "--workdir", str(tmp_path)]) == 0
    mem = json.loads(capsys.readouterr().out)["memory"]
    assert [r["frames"] for r in mem["runs"]] == [2, 6]
    assert all(r["peak_rss_mib"] > 50 for r in mem["runs"])
    assert mem["peak_growth_mib"] == round(mem["runs"][1]["peak_rss_mib"] - mem["runs"][0]["peak_rss_mib"], 1)
    assert len(list((tmp_path / "long" / "howard_movie_png").glob("matte.*.png"))) == 6


def test_other_tools_run_in_the_users_environment(monkeypatch):
    from howard_core import runtime

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setattr(runtime, "SET_HERE", {"OMP_WAIT_POLICY"})  # as prepare_process leaves it
    env = e2e.user_environment(drop=("PYTHONPATH",))
    assert "OMP_WAIT_POLICY" not in env and "PYTHONPATH" not in env and env["PATH"] == os.environ["PATH"]
    monkeypatch.setattr(runtime, "SET_HERE", set())  # the user's own setting is kept
    assert e2e.user_environment()["OMP_WAIT_POLICY"] == "PASSIVE"
