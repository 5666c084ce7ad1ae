"""Colour conversions: numpy fast paths, OCIO built-in and user configs, name validation."""

import numpy as np
import pytest

from howard_core.errors import HowardError
from howard_core.io import default_colorspace, make_converter
from howard_core.io.color import srgb_decode, srgb_encode

# A minimal user config: a linear reference, an sRGB-curve space and a gamma 2.2 space.
USER_CONFIG = """\
ocio_profile_version: 2
roles:
  default: lin
  scene_linear: lin
colorspaces:
  - !<ColorSpace>
    name: lin
  - !<ColorSpace>
    name: sRGB
    from_scene_reference: !<ExponentWithLinearTransform> {gamma: 2.4, offset: 0.055, direction: inverse}
  - !<ColorSpace>
    name: gamma22
    to_scene_reference: !<ExponentTransform> {value: 2.2}
"""


@pytest.fixture(autouse=True)
def _no_ocio_env(monkeypatch):
    monkeypatch.delenv("OCIO", raising=False)


@pytest.fixture
def user_config(tmp_path):
    path = tmp_path / "config.ocio"
    path.write_text(USER_CONFIG)
    return str(path)


def _ramp(h=23, w=37, top=1.0):
    rng = np.random.default_rng(3)
    return (rng.random((h, w, 3)) * top).astype(np.float32)


def test_srgb_curve_reference_points():
    # IEC 61966-2-1: the curve joins at linear 0.0031308 / encoded 0.04045, ends at 1.
    lin = np.array([0.0, 0.0031308, 1.0], np.float32)
    np.testing.assert_allclose(srgb_encode(lin), [0.0, 0.04045, 1.0], atol=2e-5)
    x = np.linspace(0, 1, 101, dtype=np.float32)
    np.testing.assert_allclose(srgb_decode(srgb_encode(x)), x, atol=1e-5)
    assert srgb_encode(np.float32(0.5)) > 0.7  # brighter: it is an encoding, not identity


def test_defaults_by_file_type():
    assert default_colorspace("a/plate.####.exr") == "linear"
    assert default_colorspace("x.EXR") == "linear"
    for name in ("a.png", "a.jpg", "a.tif", "a.dpx", "a.mov", "a.mp4"):
        assert default_colorspace(name) == "srgb"
    assert make_converter(None, path="shot.exr").name == "linear"
    assert make_converter(None, path="shot.png").name == "srgb"


def test_linear_round_trip_and_clipping():
    conv = make_converter("linear")
    native = _ramp()
    working = conv.to_working(native)
    assert working.dtype == np.float32 and working.shape == native.shape
    np.testing.assert_allclose(conv.from_working(working), native, atol=1e-5)
    hot = np.full((2, 3, 3), 4.0, np.float32)
    assert np.all(conv.to_working(hot) == 1.0)  # highlights clip in the working space
    assert np.all(conv.to_working(-hot) == 0.0)


def test_srgb_is_identity_but_clipped():
    conv = make_converter("sRGB")  # names are case-insensitive
    assert conv.name == "srgb" and make_converter("rec709").name == "srgb"
    native = _ramp(top=1.5)
    np.testing.assert_array_equal(conv.to_working(native), np.clip(native, 0, 1))
    np.testing.assert_array_equal(conv.from_working(native), native)


def test_ocio_acescg_from_builtin_config():
    conv = make_converter("ACEScg")
    assert conv.name == "ACEScg" and conv.config.startswith("ocio://")
    # A neutral stays neutral: ACEScg grey goes through the same curve as linear Rec.709 grey.
    grey = np.full((3, 5, 3), 0.18, np.float32)
    np.testing.assert_allclose(conv.to_working(grey), srgb_encode(grey), atol=1e-3)
    # A saturated colour does not: the AP1 -> Rec.709 matrix is really applied.
    red = np.zeros((1, 1, 3), np.float32)
    red[..., 0] = 0.5
    assert not np.allclose(conv.to_working(red), srgb_encode(red), atol=0.01)
    # Round trip of colours inside Rec.709 (ACEScg values outside it clip in the working space).
    native = conv.from_working(_ramp() * 0.6 + 0.2)
    np.testing.assert_allclose(conv.from_working(conv.to_working(native)), native, atol=2e-3)


def test_clipped_away_is_what_the_working_space_cannot_hold():
    inside = _ramp()
    for name in ("linear", "srgb"):
        conv = make_converter(name)
        assert conv.clipped_away(inside) is None  # nothing to carry: the common case costs nothing
        hot = inside.copy()
        hot[0, 0] = (4.0, -0.25, 1.0)
        lost = conv.clipped_away(hot)
        np.testing.assert_allclose(lost[0, 0], (3.0, -0.25, 0.0), atol=1e-6)
        assert np.count_nonzero(lost) == 2
        # The fast paths agree with the general definition, up to the curve's float32 rounding.
        np.testing.assert_allclose(lost, hot - conv.from_working(conv.to_working(hot)), atol=1e-6)
    conv = make_converter("ACEScg")
    native = np.full((2, 2, 3), 3.0, np.float32)
    np.testing.assert_allclose(conv.clipped_away(native), native - conv.from_working(conv.to_working(native)))
    assert conv.clipped_away(native).max() > 1.0


def test_srgb_curves_match_the_closed_form_over_the_whole_range():
    x = np.linspace(-0.5, 1.5, 20001, dtype=np.float32).reshape(1, -1, 3)[:, :6667]
    c = np.clip(x.astype(np.float64), 0, 1)
    enc = np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)
    dec = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    np.testing.assert_allclose(srgb_encode(x), enc, atol=1e-6)
    np.testing.assert_allclose(srgb_decode(x), dec, atol=1e-6)
    assert srgb_encode(x).dtype == srgb_decode(x).dtype == np.float32
    assert srgb_encode(np.float32(1.0)) == 1.0 and np.shape(srgb_decode(np.float32(0.5))) == ()


def test_ocio_roles_and_aliases_resolve_to_canonical_names():
    assert make_converter("scene_linear").name == "ACEScg"
    assert make_converter("lin_rec709").name == "linear"  # our fast path wins for the short name


def test_ocio_unknown_name_lists_close_matches():
    with pytest.raises(HowardError) as err:
        make_converter("ACEScgg")
    msg = str(err.value)
    assert "'ACEScgg'" in msg and "'ACEScg'" in msg and "\n" not in msg


def test_user_config_file(user_config):
    conv = make_converter("gamma22", user_config)
    assert conv.config == user_config
    x = _ramp()
    np.testing.assert_allclose(conv.to_working(x), srgb_encode(x**2.2), atol=1e-4)
    np.testing.assert_allclose(conv.from_working(conv.to_working(x)), x, atol=1e-3)
    with pytest.raises(HowardError, match="'gamma22'"):
        make_converter("gama22", user_config)


def test_ocio_env_var_is_the_default_config(monkeypatch, user_config):
    monkeypatch.setenv("OCIO", user_config)
    assert make_converter("gamma22").config == user_config


def test_broken_config_path(tmp_path):
    missing = str(tmp_path / "nope.ocio")
    with pytest.raises(HowardError) as err:
        make_converter("ACEScg", missing)
    assert missing in str(err.value)


def test_converter_rejects_wrong_shapes():
    with pytest.raises(ValueError):
        make_converter("linear").to_working(np.zeros((4, 4, 4), np.float32))


def test_an_srgb_frame_inside_the_range_is_not_copied_and_nothing_is_clipped_away():
    conv = make_converter("srgb")
    inside = np.random.default_rng(3).random((8, 8, 3), dtype=np.float32)
    work = conv.to_working(inside)
    assert work is inside and conv.clipped_away(inside, work) is None
    outside = inside * 1.5 - 0.2
    work = conv.to_working(outside)
    assert work is not outside and work.min() == 0.0 and work.max() == 1.0
    np.testing.assert_array_equal(conv.clipped_away(outside, work), outside - np.clip(outside, 0, 1))
