"""`howard bench model` on a small frame: the plain model and Matter timed side by side, ratios that add up."""

import json

from howard_core.cli import main
from howard_core.model.engine import cpu_supports_bf16


def test_bench_model_prints_consistent_json(capsys):
    code = main(["bench", "model", "--size", "160x96", "--repeats", "2", "--backbones", "mobilenetv2",
                 "--sample-pixels", "2000"])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(out)
    rows = res["results"]
    assert [r["precision"] for r in rows] == (["fp32", "bf16"] if cpu_supports_bf16() else ["fp32"])
    for r in rows:
        assert r["backbone"] == "mobilenetv2" and r["matter_s"] > 0 and r["plain_s"] > 0
        assert abs(r["speedup_vs_plain"] - r["plain_s"] / r["matter_s"]) < 0.02 * r["speedup_vs_plain"] + 0.01
        assert abs(r["speedup_vs_official"] - r["official_fp32_s"] / r["matter_s"]) < (
            0.02 * r["speedup_vs_official"] + 0.01)
    assert rows[0]["official_fp32_s"] == rows[0]["plain_s"]  # fp32: the official model is the plain one
