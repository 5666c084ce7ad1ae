"""Blender side of the Howard add-on: settings, the compositor sidebar panel, the modal
"Pull Matte" operator and the nodes it adds. Howard itself runs as a `howard matte`
subprocess (Blender's Python cannot import torch); see howard_core.hostcli."""

import atexit
import logging
import os
import subprocess
from dataclasses import dataclass
from types import SimpleNamespace

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from . import logic
from .howard_hostboot import BootError, load_hostcli

NODE_PREFIX = "Howard "
FRAME_NAME = "Howard"
TIMER_S = 0.25
FARM_POLL_S = 5.0  # a farm job takes minutes to hours: a look every few seconds is plenty
STOP_WAIT_S = 2.0  # how long a file load or quitting waits for howard to stop between frames
LOG = logging.getLogger(__name__)


def _prefs(context):
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


class HOWARD_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    howard_cli: StringProperty(
        name="Howard executable", subtype="FILE_PATH",
        description="The `howard` executable of the Python environment where Howard is installed "
                    "(empty: $HOWARD_CLI, $HOWARD_PYTHON, then howard on PATH)")
    howard_python: StringProperty(
        name="Howard Python", subtype="FILE_PATH",
        description="Or: the python of that environment (runs python -m howard_core.cli)")

    def draw(self, context):
        self.layout.prop(self, "howard_cli")
        self.layout.prop(self, "howard_python")


class HOWARD_Settings(bpy.types.PropertyGroup):
    plate_source: EnumProperty(name="Plate", items=logic.SOURCE_ITEMS, default="FILE")
    plate_path: StringProperty(name="Plate", subtype="FILE_PATH",
                               description="plate.####.exr, plate.%04d.dpx, a movie or a still")
    plate_image: PointerProperty(name="Plate", type=bpy.types.Image)
    plate_clip: PointerProperty(name="Plate", type=bpy.types.MovieClip)
    clean_source: EnumProperty(name="Clean plate", items=logic.SOURCE_ITEMS, default="FILE")
    clean_path: StringProperty(name="Clean plate", subtype="FILE_PATH",
                               description="The same camera move without the subject: sequence, movie or still")
    clean_image: PointerProperty(name="Clean plate", type=bpy.types.Image)
    clean_clip: PointerProperty(name="Clean plate", type=bpy.types.MovieClip)
    output_dir: StringProperty(name="Output folder", subtype="DIR_PATH",
                               description="Where the EXR mattes go (default: a howard folder beside the plate)")
    frames: EnumProperty(name="Frames", items=logic.FRAMES_ITEMS, default="SCENE")
    frame_range: StringProperty(name="Custom frames", description="Plate frames, e.g. 1001-1100 or 1001-1100x2")
    model: StringProperty(name="Model",
                          description="Installed weights name (howard weights list) or checkpoint file; empty: default")
    preset: EnumProperty(name="Preset", items=logic.PRESET_ITEMS, default="DEFAULT")
    refine_mode: EnumProperty(name="Refine", items=logic.REFINE_ITEMS, default="DEFAULT")
    backbone_scale: FloatProperty(name="Backbone scale", min=0.0, max=1.0, default=0.0,
                                  description="Resolution of the coarse pass (0.25 HD, 0.125 4K; 0: the preset's)")
    sample_pixels: IntProperty(name="Sample pixels", min=0, default=0,
                               description="Pixels refined per frame in sampling mode (0: default)")
    refine_threshold: FloatProperty(name="Refine threshold", min=0.0, max=1.0, default=0.0,
                                    description="Error above which a patch is refined in thresholding mode "
                                                "(0: default, 0.1)")
    device: EnumProperty(name="Device", items=logic.DEVICE_ITEMS, default="auto")
    precision: EnumProperty(name="Precision", items=logic.PRECISION_ITEMS, default="auto")
    plate_colorspace: StringProperty(
        name="Plate colorspace",
        description="linear, srgb or an OCIO name; empty: EXR is linear, everything else sRGB")
    clean_colorspace: StringProperty(name="Clean colorspace", description="Empty: the plate's, by file type")
    extra_layers: BoolProperty(name="Extra layers", default=True,
                               description="Also write fg, err, ref and bg layers into the EXRs")
    locked_off: BoolProperty(name="Locked-off camera", default=False,
                             description="The clean plate already lines up: skip alignment")
    hold_missing: BoolProperty(name="Hold missing frames", default=False)
    resume: BoolProperty(name="Resume", default=False, description="Keep frames already written")
    at_scene_start: BoolProperty(name="Start at scene start", default=True,
                                 description="Show the first matte frame at the scene's start frame "
                                             "(off: scene frame numbers equal file frame numbers)")
    wire_output: BoolProperty(name="Wire to output", default=True,
                              description="Feed the matted plate to the Composite / Group Output when nothing "
                                          "else feeds it")
    use_howard_rgba: BoolProperty(name="Use Howard RGBA", default=False,
                                  description="Wire Howard's premultiplied foreground to the Viewer instead of "
                                              "the plate with Howard's alpha")
    farm: EnumProperty(name="Run on", items=logic.FARM_ITEMS, default="LOCAL")
    farm_address: StringProperty(name="Dask scheduler", description="tcp://scheduler:8786, tls://..., or local:N")
    farm_path: StringProperty(name="Bundle / outline", subtype="FILE_PATH",
                              description="OpenJD: the job bundle folder to write; OpenCue: the outline file")
    farm_chunk: IntProperty(name="Chunk size", min=0, default=0, description="Frames per farm task; 0: Howard's")
    status: StringProperty(name="Status", default="")


def _input_path(settings, which, hostcli):
    source = getattr(settings, f"{which}_source")
    block = _datablock(settings, which)
    return logic.input_path(source, getattr(settings, f"{which}_path"), block, bpy.path.abspath, hostcli)


def _datablock(settings, which):
    source = getattr(settings, f"{which}_source")
    if source == "IMAGE":
        return getattr(settings, f"{which}_image")
    return getattr(settings, f"{which}_clip") if source == "CLIP" else None


def _blender_ocio_config():
    """The OCIO config this Blender uses: $OCIO, else the one it ships."""
    return os.environ.get("OCIO") or os.path.join(bpy.utils.resource_path("LOCAL"), "datafiles", "colormanagement",
                                                   "config.ocio")


def _plate_frames(plate, block, hostcli):
    """(first plate frame, the plate's frame numbers or None when unknown), Howard's numbering."""
    if not logic.is_movie(plate):
        frames = list(hostcli.frame_files(plate)) or None
        return (frames[0] if frames else 0), frames
    length = getattr(block, "frame_duration", 0) if block is not None else 0
    return 0, (list(range(length)) if length else None)


def compositor_tree(scene):
    """(the scene's compositor node tree, created if needed and never cleared; its output node).
    Blender 5 keeps the tree as a node group on the scene, output by a Group Output node;
    4.x as scene.node_tree, output by a Composite node."""
    if hasattr(scene, "compositing_node_group"):
        tree = scene.compositing_node_group
        if tree is None:
            tree = bpy.data.node_groups.new("Compositing", "CompositorNodeTree")
            tree.interface.new_socket(name="Image", in_out="OUTPUT", socket_type="NodeSocketColor")
            scene.compositing_node_group = tree
        output = next((n for n in tree.nodes if n.bl_idname == "NodeGroupOutput"), None)
        if output is None and len(tree.interface.items_tree):
            output = tree.nodes.new("NodeGroupOutput")
            output.location = (200, 400)
        return tree, output
    fresh = not scene.use_nodes or scene.node_tree is None
    scene.use_nodes = True
    tree = scene.node_tree
    output = next((n for n in tree.nodes if n.bl_idname == "CompositorNodeComposite"), None)
    if output is None:
        output = tree.nodes.new("CompositorNodeComposite")
        output.location = (200, 400)
    elif fresh:
        # Turning the compositor on just now added Blender's default nodes, not the artist's. Its
        # Render Layers node would make every render of this comp render the 3D scene (and need a
        # camera), so the tree starts as Blender 5's does: an output, then Howard's nodes.
        for node in list(tree.nodes):
            if node != output:
                tree.nodes.remove(node)
    return tree, output


def _node(tree, kind, label, frame, location):
    """Our node named `Howard <label>`: reused when a previous pull made it, else added."""
    name = NODE_PREFIX + label
    node = tree.nodes.get(name)
    if node is not None and node.bl_idname != kind:
        tree.nodes.remove(node)
        node = None
    if node is None:
        node = tree.nodes.new(kind)
        node.name = name
        node.location = location
    node.label = name
    node.parent = frame
    return node


def _socket(sockets, name, index):
    return sockets.get(name) or sockets[index]


def _timing(node, settings):
    for key, value in settings.items():
        setattr(node, key, value)


def _load_image(path, sequence):
    image = bpy.data.images.load(path, check_existing=True)
    if sequence:
        image.source = "SEQUENCE"
    return image


def load_into_compositor(context, result, pull):
    """Add (or update) Howard's nodes: the plate (Image node, or Movie Clip node for a clip) and
    the matte Image node, a Set Alpha node putting Howard's alpha on the plate, and a Viewer;
    with `wire_output`, Set Alpha also feeds the Composite / Group Output if nothing does.
    Nothing else in the tree changes. Scene frame f shows plate frame f + pull.shift."""
    scene = context.scene
    settings = scene.howard
    hostcli = pull.hostcli
    tree, output = compositor_tree(scene)
    frame = tree.nodes.get(FRAME_NAME)
    if frame is None:
        frame = tree.nodes.new("NodeFrame")
        frame.name = FRAME_NAME
        frame.label = "Howard matte"
        frame.location = (-900, 600)

    matte_image = _load_image(result.first_file, result.is_sequence)
    matte_image.alpha_mode = "PREMUL"  # Howard writes premultiplied RGBA EXRs
    plate_is_movie = logic.is_movie(pull.plate)
    if pull.clip is not None:
        plate = _node(tree, "CompositorNodeMovieClip", "Plate", frame, (-850, 500))
        plate.clip = pull.clip
        plate_image = None
    else:
        plate = _node(tree, "CompositorNodeImage", "Plate", frame, (-850, 500))
        plate_image = pull.image
        if plate_image is None:
            first_plate = pull.plate
            pattern_frames = None
            if result.first is not None and not plate_is_movie:
                pattern_frames = hostcli.frame_files(pull.plate)
                first_plate = pattern_frames.get(result.first) or next(iter(pattern_frames.values()), pull.plate)
            plate_image = _load_image(first_plate, bool(pattern_frames))
        plate.image = plate_image
    # Howard writes the foreground in the plate's own colour space; alpha is data either way.
    space = (pull.clip or plate_image).colorspace_settings.name
    if not logic.is_movie(result.first_file):
        matte_image.colorspace_settings.name = space
    matte_image.reload()
    matte = _node(tree, "CompositorNodeImage", "Matte", frame, (-850, 150))
    matte.image = matte_image
    if result.first is not None:
        start = result.first - pull.shift
        _timing(matte, logic.image_user_settings(result.first, result.last, start))
        if plate_image is not None and plate_image.source in ("SEQUENCE", "MOVIE"):
            _timing(plate, logic.plate_user_settings(result.first, result.last, plate_is_movie, start))

    set_alpha = _node(tree, "CompositorNodeSetAlpha", "Set Alpha", frame, (-550, 400))
    if hasattr(set_alpha, "mode"):  # Blender 4.x; the default (Apply Mask) premultiplies, as the comp expects
        set_alpha.mode = "APPLY"
    viewer = _node(tree, "CompositorNodeViewer", "Viewer", frame, (-300, 400))
    links = tree.links
    links.new(_socket(plate.outputs, "Image", 0), _socket(set_alpha.inputs, "Image", 0))
    links.new(_socket(matte.outputs, "Alpha", 1), _socket(set_alpha.inputs, "Alpha", 1))
    source = _socket(matte.outputs, "Image", 0) if settings.use_howard_rgba else _socket(set_alpha.outputs, "Image", 0)
    links.new(source, _socket(viewer.inputs, "Image", 0))
    if settings.wire_output and output is not None and len(output.inputs) and not output.inputs[0].is_linked:
        links.new(source, output.inputs[0])
    return matte


@dataclass
class Pull:
    """What invoke() worked out for one Pull Matte, for modal() and load_into_compositor()."""

    hostcli: object  # the howard_core.hostcli module
    job: object  # its Job running `howard matte`
    plate: str  # the plate path Howard reads
    shift: int  # scene frame f shows plate frame f + shift
    image: object = None  # the plate's Image datablock, when the plate is one
    clip: object = None  # the plate's Movie Clip, when the plate is one
    farm_report: str | None = None  # an OpenJD/OpenCue job's merged report: the matte loads when it appears


# The running Pull Matte operator, so a file load or Blender quitting can end its job (_stop_running).
_RUNNING = []


def _stop_running(*_args):
    """End the howard child of a running pull: asked to stop between frames, killed after a
    moment (every finished frame is already complete on disk)."""
    while _RUNNING:
        job = _RUNNING.pop()._pull.job
        job.cancel()
        if job.proc is not None:
            try:
                job.proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                job.proc.kill()


@bpy.app.handlers.persistent
def _on_load_pre(*_args):
    _stop_running()
    _FARM_JOBS.clear()  # their scenes belong to the file being closed


def _not_found(exc, cli, python):
    """Howard could not be found: the reason, where the add-on looked (in the order it looks,
    as howard_hostboot and hostcli.resolve_runner do) and where to set it."""
    tried = "`howard` on PATH (" + (os.environ.get("PATH") or "empty") + ")"
    for value, what in ((cli, "the Howard executable setting"), (python, "the Howard Python setting"),
                        (os.environ.get("HOWARD_CLI"), "$HOWARD_CLI"),
                        (os.environ.get("HOWARD_PYTHON"), "$HOWARD_PYTHON")):
        if value and str(value).strip():
            tried = f"{what} {str(value).strip()}"
            break
    return f"{exc}; tried {tried}; set the Howard executable in Preferences > Add-ons > Howard Matte"


def _unexpected(operator, exc, settings=None):
    """An exception nobody planned for: one report line for the artist, the traceback in the log."""
    LOG.exception("Howard: unexpected error in Pull Matte")
    message = f"Howard: unexpected error ({type(exc).__name__}: {exc}); details in Blender's system console"
    message = " ".join(message.split())
    if settings is not None:
        settings.status = message
    operator.report({"ERROR"}, message)
    return {"CANCELLED"}


class HOWARD_OT_pull_matte(bpy.types.Operator):
    """Run Howard on the plate and clean plate, then load the matte into the compositor"""

    bl_idname = "howard.pull_matte"
    bl_label = "Pull Matte"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return not _RUNNING and context.scene is not None

    def execute(self, context):
        return self.invoke(context, None)

    def invoke(self, context, event):
        settings = context.scene.howard
        try:
            return self._invoke(context, settings)
        except Exception as exc:
            return _unexpected(self, exc, settings)

    def _refuse(self, settings, message):
        message = " ".join(f"Howard: {message}".split())
        settings.status = message
        self.report({"ERROR"}, message)
        return {"CANCELLED"}

    def _invoke(self, context, settings):
        prefs = _prefs(context)
        cli = (prefs.howard_cli or None) if prefs else None
        python = (prefs.howard_python or None) if prefs else None
        try:
            hostcli = load_hostcli(cli=cli, python=python)
        except BootError as exc:
            return self._refuse(settings, _not_found(exc, cli, python))
        try:
            runner = hostcli.resolve_runner(cli=cli, python=python)
        except hostcli.HostError as exc:
            return self._refuse(settings, _not_found(exc, cli, python))
        scene = context.scene
        try:
            plate = _input_path(settings, "plate", hostcli)
            clean = _input_path(settings, "clean", hostcli)
            if not plate or not clean:
                raise ValueError("set both the plate and the clean plate")
            block = _datablock(settings, "plate")
            first, known = _plate_frames(plate, block, hostcli)
            clip = block if settings.plate_source == "CLIP" else None
            shift = logic.frame_shift(settings.plate_source, first, scene.frame_start, settings.at_scene_start, clip)
            still = not logic.is_movie(plate) and hostcli.frame_path(plate, 0) == plate  # no frame token
            mode = "ALL" if still and settings.frames == "SCENE" else settings.frames  # one image, one matte
            shown = logic.scene_frames(scene.frame_start, scene.frame_end, shift, known) if mode == "SCENE" else None
            frames = logic.frames_option(mode, settings.frame_range, shown)
            colorspace, ocio = logic.plate_colorspace(block.colorspace_settings.name if block else None,
                                                      _blender_ocio_config())
            folder = logic.output_folder(settings.output_dir, plate, bpy.data.filepath, bpy.path.abspath)
            options = logic.options_from_settings(settings, hostcli, frames, colorspace, ocio)
            farm = logic.farm_target(settings, hostcli, bpy.path.abspath)
            argv, farm_report = hostcli.pull_command(plate, clean, folder, options, farm, runner=runner)
            job = hostcli.Job(argv, expect_done=farm_report is None).start()
        except (ValueError, hostcli.HostError) as exc:
            return self._refuse(settings, exc)
        LOG.info("Howard: %s", hostcli.format_command(argv))
        self._pull = Pull(hostcli, job, plate, shift, block if settings.plate_source == "IMAGE" else None, clip,
                          farm_report)
        _RUNNING.append(self)
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_S, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        settings.status = "Howard: starting"
        _show_progress(context, "Howard: starting (Esc cancels)")
        return {"RUNNING_MODAL"}

    def _end(self, context):
        wm = context.window_manager
        if getattr(self, "_timer", None) is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        _show_progress(context, None)
        if self in _RUNNING:
            _RUNNING.remove(self)

    def cancel(self, context):
        # Blender removes a running modal operator (a file load, a closed window): end its job too.
        self._pull.job.cancel()
        self._end(context)

    def modal(self, context, event):
        settings = context.scene.howard
        try:
            return self._modal(context, event, settings)
        except Exception as exc:
            self._pull.job.cancel()
            self._end(context)
            return _unexpected(self, exc, settings)

    def _modal(self, context, event, settings):
        job = self._pull.job
        if event.type == "ESC" and not job.cancelled:
            job.cancel()
            settings.status = "Howard: cancelling"
            _show_progress(context, "Howard: cancelling")
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        job.poll()
        context.window_manager.progress_update(int(job.progress.fraction * 100))
        status = job.progress.status()
        settings.status = "Howard: cancelling" if job.cancelled else status
        _show_progress(context, settings.status + ("" if job.cancelled else " (Esc cancels)"))
        if not job.finished:
            return {"RUNNING_MODAL"}
        self._end(context)
        if job.error is not None:
            settings.status = " ".join(f"Howard: {job.error}".split())
            self.report({"WARNING"} if job.cancelled else {"ERROR"}, settings.status)
            return {"CANCELLED"}
        if self._pull.farm_report:
            _FARM_JOBS.append((context.scene.name, self._pull))
            if not bpy.app.timers.is_registered(check_farm_jobs):
                bpy.app.timers.register(check_farm_jobs, first_interval=FARM_POLL_S, persistent=True)
            settings.status = f"Howard: submitted to the farm; the matte loads when {self._pull.farm_report} appears"
            self.report({"INFO"}, settings.status)
            return {"FINISHED"}
        try:
            result = job.result()
            if result.first_file is None:
                raise ValueError(f"{result.output}: no frames to load")
            load_into_compositor(context, result, self._pull)
        except (ValueError, RuntimeError, self._pull.hostcli.HostError) as exc:  # RuntimeError: Blender cannot load it
            return self._refuse(settings, exc)
        # The graph changes are one undo step, named after the operator.
        bpy.ops.ed.undo_push(message="Howard: Pull Matte")
        lines = result.summary()
        for line in lines[1:]:
            self.report({"WARNING"}, line)
        settings.status = lines[0]
        self.report({"INFO"}, settings.status)
        return {"FINISHED"}


# Farm jobs (OpenJD, OpenCue) whose matte is still to load: (scene name, Pull), checked by a timer.
_FARM_JOBS = []


def check_farm_jobs():
    """bpy.app.timers callback: load the matte of every farm job whose merged report has appeared.
    Returns the seconds until the next look, or None once nothing is pending."""
    for entry in list(_FARM_JOBS):
        scene_name, pull = entry
        scene = bpy.data.scenes.get(scene_name)
        if scene is None:  # the scene (or the file) is gone
            _FARM_JOBS.remove(entry)
            continue
        try:
            result = pull.hostcli.result_from_report(pull.farm_report)
            if result is None:
                continue
            _FARM_JOBS.remove(entry)
            if result.first_file is None:
                raise ValueError(f"{result.output}: the farm job wrote no frames")
            load_into_compositor(SimpleNamespace(scene=scene), result, pull)
            scene.howard.status = " ".join(result.summary()[0].split())
        except (ValueError, RuntimeError, pull.hostcli.HostError) as exc:
            scene.howard.status = " ".join(f"Howard: {exc}".split())
        except Exception as exc:  # noqa: BLE001 - never a traceback for the artist
            LOG.exception("Howard: unexpected error loading a farm job's matte")
            scene.howard.status = f"Howard: unexpected error ({type(exc).__name__}: {exc}); see the system console"
    return FARM_POLL_S if _FARM_JOBS else None


def _show_progress(context, text):
    """`text` in the status bar and in every Node Editor's header; None clears them."""
    if context.workspace is not None:
        context.workspace.status_text_set(text)
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "NODE_EDITOR":
                area.header_text_set(text)


class HOWARD_PT_panel(bpy.types.Panel):
    bl_label = "Howard Matte"
    bl_space_type = "NODE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Howard"

    @classmethod
    def poll(cls, context):
        space = context.space_data
        return space is not None and getattr(space, "tree_type", None) == "CompositorNodeTree"

    def draw(self, context):
        settings = context.scene.howard
        layout = self.layout
        for which, label in (("plate", "Plate"), ("clean", "Clean plate")):
            box = layout.box()
            box.prop(settings, f"{which}_source", text=label)
            source = getattr(settings, f"{which}_source")
            if source == "FILE":
                box.prop(settings, f"{which}_path", text="")
            elif source == "IMAGE":
                box.template_ID(settings, f"{which}_image", open="image.open")
            else:
                box.template_ID(settings, f"{which}_clip", open="clip.open")
        layout.prop(settings, "output_dir")
        layout.prop(settings, "frames")
        if settings.frames == "CUSTOM":
            layout.prop(settings, "frame_range")
        for heading, names in _panel_columns(settings):
            col = layout.column(heading=heading)
            for name in names:
                col.prop(settings, name)
        running = bool(_RUNNING)
        layout.operator(HOWARD_OT_pull_matte.bl_idname, text="Pulling... (Esc cancels)" if running else "Pull Matte",
                        icon="IMAGE_ALPHA")
        if settings.status:
            layout.label(text=settings.status)


def _panel_columns(settings):
    """(heading, property names) for the panel's columns; a property shows where it applies."""
    mode, farm = settings.refine_mode, settings.farm
    network = ["model", "preset", "backbone_scale", "refine_mode"]
    network += ["sample_pixels"] if mode in ("DEFAULT", "sampling") else []
    network += ["refine_threshold"] if mode == "thresholding" else []
    farm_props = ["farm"] + (["farm_address"] if farm == "dask" else ["farm_path"] if farm != "LOCAL" else [])
    farm_props += ["farm_chunk"] if farm != "LOCAL" else []
    return (("Network", network + ["device", "precision"]), ("Colour", ["plate_colorspace", "clean_colorspace"]),
            ("Job", ["extra_layers", "locked_off", "hold_missing", "resume", "at_scene_start", "wire_output",
                     "use_howard_rgba"]),
            ("Farm", farm_props))


CLASSES = (HOWARD_AddonPreferences, HOWARD_Settings, HOWARD_OT_pull_matte, HOWARD_PT_panel)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.howard = PointerProperty(type=HOWARD_Settings)
    bpy.app.handlers.load_pre.append(_on_load_pre)
    atexit.register(_stop_running)  # quitting Blender ends a running job too


def unregister():
    _stop_running()
    _FARM_JOBS.clear()
    if bpy.app.timers.is_registered(check_farm_jobs):
        bpy.app.timers.unregister(check_farm_jobs)
    atexit.unregister(_stop_running)
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    del bpy.types.Scene.howard
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
