"""The Nuke and Blender adapters, without Nuke or Blender.

What is tested is the adapters' own code: the bootstrap that finds howard_core.hostcli from
a Python that cannot import Howard (run for real, in a separate interpreter), the pure
decision modules (nuke_plugin/howard_nuke/logic.py, blender_addon/logic.py), and that the
host modules import and are consistent with themselves (knob and property names, button and
menu commands, the extension manifest). The stubs for `nuke` and `bpy` carry only the
names those modules touch at import or while declaring knobs/properties; nothing here
pretends to run a host. Node-graph building (Nuke Group internals, Blender compositor
nodes) needs the real hosts and is not covered here.
"""

import importlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
import types
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from adapters import BLENDER_DIR, BUILD, NUKE_DIR  # the adapters as users install them

import howard_core
from howard_core import hostcli
from howard_core.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]

HOWARD = Path(sys.executable).with_name("howard")


def _matte_args(argv):
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["matte"]
    return sub.parse_args(argv[argv.index("matte") + 1:])


@pytest.fixture
def on_path(monkeypatch):
    """Put the adapter folders on sys.path for one test and forget what was imported."""
    before = set(sys.modules)

    def add(folder):
        monkeypatch.syspath_prepend(str(folder))
    yield add
    for name in set(sys.modules) - before:  # the adapters' modules, imported from the folders above
        origin = getattr(sys.modules[name], "__file__", None) or ""
        if origin.startswith((str(NUKE_DIR), str(BLENDER_DIR))):
            del sys.modules[name]


# ---------------------------------------------------------------------------------------------------
# the bootstrap (one source, shipped in both adapters)
# ---------------------------------------------------------------------------------------------------


def test_both_adapters_ship_the_same_bootstrap(tmp_path):
    nuke_copy = (NUKE_DIR / "howard_nuke" / "howard_hostboot.py").read_bytes()
    assert nuke_copy == (BLENDER_DIR / "howard_hostboot.py").read_bytes() == BUILD.HOSTBOOT.read_bytes()
    # Only build.py adds it: no adapter folder in the tree carries a copy of its own to drift.
    assert not list((ROOT / "nuke_plugin").rglob("howard_hostboot.py"))
    assert not list((ROOT / "blender_addon").rglob("howard_hostboot.py"))
    for name, inside in (("nuke_plugin", "nuke_plugin/howard_nuke/howard_hostboot.py"),
                         ("blender_addon", "blender_addon/howard_hostboot.py")):
        with zipfile.ZipFile(BUILD.adapter_zip(name, tmp_path)) as zf:
            assert zf.read(inside) == BUILD.HOSTBOOT.read_bytes()


def _host_python(code, env, cwd):
    """Run `code` in an interpreter that cannot import howard_core (no site-packages, no cwd),
    as inside Nuke or Blender."""
    script = f"import sys; sys.path.insert(0, {str(NUKE_DIR / 'howard_nuke')!r})\n" + code
    return subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


@pytest.mark.skipif(not HOWARD.exists(), reason="needs the venv's howard executable")
def test_bootstrap_loads_hostcli_through_the_howard_executable(tmp_path):
    code = """
import importlib.util
print(importlib.util.find_spec("howard_core") is None)
import howard_hostboot
m = howard_hostboot.load_hostcli()
print(m.__name__)
print(m.__file__)
print(m.format_command(m.matte_command("/a b/p.####.exr", "/c.mov", "/o", runner=["howard"])))
print(howard_hostboot.load_hostcli() is m)
"""
    env = {"HOWARD_CLI": str(HOWARD), "PATH": os.defpath}
    proc = _host_python(code, env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    cannot_import, name, path, command, cached = proc.stdout.strip().splitlines()
    assert cannot_import == "True" and name == "howard_hostcli" and cached == "True"
    assert Path(path).resolve() == Path(hostcli.__file__).resolve()
    assert command == "howard matte '/a b/p.####.exr' /c.mov -o /o/ --progress json"  # defaults left to Howard


def test_bootstrap_without_howard_says_so_in_one_line(tmp_path):
    code = """
import howard_hostboot
try:
    howard_hostboot.load_hostcli()
except howard_hostboot.BootError as exc:
    print(exc)
"""
    proc = _host_python(code, {"PATH": str(tmp_path)}, tmp_path)
    assert proc.stdout.strip().startswith("Howard is not installed where this host can find it: set HOWARD_CLI")


@pytest.mark.skipif(os.name == "nt", reason="uses a POSIX shell script as the fake interpreter")
def test_bootstrap_with_an_interpreter_lacking_howard(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'No module named howard_core' >&2\nexit 1\n")
    fake.chmod(0o755)
    code = """
import howard_hostboot
try:
    howard_hostboot.load_hostcli()
except howard_hostboot.BootError as exc:
    print(exc)
"""
    proc = _host_python(code, {"PATH": os.defpath, "HOWARD_PYTHON": str(fake)}, tmp_path)
    assert proc.stdout.strip().startswith(f"{fake} cannot import howard_core.hostcli")


def test_interpreter_behind_a_howard_script(tmp_path, on_path):
    on_path(NUKE_DIR / "howard_nuke")
    boot = importlib.import_module("howard_hostboot")
    if HOWARD.exists():  # a virtual environment: the python beside it
        assert Path(boot._interpreter_for_cli(str(HOWARD))).parent == HOWARD.parent
    lone = tmp_path / "bin"
    lone.mkdir()
    script = lone / "howard"
    script.write_text(f"#!{sys.executable}\nprint('hi')\n")
    assert boot._interpreter_for_cli(str(script)) == sys.executable
    script.write_text("#!/usr/bin/env python3\n")
    assert boot._interpreter_for_cli(str(script)) == shutil.which("python3")
    assert boot._interpreter_for_cli(str(tmp_path / "missing")) is None


# ---------------------------------------------------------------------------------------------------
# Nuke
# ---------------------------------------------------------------------------------------------------


class FakeNode:
    """A node as howard_nuke.logic sees one: Class(), input(0), knob values."""

    def __init__(self, cls, knobs=None, above=None):
        self.cls, self.knobs, self.above = cls, knobs or {}, above

    def Class(self):
        return self.cls

    def input(self, index):
        return self.above

    def __getitem__(self, name):
        return SimpleNamespace(value=lambda: self.knobs[name])


def test_nuke_logic_finds_plain_reads(on_path):
    on_path(NUKE_DIR)
    from howard_nuke import logic

    read = FakeNode("Read", {"frame": "", "first": 1001, "last": 1100})
    filename = {id(read): "/shots/a b/plate.%04d.exr"}.get
    filename_of = lambda node: filename(id(node))  # noqa: E731 - nuke.filename stand-in
    assert logic.upstream(FakeNode("Dot", above=FakeNode("Dot", above=read))) is read
    assert logic.upstream(None) is None
    assert logic.plain_read(read, filename_of, sequence_only=True) == ("/shots/a b/plate.%04d.exr", 1001, 1100)
    offset = FakeNode("Read", {"frame": "frame+10", "first": 1, "last": 9})
    assert logic.plain_read(offset, lambda n: "/x/p.%04d.exr") is None  # retimed: render it instead
    movie = FakeNode("Read", {"frame": "", "first": 1, "last": 48})
    assert logic.plain_read(movie, lambda n: "/x/clean.mov") == ("/x/clean.mov", 1, 48)
    assert logic.plain_read(movie, lambda n: "/x/clean.mov", sequence_only=True) is None  # frame numbering differs
    assert logic.plain_read(FakeNode("Grade", above=read), filename_of) is None
    assert logic.plain_read(read, lambda n: "/x/[value root.name].exr") is None


def test_nuke_logic_output_folder_and_paths(on_path, tmp_path):
    on_path(NUKE_DIR)
    from howard_nuke import logic

    assert logic.output_folder(" /mattes ", "/s/plate.%04d.exr", None, "HowardMatte1", "/tmp") == "/mattes"
    assert logic.output_folder("", "/s/plate.%04d.exr", "/comp/x.nk", "HowardMatte1", "/tmp") == "/s/howard"
    assert logic.output_folder("", None, "/comp/x.nk", "HowardMatte1", "/tmp") == "/comp/howard/HowardMatte1"
    assert logic.output_folder(None, None, None, "HowardMatte1", "/tmp") == "/tmp/howard/HowardMatte1"
    assert logic.nuke_path(r"C:\shots\plate.####.exr") == "C:/shots/plate.####.exr"


def test_nuke_knob_values_become_a_valid_command(on_path):
    on_path(NUKE_DIR)
    from howard_nuke import logic

    values = {"frame_range": "", "model": " resnet50 ", "preset": "hd", "refine_mode": "default",
              "sample_pixels": 0, "device": "cuda", "precision": "fp16", "plate_colorspace": "ACEScg",
              "clean_colorspace": "", "ocio_config": "", "extra_layers": True, "locked_off": True,
              "hold_missing": True, "resume": False}
    options = logic.options_from_values(values, hostcli, frames="1001-1100")
    args = _matte_args(hostcli.matte_command("/p/plate.%04d.exr", "/p/clean.mov", "/o/", options, runner=["h"]))
    assert (args.frames, args.model, args.preset, args.refine_mode, args.sample_pixels) == ("1001-1100", "resnet50",
                                                                                          "hd", None, None)
    assert (args.device, args.precision, args.colorspace, args.clean_colorspace) == ("cuda", "fp16", "ACEScg", None)
    assert args.layers == "fg,err,ref,bg" and args.align is False and args.missing == "hold" and not args.resume
    values["frame_range"] = "1010-1020"
    assert logic.options_from_values(values, hostcli, frames="1001-1100").frames == tuple(range(1010, 1021))


def test_both_hosts_offer_the_settings_options_with_their_choices_and_defaults(on_path, monkeypatch):
    """The hosts' knobs and properties checked against the one definition, MatteSettings: the same
    choices, the same defaults, and every network option (threshold and backbone scale included)."""
    on_path(NUKE_DIR)
    from howard_nuke import logic as nuke_logic

    settings = hostcli.settings
    assert nuke_logic.PRESET_CHOICES[1:] == settings.PRESETS and nuke_logic.PRECISION_CHOICES == settings.PRECISIONS
    assert nuke_logic.REFINE_CHOICES[1:] == settings.REFINE_MODES and nuke_logic.EXTRA_LAYERS == settings.LAYERS
    knobs = {"preset": "default", "refine_mode": "default", "backbone_scale": 0.0, "sample_pixels": 0,
             "refine_threshold": 0.0, "device": "auto", "precision": "auto", "plate_colorspace": "",
             "clean_colorspace": "", "ocio_config": "", "extra_layers": False, "locked_off": False,
             "hold_missing": False, "resume": False, "frame_range": "", "model": ""}
    assert nuke_logic.options_from_values(knobs, hostcli) == hostcli.MatteSettings()
    changed = {**knobs, "preset": "4k", "refine_mode": "thresholding", "backbone_scale": 0.5, "sample_pixels": 9,
               "refine_threshold": 0.3, "device": "cpu", "precision": "bf16", "plate_colorspace": "ACEScg",
               "clean_colorspace": "srgb", "ocio_config": "/c.ocio", "extra_layers": True, "locked_off": True,
               "hold_missing": True, "resume": True, "frame_range": "3-4", "model": "m"}
    nuke_set = nuke_logic.options_from_values(changed, hostcli)

    on_path(BLENDER_DIR.parent)
    bpy, props, _ = _bpy_stub()
    monkeypatch.setitem(sys.modules, "bpy", bpy)
    monkeypatch.setitem(sys.modules, "bpy.props", props)
    from blender_addon import logic as blender_logic
    from blender_addon import ui

    assert tuple(i[0] for i in blender_logic.PRESET_ITEMS[1:]) == settings.PRESETS
    assert tuple(i[0] for i in blender_logic.REFINE_ITEMS[1:]) == settings.REFINE_MODES
    assert tuple(i[0] for i in blender_logic.PRECISION_ITEMS) == settings.PRECISIONS
    panel = _settings_from_annotations(ui.HOWARD_Settings)
    panel.extra_layers = False
    assert blender_logic.options_from_settings(panel, hostcli) == hostcli.MatteSettings()
    for name in ("preset", "refine_mode", "backbone_scale", "sample_pixels", "refine_threshold", "device",
                 "precision", "plate_colorspace", "clean_colorspace", "extra_layers", "locked_off", "hold_missing",
                 "resume", "model"):
        setattr(panel, name, changed[name])
    blender_set = blender_logic.options_from_settings(panel, hostcli, frames="3-4")
    # Both hosts expose the same options; what neither does is left to Howard's defaults.
    differs = {n for n in hostcli.MatteSettings.names() if getattr(nuke_set, n) != getattr(hostcli.MatteSettings(), n)}
    assert differs == {n for n in hostcli.MatteSettings.names()
                       if getattr(blender_set, n) != getattr(hostcli.MatteSettings(), n)} | {"ocio_config"}
    assert {"backbone_scale", "refine_threshold", "sample_pixels", "preset", "refine_mode"} <= differs
    assert differs.isdisjoint({"format", "compression", "window", "clean_offset", "clean_scale", "batch_size",
                               "threads", "queue_size"})


class _Knob:
    """Records a knob's name and default, as nuke's knob constructors are called in node.py."""

    def __init__(self, name, label=None, *rest):
        self.name, self.label, self.rest = name, label, rest
        default = rest[0] if rest else None
        self._value = default[0] if isinstance(default, list) else default

    def setFlag(self, flag):
        pass

    def setTooltip(self, text):
        pass

    def setValue(self, value):
        self._value = value

    def value(self):
        return self._value

    def evaluate(self):
        return self._value


class _Panel:
    def __init__(self):
        self.knobs = {}

    def addKnob(self, knob):
        assert knob.name not in self.knobs, f"knob {knob.name} added twice"
        self.knobs[knob.name] = knob

    def __getitem__(self, name):
        return self.knobs[name]


def _nuke_stub():
    stub = types.ModuleType("nuke")
    for name in ("Tab_Knob", "String_Knob", "EvalString_Knob", "Text_Knob", "PyScript_Knob", "Enumeration_Knob",
                 "File_Knob", "Int_Knob", "Double_Knob", "Boolean_Knob"):
        setattr(stub, name, _Knob)
    stub.INVISIBLE = stub.STARTLINE = 0
    return stub


def test_nuke_node_module_imports_and_its_knobs_are_consistent(on_path, monkeypatch):
    on_path(NUKE_DIR)
    monkeypatch.setitem(sys.modules, "nuke", _nuke_stub())
    import howard_nuke
    from howard_nuke import logic, node

    panel = _Panel()
    node._add_knobs(panel)
    knobs = panel.knobs
    # Every knob the pull reads exists, and its default gives a command the CLI accepts.
    values = node._values(panel)
    options = logic.options_from_values(values, hostcli)
    args = _matte_args(hostcli.matte_command("/p/p.####.exr", "/p/c.mov", "/o/", options, runner=["h"]))
    assert args.preset is None and args.device == "auto" and args.layers == "fg,err,ref,bg" and args.align
    for name in ("output", "status", "output_folder", "howard_cli", "model", node.TAG):
        assert name in knobs, name
    assert knobs["output"].rest[0] == list(logic.OUTPUT_MODES)  # the internal Switch follows parent.output
    assert knobs["preset"].rest[0][1:] == list(hostcli.PRESETS)
    assert knobs["refine_mode"].rest[0][1:] == list(hostcli.REFINE_MODES)
    assert knobs["precision"].rest[0] == list(hostcli.PRECISIONS)
    # Button commands run in Nuke's script context: they must name functions the package has.
    for button in ("pull", "export_torchscript"):
        command = knobs[button].rest[0]
        compile(command, button, "exec")
        for called in re.findall(r"howard_nuke\.(\w+)\(", command):
            assert callable(getattr(howard_nuke, called)), called


def test_nuke_menu_commands_name_real_functions(on_path, monkeypatch):
    on_path(NUKE_DIR)
    added = []

    class Menu:
        def addMenu(self, name):
            return self

        def addCommand(self, name, command):
            added.append((name, command))

    stub = types.ModuleType("nuke")
    stub.menu = lambda name: Menu()
    monkeypatch.setitem(sys.modules, "nuke", stub)
    exec(compile((NUKE_DIR / "menu.py").read_text(), "menu.py", "exec"), {})
    exec(compile((NUKE_DIR / "init.py").read_text(), "init.py", "exec"), {})
    import howard_nuke

    assert [name for name, _ in added] == ["HowardMatte", "Export TorchScript for Inference..."]
    for _, command in added:
        for called in re.findall(r"howard_nuke\.(\w+)\(", command):
            assert callable(getattr(howard_nuke, called))


# ---------------------------------------------------------------------------------------------------
# Blender
# ---------------------------------------------------------------------------------------------------


def _bpy_stub():
    """bpy as ui.py needs it to be imported: base classes, property constructors, register."""
    bpy = types.ModuleType("bpy")
    base = {name: type(name, (), {}) for name in ("AddonPreferences", "PropertyGroup", "Operator", "Panel")}
    bpy.types = SimpleNamespace(Image=object, MovieClip=object, Scene=SimpleNamespace(), **base)
    props = types.ModuleType("bpy.props")
    for name in ("BoolProperty", "EnumProperty", "FloatProperty", "IntProperty", "PointerProperty", "StringProperty"):
        setattr(props, name, lambda _name=name, **kw: (_name, kw))
    bpy.props = props
    registered = []
    bpy.utils = SimpleNamespace(register_class=registered.append, unregister_class=registered.remove)
    bpy.path = SimpleNamespace(abspath=_abspath)
    handlers = SimpleNamespace(persistent=lambda f: f, load_pre=[])  # @persistent marks a handler, returns it
    bpy.app = SimpleNamespace(handlers=handlers, timers=_Timers())
    return bpy, props, registered


class _Timers:
    """bpy.app.timers: register(function, *, first_interval=0, persistent=False), unregister(function),
    is_registered(function); the real module raises ValueError for an unregister of an unknown function."""

    def __init__(self):
        self.functions = {}

    def register(self, function, *, first_interval=0, persistent=False):
        self.functions[function] = (first_interval, persistent)

    def unregister(self, function):
        if function not in self.functions:
            raise ValueError("Error: function is not registered")
        del self.functions[function]

    def is_registered(self, function):
        return function in self.functions


def _abspath(path, *, start=None, library=None):
    """bpy.path.abspath's signature (keyword-only start and library); `//` is the .blend's folder."""
    return path.replace("//", "/blend/", 1)


def _settings_from_annotations(cls):
    """A stand-in settings object holding every declared property at its declared default."""
    values = {}
    for name, (kind, kw) in cls.__annotations__.items():
        default = kw.get("default", {"StringProperty": "", "IntProperty": 0, "FloatProperty": 0.0,
                                     "BoolProperty": False}.get(kind))
        if kind == "EnumProperty":
            assert default in [item[0] for item in kw["items"]], name
        values[name] = default
    return SimpleNamespace(**values)


def test_blender_addon_imports_registers_and_its_properties_are_consistent(on_path, monkeypatch):
    on_path(BLENDER_DIR.parent)
    bpy, props, registered = _bpy_stub()
    monkeypatch.setitem(sys.modules, "bpy", bpy)
    monkeypatch.setitem(sys.modules, "bpy.props", props)
    addon = importlib.import_module("blender_addon")
    from blender_addon import logic, ui

    assert addon.bl_info["blender"] >= (4, 2, 0) and addon.bl_info["category"] == "Compositing"
    assert ui.HOWARD_AddonPreferences.bl_idname == "blender_addon"  # __package__, as extensions require
    assert ui.HOWARD_OT_pull_matte.bl_idname == "howard.pull_matte"
    assert (ui.HOWARD_PT_panel.bl_space_type, ui.HOWARD_PT_panel.bl_region_type) == ("NODE_EDITOR", "UI")
    settings = _settings_from_annotations(ui.HOWARD_Settings)
    args = _matte_args(hostcli.matte_command("/p/p.####.exr", "/p/c.mov", "/o/",
                                             logic.options_from_settings(settings, hostcli), runner=["h"]))
    assert args.preset is None and args.refine_mode is None and args.device == "auto"
    assert args.layers == "fg,err,ref,bg" and args.missing == "error" and args.align
    settings.plate_source = "IMAGE"
    settings.plate_image = SimpleNamespace(filepath="//plates/plate.1001.exr", source="SEQUENCE", library=None)
    assert ui._input_path(settings, "plate", hostcli) == "/blend/plates/plate.####.exr"
    addon.register()
    assert registered == list(ui.CLASSES) and bpy.types.Scene.howard[0] == "PointerProperty"
    assert bpy.app.handlers.load_pre == [ui._on_load_pre]
    addon.unregister()
    assert registered == [] and not hasattr(bpy.types.Scene, "howard") and bpy.app.handlers.load_pre == []


def _blender_logic(on_path):
    on_path(BLENDER_DIR)
    return importlib.import_module("logic")


def test_blender_input_paths(on_path):
    logic = _blender_logic(on_path)
    absp = _abspath
    image = SimpleNamespace(filepath="//in/plate.1001.exr", source="SEQUENCE", library=None)
    movie = SimpleNamespace(filepath="/in/clean plate.mov", source="MOVIE", library=None)
    still = SimpleNamespace(filepath="/in/clean.exr", source="FILE", library=None)
    assert logic.input_path("FILE", "//in/plate.####.exr", None, absp, hostcli) == "/blend/in/plate.####.exr"
    assert logic.input_path("FILE", "  ", None, absp, hostcli) is None
    assert logic.input_path("IMAGE", "", image, absp, hostcli) == "/blend/in/plate.####.exr"
    assert logic.input_path("CLIP", "", movie, absp, hostcli) == "/in/clean plate.mov"
    assert logic.input_path("IMAGE", "", still, absp, hostcli) == "/in/clean.exr"
    assert logic.input_path("IMAGE", "", None, absp, hostcli) is None
    assert logic.is_movie("/in/clean plate.MOV") and not logic.is_movie("/in/plate.####.exr")


def test_blender_output_folder(on_path):
    logic = _blender_logic(on_path)
    absp = _abspath
    assert logic.output_folder("//mattes/", "/in/plate.####.exr", "/blend/shot.blend", absp) == "/blend/mattes/"
    assert logic.output_folder("", "/in/plate.####.exr", "", absp) == "/in/howard"
    with pytest.raises(ValueError, match="save the file first"):
        logic.output_folder("//mattes/", "/in/plate.####.exr", "", absp)


@pytest.mark.parametrize("first, last, start", [(1001, 1012, None), (1001, 1012, 1), (1, 50, 101), (0, 9, 1)])
def test_blender_image_node_timing_shows_each_matte_frame_once_in_order(on_path, first, last, start):
    logic = _blender_logic(on_path)
    settings = logic.image_user_settings(first, last, start)
    begin = first if start is None else start
    shown = [logic.file_frame_at(f, settings) for f in range(begin, begin + last - first + 1)]
    assert shown == list(range(first, last + 1))
    assert logic.file_frame_at(begin + 500, settings) == last  # Blender holds the last frame


@pytest.mark.parametrize("start", [None, 1])
def test_blender_movie_plate_lines_up_with_its_matte(on_path, start):
    """Howard numbers a movie's frames from 0, Blender from 1: the plate node is shifted so
    every scene frame shows the plate frame its matte was pulled from."""
    logic = _blender_logic(on_path)
    matte = logic.image_user_settings(0, 23, start)
    plate = logic.plate_user_settings(0, 23, plate_is_movie=True, scene_start=start)
    begin = 0 if start is None else start
    for f in range(begin, begin + 24):
        assert logic.file_frame_at(f, plate) == logic.file_frame_at(f, matte) + 1
    seq = logic.plate_user_settings(1001, 1012, plate_is_movie=False, scene_start=start)
    assert seq == logic.image_user_settings(1001, 1012, start)


def test_blender_scene_range_picks_plate_frames(on_path):
    logic = _blender_logic(on_path)
    # File / Image: the plate's first frame at the scene start, or scene numbers = plate numbers.
    assert logic.frame_shift("FILE", 1001, 1, True) == 1000 and logic.frame_shift("IMAGE", 1001, 1, False) == 0
    # Movie Clip: its own start frame and offset (scene 5 shows clip frame 1 + offset).
    clip = SimpleNamespace(frame_start=5, frame_offset=1)
    assert logic.frame_shift("CLIP", 1001, 1, True, clip) == 997
    assert logic.scene_frames(5, 7, 997, range(1001, 1005)) == (1002, 1004)
    assert logic.scene_frames(1, 250, 1000, range(1001, 1005)) == (1001, 1004)  # cut to the plate
    assert logic.scene_frames(1, 250, 0, None) == (1, 250)  # a movie of unknown length
    with pytest.raises(ValueError, match="plate has 1001-1004"):
        logic.scene_frames(1, 10, 0, range(1001, 1005))
    assert logic.frames_option("SCENE", "", (1001, 1004)) == "1001-1004"
    assert logic.frames_option("ALL", "1-2", None) is None
    assert logic.frames_option("CUSTOM", " 1001-1100x2 ", None) == "1001-1100x2"


def test_blender_plate_colorspace_names(on_path):
    logic = _blender_logic(on_path)
    assert logic.plate_colorspace("Linear Rec.709", "/b/config.ocio") == ("linear", None)
    assert logic.plate_colorspace("sRGB", "/b/config.ocio") == ("srgb", None)
    assert logic.plate_colorspace("ACEScg", "/b/config.ocio") == ("ACEScg", "/b/config.ocio")
    assert logic.plate_colorspace(None, "/b/config.ocio") == (None, None)


def test_blender_extension_manifest():
    manifest = tomllib.loads((BLENDER_DIR / "blender_manifest.toml").read_text())
    for key in ("schema_version", "id", "version", "name", "tagline", "maintainer", "type", "blender_version_min",
                "license"):
        assert manifest[key], key
    assert manifest["type"] == "add-on" and manifest["schema_version"] == "1.0.0"
    assert re.fullmatch(r"[a-z][a-z0-9_]*", manifest["id"])
    assert len(manifest["tagline"]) <= 64 and manifest["tagline"][-1].isalnum()
    assert all(len(v) <= 64 and v[-1].isalnum() for v in manifest["permissions"].values())
    assert manifest["version"] == howard_core.__version__
    init = (BLENDER_DIR / "__init__.py").read_text()
    assert f'"version": ({manifest["version"].replace(".", ", ")})' in init
    assert f'"blender": ({manifest["blender_version_min"].replace(".", ", ")})' in init
