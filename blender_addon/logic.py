"""The add-on's decisions that need no Blender: settings -> options, input paths, where
outputs go, Image-node timing. Importable (and tested) without bpy."""

import os

PRESET_ITEMS = (("DEFAULT", "Default", "The model's own settings"), ("hd", "HD", "Published settings for HD plates"),
                ("4k", "4K", "Published settings for 4K plates"))
REFINE_ITEMS = (("DEFAULT", "Default", "The model's own refine mode"),
                ("sampling", "Sampling", "Refine a fixed number of pixels per frame"),
                ("thresholding", "Thresholding", "Refine where the error is above a threshold"),
                ("full", "Full", "Refine every pixel (slowest)"))
DEVICE_ITEMS = (("auto", "Auto", "CUDA when available, else CPU"), ("cpu", "CPU", ""), ("cuda", "CUDA", ""))
PRECISION_ITEMS = (("auto", "Auto", ""), ("fp32", "FP32", ""), ("bf16", "BF16", ""), ("fp16", "FP16", ""))
FRAMES_ITEMS = (("SCENE", "Scene range", "The plate frames the scene's frame range shows"),
                ("ALL", "All plate frames", "Every frame of the plate"),
                ("CUSTOM", "Custom", "The plate frames typed below, e.g. 1001-1100"))
SOURCE_ITEMS = (("FILE", "File", "A file path: plate.####.exr, plate.%04d.dpx, a movie or a still"),
                ("IMAGE", "Image", "An Image datablock (single image, sequence or movie)"),
                ("CLIP", "Movie Clip", "A Movie Clip datablock (movie or sequence)"))
EXTRA_LAYERS = ("fg", "err", "ref", "bg")
# Where Pull Matte runs the job; the identifiers after LOCAL are hostcli.FARM_KINDS.
FARM_ITEMS = (("LOCAL", "This machine", "Run Howard here"),
              ("dask", "Dask cluster", "Run on a Dask cluster; progress and the matte come back as for a local pull"),
              ("openjd", "OpenJD bundle", "Write an Open Job Description bundle (openjd run, Deadline Cloud); the "
                                          "matte loads when the farm job's report appears"),
              ("opencue", "OpenCue outline", "Write (and with CUEBOT_HOSTS, submit) an OpenCue job; the matte "
                                             "loads when the farm job's report appears"))
# Howard reads these as movies (howard_core.io.source), numbering their frames from 0.
MOVIE_EXTENSIONS = (".mp4", ".mov", ".mxf", ".avi", ".mkv", ".m4v", ".webm")


def _text(value):
    return str(value).strip() if value is not None and str(value).strip() else None


def input_path(kind, file_path, datablock, abspath, hostcli):
    """The path Howard reads for one input.

    kind: FILE | IMAGE | CLIP. For FILE, `file_path` (may be `//`-relative). For IMAGE and
    CLIP, `datablock` (an Image or MovieClip: `filepath`, `source`, `library`); a
    sequence is held as one frame's file name, so it becomes a `####` pattern.
    `abspath` is bpy.path.abspath(path, *, start=None, library=None).
    """
    if kind == "FILE":
        path = _text(file_path)
        return abspath(path) if path else None
    if datablock is None or not _text(datablock.filepath):
        return None
    path = os.path.normpath(abspath(datablock.filepath, library=getattr(datablock, "library", None)))
    if datablock.source == "SEQUENCE":
        return hostcli.sequence_pattern_for_file(path) or path
    return path


def options_from_settings(settings, hostcli, frames=None, colorspace=None, ocio_config=None):
    """hostcli.MatteSettings from the panel's settings (the Scene's Howard property group).
    `frames`: the plate frames to pull (see scene_frames); `colorspace` / `ocio_config`: what
    plate_colorspace chose, used where the panel's own Plate colorspace field is empty."""
    return hostcli.MatteSettings(
        frames=frames,
        model=_text(settings.model),
        preset=None if settings.preset == "DEFAULT" else settings.preset,
        refine_mode=None if settings.refine_mode == "DEFAULT" else settings.refine_mode,
        backbone_scale=settings.backbone_scale or None,
        sample_pixels=settings.sample_pixels or None,
        refine_threshold=settings.refine_threshold or None,
        device=settings.device,
        precision=settings.precision,
        colorspace=_text(settings.plate_colorspace) or colorspace,
        clean_colorspace=_text(settings.clean_colorspace),
        ocio_config=None if _text(settings.plate_colorspace) else ocio_config,
        missing="hold" if settings.hold_missing else "error",
        align=not settings.locked_off,
        layers=EXTRA_LAYERS if settings.extra_layers else (),
        resume=settings.resume,
    )


def farm_target(settings, hostcli, abspath):
    """hostcli.FarmTarget from the panel's farm settings, or None to pull on this machine."""
    if settings.farm == "LOCAL":
        return None
    path = _text(settings.farm_path)
    return hostcli.FarmTarget(settings.farm, address=_text(settings.farm_address),
                              path=os.path.normpath(abspath(path)) if path else None,
                              chunk_size=settings.farm_chunk or None)


def is_movie(path):
    return os.path.splitext(str(path))[1].lower() in MOVIE_EXTENSIONS


def output_folder(setting, plate_path, blend_path, abspath):
    """The folder for the mattes: the panel's (may be `//`-relative, which needs a saved
    .blend); else `howard/` beside the plate."""
    value = _text(setting)
    if value:
        if value.startswith("//") and not blend_path:
            raise ValueError("the output folder is relative to the .blend file; save the file first or pick a folder")
        return abspath(value)
    return os.path.join(os.path.dirname(plate_path), "howard")


def image_user_settings(first, last, scene_start=None):
    """Image-node timing that shows file frame `first` at scene frame `scene_start` (None:
    at scene frame `first`, so scene frame numbers equal file frame numbers), holding the
    last frame after `last`."""
    start = first if scene_start is None else scene_start
    return {"frame_start": start, "frame_offset": first - 1, "frame_duration": last - first + 1}


def plate_user_settings(matte_first, matte_last, plate_is_movie, scene_start=None):
    """Timing for the plate's Image node so it shows the plate frame each matte frame was
    pulled from. Howard numbers movie frames from 0, Blender's image user from 1."""
    shift = 1 if plate_is_movie else 0
    settings = image_user_settings(matte_first + shift, matte_last + shift, scene_start)
    if scene_start is None:
        settings["frame_start"] = matte_first  # keep the matte's numbering on the timeline
    return settings


def file_frame_at(scene_frame, settings):
    """The file frame number an Image node with `settings` shows at `scene_frame`, as
    Blender's image user computes it (BKE_image_user_frame_get, non-cyclic): the position
    in the clip, clamped to 0..frame_duration, plus frame_offset."""
    position = min(max(scene_frame - settings["frame_start"] + 1, 0), settings["frame_duration"])
    return position + settings["frame_offset"]


# Blender's names for the two spaces Howard converts without OpenColorIO (its `linear` and `srgb`).
BLENDER_FAST_SPACES = {"Linear Rec.709": "linear", "Linear": "linear", "sRGB": "srgb"}


def plate_colorspace(blender_name, blender_ocio_config):
    """(colorspace, ocio_config) for Howard from the plate datablock's colorspace_settings.name:
    Blender's linear Rec.709 and sRGB are Howard's own `linear` / `srgb`; any other name is
    looked up in the OCIO config Blender itself uses, so both programs mean the same space."""
    name = _text(blender_name)
    if name is None:
        return None, None
    if name in BLENDER_FAST_SPACES:
        return BLENDER_FAST_SPACES[name], None
    return name, blender_ocio_config


def frame_shift(kind, first_plate_frame, scene_start, at_scene_start, clip=None):
    """`shift` such that scene frame f shows plate frame f + shift (Howard's numbering: file
    numbers for sequences, 0-based for movies).

    CLIP: the Movie Clip's own timing: its first frame at scene frame `clip.frame_start`,
    `clip.frame_offset` frames in. FILE / IMAGE: the first plate frame at the scene's start
    frame (`at_scene_start`), else scene frame numbers equal plate frame numbers."""
    if kind == "CLIP" and clip is not None:
        return first_plate_frame - clip.frame_start + clip.frame_offset
    return first_plate_frame - scene_start if at_scene_start else 0


def scene_frames(scene_start, scene_end, shift, plate_frames=None):
    """The plate frames (first, last) the scene range shows, cut to `plate_frames` (the frame
    numbers the plate has, when known); ValueError when the two do not meet."""
    first, last = scene_start + shift, scene_end + shift
    if plate_frames:
        have = sorted(plate_frames)
        lo, hi = max(first, have[0]), min(last, have[-1])
        if lo > hi:
            raise ValueError(f"the scene's frames {scene_start}-{scene_end} show plate frames {first}-{last}, but the "
                             f"plate has {have[0]}-{have[-1]}; change the scene range or set Frames to All")
        first, last = lo, hi
    return first, last


def frames_option(mode, custom, scene_range):
    """The --frames text for the Frames setting (SCENE / ALL / CUSTOM); None: every frame."""
    if mode == "ALL":
        return None
    if mode == "CUSTOM":
        return _text(custom)
    first, last = scene_range
    return f"{first}-{last}"
