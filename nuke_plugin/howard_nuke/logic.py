"""The HowardMatte node's decisions that need no Nuke: knob values -> options, which input
is a plain Read, where outputs go. Importable (and tested) without Nuke."""

import itertools
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
# The "farm" knob: where Pull matte runs the job (hostcli.FARM_KINDS, by index after the first).
FARM_CHOICES = ("this machine", "Dask cluster", "OpenJD bundle", "OpenCue outline")
FARM_KINDS = (None, "dask", "openjd", "opencue")
# What the internal Read does where no matte file exists: the node errors, or (chosen) black alpha.
MISSING_MATTE_CHOICES = ("error", "black")
# First entry of the colourspace knobs: take the space from the input's Read (its colorspace and raw).
FROM_INPUT = "from input Read"
# How configs name sRGB-encoded and scene-linear Rec.709 (nuke-default, ACES 1.x, OCIO v2 studio/cg).
_SRGB_NAMES = ("sRGB", "sRGB Encoded Rec.709 (sRGB)", "Utility - sRGB - Texture", "sRGB - Texture", "srgb_tx")
_LINEAR_NAMES = ("linear", "scene_linear", "Linear Rec.709 (sRGB)", "Utility - Linear - sRGB", "lin_srgb")
_LINEAR_EXTS = (".exr", ".sxr", ".mxr", ".hdr", ".rgbe", ".pfm")


def _text(values, name):
    value = values.get(name)
    return str(value).strip() if value is not None and str(value).strip() else None


def options_from_values(values, hostcli, frames=None, colour=None):
    """hostcli.MatteSettings from the node's knob values ({knob name: value}).

    `frames` is the range to pull when the frame range knob is empty (the plate Read's
    range); "default" choices and 0 numbers leave the CLI's own defaults. `colour`: the
    (plate colorspace, clean colorspace, OCIO config) the pull found from the inputs and the
    knobs together (None in it: Howard's default); None: the knobs alone.
    """
    preset = _text(values, "preset")
    refine = _text(values, "refine_mode")
    if colour is None:
        colour = (_colour_choice(values, "plate_colorspace"), _colour_choice(values, "clean_colorspace"),
                  _text(values, "ocio_config"))
    plate_cs, clean_cs, config = colour
    return hostcli.MatteSettings(
        frames=_text(values, "frame_range") or frames,
        model=_text(values, "model"),
        preset=None if preset in (None, "default") else preset,
        refine_mode=None if refine in (None, "default") else refine,
        backbone_scale=float(values.get("backbone_scale") or 0) or None,
        sample_pixels=int(values.get("sample_pixels") or 0) or None,
        refine_threshold=float(values.get("refine_threshold") or 0) or None,
        device=_text(values, "device") or "auto",
        precision=_text(values, "precision") or "auto",
        colorspace=plate_cs,
        clean_colorspace=clean_cs,
        ocio_config=config,
        missing="hold" if values.get("hold_missing") else "error",
        align=not values.get("locked_off"),
        layers=EXTRA_LAYERS if values.get("extra_layers") else (),
        resume=bool(values.get("resume")),
    )


def farm_target(values, hostcli):
    """hostcli.FarmTarget from the farm knobs, or None to pull on this machine."""
    kind = FARM_KINDS[FARM_CHOICES.index(values.get("farm") or FARM_CHOICES[0])]
    if kind is None:
        return None
    chunk = int(values.get("farm_chunk") or 0)
    return hostcli.FarmTarget(kind, address=_text(values, "farm_address"), path=_text(values, "farm_path"),
                              chunk_size=chunk or None)


def _colour_choice(values, name):
    value = _text(values, name)
    return None if value in (None, FROM_INPUT) else value


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


def full_res_path(read, filename, proxy_on, frame):
    """The file pattern a Read reads at FULL resolution, whatever the root's proxy setting.

    nuke.filename follows root.proxy: in proxy mode a Read with its proxy knob filled in
    gives the proxy files, and a matte pulled from them would sit at proxy size back at full
    resolution. Then the full-size path comes from the file knob's evaluate() (TCL and
    variables expanded; it may also put in the current frame, which is turned back into the
    frame token). None when the frame token cannot be recovered.
    """
    path = filename(read)
    if not proxy_on or not str(read["proxy"].value()).strip():
        return path
    return keep_frame_token(str(read["file"].value()), read["file"].evaluate(), frame)


def keep_frame_token(typed, expanded, frame):
    """`expanded` with the frame number that evaluate() put in turned back into `%0Nd`.

    `typed` is the knob's text (value()), e.g. `[getenv SHOT]/plate.####.exr`. None when the
    typed name has a token and the expanded one holds neither a token nor that frame number.
    """
    token = _FRAME_TOKEN.search(os.path.basename(typed))
    folder, name = os.path.split(expanded)
    if token is None or _FRAME_TOKEN.search(name):
        return expanded
    text = token.group(0)
    width = len(text) if text[0] in "#@" else int(text[1:-1] or 0)
    digits = "{:0{}d}".format(int(frame), width)
    at = name.rfind(digits)
    if at < 0:
        return None
    printf = f"%0{width}d" if width else "%d"
    return os.path.join(folder, name[:at] + printf + name[at + len(digits):])


def _pick(choices, names):
    return next((n for n in names if n in choices), None)


def plate_colour(read_colorspace, raw, path, override, choices):
    """(Howard's --colorspace, the internal Read's colorspace, the internal Read's raw).

    Howard writes the foreground back in the plate's space, so the internal Read must decode
    it as the plate's Read does. `read_colorspace` is the plate Read's colorspace knob
    ("default", "default (sRGB)", "ACES - ACEScg"...), `raw` its raw knob, `override` the
    node's plate colorspace choice (FROM_INPUT or None: use the Read's), `choices` the
    colourspace names of the script's config (a Read's colorspace menu). Howard's None means
    its own default by file type (EXR linear, others sRGB).
    """
    if override and override != FROM_INPUT:
        return override, override, False
    if raw:
        # Nuke does not convert a raw Read's pixels: Howard reads the file by its type, the
        # foreground comes back in the file's own encoding and is read back raw, as the plate.
        return None, "default", True
    value = str(read_colorspace or "default").strip()
    if value.startswith("default (") and value.endswith(")"):
        value = value[len("default ("):-1].strip()
    if value != "default":
        return value, value, False
    linear = os.path.splitext(str(path or ""))[1].lower() in _LINEAR_EXTS
    name = _pick(choices, _LINEAR_NAMES if linear else _SRGB_NAMES) or "default"
    return ("linear" if linear else "srgb"), name, False


def colour_choices(read_choices):
    """The values of the node's colourspace knobs: FROM_INPUT, then the config's spaces."""
    return [FROM_INPUT] + [c for c in read_choices if not str(c).startswith("default")]


def ocio_config(knob_value, config_name, custom_path, nuke_dir, environ):
    """The OCIO config Howard should use: the node's knob; else the script's (root OCIO_config:
    `custom` -> its path, an `ocio://` URI, or a config shipped in Nuke's
    plugins/OCIOConfigs/configs/<name>/config.ocio); else $OCIO; else None (Howard's default)."""
    if knob_value and str(knob_value).strip():
        return str(knob_value).strip()
    name = str(config_name or "").strip()
    if name == "custom" and custom_path and str(custom_path).strip():
        return str(custom_path).strip()
    if name.startswith("ocio://"):
        return name
    if name and name != "custom" and nuke_dir:
        shipped = os.path.join(nuke_dir, "plugins", "OCIOConfigs", "configs", name, "config.ocio")
        if os.path.isfile(shipped):
            return shipped
    return environ.get("OCIO") or None


def read_range(pulled, plate_first, plate_last):
    """first/last for the internal Read: the plate's range and the pulled frames together, so a
    plate frame without a matte is a missing file (an error, or black by choice), never a hold."""
    frames = list(pulled)
    first = min([plate_first] + frames) if plate_first is not None else min(frames)
    last = max([plate_last] + frames) if plate_last is not None else max(frames)
    return int(first), int(last)


def missing_frames(pulled, first, last):
    """The frames in first..last that have no matte, as text: `1005-1007, 1010` ("" for none)."""
    have = set(pulled)
    gaps = [f for f in range(int(first), int(last) + 1) if f not in have]
    return frame_ranges(gaps)


def frame_ranges(frames):
    """Frame numbers as `1001-1004, 1010` (runs of consecutive frames joined)."""
    parts = []
    # Consecutive frames share frame - position in the sorted list.
    for _, run in itertools.groupby(enumerate(sorted(frames)), key=lambda pair: pair[1] - pair[0]):
        run_frames = [frame for _, frame in run]
        first, last = run_frames[0], run_frames[-1]
        parts.append(str(first) if first == last else f"{first}-{last}")
    return ", ".join(parts)
