"""The synthetic shot generator: its frames, and above all that its ground truth is true."""

import cv2
import numpy as np
import pytest

from howard_core.synth import DepthShotSpec, ShotSpec, linear_to_srgb, make_depth_shot, make_shot, srgb_to_linear


@pytest.fixture(scope="module")
def shot():
    # Odd plate size, a clean take of another size, length and start.
    return make_shot(321, 179, plate_frames=4, clean_frames=7, seed=5, clean_width=400, clean_height=226,
                     clean_offset=-1.5, clean_rate=0.8)


def test_frames_have_the_documented_shapes_types_and_ranges(shot):
    assert len(shot.plate) == len(shot.alpha) == len(shot.foreground) == len(shot.plate_homographies) == 4
    assert len(shot.clean) == len(shot.clean_homographies) == 7
    for frame in shot.plate:
        assert frame.shape == (179, 321, 3) and frame.dtype == np.float32
        assert 0 <= frame.min() and frame.max() <= 1
    for frame in shot.clean:
        assert frame.shape == (226, 400, 3) and frame.dtype == np.float32
    for a, fg in zip(shot.alpha, shot.foreground, strict=True):
        assert a.shape == (179, 321) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
        assert fg.shape == (179, 321, 3) and fg.dtype == np.float32
        assert np.all(fg[a == 0] == 0)
    assert np.allclose(shot.clean_times, -1.5 + 0.8 * np.arange(7))
    assert shot.matching_clean_index(1.7) == pytest.approx((1.7 + 1.5) / 0.8)


def test_plate_obeys_the_compositing_equation():
    s = make_shot(160, 96, plate_frames=3, clean_frames=3, seed=2, noise=0.0)
    for i in range(3):
        a = s.alpha[i][..., None]
        expected = a * s.foreground[i] + (1 - a) * s.plate_background(i)
        assert np.abs(s.plate[i] - expected).max() < 1e-5


def test_true_homographies_register_the_clean_take_onto_the_plate():
    s = make_shot(240, 136, plate_frames=3, clean_frames=5, seed=7, noise=0.0, exposure_stops=0.0,
                  white_balance=0.0, clean_width=300, clean_height=170)
    for i, j in [(0, 0), (1, 3), (2, 4)]:
        h = s.clean_to_plate(j, i)
        warped = cv2.warpPerspective(s.clean[j], h, s.plate_size, flags=cv2.INTER_LINEAR)
        inside = cv2.warpPerspective(np.ones(s.clean[j].shape[:2], np.uint8), h, s.plate_size) > 0
        inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        inside &= s.alpha[i] == 0
        assert inside.mean() > 0.5
        assert np.abs(warped - s.plate_background(i))[inside].mean() < 0.01
        # A one-pixel error in the homography is plainly visible against this texture.
        off = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 1.0]]) @ h
        wrong = cv2.warpPerspective(s.clean[j], off, s.plate_size, flags=cv2.INTER_LINEAR)
        assert np.abs(wrong - s.plate_background(i))[inside].mean() > 0.02


def test_clean_take_exposure_is_a_linear_light_gain():
    s = make_shot(200, 120, plate_frames=1, clean_frames=1, seed=3, noise=0.0, exposure_stops=1.0,
                  white_balance=0.0, camera_motion=0.0, clean_deviation=0.0, subject=False)
    plate, clean = srgb_to_linear(s.plate[0]), srgb_to_linear(s.clean[0])
    usable = (s.clean[0] < 0.97) & (s.plate[0] > 0.05)
    assert np.median(clean[usable] / plate[usable]) == pytest.approx(2.0, rel=0.02)
    assert np.allclose(s.clean_gain, 2.0)


def test_srgb_round_trip():
    x = np.linspace(0, 1, 101, dtype=np.float32)
    assert np.abs(linear_to_srgb(srgb_to_linear(x)) - x).max() < 1e-5


def test_noise_level_matches_the_knob():
    a = make_shot(256, 144, plate_frames=1, clean_frames=1, seed=1, noise=0.02, subject=False)
    b = make_shot(256, 144, plate_frames=1, clean_frames=1, seed=1, noise=0.0, subject=False)
    diff = (a.plate[0] - b.plate[0])[(b.plate[0] > 0.1) & (b.plate[0] < 0.9)]
    assert diff.std() == pytest.approx(0.02, rel=0.1)
    assert abs(diff.mean()) < 0.002


def test_subject_is_soft_edged_person_sized_and_moves():
    s = make_shot(320, 180, plate_frames=6, clean_frames=2, seed=4)
    alphas = np.stack(s.alpha)
    cover = (alphas > 0.5).mean(axis=(1, 2))
    assert np.all((cover > 0.05) & (cover < 0.5))
    # A soft rim, not a hard cut: partial alpha over a band of about two pixels all along the outline.
    for a in alphas:
        contours, _ = cv2.findContours((a > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        outline = sum(cv2.arcLength(c, True) for c in contours)
        assert ((a > 0.02) & (a < 0.98)).sum() > 2 * outline
    # Taller than wide, one body, and it moves (arms swing, it drifts).
    ys, xs = np.nonzero(alphas[0] > 0.5)
    assert np.ptp(ys) > np.ptp(xs)
    assert cv2.connectedComponents((alphas[0] > 0.5).astype(np.uint8))[0] == 2
    assert np.abs(alphas[0] - alphas[-1]).mean() > 0.005
    # The clean take has no subject: it matches its own noise-free scene wherever the plate's subject is.
    assert not np.any([a.max() > 0 for a in make_shot(96, 64, 1, 1, subject=False).alpha])


def test_scene_texture_is_rich_everywhere():
    s = make_shot(320, 180, plate_frames=1, clean_frames=1, seed=8, noise=0.0, subject=False)
    gray = cv2.cvtColor(s.plate[0], cv2.COLOR_RGB2GRAY)
    blocks = gray[: 176, : 320].reshape(11, 16, 20, 16).std(axis=(1, 3))
    assert (blocks > 0.01).mean() > 0.85
    # Detail at several scales: fine (pixel) and coarse (tens of pixels) structure both carry energy.
    fine = np.abs(gray - cv2.GaussianBlur(gray, (0, 0), 1)).mean()
    coarse = np.abs(cv2.GaussianBlur(gray, (0, 0), 4) - cv2.GaussianBlur(gray, (0, 0), 16)).mean()
    assert fine > 0.005 and coarse > 0.02


def test_tiles_texture_repeats_exactly_and_natural_does_not():
    tiles = make_shot(224, 128, plate_frames=1, clean_frames=1, seed=1, texture="tiles", subject=False)
    natural = make_shot(224, 128, plate_frames=1, clean_frames=1, seed=1, subject=False)

    def best_repeat(scene):
        gray = cv2.cvtColor(scene, cv2.COLOR_RGB2GRAY)
        errs = [np.abs(gray[:, p:] - gray[:, :-p])[8:-8, 8:-8].mean() for p in range(8, gray.shape[1] // 2)]
        return min(errs)

    assert best_repeat(tiles.scene) < 1e-4
    assert best_repeat(natural.scene) > 0.02


def test_generation_is_deterministic_and_lazy_matches_eager():
    a = make_shot(128, 72, plate_frames=3, clean_frames=4, seed=9)
    b = make_shot(128, 72, plate_frames=3, clean_frames=4, seed=9, lazy=True)
    c = make_shot(128, 72, plate_frames=3, clean_frames=4, seed=10)
    assert len(b.plate) == 3 and len(b.clean) == 4
    for i in (2, 0, 1):  # any access order
        assert np.array_equal(a.plate[i], b.plate[i])
        assert np.array_equal(a.alpha[i], b.alpha[i])
        assert np.array_equal(a.foreground[i], b.foreground[i])
    assert np.array_equal(a.clean[3], b.clean[3])
    assert not np.array_equal(a.plate[0], c.plate[0])


def test_small_frames_still_get_a_subject():
    # Below about 54 px of height the forearm's stroke rounded to zero pixels and OpenCV refused to draw it.
    s = make_shot(32, 16, plate_frames=1, clean_frames=1, seed=1)
    assert s.alpha[0].max() > 0.5 and s.plate[0].shape == (16, 32, 3)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        make_shot(8, 8)
    with pytest.raises(ValueError):
        make_shot(64, 64, texture="bricks")


def test_a_spec_with_overrides_renders_what_the_same_keywords_render():
    spec = ShotSpec(width=96, height=64, plate_frames=2, clean_frames=3, seed=4, clean_width=120, clean_height=80)
    a = make_shot(spec=spec, noise=0.0)
    b = make_shot(96, 64, 2, 3, 4, clean_width=120, clean_height=80, noise=0.0)
    for x, y in zip([*a.plate, *a.alpha, *a.clean], [*b.plate, *b.alpha, *b.clean], strict=True):
        assert np.array_equal(x, y)
    assert spec.noise == 0.01  # the spec itself is left as it was
    # The record holds the resolved values: the clean take's default rate spans the plate's stretch.
    assert a.params["clean_rate"] == 0.5 and a.params["noise"] == 0.0 and "lazy" not in a.params
    d = make_depth_shot(spec=DepthShotSpec(width=64, height=64, plate_frames=1), subject=None)
    assert d.params["depth"] is True and d.params["clean_frames"] == 1 and d.params["subject"] is None


def test_unknown_or_repeated_options_are_named_in_the_error():
    with pytest.raises(TypeError, match="'nosie'; did you mean 'noise'"):
        make_shot(64, 64, nosie=0.0)
    with pytest.raises(TypeError, match="'texture'; DepthShotSpec has width, height"):
        make_depth_shot(64, 64, texture="tiles")
    with pytest.raises(TypeError, match="multiple values for argument 'width'"):
        make_shot(64, width=64)
    with pytest.raises(TypeError, match="at most 5 positional"):
        make_shot(64, 64, 1, 1, 0, 0.01)
    with pytest.raises(TypeError, match="takes a DepthShotSpec"):
        make_depth_shot(spec=ShotSpec())
    # A spec checks its values when it is made, before anything renders.
    with pytest.raises(ValueError, match="subject must be"):
        DepthShotSpec(subject="cat")
    with pytest.raises(ValueError, match="at least one plate frame"):
        ShotSpec(clean_frames=0)
