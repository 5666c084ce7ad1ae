"""`howard bench pipeline` on a tiny shot: it runs through the CLI and its JSON adds up."""

import json

from howard_core.cli import main


def test_bench_pipeline_prints_consistent_json(tmp_path, capsys):
    code = main(["bench", "pipeline", "--size", "96x64", "--frames", "2", "--memory-size", "96x64",
                 "--memory-frames", "2,4", "--workdir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(out)
    tp = res["throughput"]
    assert tp["size"] == "96x64" and tp["frames"] == 2
    assert tp["pipeline_fps"] > 0 and tp["model_only_fps"] > 0
    assert abs(tp["ratio"] - tp["pipeline_fps"] / tp["model_only_fps"]) < 0.01
    assert set(tp["stage_seconds"]) == {"wall_s", "read_s", "align_s", "matte_s", "write_s"}
    bound, cpu = tp["cpu_bound"], tp["cpu_s_per_frame"]
    assert bound["cores"] >= 1 and 0 < bound["cores_busy"]
    # Relative: the per-frame CPU figures are rounded to 3 decimals, which at tiny sizes is a few percent.
    assert abs(bound["ratio_ceiling"] - cpu["model_only"] / cpu["pipeline"]) < 0.03 * bound["ratio_ceiling"]
    assert abs(bound["pipeline_fps_ceiling"] - bound["cores"] / cpu["pipeline"]) < 0.05 * bound["pipeline_fps_ceiling"]
    # The inputs it wrote and the outputs of its timed run are real files.
    assert len(list((tmp_path / "hd" / "plate").glob("plate.*.exr"))) == 2
    assert len(list((tmp_path / "out0").glob("plate_matte.*.exr"))) == 2
    mem = res["memory"]
    assert [r["frames"] for r in mem["runs"]] == [2, 4] and [r["frames_done"] for r in mem["runs"]] == [2, 4]
    for run in mem["runs"]:
        assert run["peak_rss_mib"] >= run["after_model_load_mib"] > 50  # torch alone is more than that
    assert mem["peak_growth_mib"] == round(mem["runs"][1]["peak_rss_mib"] - mem["runs"][0]["peak_rss_mib"], 1)
