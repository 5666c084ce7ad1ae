"""MatteSettings, the one definition of every matte option, and the typed progress events."""

import json

import numpy as np
import pytest

from howard_core import events
from howard_core.cli import build_parser
from howard_core.errors import HowardError
from howard_core.settings import MatteSettings, SettingsError, format_frames, parse_frames


def _sub(name):
    return next(a for a in build_parser()._actions if a.dest == "command").choices[name]


def test_settings_validate_normalise_and_round_trip_through_json():
    s = MatteSettings(frames="1001-1005x2,1010", layers="fg, bg", model=None, preset="4k", window=np.int64(3),
                      clean_offset=np.float32(1.5))
    assert s.frames == (1001, 1003, 1005, 1010) and s.layers == ("fg", "bg") and s.window == 3
    assert MatteSettings(frames=[1010, 1001, 1003, 1005, 1001]) == s.replace(preset=None, layers=(), window=2,
                                                                             clean_offset=None)
    assert MatteSettings.from_json(s.to_json()) == s and type(s.window) is int and type(s.clean_offset) is float
    assert json.loads(s.to_json())["frames"] == [1001, 1003, 1005, 1010]
    assert MatteSettings.from_dict(MatteSettings().to_dict()) == MatteSettings()
    # A blank host field is Howard's default, as the host kit always treated it; text is trimmed.
    assert MatteSettings(model="  ", device="", colorspace=" ACEScg ") == MatteSettings(colorspace="ACEScg")


@pytest.mark.parametrize("options, words", [
    ({"preset": "2k"}, "preset '2k' is not one of hd, 4k"),
    ({"precision": "fp8"}, "precision 'fp8' is not one of auto, fp32, bf16, fp16"),
    ({"format": "tiff"}, "format 'tiff' is not one of exr, png, alpha, prores"),
    ({"layers": ("depth",)}, "unknown layer(s) depth"),
    ({"queue_size": 0}, "queue size must be at least 1"),
    ({"threads": 0}, "threads must be at least 1"),
    ({"window": -1}, "window must be 0 or more"),
    ({"window": 1.5}, "window: expected a whole number"),
    ({"backbone_scale": "big"}, "backbone scale: expected a number"),
    ({"backbone_scale": 0.0}, "backbone scale must be above 0"),
    ({"frames": "9-3"}, "ends before it starts"),
])
def test_bad_values_are_one_line_howard_errors(options, words):
    with pytest.raises(HowardError) as err:  # SettingsError is a HowardError inside Howard
        MatteSettings(**options)
    assert isinstance(err.value, SettingsError) and words in str(err.value) and "\n" not in str(err.value)


def test_unknown_option_names_are_refused_with_the_list():
    with pytest.raises(SettingsError, match="unknown matte option.s. colour_space; the options are frames, "):
        MatteSettings.build(colour_space="srgb")


def test_to_argv_names_only_what_differs_and_the_cli_reads_it_back():
    s = MatteSettings(frames=range(1, 40, 3), align=False, resume=True, clean_scale=2.0, model="/m/a b.pth")
    argv = s.to_argv()
    assert argv == ["--frames", "1-37x3", "--model", "/m/a b.pth", "--resume", "--no-align", "--clean-scale", "2"]
    args = _sub("matte").parse_args(["p", "c", "-o", "o", *argv])
    assert MatteSettings.from_namespace(args) == s
    assert s.to_argv(skip=MatteSettings.farm_sets(), file_option=lambda p: "/farm" + p) == [
        "--model", "/farm/m/a b.pth", "--no-align", "--clean-scale", "2"]
    with pytest.raises(SettingsError, match="loaded network cannot be passed"):
        MatteSettings(model=object()).to_argv()


def test_every_cli_flag_of_matte_comes_from_the_settings():
    flags = {a.dest for a in _sub("matte")._actions if a.option_strings}
    own = {"help", "output", "report", "progress", "cluster", "chunk_size", "tls_ca_file", "tls_cert", "tls_key",
           "path_map"}  # the run's plumbing, not matte options
    assert flags - own == set(MatteSettings.names())
    assert {a.dest for a in _sub("export-nuke")._actions if a.option_strings} - {"help", "output"} == {
        "model", "backbone_scale", "refine_mode", "sample_pixels", "refine_threshold"}


@pytest.mark.parametrize("frames", [[1, 2, 3, 7], [1, 3, 5, 7, 8], [5], [10, 20], list(range(1001, 1101, 2))])
def test_frame_text_round_trips(frames):
    assert parse_frames(format_frames(frames, steps=True)) == frames == parse_frames(format_frames(frames))


def test_events_round_trip_and_tolerate_older_senders():
    frame = events.Frame.after(1003, 3, 12, 1.5, flagged=True, reason="no fit", output="/o/m.1003.exr")
    wire = events.as_dict(frame)
    assert list(wire)[:2] == ["event", "frame"] and wire["fps"] == 2.0 and wire["eta_s"] == 4.5
    assert events.parse(json.loads(json.dumps(wire))) == frame
    assert events.parse({"event": "done", "done": 2}) == events.Done(2, 0)
    assert events.parse({"event": "chunk-start", "pid": 1}) is None
    unflagged = events.Frame.after(1, 1, 1, 0.0, reason="ignored")
    assert unflagged.reason is None and unflagged.fps == 0.0 and unflagged.eta_s is None
    assert events.weights_notice({"trained": False})[0] == "warning"
    assert events.weights_notice({"demo": True}) == ("note", events.DEMO_NOTE)
    assert events.weights_notice({"trained": True}) is None
