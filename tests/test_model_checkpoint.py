"""load_model: official state_dicts, base models, TorchScript, Howard's format, and damaged files."""

import pickle
import zipfile

import pytest
import torch
from conftest import deterministic_state_dict

from howard_core.errors import HowardError
from howard_core.model import (
    Matter,
    MattingBase,
    MattingRefine,
    detect_architecture,
    export_torchscript,
    load_model,
    save_checkpoint,
)

X = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
Y = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))


def _same(a, b):
    with torch.no_grad():
        return all(torch.equal(p, q) for p, q in zip(a(X, Y), b(X, Y), strict=True))


@pytest.mark.parametrize("backbone", ["mobilenetv2", "resnet50", "resnet101"])
def test_official_state_dict_detects_backbone(tmp_path, backbone):
    sd = deterministic_state_dict(backbone)
    path = tmp_path / f"pytorch_{backbone}.pth"
    torch.save(sd, path)
    model = load_model(path, refine_mode="full")
    assert isinstance(model, MattingRefine) and model.backbone_name == backbone
    assert model.howard_meta["kind"] == "refine" and model.howard_meta["format"] == "state_dict"
    assert model.refiner.mode == "full"
    assert all(torch.equal(model.state_dict()[k], v.float() if v.is_floating_point() else v) for k, v in sd.items())
    assert detect_architecture(sd) == (backbone, "refine")


def test_base_checkpoint_gives_base_model(tmp_path):
    torch.save(deterministic_state_dict("mobilenetv2", base=True), tmp_path / "base.pth")
    model = load_model(tmp_path / "base.pth")
    assert type(model) is MattingBase
    with pytest.raises(HowardError, match="no refiner"):
        load_model(tmp_path / "base.pth", refine_mode="full")


def test_howard_format_round_trip_fp16(tmp_path):
    ref = MattingRefine("mobilenetv2").eval()
    ref.load_state_dict(deterministic_state_dict("mobilenetv2"))
    path = save_checkpoint(tmp_path / "w" / "howard.pt", ref, meta={"trained": False, "steps": 3}, half=True)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "howard-checkpoint" and raw["backbone"] == "mobilenetv2"
    assert raw["state_dict"]["decoder.conv4.weight"].dtype == torch.float16
    model = load_model(path)
    assert model.howard_meta["meta"] == {"trained": False, "steps": 3}
    assert model.decoder.conv4.weight.dtype == torch.float32
    with torch.no_grad():
        assert (model(X, Y)[0] - ref(X, Y)[0]).abs().max() < 0.02  # fp16 storage, fp32 compute


def test_wrapped_and_dataparallel_state_dicts(tmp_path):
    sd = deterministic_state_dict("mobilenetv2")
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, tmp_path / "dp.pth")
    assert load_model(tmp_path / "dp.pth").backbone_name == "mobilenetv2"


def test_torchscript_checkpoint_is_rebuilt_eagerly(tmp_path):
    ref = MattingRefine("mobilenetv2", refine_mode="thresholding").eval()
    ref.load_state_dict(deterministic_state_dict("mobilenetv2"))
    torch.jit.script(ref).save(str(tmp_path / "ts.pth"))
    model = load_model(tmp_path / "ts.pth")
    assert type(model) is MattingRefine and model.howard_meta["format"] == "torchscript"
    assert model.refiner.mode == "thresholding"  # the archive's settings carry over
    assert _same(model, ref)


def test_export_for_nuke_reloads_and_matches(tmp_path):
    ref = MattingRefine("mobilenetv2", refine_sample_pixels=16 * 50).eval()
    ref.load_state_dict(deterministic_state_dict("mobilenetv2"))
    path = export_torchscript(ref, tmp_path / "nuke" / "howard.pt")
    scripted = torch.jit.load(str(path))
    x = torch.cat([X[..., :61, :90], Y[..., :61, :90]], dim=1)  # odd size: padded and cropped inside
    with torch.no_grad():
        out = scripted(x)
    assert out.shape == (1, 4, 61, 90)
    want = Matter(ref, device="cpu")(X[..., :61, :90], Y[..., :61, :90])
    assert (out[:, 3:] - want.alpha).abs().max() <= 1e-4
    assert (out[:, :3] - want.foreground).abs().max() <= 1e-4


def _write_truncated(path, tmp_path):
    torch.save(deterministic_state_dict("mobilenetv2"), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    path.write_bytes(data[: len(data) // 2])


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def _bad_files(tmp_path):
    sd = deterministic_state_dict("mobilenetv2")
    cases = {}
    cases["missing.pth"] = (None, "does not exist")
    (tmp_path / "empty.pth").write_bytes(b"")
    cases["empty.pth"] = (tmp_path / "empty.pth", "empty")
    (tmp_path / "noise.pth").write_bytes(bytes(range(256)) * 40)
    cases["noise.pth"] = (tmp_path / "noise.pth", "not a readable PyTorch checkpoint")
    _write_truncated(tmp_path / "truncated.pth", tmp_path)
    cases["truncated.pth"] = (tmp_path / "truncated.pth", "not a readable PyTorch checkpoint")
    torch.save({k: v for k, v in sd.items() if k != "decoder.conv4.bias"}, tmp_path / "missing_key.pth")
    cases["missing_key.pth"] = (tmp_path / "missing_key.pth", "1 weights missing .*decoder.conv4.bias")
    torch.save({**sd, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    cases["extra.pth"] = (tmp_path / "extra.pth", "unexpected weights .*extra.weight")
    torch.save({**sd, "refiner.conv1.weight": torch.zeros(24, 42, 1, 1)}, tmp_path / "shape.pth")
    cases["shape.pth"] = (tmp_path / "shape.pth", r"wrong shape .*refiner.conv1.weight \(24, 42, 1, 1\)")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    cases["other.pth"] = (tmp_path / "other.pth", "do not look like a BGMv2 model")
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    cases["evil.pth"] = (tmp_path / "evil.pth", "refused to load|not a readable")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    cases["list.pth"] = (tmp_path / "list.pth", "expected a state_dict")
    bad = dict(sd)
    bad["decoder.conv4.weight"] = torch.full_like(sd["decoder.conv4.weight"], float("nan"))
    torch.save(bad, tmp_path / "nan.pth")
    cases["nan.pth"] = (tmp_path / "nan.pth", "NaN or infinite")
    one_inf = dict(sd)
    one_inf["backbone.features.4.conv.0.0.weight"] = sd["backbone.features.4.conv.0.0.weight"].clone()
    one_inf["backbone.features.4.conv.0.0.weight"].view(-1)[7] = float("-inf")
    torch.save(one_inf, tmp_path / "inf.pth")
    cases["inf.pth"] = (tmp_path / "inf.pth", r"entry backbone\.features\.4\.conv\.0\.0\.weight contains NaN")
    with zipfile.ZipFile(tmp_path / "fake_ts.pth", "w") as zf:
        zf.writestr("archive/code/__torch__.py", "garbage")
    cases["fake_ts.pth"] = (tmp_path / "fake_ts.pth", "TorchScript archive could not be read")
    return cases


def test_damaged_or_wrong_checkpoints_give_one_line_errors(tmp_path, capsys):
    for name, (path, message) in _bad_files(tmp_path).items():
        path = path or tmp_path / name
        with pytest.raises(HowardError, match=message) as info:
            load_model(path)
        text = str(info.value)
        assert "\n" not in text and name in text, text
    assert "this must never run" not in capsys.readouterr().out


def test_huge_but_finite_weights_are_not_called_damaged(tmp_path):
    # Their L1 norm overflows float32; only a NaN or an infinity in an entry makes a file damaged.
    sd = deterministic_state_dict("mobilenetv2")
    sd["decoder.conv4.weight"] = torch.full_like(sd["decoder.conv4.weight"], 3e38)
    torch.save(sd, tmp_path / "huge.pth")
    model = load_model(tmp_path / "huge.pth")
    assert float(model.state_dict()["decoder.conv4.weight"].min()) == pytest.approx(3e38, rel=1e-6)


def test_default_model_without_bundled_weights_says_untrained(monkeypatch, tmp_path):
    from howard_core.model import checkpoint

    monkeypatch.setattr(checkpoint, "DEFAULT_WEIGHTS", tmp_path / "absent.pt")
    model = load_model()
    assert isinstance(model, MattingRefine) and model.howard_meta["trained"] is False


def test_default_model_is_the_bundled_demo_checkpoint_with_its_model_card():
    import json

    from howard_core.model import checkpoint

    path = checkpoint.DEFAULT_WEIGHTS
    assert path.is_file() and path.stat().st_size <= 12 * 2**20
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "howard-checkpoint" and raw["kind"] == "refine" and raw["backbone"] == "mobilenetv2"
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point())
    card = raw["meta"]["model_card"]
    assert card == json.loads(path.with_suffix(".json").read_text())
    assert "synthetic" in card["what_it_is"] and "weights install" in card["what_it_is"]
    assert card["training"]["base"]["steps"] > 0 and card["training"]["refine"]["steps"] > 0
    ev = card["evaluation"]
    # The claim the card makes: clearly better than the classical difference key on held-out data.
    assert ev["model"]["sad_div1e3"] < ev["baseline"]["sad_div1e3"]
    assert ev["model"]["mse_x1e3"] < ev["baseline"]["mse_x1e3"]
    model = load_model()
    assert isinstance(model, MattingRefine) and model.howard_meta["trained"] is True
    assert model.howard_meta["source"] == str(path) and model.howard_meta["meta"]["demo"] is True
