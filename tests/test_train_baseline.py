"""The clean-plate difference key used as the classical baseline."""

import numpy as np

from howard_core.train.baseline import difference_key
from howard_core.train.data import SyntheticComposites
from howard_core.train.metrics import sad


def test_baseline_beats_constant_predictors_on_synthetic_plates():
    ds = SyntheticComposites(size=96, seed=0, split="heldout")
    key = zero = mean = 0.0
    for i in range(6):
        s = ds.sample(i)
        alpha, fgr = difference_key(s.src, s.bgr)
        assert alpha.shape == s.pha.shape and alpha.dtype == np.float32
        assert 0 <= alpha.min() and alpha.max() <= 1
        np.testing.assert_array_equal(fgr, s.src)
        key += sad(alpha, s.pha)
        zero += sad(np.zeros_like(s.pha), s.pha)
        mean += sad(np.full_like(s.pha, s.pha.mean()), s.pha)  # the best constant in hindsight
    assert key < 0.5 * zero and key < 0.5 * mean


def test_a_clean_difference_is_keyed_solid_and_gain_is_matched():
    bg = np.random.default_rng(0).uniform(0.3, 0.6, (48, 48, 3)).astype(np.float32)
    bg = np.repeat(np.repeat(bg[::8, ::8], 8, 0), 8, 1)  # blocky texture, smooth enough to denoise
    src = bg.copy()
    src[10:30, 12:28] = (0.95, 0.1, 0.1)
    alpha, _ = difference_key(src, bg)
    assert alpha[14:26, 16:24].min() > 0.99  # subject interior
    assert alpha[40:, :].max() < 0.01  # far background
    # The clean plate shot one stop darker: with gain matching the background still keys out.
    darker = bg * 0.6
    assert difference_key(src, darker)[0][40:, :].max() < 0.01
    assert difference_key(src, darker, match_gain=False)[0][40:, :].min() > 0.5
