"""The alignment options: one `AlignOptions`, keyword overrides on `Aligner` and `SequenceAligner`."""

import dataclasses

import numpy as np
import pytest

from howard_core.align import Aligner, AlignOptions, Segments, SequenceAligner
from howard_core.errors import HowardError
from howard_core.synth import make_shot


def test_keywords_override_the_options_and_read_back():
    base = AlignOptions(detector="sift", dense=False)
    a = Aligner(base, exposure=False)
    assert a.options == dataclasses.replace(base, exposure=False)
    assert (a.detector, a.dense, a.exposure, a.feature_size) == ("sift", False, False, 640)
    assert Aligner().options == AlignOptions()
    assert Aligner(base).options is base
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.dense = True


def test_numbers_are_coerced_as_before():
    o = AlignOptions(feature_size=512.7, ratio=1, refine=0, refine_top=0)
    assert (o.feature_size, o.ratio, o.refine, o.refine_top) == (512, 1.0, False, 1)
    assert isinstance(o.ratio, float) and isinstance(o.refine, bool)


@pytest.mark.parametrize("bad, words", [
    ({"detector": "akaze"}, "unknown detector 'akaze'; use 'orb' or 'sift'"),
    ({"interpolation": "nearest"}, "unknown interpolation 'nearest'; use one of linear, cubic, lanczos"),
    ({"dense_interpolation": "lanczos"}, "unknown dense interpolation 'lanczos'; use 'linear' or 'cubic'"),
    ({"dens": False}, "unknown option 'dens'; the options are detector, "),
    ({"track_size": 0}, "track_size must be a positive number of pixels, got 0"),
    ({"dense_size": -3}, "dense_size must be a positive number of pixels, got -3"),
    ({"feature_size": "wide"}, "feature_size must be int, got 'wide'"),
])
def test_bad_options_are_one_clear_line(bad, words):
    with pytest.raises(HowardError) as e:
        Aligner(**bad)
    assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(HowardError):
        SequenceAligner(2, 2, lambda j: None, **bad)


def test_options_must_be_an_align_options():
    with pytest.raises(HowardError, match="must be an AlignOptions"):
        Aligner({"dense": False})


def test_the_sequence_passes_options_and_segments_on():
    seq = SequenceAligner(4, 4, lambda j: None, dense=False, min_ncc=0.3)
    assert seq.aligner.options == AlignOptions(dense=False, min_ncc=0.3)
    assert seq.segments == Segments()
    assert Segments(frames=0, lead_in=-2) == Segments(frames=1, lead_in=0)


def test_options_given_as_an_object_or_as_keywords_align_alike():
    s = make_shot(320, 180, plate_frames=1, clean_frames=2, seed=4)
    by_keywords = Aligner(dense=False, refine=False).align(s.plate[0], list(s.clean))
    by_object = Aligner(AlignOptions(dense=False), refine=False).align(s.plate[0], list(s.clean))
    assert np.array_equal(by_keywords.homography, by_object.homography)
    assert np.array_equal(by_keywords.background, by_object.background)
    assert (by_object.dense, by_object.refined_points) == ("off", 0)
    assert Aligner(AlignOptions(dense=False)).align(s.plate[0], list(s.clean)).refined_points > 0
