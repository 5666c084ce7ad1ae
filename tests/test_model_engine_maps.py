"""Matter without the full-size error/refinement maps: the same alpha and foreground, the patch selection kept."""

import numpy as np
import torch
from conftest import deterministic_state_dict

from howard_core.model import Matter, MattingBase, MattingRefine


def test_maps_false_changes_nothing_but_the_maps():
    net = MattingRefine("mobilenetv2", refine_sample_pixels=8000)
    net.load_state_dict(deterministic_state_dict("mobilenetv2"))
    matter = Matter(net.eval(), device="cpu")
    torch.manual_seed(4)
    src, bgr = torch.rand(2, 3, 101, 150), torch.rand(2, 3, 101, 150)  # not multiples of 4: padded inside
    full = matter(src, bgr)
    lean = matter(src, bgr, maps=False)
    assert torch.equal(lean.alpha, full.alpha) and torch.equal(lean.foreground, full.foreground)
    assert lean.error is None and full.error.shape == (2, 1, 101, 150)
    # Per patch: each value is its 4x4 block of the full-size map; the last row/column of patches is partial.
    assert lean.refinement.shape == (2, 1, 26, 38)
    assert torch.equal(lean.refinement, full.refinement[:, :, ::4, ::4]) and lean.refinement.sum() > 0
    # The foreground is stored channels-last: where no padding was cropped off (sizes that are multiples
    # of 4, as HD and 4K are), each frame is a contiguous H x W x 3 image.
    even = matter(src[:, :, :96, :148], bgr[:, :, :96, :148], maps=False).foreground[1]
    image = even.permute(1, 2, 0).numpy()
    assert image.flags["C_CONTIGUOUS"] and np.array_equal(image, even.numpy().transpose(1, 2, 0))


def test_maps_false_on_the_base_model():
    net = MattingBase("mobilenetv2")
    net.load_state_dict(deterministic_state_dict("mobilenetv2", base=True))
    matter = Matter(net.eval(), device="cpu")
    src, bgr = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96)
    lean, full = matter(src, bgr, maps=False), matter(src, bgr)
    assert torch.equal(lean.alpha, full.alpha) and lean.error is None
    assert lean.refinement.shape == (1, 1, 16, 24) and lean.refinement.sum() == 0
