"""The HowardMatte node: a Group with two inputs (plate, clean plate) whose "Pull matte"
button runs `howard matte` in the background and reads the written EXR alpha back in.

Inside the group:

    plate (Input 0) ---B--> CopyAlpha --> Premult --.
    HowardMatteRead ---A-->     |                    +--> OutputSwitch --> Output
          |                     '--------------------+
          '------------------------------------------'

OutputSwitch follows the "output" knob: plate with Howard's alpha; the same premultiplied;
or Howard's own EXR (premultiplied foreground in the plate's colour space, plus the
fg/err/ref/bg layers when they were written). Until a matte is pulled, CopyAlpha is
disabled and the node passes the plate through.
"""

import os
import tempfile
import threading
import time

import nuke

from . import logic
from .howard_hostboot import BootError, load_hostcli

TAG = "howard_matte"
READ = "HowardMatteRead"
COPY = "CopyAlpha"
_jobs = {}  # node full name -> hostcli.Job, for the pulls running now
_POLL_S = 0.25


def _message(text):
    nuke.message(f"Howard: {text}")


def _hostcli(node=None):
    cli = node["howard_cli"].value() if node is not None else None
    return load_hostcli(cli=cli or None)


def create_node():
    """Menu command: a HowardMatte node below the selected node (its plate)."""
    selected = nuke.selectedNodes()
    number = 1
    while nuke.toNode(f"HowardMatte{number}") is not None:
        number += 1
    group = nuke.nodes.Group(name=f"HowardMatte{number}")
    with group:
        plate = nuke.nodes.Input(name="plate")
        clean = nuke.nodes.Input(name="cleanplate")
        read = nuke.nodes.Read(name=READ)
        copy = nuke.nodes.Copy(name=COPY, from0="rgba.alpha", to0="rgba.alpha", inputs=[plate, read])
        copy["disable"].setValue(True)
        premult = nuke.nodes.Premult(name="Premult", inputs=[copy])
        switch = nuke.nodes.Switch(name="OutputSwitch", inputs=[copy, premult, read])
        switch["which"].setExpression("parent.output")
        nuke.nodes.Output(inputs=[switch])
        clean.setXYpos(plate.xpos() + 150, plate.ypos())
    _add_knobs(group)
    if len(selected) == 1:
        group.setInput(0, selected[0])
        group.setXYpos(selected[0].xpos(), selected[0].ypos() + 100)
    return group


def _add_knobs(group):
    add = group.addKnob
    add(nuke.Tab_Knob("howard", "Howard"))
    tag = nuke.String_Knob(TAG, "")
    tag.setValue("1")
    tag.setFlag(nuke.INVISIBLE)
    add(tag)
    add(nuke.Text_Knob("about", "", "Input 1: plate. Input 2: clean plate (same camera move, no subject)."))
    pull = nuke.PyScript_Knob("pull", "Pull matte", "import howard_nuke; howard_nuke.pull_matte(nuke.thisNode())")
    pull.setFlag(nuke.STARTLINE)
    add(pull)
    add(nuke.Text_Knob("status", "", "no matte pulled yet"))
    add(nuke.Enumeration_Knob("output", "output", list(logic.OUTPUT_MODES)))
    add(nuke.File_Knob("output_folder", "output folder"))
    group["output_folder"].setTooltip("Where the EXR mattes go (default: a howard/ folder beside the plate).")
    add(nuke.String_Knob("frame_range", "frame range"))
    group["frame_range"].setTooltip("e.g. 1001-1100; empty: the plate Read's range.")
    add(nuke.Text_Knob("network", "network"))
    add(nuke.File_Knob("model", "model"))
    group["model"].setTooltip("Installed weights name (howard weights list) or a checkpoint file; empty: default.")
    add(nuke.Enumeration_Knob("preset", "preset", list(logic.PRESET_CHOICES)))
    add(nuke.Enumeration_Knob("refine_mode", "refine mode", list(logic.REFINE_CHOICES)))
    add(nuke.Int_Knob("sample_pixels", "sample pixels"))
    group["sample_pixels"].setTooltip("Pixels refined per frame in sampling mode; 0: default.")
    add(nuke.Enumeration_Knob("device", "device", list(logic.DEVICE_CHOICES)))
    add(nuke.Enumeration_Knob("precision", "precision", list(logic.PRECISION_CHOICES)))
    add(nuke.Text_Knob("colour", "colour"))
    add(nuke.String_Knob("plate_colorspace", "plate colorspace"))
    group["plate_colorspace"].setTooltip("linear, srgb or an OCIO name (e.g. ACEScg); empty: EXR is linear, "
                                         "everything else sRGB. Set it for log or ACES plates.")
    add(nuke.String_Knob("clean_colorspace", "clean plate colorspace"))
    add(nuke.File_Knob("ocio_config", "OCIO config"))
    add(nuke.Text_Knob("job", "job"))
    add(nuke.Boolean_Knob("extra_layers", "write fg/err/ref/bg layers", True))
    add(nuke.Boolean_Knob("locked_off", "locked-off camera (no alignment)", False))
    group["locked_off"].setFlag(nuke.STARTLINE)
    add(nuke.Boolean_Knob("hold_missing", "hold missing frames", False))
    group["hold_missing"].setFlag(nuke.STARTLINE)
    add(nuke.Boolean_Knob("resume", "resume (keep finished frames)", False))
    group["resume"].setFlag(nuke.STARTLINE)
    add(nuke.String_Knob("howard_cli", "howard executable"))
    group["howard_cli"].setTooltip("Path to `howard` (empty: $HOWARD_CLI, $HOWARD_PYTHON, then howard on PATH).")
    export = nuke.PyScript_Knob("export_torchscript", "Export TorchScript for Inference...",
                                "import howard_nuke; howard_nuke.export_torchscript(nuke.thisNode())")
    export.setFlag(nuke.STARTLINE)
    add(export)


def _values(node):
    names = ("frame_range", "model", "preset", "refine_mode", "sample_pixels", "device", "precision",
             "plate_colorspace", "clean_colorspace", "ocio_config", "extra_layers", "locked_off", "hold_missing",
             "resume")
    return {name: node[name].value() for name in names}


def _set_status(node, text):
    node["status"].setValue(text)


def _input_source(group, index, label, folder):
    """(path, first, last) of input `index`: the upstream Read's files when it is a plain
    Read, else the input rendered to EXR under `folder` (main thread, Nuke's own progress)."""
    source = logic.upstream(group.input(index))
    if source is None:
        raise ValueError(f"connect the {label} to input {index + 1}")
    plain = logic.plain_read(source, nuke.filename, sequence_only=(index == 0))
    if plain is not None:
        return plain[0], plain[1], plain[2], True
    with group:
        inp = nuke.toNode("plate" if index == 0 else "cleanplate")
        first, last = int(inp.firstFrame()), int(inp.lastFrame())
        os.makedirs(folder, exist_ok=True)
        path = logic.nuke_path(os.path.join(folder, f"{label.replace(' ', '_')}.####.exr"))
        write = nuke.nodes.Write(file=path, file_type="exr", channels="rgb", inputs=[inp])
        try:
            nuke.execute(write, first, last)
        finally:
            nuke.delete(write)
    return path, first, last, False


def pull_matte(node):
    """The "Pull matte" button (main thread)."""
    name = node.fullName()
    if name in _jobs:
        _message("a matte is already being pulled for this node; cancel it from its progress bar first")
        return
    try:
        hostcli = _hostcli(node)
    except BootError as exc:
        _message(str(exc))
        return
    try:
        script = nuke.root().name()
        script = script if script and script != "Root" else None
        source = logic.upstream(node.input(0))
        plain = logic.plain_read(source, nuke.filename, sequence_only=True) if source is not None else None
        folder = logic.output_folder(node["output_folder"].value(), plain[0] if plain else None, script,
                                     node.name(), tempfile.gettempdir())
        plate, first, last, plate_is_read = _input_source(node, 0, "plate", os.path.join(folder, "howard_inputs"))
        clean, _, _, _ = _input_source(node, 1, "clean plate", os.path.join(folder, "howard_inputs"))
        options = logic.options_from_values(_values(node), hostcli,
                                            frames=f"{first}-{last}" if plate_is_read else None)
        argv = hostcli.matte_command(plate, clean, folder + os.sep, options,
                                     runner=hostcli.resolve_runner(cli=node["howard_cli"].value() or None))
        job = hostcli.Job(argv).start()
    except (ValueError, RuntimeError, hostcli.HostError) as exc:  # RuntimeError: a cancelled input render
        _message(str(exc))
        return
    _jobs[name] = job
    _set_status(node, "pulling...")
    threading.Thread(target=_watch, args=(name, job), name="howard-nuke", daemon=True).start()


def _watch(name, job):
    """Worker thread: progress bar and cancel button, then hand over to the main thread."""
    try:
        task = nuke.ProgressTask(f"Howard matte ({name})")
        while not job.finished:
            job.poll()
            if task.isCancelled() and not job.cancelled:
                job.cancel()
            task.setProgress(int(job.progress.fraction * 100))
            task.setMessage(job.progress.status())
            time.sleep(_POLL_S)
        del task  # closes the progress bar
    finally:
        if not job.finished:  # this thread failed: stop the job rather than orphan it
            job.cancel()
        nuke.executeInMainThread(_finish, args=(name, job))


def _finish(name, job):
    """Main thread: load the written matte, or show the one-line error."""
    _jobs.pop(name, None)
    node = nuke.toNode(name)
    if node is None:  # deleted while it ran
        return
    if not job.finished:
        _set_status(node, "stopped")
        _message("the progress watcher stopped unexpectedly; the job was cancelled, pull again with resume on")
        return
    if job.error is not None:
        _set_status(node, f"failed: {job.error}")
        _message(job.error)
        return
    try:
        result = job.result()
    except Exception as exc:  # hostcli.HostError from the loaded kit
        _set_status(node, f"failed: {exc}")
        _message(str(exc))
        return
    read = node.node(READ)
    pattern = logic.nuke_path(result.output)
    if result.frames:
        read["file"].fromUserText(f"{pattern} {result.first}-{result.last}")
    else:
        read["file"].fromUserText(pattern)
    read["on_error"].setValue("black")
    read["reload"].execute()
    node.node(COPY)["disable"].setValue(False)
    lines = result.summary()
    _set_status(node, lines[0] + (f"; {len(result.flagged)} flagged" if result.flagged else ""))
    if len(lines) > 1:
        _message("\n".join(lines))


def export_torchscript(node=None):
    """Menu command / button: `howard export-nuke` to a .pt file for the Inference node."""
    path = nuke.getFilename("Save Howard TorchScript for the Inference node", "*.pt", type="save")
    if not path:
        return
    if not path.endswith(".pt"):
        path += ".pt"
    try:
        hostcli = _hostcli(node)
        model = node["model"].value().strip() if node is not None else ""
        runner = hostcli.resolve_runner(cli=(node["howard_cli"].value() or None) if node is not None else None)
        argv = hostcli.export_nuke_command(path, model=model or None, runner=runner)
        job = hostcli.Job(argv, expect_done=False).start()
    except BootError as exc:
        _message(str(exc))
        return
    except Exception as exc:  # hostcli.HostError
        _message(str(exc))
        return
    threading.Thread(target=_watch_export, args=(job, path), name="howard-nuke-export", daemon=True).start()


def _watch_export(job, path):
    task = nuke.ProgressTask("Howard: exporting TorchScript")
    task.setMessage(os.path.basename(path))
    while not job.finished:
        if task.isCancelled() and not job.cancelled:
            job.cancel()
        time.sleep(_POLL_S)
    del task
    message = job.error
    if message is None:
        message = (f"wrote {path}. Convert it to .cat with a CatFileCreator node (NukeX): Channels In "
                   "rgba.red, rgba.green, rgba.blue for the plate and three more channels holding the ALIGNED clean "
                   "plate (e.g. forward.u, forward.v, backward.u), Channels Out rgba.red, rgba.green, rgba.blue, "
                   "rgba.alpha; convert linear plates to sRGB before Inference and the foreground back after. "
                   "See nuke_plugin/README.md.")
    nuke.executeInMainThread(_message, args=(message,))
