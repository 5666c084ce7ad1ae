"""Training smoke runs (a few steps at 64x64), resuming, checkpoints, the loss plot and evaluation."""

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from howard_core.errors import HowardError
from howard_core.model.checkpoint import save_checkpoint
from howard_core.train.checkpoint import read_training_checkpoint
from howard_core.train.evaluate import evaluate
from howard_core.train.evaluate import main as eval_main
from howard_core.train.plot import render_loss_plot
from howard_core.train.trainer import TrainConfig, train


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny convolutions gain nothing from a second thread, and lose a lot when the cores are shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = TrainConfig(stage="base", steps=3, batch_size=2, size=64, log_every=1, save_every=100, seed=0)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_train_writes_checkpoints_and_a_resumed_run_matches_an_uninterrupted_one(tmp_path):
    lines = []
    cfg = replace(TINY, out=str(tmp_path / "a"))
    final = train(cfg, log=lines.append)
    last = tmp_path / "a" / "base-last.pt"
    assert final == tmp_path / "a" / "base.pt" and last.is_file()
    ck = read_training_checkpoint(last)
    assert (ck["format"], ck["version"], ck["kind"], ck["backbone"]) == ("howard-checkpoint", 1, "base", "mobilenetv2")
    assert ck["train"]["step"] == 3 and [h["step"] for h in ck["train"]["history"]] == [1, 2, 3]
    assert any("step 2/3" in line and "it/s" in line and "eta" in line for line in lines)
    plot = cv2.imread(str(tmp_path / "a" / "base-loss.png"))
    assert plot is not None and plot.shape[2] == 3
    assert (tmp_path / "a" / "base-losses.csv").read_text().splitlines()[0].startswith("step,loss,pha_l1")

    train(replace(cfg, steps=4, resume=str(last)), log=lines.append)
    ck = read_training_checkpoint(last)
    assert ck["train"]["step"] == 4 and ck["meta"]["steps"] == 4
    assert [h["step"] for h in ck["train"]["history"]] == [1, 2, 3, 4]

    # Same data indices, optimizer state and RNG: resuming changes nothing.
    train(replace(cfg, steps=4, out=str(tmp_path / "b")), log=lambda _: None)
    resumed, straight = _weights(tmp_path / "a" / "base.pt"), _weights(tmp_path / "b" / "base.pt")
    assert resumed.keys() == straight.keys()
    for k in resumed:
        torch.testing.assert_close(resumed[k], straight[k], atol=1e-6, rtol=0, msg=k)

    # The refine stage picks up <out>/base.pt and trains the whole network.
    refine = train(replace(cfg, stage="refine", steps=1), log=lines.append)
    assert any(line.startswith("init:") and "base.pt" in line for line in lines)
    sd = _weights(refine)
    assert any(k.startswith("refiner.") for k in sd)
    assert torch.load(refine, weights_only=True)["kind"] == "refine"


def test_init_from_an_official_state_dict_and_ctrl_c_saves_a_resumable_checkpoint(tmp_path):
    from howard_core.model import MattingRefine

    torch.manual_seed(1)
    official = MattingRefine("mobilenetv2")
    torch.save(official.state_dict(), tmp_path / "official.pth")  # the published checkpoints' layout
    lines = []

    def interrupt_at_step_1(line):
        lines.append(line)
        if "step 1/" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(replace(TINY, out=str(tmp_path), init=str(tmp_path / "official.pth")), log=interrupt_at_step_1)
    ck = read_training_checkpoint(tmp_path / "base-last.pt")
    assert ck["train"]["step"] == 1 and ck["meta"]["init"].endswith("official.pth")
    assert not (tmp_path / "base.pt").exists()
    # Every base tensor came from the refine checkpoint (the refiner's are not part of a base model).
    base_keys = [k for k in official.state_dict() if not k.startswith("refiner.")]
    assert any(line.startswith(f"init: {len(base_keys)}/{len(base_keys)} tensors") for line in lines)


def test_user_fixable_configuration_errors(tmp_path):
    with pytest.raises(HowardError, match="multiples of 16"):
        train(replace(TINY, size=72, out=str(tmp_path)))
    with pytest.raises(HowardError, match="multiples of 64"):
        train(replace(TINY, stage="refine", size=96, out=str(tmp_path)))
    with pytest.raises(HowardError, match="at least 2"):
        train(replace(TINY, batch_size=1, out=str(tmp_path)))
    from howard_core.model import MattingBase

    weights_only = save_checkpoint(tmp_path / "w.pt", MattingBase("mobilenetv2"))
    with pytest.raises(HowardError, match=r"w\.pt: holds weights only.*--init"):
        train(replace(TINY, resume=str(weights_only), out=str(tmp_path)))
    with pytest.raises(HowardError, match="no such checkpoint"):
        train(replace(TINY, resume=str(tmp_path / "missing.pt"), out=str(tmp_path)))


def test_half_precision_checkpoint_loads_back(tmp_path):
    from howard_core.model import MattingBase, load_model

    torch.manual_seed(0)
    model = MattingBase("mobilenetv2")
    path = save_checkpoint(tmp_path / "m.pt", model, {"note": "x"}, half=True)
    raw = torch.load(path, weights_only=True)
    assert raw["state_dict"]["decoder.conv4.weight"].dtype == torch.float16
    assert raw["meta"] == {"note": "x"}
    loaded = load_model(path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, atol=2e-3, rtol=1e-3, msg=k)


def test_loss_plot_draws_every_series():
    history = [{"step": s, "loss": 1.0 / s, "pha_l1": 0.1 / s, "it_s": 2.0} for s in range(1, 30)]
    img = render_loss_plot(history, "test")
    assert img.shape == (540, 960, 3)
    coloured = np.abs(img.astype(int) - img.mean(axis=2, keepdims=True)).sum(axis=2) > 60
    assert coloured.sum() > 100  # the blue pha_l1 curve and its legend
    assert (render_loss_plot([], "empty") < 128).any()  # says that nothing is recorded


def test_evaluate_reports_model_and_baseline_and_writes_images(tmp_path, capsys):
    from howard_core.model import MattingBase

    torch.manual_seed(0)
    report = evaluate(MattingBase("mobilenetv2"), n=2, size=64, seed=1, images=tmp_path)
    keys = {"sad_div1e3", "mse_x1e3", "grad_div1e3", "conn_div1e3", "fgr_mse_x1e3"}
    assert keys <= set(report["baseline"]) and keys <= set(report["model"])
    assert report["split"] == "heldout" and report["n"] == 2 and report["size"] == [64, 64]
    assert all(report["baseline"][k] >= 0 for k in keys)
    strip = cv2.imread(str(tmp_path / "heldout_1_0000.png"))
    assert strip.shape == (64 + 24, 4 * 64, 3)

    assert eval_main(["--baseline-only", "--n", "2", "--size", "64", "--seed", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"] is None
    assert printed["baseline"] == pytest.approx(report["baseline"])  # the held-out set is reproducible

    from howard_core.model import MattingRefine

    with pytest.raises(HowardError, match="multiples of 64"):
        evaluate(MattingRefine("mobilenetv2"), n=1, size=96)


def test_bundle_writes_small_fp16_weights_with_a_model_card(tmp_path):
    from howard_core.cli import main as cli_main
    from howard_core.model import MattingRefine, load_model
    from howard_core.train.bundle import bundle

    run = tmp_path / "run"
    with pytest.raises(HowardError, match="no refine-last.pt"):
        bundle(run, tmp_path / "w" / "demo")
    train(replace(TINY, out=str(run)), log=lambda _: None)
    train(replace(TINY, stage="refine", steps=2, out=str(run)), log=lambda _: None)
    assert cli_main(["train", "bundle", str(run), "--out", str(tmp_path / "w" / "demo"), "--n", "2",
                     "--size", "64"]) == 0
    pt, card_file = tmp_path / "w" / "demo.pt", tmp_path / "w" / "demo.json"
    raw = torch.load(pt, weights_only=True)
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point())
    assert pt.stat().st_size < 12 * 2**20
    card = raw["meta"]["model_card"]
    assert card == json.loads(card_file.read_text())
    assert raw["meta"]["trained"] is True and "synthetic" in card["what_it_is"]
    assert card["training"]["base"]["steps"] == 3 and card["training"]["refine"]["steps"] == 2
    assert card["training"]["refine"]["size"] == [64, 64]
    ev = card["evaluation"]
    assert ev["set"].startswith("SyntheticComposites split 'heldout'") and "2 samples of 64x64" in ev["set"]
    assert ev["baseline_over_model"]["sad_div1e3"] == round(ev["baseline"]["sad_div1e3"] / ev["model"]["sad_div1e3"], 2)
    model = load_model(pt)
    assert isinstance(model, MattingRefine) and model.howard_meta["trained"] is True
    # What was evaluated is what ships: the fp16 weights, bit for bit.
    refine = load_model(run / "refine-last.pt").state_dict()
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(v, refine[k].half().float()), k


def test_bundled_model_beats_the_difference_key_on_held_out_samples():
    # Recomputed here, not read off the model card: 8 held-out samples the trainer never saw.
    from howard_core.model import load_model

    report = evaluate(load_model(), n=8, size=512, seed=0)
    model, base = report["model"], report["baseline"]
    assert model["trained"] is True
    for key in ("sad_div1e3", "mse_x1e3", "grad_div1e3", "conn_div1e3"):
        assert model[key] < base[key], (key, model[key], base[key])


def test_resume_keeps_the_runs_learning_rate_unless_a_new_one_is_given(tmp_path):
    from howard_core.train.trainer import LEARNING_RATES

    cfg = replace(TINY, steps=2, lr_scale=2.0, out=str(tmp_path))
    train(cfg, log=lambda _: None)
    last = tmp_path / "base-last.pt"
    lines = []
    train(replace(cfg, steps=3, lr_scale=None, resume=str(last)), log=lines.append)
    state = read_training_checkpoint(last)["train"]
    assert state["lr_phases"] == [{"from_step": 0, "lr_scale": 2.0}]
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [2 * v for v in LEARNING_RATES["base"].values()]
    assert not any(line.startswith("lr:") for line in lines)

    train(replace(cfg, steps=4, lr_scale=0.5, resume=str(last)), log=lines.append)
    state = read_training_checkpoint(last)["train"]
    assert state["lr_phases"] == [{"from_step": 0, "lr_scale": 2.0}, {"from_step": 3, "lr_scale": 0.5}]
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [0.5 * v for v in LEARNING_RATES["base"].values()]
    assert any(line == "lr: scale 0.5 from step 3 (was 2.0)" for line in lines)


def test_sigterm_saves_a_resumable_checkpoint_like_ctrl_c(tmp_path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "howard_core.cli", "train", "--steps", "100000", "--batch-size",
                             "2", "--size", "64", "--log-every", "1", "--save-every", "100000", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "step 2/" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 130, rest
    assert "interrupted at step" in rest and "--resume" in rest
    step = read_training_checkpoint(out / "base-last.pt")["train"]["step"]
    assert step >= 2 and not (out / "base.pt").exists()
