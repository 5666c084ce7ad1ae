"""The network reproduces the reference implementation's outputs for every backbone and config."""

import pytest
import torch
from conftest import deterministic_state_dict, manifest, reference_path

from howard_core.model import BACKBONES, MattingBase, MattingRefine

BASE_OUTPUTS = ("pha", "fgr", "err")
REFINE_OUTPUTS = ("pha", "fgr", "pha_sm", "fgr_sm", "err_sm", "ref_sm")


@pytest.mark.parametrize("backbone", BACKBONES)
def test_state_dict_matches_manifest(backbone):
    expected = [(k, s) for k, s, _ in manifest(backbone)]
    sd = MattingRefine(backbone).state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == expected
    base_keys = [k for k, _ in expected if not k.startswith("refiner.")]
    assert list(MattingBase(backbone).state_dict()) == base_keys


def _cases(backbone):
    vec = torch.load(reference_path(f"vectors_{backbone}.pt"), weights_only=True)
    return vec, [pytest.param(vec, i, id=f"{backbone}-{i}") for i in range(len(vec["cases"]))]


CASES = [p for b in BACKBONES for p in _cases(b)[1]]


@pytest.mark.parametrize("vec,i", CASES)
def test_reference_vectors(vec, i):
    case = vec["cases"][i]
    config = dict(case["config"])
    is_base = config.pop("model", None) == "base"
    if is_base:
        net, names = MattingBase(vec["backbone"]), BASE_OUTPUTS
    else:
        net, names = MattingRefine(vec["backbone"], **config), REFINE_OUTPUTS
    net.load_state_dict(deterministic_state_dict(vec["backbone"], vec["seed"], base=is_base))
    net.eval()
    with torch.no_grad():
        outputs = dict(zip(names, net(vec["src"].clone(), vec["bgr"].clone()), strict=False))
    assert set(case["outputs"]) <= set(outputs)
    for name, want in case["outputs"].items():
        got = outputs[name]
        assert got.shape == want.shape, name
        if name == "ref_sm":
            assert torch.equal(got, want), "refinement selection differs"
        else:
            err = (got - want).abs().max().item()
            assert err <= 1e-4, f"{name}: max abs error {err:.2e}"
