"""Matter (folded, channels-last, tiled refiner) computes what the reference network computes."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import deterministic_state_dict, reference_path

from howard_core.errors import HowardError
from howard_core.model import Matter, MattingBase, MattingRefine, fold_batchnorm
from howard_core.model.engine import cpu_supports_bf16


@pytest.fixture(scope="module")
def vectors():
    return torch.load(reference_path("vectors_mobilenetv2.pt"), weights_only=True)


def _refine(config, backbone="mobilenetv2"):
    net = MattingRefine(backbone, **config)
    net.load_state_dict(deterministic_state_dict(backbone))
    return net.eval()


@pytest.mark.parametrize("stage1,tile", [("tiles", 8), ("tiles", 4), ("tiles", 6), ("tiles", 16), ("windows", 8)])
def test_matter_matches_reference_vectors(vectors, stage1, tile):
    for case in vectors["cases"]:
        config = dict(case["config"])
        if config.get("model") == "base":
            continue
        matter = Matter(_refine(config), device="cpu", precision="fp32")
        matter.stage1, matter.TILE = stage1, tile
        out = matter(vectors["src"].clone(), vectors["bgr"].clone())
        want = case["outputs"]
        assert (out.alpha - want["pha"]).abs().max() <= 1e-4, config
        assert (out.foreground - want["fgr"]).abs().max() <= 1e-4, config
        # The refinement map is the selection expanded to its 4x4 patches.
        assert torch.equal(out.refinement[:, :, ::4, ::4], want["ref_sm"]), config
        assert out.refinement.sum() == 16 * want["ref_sm"].sum()


def test_matter_base_model_matches_reference(vectors):
    case = next(c for c in vectors["cases"] if c["config"].get("model") == "base")
    net = MattingBase("mobilenetv2")
    net.load_state_dict(deterministic_state_dict("mobilenetv2", base=True))
    out = Matter(net.eval(), device="cpu")(vectors["src"], vectors["bgr"])
    assert (out.alpha - case["outputs"]["pha"]).abs().max() <= 1e-4
    assert (out.error - case["outputs"]["err"]).abs().max() <= 1e-4
    assert out.refinement.sum() == 0


@pytest.mark.parametrize("kernel_size", [1, 3])
@pytest.mark.parametrize("stage1,tile", [("tiles", 8), ("tiles", 6), ("tiles", 16), ("windows", 8)])
def test_any_size_and_kernel_matches_padded_reference(kernel_size, stage1, tile):
    torch.manual_seed(3)
    net = MattingRefine("mobilenetv2", refine_kernel_size=kernel_size, refine_sample_pixels=8000).eval()
    src, bgr = torch.rand(2, 3, 101, 150), torch.rand(2, 3, 101, 150)
    with torch.no_grad():  # the reference needs multiples of 4: pad by edge replication as Matter does
        ref = net(F.pad(src, (0, 2, 0, 3), mode="replicate"), F.pad(bgr, (0, 2, 0, 3), mode="replicate"))
    matter = Matter(net, device="cpu")
    matter.stage1, matter.TILE = stage1, tile
    out = matter(src, bgr)
    assert out.alpha.shape == (2, 1, 101, 150) and out.foreground.shape == (2, 3, 101, 150)
    assert ref[5].sum() > 0, "the case must actually refine patches"
    assert (out.alpha - ref[0][..., :101, :150]).abs().max() <= 1e-4
    assert (out.foreground - ref[1][..., :101, :150]).abs().max() <= 1e-4


def test_per_call_settings_change_the_refinement():
    torch.manual_seed(0)
    matter = Matter(MattingRefine("mobilenetv2").eval(), device="cpu")
    src, bgr = torch.rand(1, 3, 96, 128), torch.rand(1, 3, 96, 128)
    few = matter(src, bgr, refine_sample_pixels=16 * 10).refinement.sum() / 16
    many = matter(src, bgr, refine_sample_pixels=16 * 200).refinement.sum() / 16
    assert few == 10 and many == 200
    full = matter(src, bgr, refine_mode="full")
    assert full.refinement.min() == 1
    with pytest.raises(HowardError, match="refine mode"):
        matter(src, bgr, refine_mode="everything")


def test_presets_apply_published_settings():
    net = MattingRefine("mobilenetv2").eval()
    assert Matter(net, device="cpu", preset="4k").settings["backbone_scale"] == 0.125
    assert Matter(net, device="cpu", preset="hd").settings["refine_sample_pixels"] == 80_000
    with pytest.raises(HowardError, match="preset"):
        Matter(net, device="cpu", preset="8k")


def test_fold_batchnorm_preserves_outputs():
    torch.manual_seed(1)
    net = _refine({"refine_mode": "full"})
    folded = fold_batchnorm(copy.deepcopy(net))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x, y = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert (net(x, y)[0] - folded(x, y)[0]).abs().max() <= 1e-5


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no bf16 support")
def test_bf16_stays_close_to_fp32(vectors):
    config = {"backbone_scale": 0.25, "refine_mode": "thresholding", "refine_threshold": 0.1}
    fp32 = Matter(_refine(config), device="cpu", precision="fp32")(vectors["src"], vectors["bgr"])
    bf16 = Matter(_refine(config), device="cpu", precision="bf16")(vectors["src"], vectors["bgr"])
    assert bf16.alpha.dtype == torch.float32
    assert (bf16.alpha - fp32.alpha).abs().mean() < 0.02
    assert (bf16.foreground - fp32.foreground).abs().mean() < 0.02


@pytest.mark.parametrize("kwargs,message", [
    ({"precision": "fp8"}, "unknown precision"),
    ({"precision": "fp16", "device": "cpu"}, "needs a CUDA device"),
])
def test_bad_engine_options(kwargs, message):
    with pytest.raises(HowardError, match=message):
        Matter(MattingRefine("mobilenetv2").eval(), **{"device": "cpu", **kwargs})


def test_mismatched_inputs_are_rejected():
    matter = Matter(MattingRefine("mobilenetv2").eval(), device="cpu")
    with pytest.raises(HowardError, match="same shape"):
        matter(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 60))


def test_refiner_convolutions_run_in_few_fixed_batch_sizes(vectors, monkeypatch):
    """Small batches force several full batches and a padded last one; the outputs must not change, and
    the convolutions must only ever see the allowed batch sizes (oneDNN caches one primitive per shape)."""
    from howard_core.model import engine

    case = next(c for c in vectors["cases"] if c["config"].get("refine_mode") == "sampling"
                and c["config"].get("model") != "base")
    seen = set()
    real = engine.in_fixed_batches

    def spy(fn, *xs):
        def counted(*parts):
            seen.add(parts[0].shape[0])
            return fn(*parts)
        return real(counted, *xs)

    monkeypatch.setattr(engine, "BATCH", 8)
    monkeypatch.setattr(engine, "BATCH_GRAIN", 4)
    monkeypatch.setattr(engine, "in_fixed_batches", spy)
    for stage1 in ("tiles", "windows"):
        matter = Matter(_refine(dict(case["config"])), device="cpu", precision="fp32")
        matter.stage1 = stage1
        out = matter(vectors["src"].clone(), vectors["bgr"].clone())
        assert (out.alpha - case["outputs"]["pha"]).abs().max() <= 1e-4, stage1
        assert (out.foreground - case["outputs"]["fgr"]).abs().max() <= 1e-4, stage1
        assert torch.equal(out.refinement[:, :, ::4, ::4], case["outputs"]["ref_sm"]), stage1
    assert seen and seen <= {4, 8}, seen
    assert int(case["outputs"]["ref_sm"].sum()) > 8  # more patches than one batch, so batching was exercised


def test_frames_in_either_memory_layout_give_the_same_matte():
    # The pipeline hands Matter H x W x 3 frames (channels-last views); hosts and scripts may pass NCHW.
    torch.manual_seed(5)
    net = MattingRefine("mobilenetv2", refine_sample_pixels=6000).eval()
    src_hwc, bgr_hwc = torch.rand(1, 122, 170, 3), torch.rand(1, 122, 170, 3)
    src, bgr = src_hwc.permute(0, 3, 1, 2), bgr_hwc.permute(0, 3, 1, 2)
    matter = Matter(net, device="cpu")
    for stage1 in ("tiles", "windows"):
        matter.stage1 = stage1
        a, b = matter(src, bgr), matter(src.contiguous(), bgr.contiguous())
        assert a.refinement.sum() > 0, "the case must actually refine patches"
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y), stage1


def test_gather_planes_reads_both_layouts_alike():
    from howard_core.model.engine import gather_planes

    g = torch.Generator().manual_seed(2)
    nchw, other = torch.rand(2, 3, 30, 41, generator=g), torch.rand(2, 1, 30, 41, generator=g)
    b = torch.tensor([0, 1, 1, 0, 1])
    top, left = torch.tensor([-3, 0, 10, 25, 28]), torch.tensor([-2, 35, 4, -5, 39])
    want = gather_planes((nchw, other), b, top, left, 6)
    got = gather_planes((nchw.contiguous(memory_format=torch.channels_last), other), b, top, left, 6)
    assert got.shape == (5, 4, 6, 6) and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(want, got)
    # Zero outside the image, the frame's own pixels inside.
    assert torch.equal(want[0, :3, 3:, 2:], nchw[0, :, :3, :4]) and want[0, :, :3].abs().sum() == 0


@pytest.mark.parametrize("size", [(1080, 1920), (101, 150), (37, 53)])
def test_full_size_resize_matches_pytorchs_bilinear(size):
    from howard_core.model.engine import resize_full

    x = torch.rand(2, 4, 27, 48, generator=torch.Generator().manual_seed(8))
    want = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    got = resize_full(x, size)
    assert got.shape == want.shape and got.is_contiguous()
    assert (got - want).abs().max() <= 1e-5
