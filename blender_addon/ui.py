"""Blender side of the Howard add-on: settings, the compositor sidebar panel, the modal
"Pull Matte" operator and the nodes it adds. Howard itself runs as a `howard matte`
subprocess (Blender's Python cannot import torch); see howard_core.hostcli."""

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, PointerProperty, StringProperty

from . import logic
from .howard_hostboot import BootError, load_hostcli

NODE_PREFIX = "Howard "
FRAME_NAME = "Howard"
TIMER_S = 0.25


def _prefs(context):
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


def _hostcli(context):
    prefs = _prefs(context)
    return load_hostcli(cli=(prefs.howard_cli or None) if prefs else None,
                        python=(prefs.howard_python or None) if prefs else None)


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
    frame_range: StringProperty(name="Frames", description="e.g. 1001-1100 (empty: every plate frame)")
    model: StringProperty(name="Model",
                          description="Installed weights name (howard weights list) or checkpoint file; empty: default")
    preset: EnumProperty(name="Preset", items=logic.PRESET_ITEMS, default="DEFAULT")
    refine_mode: EnumProperty(name="Refine", items=logic.REFINE_ITEMS, default="DEFAULT")
    sample_pixels: IntProperty(name="Sample pixels", min=0, default=0,
                               description="Pixels refined per frame in sampling mode (0: default)")
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
    use_howard_rgba: BoolProperty(name="Use Howard RGBA", default=False,
                                  description="Wire Howard's premultiplied foreground to the Viewer instead of "
                                              "the plate with Howard's alpha")
    status: StringProperty(name="Status", default="")


def _input_path(settings, which, hostcli):
    source = getattr(settings, f"{which}_source")
    block = getattr(settings, f"{which}_image") if source == "IMAGE" else getattr(settings, f"{which}_clip")
    return logic.input_path(source, getattr(settings, f"{which}_path"), block, bpy.path.abspath, hostcli)


def compositor_tree(scene):
    """The scene's compositor node tree, created if needed, never cleared.
    Blender 5 keeps it as a node group on the scene; 4.x as scene.node_tree."""
    if hasattr(scene, "compositing_node_group"):
        tree = scene.compositing_node_group
        if tree is None:
            tree = bpy.data.node_groups.new("Compositing", "CompositorNodeTree")
            tree.interface.new_socket(name="Image", in_out="OUTPUT", socket_type="NodeSocketColor")
            scene.compositing_node_group = tree
        return tree
    scene.use_nodes = True
    return scene.node_tree


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


def load_into_compositor(context, result, plate_path, plate_image, hostcli):
    """Add (or update) Howard's nodes: the plate and matte Image nodes, a Set Alpha node
    putting Howard's alpha on the plate, and a Viewer. Nothing else in the tree changes."""
    scene = context.scene
    settings = scene.howard
    tree = compositor_tree(scene)
    frame = tree.nodes.get(FRAME_NAME)
    if frame is None:
        frame = tree.nodes.new("NodeFrame")
        frame.name = FRAME_NAME
        frame.label = "Howard matte"
        frame.location = (-900, 600)

    matte_image = _load_image(result.first_file, result.is_sequence)
    matte_image.alpha_mode = "PREMUL"  # Howard writes premultiplied RGBA EXRs
    matte_image.reload()
    start = scene.frame_start if settings.at_scene_start else None
    plate_is_movie = logic.is_movie(plate_path)

    plate = _node(tree, "CompositorNodeImage", "Plate", frame, (-850, 500))
    if plate_image is not None:
        plate.image = plate_image
    else:
        first_plate = plate_path
        pattern_frames = None
        if result.first is not None and not plate_is_movie:
            pattern_frames = hostcli.frame_files(plate_path)
            first_plate = pattern_frames.get(result.first) or next(iter(pattern_frames.values()), plate_path)
        plate.image = _load_image(first_plate, bool(pattern_frames))
    matte = _node(tree, "CompositorNodeImage", "Matte", frame, (-850, 150))
    matte.image = matte_image
    if result.first is not None:
        _timing(matte, logic.image_user_settings(result.first, result.last, start))
        if plate.image.source in ("SEQUENCE", "MOVIE"):
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
    return matte


class HOWARD_OT_pull_matte(bpy.types.Operator):
    """Run Howard on the plate and clean plate, then load the matte into the compositor"""

    bl_idname = "howard.pull_matte"
    bl_label = "Pull Matte"
    bl_options = {"REGISTER"}

    _running = False

    @classmethod
    def poll(cls, context):
        return not cls._running and context.scene is not None

    def execute(self, context):
        return self.invoke(context, None)

    def invoke(self, context, event):
        settings = context.scene.howard
        try:
            hostcli = _hostcli(context)
        except BootError as exc:
            self.report({"ERROR"}, f"Howard: {exc}")
            return {"CANCELLED"}
        try:
            plate = _input_path(settings, "plate", hostcli)
            clean = _input_path(settings, "clean", hostcli)
            if not plate or not clean:
                raise ValueError("set both the plate and the clean plate")
            folder = logic.output_folder(settings.output_dir, plate, bpy.data.filepath, bpy.path.abspath)
            prefs = _prefs(context)
            runner = hostcli.resolve_runner(cli=(prefs.howard_cli or None) if prefs else None,
                                            python=(prefs.howard_python or None) if prefs else None)
            argv = hostcli.matte_command(plate, clean, folder + os.sep,
                                         logic.options_from_settings(settings, hostcli), runner=runner)
            self._job = hostcli.Job(argv).start()
        except (ValueError, hostcli.HostError) as exc:
            self.report({"ERROR"}, f"Howard: {exc}")
            return {"CANCELLED"}
        self._hostcli = hostcli
        self._plate = plate
        self._plate_image = settings.plate_image if settings.plate_source == "IMAGE" else None
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_S, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        type(self)._running = True
        settings.status = "Howard: starting"
        self._status(context, "Howard: starting (Esc cancels)")
        return {"RUNNING_MODAL"}

    def _status(self, context, text):
        if context.workspace is not None:
            context.workspace.status_text_set(text)

    def _end(self, context):
        wm = context.window_manager
        wm.event_timer_remove(self._timer)
        wm.progress_end()
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        type(self)._running = False

    def modal(self, context, event):
        job = self._job
        settings = context.scene.howard
        if event.type == "ESC" and not job.cancelled:
            job.cancel()
            settings.status = "Howard: cancelling"
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        job.poll()
        context.window_manager.progress_update(int(job.progress.fraction * 100))
        status = job.progress.status()
        settings.status = status
        self._status(context, status + ("" if job.cancelled else " (Esc cancels)"))
        if not job.finished:
            return {"RUNNING_MODAL"}
        self._end(context)
        if job.error is not None:
            settings.status = f"Howard: {job.error}"
            self.report({"WARNING"} if job.cancelled else {"ERROR"}, f"Howard: {job.error}")
            return {"CANCELLED"}
        try:
            result = job.result()
            if result.first_file is None:
                raise ValueError(f"{result.output}: no frames to load")
            load_into_compositor(context, result, self._plate, self._plate_image, self._hostcli)
        except Exception as exc:  # hostcli.HostError, or a file Blender cannot load
            settings.status = f"Howard: {exc}"
            self.report({"ERROR"}, f"Howard: {exc}")
            return {"CANCELLED"}
        lines = result.summary()
        for line in lines[1:]:
            self.report({"WARNING"}, line)
        settings.status = lines[0]
        self.report({"INFO"}, settings.status)
        return {"FINISHED"}


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
        layout.prop(settings, "frame_range")
        col = layout.column(heading="Network")
        col.prop(settings, "model")
        col.prop(settings, "preset")
        col.prop(settings, "refine_mode")
        if settings.refine_mode in ("DEFAULT", "sampling"):
            col.prop(settings, "sample_pixels")
        col.prop(settings, "device")
        col.prop(settings, "precision")
        col = layout.column(heading="Colour")
        col.prop(settings, "plate_colorspace")
        col.prop(settings, "clean_colorspace")
        col = layout.column(heading="Job")
        col.prop(settings, "extra_layers")
        col.prop(settings, "locked_off")
        col.prop(settings, "hold_missing")
        col.prop(settings, "resume")
        col.prop(settings, "at_scene_start")
        col.prop(settings, "use_howard_rgba")
        running = HOWARD_OT_pull_matte._running
        layout.operator(HOWARD_OT_pull_matte.bl_idname, text="Pulling... (Esc cancels)" if running else "Pull Matte",
                        icon="IMAGE_ALPHA")
        if settings.status:
            layout.label(text=settings.status)


CLASSES = (HOWARD_AddonPreferences, HOWARD_Settings, HOWARD_OT_pull_matte, HOWARD_PT_panel)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.howard = PointerProperty(type=HOWARD_Settings)


def unregister():
    del bpy.types.Scene.howard
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
