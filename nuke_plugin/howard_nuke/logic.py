"""The HowardMatte node's decisions that need no Nuke: knob values -> options, which input
is a plain Read, where outputs go. Importable (and tested) without Nuke."""

import os
import re

_FRAME_TOKEN = re.compile(r"%0?\d*d|#+|@+")

# The node's "output" choices; the internal Switch takes their index.
OUTPUT_MODES = ("plate with Howard alpha", "plate with Howard alpha, premultiplied", "Howard RGBA and layers")
PRESET_CHOICES = ("default", "hd", "4k")
REFINE_CHOICES = ("default", "sampling", "thresholding", "full")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
EXTRA_LAYERS = ("fg", "err", "ref", "bg")


def _text(values, name):
    value = values.get(name)
    return str(value).strip() if value is not None and str(value).strip() else None


def options_from_values(values, hostcli, frames=None):
    """hostcli.MatteOptions from the node's knob values ({knob name: value}).

    `frames` is the range to pull when the frame range knob is empty (the plate Read's
    range); "default" choices and 0 numbers leave the CLI's own defaults.
    """
    preset = _text(values, "preset")
    refine = _text(values, "refine_mode")
    sample_pixels = int(values.get("sample_pixels") or 0)
    return hostcli.MatteOptions(
        frames=_text(values, "frame_range") or frames,
        model=_text(values, "model"),
        preset=None if preset in (None, "default") else preset,
        refine_mode=None if refine in (None, "default") else refine,
        sample_pixels=sample_pixels or None,
        device=_text(values, "device") or "auto",
        precision=_text(values, "precision") or "auto",
        colorspace=_text(values, "plate_colorspace"),
        clean_colorspace=_text(values, "clean_colorspace"),
        ocio_config=_text(values, "ocio_config"),
        missing="hold" if values.get("hold_missing") else "error",
        align=not values.get("locked_off"),
        layers=EXTRA_LAYERS if values.get("extra_layers") else (),
        resume=bool(values.get("resume")),
    )


def upstream(node):
    """The first node above `node` that is not a Dot (None when nothing is connected)."""
    seen = 0
    while node is not None and node.Class() == "Dot" and seen < 1000:
        node = node.input(0)
        seen += 1
    return node


def plain_read(node, filename, sequence_only=False):
    """(file pattern, first, last) when `node` is a Read whose frames Howard can read
    directly from disk as the comp sees them; None otherwise (the input is then rendered).

    Not plain: a Read with a frame expression or offset (`frame` knob), a path that did not
    expand (TCL left in it), and with `sequence_only` anything but a numbered image
    sequence (Nuke numbers movie frames from 1, Howard from 0, so a movie plate is
    rendered to keep the comp's frame numbers). `filename` is nuke.filename (expressions
    expanded, `%04d` kept).
    """
    if node is None or node.Class() != "Read":
        return None
    if str(node["frame"].value()).strip():
        return None
    path = filename(node)
    if not path or "[" in path:
        return None
    if sequence_only and not _FRAME_TOKEN.search(os.path.basename(path)):
        return None
    return path, int(node["first"].value()), int(node["last"].value())


def output_folder(knob_value, plate_path, script_path, node_name, tempdir):
    """The folder for the mattes: the knob's; else `howard/` beside the plate when the plate
    is a file; else `howard/<node>/` beside the saved script; else the temp folder."""
    if knob_value and str(knob_value).strip():
        return str(knob_value).strip()
    if plate_path:
        return os.path.join(os.path.dirname(plate_path), "howard")
    if script_path:
        return os.path.join(os.path.dirname(script_path), "howard", node_name)
    return os.path.join(tempdir, "howard", node_name)


def nuke_path(path):
    """Nuke's file knobs take forward slashes on every platform."""
    return str(path).replace("\\", "/")
