"""A stand-in for Nuke's `nuke` module, written from Foundry's Python API reference, for driving
the HowardMatte node's whole path in tests without Nuke.

It implements the behaviour the node relies on, as documented, and is strict where Nuke is:

* Knobs: `value()` returns the text as typed; `EvalString_Knob`/`File_Knob.evaluate()` performs
  TCL and environment substitution (`[getenv X]`, `$env(X)`, `$X`, `[value root.name]`); for a
  file knob it also puts in the current frame number (what evaluate() gives for a Read's file).
  `File_Knob.fromUserText("path 1-10")` parses the range off the end and opens the file to set
  the Read's format. Enumerations keep their value list (`values()`, `setValues()`).
* `nuke.filename(node)` follows the root's proxy setting: with `root.proxy` on and the node's
  `proxy` knob filled, the proxy file; all TCL expanded, `%04d` kept (nuke.REPLACE puts the frame in).
* Reads render what they reference: full size, or in proxy mode the proxy file or the full file
  scaled by the root's proxy scale; `on_error` (error/black/checkerboard/nearest frame) and
  `before`/`after` (hold/loop/bounce/black) decide frames with no file.
  `nuke.execute(write, first, last)` renders a Write this way (proxy-aware, as Nuke does).
* Threads: Nuke's API may only be used from the main thread; node and knob calls from another
  thread raise here. `ProgressTask` is the exception (it is made for worker threads), and
  `executeInMainThread(fn, args)` queues `fn` for the main thread: tests run the queue with
  `run_main_thread_queue()`, as Nuke's event loop would.
* `scriptSave` / `scriptClear` / `scriptOpen` round-trip every node's knobs (user knobs
  included) through a file and run each node's `onCreate`, as loading a script does.

What it cannot be: Nuke's renderer, its TCL interpreter (only the substitutions above), its
OCIO colour transforms (Reads convert sRGB <-> linear only), its UI, or Nuke's Python build.
"""

from __future__ import annotations

import json
import os
import re
import threading

import numpy as np

# ---------------------------------------------------------------------------------------------------
# constants and the harness's own records
# ---------------------------------------------------------------------------------------------------

INVISIBLE = 0x400
STARTLINE = 0x1000
ENDLINE = 0x2000
READ_ONLY = 0x10000000
DISABLED = 0x80
NO_ANIMATION = 0x100
REPLACE = 1
NUKE_VERSION_MAJOR = 14
NUKE_VERSION_STRING = "14.0v5 (stand-in)"
EXE_PATH = "/opt/Nuke14.0v5/Nuke14.0"  # not installed here: no shipped OCIO configs to find
env = {"NukeVersionMajor": 14, "gui": True, "ExecutablePath": EXE_PATH}

MAIN_THREAD = threading.main_thread()
messages: list[str] = []  # nuke.message texts, in order
progress_tasks: list[ProgressTask] = []
_main_queue: list = []
_queue_lock = threading.Lock()
get_filename_answer: list[str | None] = [None]  # what nuke.getFilename returns next
frame_now = [1]
_names: dict[str, Node] = {}


def _main_only(what):
    if threading.current_thread() is not MAIN_THREAD:
        raise RuntimeError(f"nuke.{what} called from a worker thread; Nuke's API is main-thread only "
                           "(use nuke.executeInMainThread)")


def reset():
    """A fresh session: empty script, default root, no queued calls (tests call this)."""
    global _root, _context
    messages.clear()
    progress_tasks.clear()
    _main_queue.clear()
    get_filename_answer[0] = None
    frame_now[0] = 1
    file_evaluate_puts_frame[0] = True
    _root = Root()
    _context = [_root]


# ---------------------------------------------------------------------------------------------------
# TCL substitution (the subset path knobs use)
# ---------------------------------------------------------------------------------------------------

_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_ENVVAR = re.compile(r"\$env\((\w+)\)|\$\{(\w+)\}|\$(\w+)")
_FRAME_TOKEN = re.compile(r"%0?(\d*)d|#+")


def _tcl(text, node=None):
    def command(m):
        words = m.group(1).split()
        if len(words) == 2 and words[0] == "getenv":
            return os.environ.get(words[1], "")
        if len(words) == 2 and words[0] == "value":
            return str(_knob_by_path(words[1], node).evaluate())
        if len(words) == 3 and words[:2] == ["file", "dirname"]:
            return os.path.dirname(words[2])
        raise ValueError(f"unsupported TCL in stand-in: [{m.group(1)}]")

    previous = None
    while previous != text:  # innermost brackets first, as TCL does
        previous = text
        text = _BRACKET.sub(command, text)

    def var(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in os.environ:
            raise ValueError(f"can't read \"{name}\": no such variable")
        return os.environ[name]

    return _ENVVAR.sub(var, text)


def _put_frame(path, frame):
    def sub(m):
        if m.group(0).startswith("#"):
            return f"{frame:0{len(m.group(0))}d}"
        return f"{frame:0{int(m.group(1) or 0)}d}"

    folder, name = os.path.split(path)
    return os.path.join(folder, _FRAME_TOKEN.sub(sub, name))


def _knob_by_path(path, node):
    parts = path.split(".")
    owner = _root if parts[0] == "root" else (toNode(parts[0]) if len(parts) > 1 else node)
    if owner is None:
        raise ValueError(f"no such node {parts[0]}")
    return owner[parts[-1]]


# ---------------------------------------------------------------------------------------------------
# knobs
# ---------------------------------------------------------------------------------------------------


class Knob:
    default = ""

    def __init__(self, name, label=None, *args):
        self._name, self._label = name, label if label is not None else name
        self._args = args
        self._value = self.default
        self._flags = 0
        self._tooltip = ""
        self._expression = None
        self._node = None
        self._enabled = True

    def Class(self):
        return type(self).__name__

    def name(self):
        return self._name

    def label(self):
        return self._label

    def node(self):
        return self._node

    def value(self):
        _main_only("Knob.value")
        if self._expression is not None:
            return self._eval_expression()
        return self._value

    getValue = value

    def setValue(self, value):
        _main_only("Knob.setValue")
        self._value = value
        return True

    def setExpression(self, expression):
        self._expression = expression
        return True

    def _eval_expression(self):
        if self._expression.startswith("parent."):
            group = self._node._parent
            return group[self._expression.split(".", 1)[1]].getValue()
        raise ValueError(f"unsupported expression in stand-in: {self._expression}")

    def setFlag(self, flag):
        self._flags |= flag

    def clearFlag(self, flag):
        self._flags &= ~flag

    def getFlag(self, flag):
        return bool(self._flags & flag)

    def setTooltip(self, text):
        self._tooltip = text

    def tooltip(self):
        return self._tooltip

    def setEnabled(self, enabled):
        self._enabled = bool(enabled)

    def enabled(self):
        return self._enabled

    def setVisible(self, visible):
        if visible:
            self.clearFlag(INVISIBLE)
        else:
            self.setFlag(INVISIBLE)

    def toScript(self):
        return self._value

    def fromScript(self, value):
        self._value = value


class Tab_Knob(Knob):
    pass


class _Texted(Knob):
    """Knobs whose third constructor argument is their text (Text, String, PyScript)."""

    def __init__(self, name, label=None, text=""):
        super().__init__(name, label, text)
        self._value = text


class Text_Knob(_Texted):
    pass


class String_Knob(_Texted):
    def getText(self):
        return self._value


class EvalString_Knob(String_Knob):
    def evaluate(self):
        """The text with TCL and environment substituted (value() stays as typed)."""
        _main_only("Knob.evaluate")
        return _tcl(self._value, self._node)


# Whether File_Knob.evaluate() puts the frame number in. The reference says only "performing
# substitutions"; Reads' file knobs are commonly seen to give the current frame's file. Tests run
# the node both ways.
file_evaluate_puts_frame = [True]


class File_Knob(EvalString_Knob):
    def evaluate(self, time=None):
        """Expanded text, with the frame number put in (current frame, or `time`) unless the
        harness is told evaluate() keeps the frame token."""
        text = super().evaluate()
        if not text or not file_evaluate_puts_frame[0]:
            return text
        return _put_frame(text, int(frame_now[0] if time is None else time))

    def fromUserText(self, text):
        """`path first-last`: the range goes to the Read's first/last; the file sets its format."""
        _main_only("File_Knob.fromUserText")
        m = re.match(r"^(.*\S)\s+(-?\d+)-(-?\d+)$", text.strip())
        path, first, last = (m.group(1), int(m.group(2)), int(m.group(3))) if m else (text.strip(), None, None)
        self._value = path
        node = self._node
        if node is not None and node.Class() == "Read" and self._name == "file":
            if first is not None:
                for k in ("first", "origfirst"):
                    node[k].setValue(first)
                for k in ("last", "origlast"):
                    node[k].setValue(last)
            probe = _put_frame(EvalString_Knob.evaluate(self), first if first is not None else 1)
            if os.path.isfile(probe):
                node["format"].setValue(_image_size(probe))


class Int_Knob(Knob):
    default = 0

    def __init__(self, name, label=None, value=0):
        super().__init__(name, label)
        self._value = value


class Double_Knob(Int_Knob):
    default = 0.0


class Boolean_Knob(Knob):
    default = False

    def __init__(self, name, label=None, value=False):
        super().__init__(name, label)
        self._value = bool(value)

    def setValue(self, value):
        return super().setValue(bool(value))


class Enumeration_Knob(Knob):
    def __init__(self, name, label=None, values=()):
        super().__init__(name, label, list(values))
        self._values = [str(v) for v in values]
        self._value = self._values[0] if self._values else ""

    def values(self):
        return list(self._values)

    def setValues(self, values):
        self._values = [str(v) for v in values]
        if self._value not in self._values:
            self._value = self._values[0] if self._values else ""

    def setValue(self, value):
        _main_only("Knob.setValue")
        if isinstance(value, int) and not isinstance(value, bool):
            value = self._values[value]
        if str(value) not in self._values:
            raise ValueError(f"{self._name}: {value!r} is not one of {self._values}")
        self._value = str(value)
        return True

    def getValue(self):
        return float(self._values.index(self.value()))

    def toScript(self):
        return {"value": self._value, "values": self._values}

    def fromScript(self, value):
        if isinstance(value, dict):
            self._values, self._value = value["values"], value["value"]
        else:
            self._value = value


class PyScript_Knob(_Texted):
    def command(self):
        return self._value

    def execute(self):
        _this.append(self._node)
        try:
            exec(self._value, {"nuke": __import__(__name__)})
        finally:
            _this.pop()


class Script_Knob(PyScript_Knob):
    def execute(self):
        if self._node is not None and self._name == "reload":
            self._node._reloads += 1


class Format_Knob(Knob):
    default = None


class Obsolete_Knob(Knob):
    pass


_this: list = []


def thisNode():
    return _this[-1] if _this else None


# ---------------------------------------------------------------------------------------------------
# nodes
# ---------------------------------------------------------------------------------------------------


class Format:
    def __init__(self, width, height):
        self._w, self._h = int(width), int(height)

    def width(self):
        return self._w

    def height(self):
        return self._h

    def __eq__(self, other):
        return isinstance(other, Format) and (self._w, self._h) == (other._w, other._h)

    def __repr__(self):
        return f"Format({self._w}x{self._h})"


def _image_size(path):
    import OpenImageIO as oiio

    inp = oiio.ImageInput.open(path)
    if inp is None:
        raise OSError(f"stand-in cannot open {path}")
    spec = inp.spec()
    inp.close()
    return Format(spec.width, spec.height)


_CLASS_KNOBS = {
    "Read": lambda: [File_Knob("file"), File_Knob("proxy"), Int_Knob("first", None, 1), Int_Knob("last", None, 1),
                     Int_Knob("origfirst", None, 1), Int_Knob("origlast", None, 1),
                     Enumeration_Knob("before", None, ["hold", "loop", "bounce", "black"]),
                     Enumeration_Knob("after", None, ["hold", "loop", "bounce", "black"]),
                     Enumeration_Knob("on_error", None, ["error", "black", "checkerboard", "nearest frame"]),
                     Enumeration_Knob("colorspace", None, colorspace_choices()), Boolean_Knob("raw"),
                     String_Knob("frame"), Format_Knob("format"), Format_Knob("proxy_format"), Script_Knob("reload")],
    "Write": lambda: [File_Knob("file"), File_Knob("proxy"), String_Knob("file_type"), String_Knob("channels"),
                      Enumeration_Knob("colorspace", None, colorspace_choices()), Boolean_Knob("raw")],
    "Copy": lambda: [String_Knob("from0"), String_Knob("to0")],
    "Switch": lambda: [Int_Knob("which")],
    "Input": lambda: [Int_Knob("number")],
}


def colorspace_choices():
    """A Read's colorspace menu: 'default' and the spaces of the root's config (nuke-default when
    colour management is Nuke's own)."""
    if _root is None or _root["colorManagement"].value() == "Nuke":
        return ["default", "linear", "sRGB", "rec709", "Cineon", "Gamma1.8", "Gamma2.2", "raw"]
    path = _root.ocio_config_path()
    import PyOpenColorIO as OCIO

    config = OCIO.Config.CreateFromFile(path)
    return ["default"] + list(config.getColorSpaceNames())


class Node:
    def __init__(self, cls, name=None, parent=None):
        self._cls = cls
        self._parent = parent
        self._knobs: dict[str, Knob] = {}
        self._order: list[str] = []
        self._inputs: list[Node | None] = []
        self._x = self._y = 0
        self._reloads = 0
        self._children: list[Node] = []
        for knob in [String_Knob("name"), Boolean_Knob("disable"), String_Knob("onCreate"), String_Knob("label"),
                     *_CLASS_KNOBS.get(cls, list)()]:
            self._attach(knob)
        self._knobs["name"]._value = name or self._unique(cls)

    def _unique(self, cls):
        n = 1
        while self._sibling_named(f"{cls}{n}") is not None:
            n += 1
        return f"{cls}{n}"

    def _sibling_named(self, name):
        pool = self._parent._children if self._parent is not None else []
        return next((c for c in pool if c.name() == name), None)

    def _attach(self, knob):
        knob._node = self
        self._knobs[knob.name()] = knob
        self._order.append(knob.name())

    # identity ------------------------------------------------------------------------------
    def Class(self):
        _main_only("Node.Class")
        return self._cls

    def name(self):
        _main_only("Node.name")
        return self._knobs["name"]._value

    def setName(self, name):
        _main_only("Node.setName")
        if self._sibling_named(name) not in (None, self):
            raise ValueError(f"{name} is already used")
        self._knobs["name"]._value = name

    def fullName(self):
        _main_only("Node.fullName")
        parts = []
        node = self
        while node is not None and not isinstance(node, Root):
            parts.append(node.name())
            node = node._parent
        return ".".join(reversed(parts))

    # knobs ---------------------------------------------------------------------------------
    def __getitem__(self, name):
        _main_only("Node.__getitem__")
        return self._knobs[name]

    def knob(self, name):
        _main_only("Node.knob")
        return self._knobs.get(name)

    def knobs(self):
        return dict(self._knobs)

    def addKnob(self, knob):
        _main_only("Node.addKnob")
        if knob.name() in self._knobs:
            raise ValueError(f"knob {knob.name()} already exists")
        self._attach(knob)
        knob._user = True

    # graph ---------------------------------------------------------------------------------
    def input(self, index):
        _main_only("Node.input")
        return self._inputs[index] if index < len(self._inputs) else None

    def setInput(self, index, node):
        _main_only("Node.setInput")
        while len(self._inputs) <= index:
            self._inputs.append(None)
        self._inputs[index] = node
        return True

    def inputs(self):
        return len(self._inputs)

    def xpos(self):
        return self._x

    def ypos(self):
        return self._y

    def setXYpos(self, x, y):
        self._x, self._y = x, y

    def firstFrame(self):
        return self._range()[0]

    def lastFrame(self):
        return self._range()[1]

    def _range(self):
        if self._cls == "Read":
            return int(self["first"].value()), int(self["last"].value())
        source = self._source()
        if source is None:
            return int(_root["first_frame"].value()), int(_root["last_frame"].value())
        return source._range()

    def _source(self):
        """The node whose pixels this one passes on (Input -> the group's input)."""
        if self._cls == "Input":
            return self._parent.input(int(self["number"].value()))
        return self.input(0)

    def format(self):
        fmt = self["format"].value() if "format" in self._knobs else None
        return fmt if fmt is not None else _root["format"].value()

    def error(self):
        return False

    def __repr__(self):
        return f"<{self._cls} {self._knobs['name']._value}>"


class Group(Node):
    def __init__(self, name=None, parent=None, cls="Group"):
        super().__init__(cls, name, parent)

    def node(self, name):
        _main_only("Group.node")
        return next((c for c in self._children if c.name() == name), None)

    def nodes(self):
        return list(self._children)

    def begin(self):
        _context.append(self)
        return self

    def end(self):
        _context.pop()

    def __enter__(self):
        return self.begin()

    def __exit__(self, *exc):
        self.end()


class Root(Group):
    def __init__(self):
        super().__init__("Root", None, cls="Root")
        for knob in [Boolean_Knob("proxy"), Enumeration_Knob("proxy_type", None, ["format", "scale"]),
                     Double_Knob("proxy_scale", None, 0.5), Int_Knob("first_frame", None, 1),
                     Int_Knob("last_frame", None, 100), Format_Knob("format"),
                     Enumeration_Knob("colorManagement", None, ["Nuke", "OCIO"]),
                     Enumeration_Knob("OCIO_config", None, ["nuke-default", "aces_1.2", "custom"]),
                     File_Knob("customOCIOConfigPath"), String_Knob("workingSpaceLUT", None, "linear")]:
            self._attach(knob)
        self["proxy_type"].setValue("scale")
        self["format"].setValue(Format(2048, 1556))

    def fullName(self):
        return "root"

    def ocio_config_path(self):
        if self["OCIO_config"].value() == "custom":
            return self["customOCIOConfigPath"].evaluate()
        return os.environ.get("OCIO") or "ocio://studio-config-latest"


_root: Root = None  # type: ignore[assignment]
_context: list = []


def root():
    _main_only("root")
    return _root


def _current_group():
    return _context[-1]


class _NodeFactory:
    def __getattr__(self, cls):
        def make(**knobs):
            _main_only(f"nodes.{cls}")
            parent = _current_group()
            node = Group(knobs.pop("name", None), parent) if cls == "Group" else \
                Node(cls, knobs.pop("name", None), parent)
            inputs = knobs.pop("inputs", None)
            if cls == "Input":
                node["number"].setValue(sum(1 for c in parent._children if c._cls == "Input"))
            parent._children.append(node)
            for index, source in enumerate(inputs or []):
                node.setInput(index, source)
            for key, value in knobs.items():
                knob = node[key]
                if isinstance(knob, File_Knob) and key == "file":
                    knob.setValue(value)
                else:
                    knob.setValue(value)
            return node
        return make


nodes = _NodeFactory()


def toNode(name):
    """The node called `name` in the current group context (dotted names from the root)."""
    _main_only("toNode")
    if name == "root":
        return _root
    group = _root if "." in name else _current_group()
    node = None
    for part in name.split("."):
        node = next((c for c in group._children if c.name() == part), None)
        if node is None:
            return None
        group = node
    return node


def allNodes(filter=None, group=None, recurseGroups=False):  # noqa: A002 - Nuke's signature
    _main_only("allNodes")
    found = []

    def walk(g):
        for c in g._children:
            if filter is None or c._cls == filter:
                found.append(c)
            if recurseGroups and isinstance(c, Group):
                walk(c)
    walk(group or _current_group())
    return found


def selectedNodes():
    _main_only("selectedNodes")
    return [n for n in allNodes() if n._knobs.get("selected") and n["selected"].value()]


def delete(node):
    _main_only("delete")
    node._parent._children.remove(node)


def frame():
    return frame_now[0]


def message(text):
    _main_only("message")
    messages.append(str(text))


def getFilename(message, pattern=None, default=None, favorites=None, type=None, multiple=False):  # noqa: A002
    _main_only("getFilename")
    return get_filename_answer[0]


def pluginAddPath(path):
    pass


def tprint(*args):
    pass


# ---------------------------------------------------------------------------------------------------
# file names and rendering
# ---------------------------------------------------------------------------------------------------


def filename(node, replace=None):
    """What a Read or Write reads/writes: proxy file in proxy mode when one is filled in."""
    _main_only("filename")
    if "file" not in node._knobs:
        return None
    knob = node["file"]
    if _root["proxy"].value() and "proxy" in node._knobs and node["proxy"].value().strip():
        knob = node["proxy"]
    text = EvalString_Knob.evaluate(knob)
    if not text:
        return None
    text = _FRAME_TOKEN.sub(lambda m: "%0" + str(len(m.group(0))) + "d" if m.group(0)[0] == "#" else m.group(0),
                            os.path.basename(text))
    text = os.path.join(os.path.dirname(EvalString_Knob.evaluate(knob)), text)
    return _put_frame(text, frame_now[0]) if replace == REPLACE else text


class RenderError(RuntimeError):
    pass


def _linear_from(pixels, colorspace, path, raw):
    from howard_core.io.color import srgb_decode

    name = colorspace.split(" (")[0]
    if raw or name == "linear" or (name == "default" and path.lower().endswith(".exr")):
        return pixels
    if name in ("default", "sRGB", "rec709"):
        return srgb_decode(pixels)
    raise RenderError(f"stand-in Read cannot convert from {colorspace!r}")


def read_pixels(node, frame_number):
    """What a Read outputs at `frame_number`: HxWxC float32 in Nuke's linear working space and
    its channel names, honouring first/last, before/after, on_error, proxy mode and colorspace."""
    import OpenImageIO as oiio

    first, last = int(node["first"].value()), int(node["last"].value())
    f = frame_number
    if f < first or f > last:
        mode = node["before" if f < first else "after"].value()
        if mode == "black":
            return None
        f = first if f < first else last  # hold (loop/bounce not needed here)
    path = _put_frame(filename(node), f)
    if not os.path.isfile(path):
        mode = node["on_error"].value()
        if mode == "error":
            raise RenderError(f"{node.name()}: Read error: {path}: No such file or directory")
        return None
    buf = oiio.ImageBuf(path)
    pixels = buf.get_pixels(oiio.FLOAT)
    names = list(buf.spec().channelnames)
    if _root["proxy"].value() and not node["proxy"].value().strip():
        scale = float(_root["proxy_scale"].value())
        h, w = pixels.shape[:2]
        pixels = _resize(pixels, max(1, round(w * scale)), max(1, round(h * scale)))
    rgb = _linear_from(pixels[..., :3], node["colorspace"].value(), path, node["raw"].value())
    return np.concatenate([rgb, pixels[..., 3:]], axis=2), names


def _resize(pixels, w, h):
    import cv2

    return cv2.resize(pixels, (w, h), interpolation=cv2.INTER_AREA).reshape(h, w, pixels.shape[2])


def _upstream_read(node):
    seen = 0
    while node is not None and node._cls != "Read" and seen < 100:
        node = node._source()
        seen += 1
    if node is None or node._cls != "Read":
        raise RenderError("stand-in can only render a Read (through Inputs and Dots)")
    return node


def execute(node, first, last, incr=1):
    """Render Write `node` for first..last (main thread, as nuke.execute)."""
    _main_only("execute")
    import OpenImageIO as oiio

    from howard_core.io.color import srgb_encode

    read = _upstream_read(node.input(0))
    for f in range(int(first), int(last) + 1, int(incr)):
        frame_now[0] = f
        got = read_pixels(read, f)
        if got is None:
            raise RenderError(f"stand-in render of {node.name()} at frame {f}: no image")
        pixels, _names = got
        out = filename(node, REPLACE)
        rgb = pixels[..., :3]
        if not out.lower().endswith(".exr") and not node["raw"].value():
            rgb = srgb_encode(np.clip(rgb, 0, 1))
        spec = oiio.ImageSpec(rgb.shape[1], rgb.shape[0], 3, oiio.HALF)
        spec.channelnames = ("R", "G", "B")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        o = oiio.ImageOutput.create(out)
        o.open(out, spec)
        o.write_image(np.ascontiguousarray(rgb, np.float32))
        o.close()


# ---------------------------------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------------------------------


class ProgressTask:
    """Nuke's progress bar; made to be driven from a worker thread."""

    fail_on_message = False  # tests set True to make the watcher thread fail

    def __init__(self, title):
        self.title = title
        self.progress: list[int] = []
        self.messages: list[str] = []
        self.cancelled = False
        self.closed = False
        progress_tasks.append(self)

    def setProgress(self, percent):
        self.progress.append(int(percent))

    def setMessage(self, text):
        if ProgressTask.fail_on_message:
            raise RuntimeError("stand-in: progress bar failure")
        self.messages.append(str(text))

    def isCancelled(self):
        return self.cancelled

    def __del__(self):
        self.closed = True


def executeInMainThread(call, args=(), kwargs=None):
    """Queue `call(*args, **kwargs)` for the main thread; returns at once."""
    with _queue_lock:
        _main_queue.append((call, tuple(args) if isinstance(args, (tuple, list)) else (args,), kwargs or {}))


def executeInMainThreadWithResult(call, args=(), kwargs=None):
    if threading.current_thread() is MAIN_THREAD:
        return call(*args, **(kwargs or {}))
    raise RuntimeError("stand-in: executeInMainThreadWithResult from a worker is not modelled")


def run_main_thread_queue():
    """Run what worker threads queued (the harness's event loop turn); returns how many ran."""
    _main_only("run_main_thread_queue")
    with _queue_lock:
        calls = list(_main_queue)
        _main_queue.clear()
    for call, args, kwargs in calls:
        call(*args, **kwargs)
    return len(calls)


# ---------------------------------------------------------------------------------------------------
# scripts
# ---------------------------------------------------------------------------------------------------


def _dump(node):
    return {"class": node._cls, "knobs": [(name, type(k).__name__, k._label, k._flags, k.toScript(),
                                           k._expression, getattr(k, "_user", False))
                                          for name, k in node._knobs.items()
                                          if not isinstance(k, Format_Knob)],
            "inputs": [n.name() if n is not None else None for n in node._inputs],
            "children": [_dump(c) for c in node._children]}


def scriptSave(path):
    _main_only("scriptSave")
    _root["name"].setValue(str(path))
    doc = _dump(_root)
    with open(path, "w") as f:
        json.dump(doc, f)


def scriptClear():
    _main_only("scriptClear")
    reset()


def _build(doc, parent):
    made = []
    for child in doc["children"]:
        cls = child["class"]
        node = Group(None, parent) if cls == "Group" else Node(cls, None, parent)
        parent._children.append(node)
        for name, kind, label, flags, value, expression, user in child["knobs"]:
            if name not in node._knobs:
                knob = globals()[kind](name, label)
                node._attach(knob)
                knob._user = user
            knob = node._knobs[name]
            knob.fromScript(value)
            knob._flags, knob._expression = flags, expression
        made.append((node, child))
        if child["children"]:
            made += _build(child, node)
    return made


def scriptOpen(path):
    """Load a saved script into the (cleared) session and run every node's onCreate."""
    _main_only("scriptOpen")
    with open(path) as f:
        doc = json.load(f)
    made = _build(doc, _root)
    for node, child in made:
        pool = node._parent._children
        for index, name in enumerate(child["inputs"]):
            if name is not None:
                node.setInput(index, next(c for c in pool if c.name() == name))
    for knob in doc["knobs"]:
        if knob[0] in _root._knobs:
            _root._knobs[knob[0]].fromScript(knob[4])
    for node, _ in made:
        command = node["onCreate"].value()
        if command:
            _this.append(node)
            try:
                exec(command, {"nuke": __import__(__name__)})
            finally:
                _this.pop()


reset()
