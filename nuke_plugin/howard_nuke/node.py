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

Threads: Nuke's API is main-thread only. The watcher thread touches nothing but the job
and its ProgressTask, and hands the end over with nuke.executeInMainThread. A job is
known by an id stored on the node (not by the node's name), so renaming the node, or
saving and reopening the script, while it runs still lands the result on it.
"""

import json
import os
import tempfile
import threading
import time
import uuid

import nuke

from . import logic
from .howard_hostboot import BootError, load_hostcli

TAG = "howard_matte"
STATE = "howard_state"  # hidden: JSON of the last pull (job id, state, status, log), saved with the script
READ = "HowardMatteRead"
COPY = "CopyAlpha"
_jobs: dict = {}  # job id -> hostcli.Job, for the pulls running in this Nuke session
_POLL_S = 0.25
_FARM_POLL_S = 5.0  # a farm job takes minutes to hours: a look every few seconds is plenty
_ON_CREATE = "import howard_nuke; howard_nuke.restore(nuke.thisNode())"


def _message(text):
    nuke.message(f"Howard: {text}")


def _cli_setting(node):
    return node["howard_cli"].evaluate().strip() if node is not None else ""


def _hostcli(node=None):
    return load_hostcli(cli=_cli_setting(node) or None)


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
    group["onCreate"].setValue(_ON_CREATE)
    _refresh_colour_choices(group)
    if len(selected) == 1:
        group.setInput(0, selected[0])
        group.setXYpos(selected[0].xpos(), selected[0].ypos() + 100)
    return group


def _add_knobs(group):
    add = group.addKnob
    add(nuke.Tab_Knob("howard", "Howard"))
    for name in (TAG, STATE):
        hidden = nuke.String_Knob(name, "")
        hidden.setFlag(nuke.INVISIBLE)
        add(hidden)
    group[TAG].setValue("1")
    add(nuke.Text_Knob("about", "", "Input 1: plate. Input 2: clean plate (same camera move, no subject)."))
    pull = nuke.PyScript_Knob("pull", "Pull matte", "import howard_nuke; howard_nuke.pull_matte(nuke.thisNode())")
    pull.setFlag(nuke.STARTLINE)
    add(pull)
    add(nuke.Text_Knob("status", "status", "no matte pulled yet"))
    add(nuke.File_Knob("log_file", "log"))
    group["log_file"].setTooltip("The last pull's log: the command, Howard's messages, what was written.")
    add(nuke.Enumeration_Knob("output", "output", list(logic.OUTPUT_MODES)))
    add(nuke.File_Knob("output_folder", "output folder"))
    group["output_folder"].setTooltip("Where the EXR mattes go (default: a howard/ folder beside the plate). "
                                      "TCL and variables ([getenv SHOT], $SHOW) are expanded.")
    add(nuke.String_Knob("frame_range", "frame range"))
    group["frame_range"].setTooltip("e.g. 1001-1100; empty: the plate Read's range.")
    add(nuke.Enumeration_Knob("missing_mattes", "missing mattes", list(logic.MISSING_MATTE_CHOICES)))
    group["missing_mattes"].setTooltip("A plate frame with no matte file: an error on the node (default), or "
                                       "black alpha. Never the nearest matte held.")
    add(nuke.Text_Knob("network", "network"))
    add(nuke.File_Knob("model", "model"))
    group["model"].setTooltip("Installed weights name (howard weights list) or a checkpoint file; empty: default.")
    add(nuke.Enumeration_Knob("preset", "preset", list(logic.PRESET_CHOICES)))
    add(nuke.Enumeration_Knob("refine_mode", "refine mode", list(logic.REFINE_CHOICES)))
    add(nuke.Double_Knob("backbone_scale", "backbone scale"))
    group["backbone_scale"].setTooltip("Resolution of the coarse pass (0.25 HD, 0.125 4K); 0: the preset's.")
    add(nuke.Int_Knob("sample_pixels", "sample pixels"))
    group["sample_pixels"].setTooltip("Pixels refined per frame in sampling mode; 0: default.")
    add(nuke.Double_Knob("refine_threshold", "refine threshold"))
    group["refine_threshold"].setTooltip("Error above which a patch is refined in thresholding mode; 0: default "
                                         "(0.1).")
    add(nuke.Enumeration_Knob("device", "device", list(logic.DEVICE_CHOICES)))
    add(nuke.Enumeration_Knob("precision", "precision", list(logic.PRECISION_CHOICES)))
    add(nuke.Text_Knob("colour", "colour"))
    add(nuke.Enumeration_Knob("plate_colorspace", "plate colorspace", [logic.FROM_INPUT]))
    group["plate_colorspace"].setTooltip("The plate's colour space. 'from input Read': the plate Read's colorspace "
                                         "and raw knobs (inputs rendered by the node: the working space).")
    add(nuke.Enumeration_Knob("clean_colorspace", "clean plate colorspace", [logic.FROM_INPUT]))
    add(nuke.File_Knob("ocio_config", "OCIO config"))
    group["ocio_config"].setTooltip("Empty: the script's OCIO config (Project Settings), else $OCIO.")
    add(nuke.Text_Knob("job", "job"))
    add(nuke.Boolean_Knob("extra_layers", "write fg/err/ref/bg layers", True))
    add(nuke.Boolean_Knob("locked_off", "locked-off camera (no alignment)", False))
    group["locked_off"].setFlag(nuke.STARTLINE)
    add(nuke.Boolean_Knob("hold_missing", "hold missing input frames", False))
    group["hold_missing"].setFlag(nuke.STARTLINE)
    add(nuke.Boolean_Knob("resume", "resume (keep finished frames)", False))
    group["resume"].setFlag(nuke.STARTLINE)
    add(nuke.Text_Knob("farm_section", "farm"))
    add(nuke.Enumeration_Knob("farm", "run on", list(logic.FARM_CHOICES)))
    group["farm"].setTooltip("Where Pull matte runs: here; on a Dask cluster (progress and mattes come back as for a "
                             "local pull); or written as an OpenJD bundle (Deadline Cloud) / OpenCue outline, whose "
                             "mattes load when the farm job's merged report appears.")
    add(nuke.EvalString_Knob("farm_address", "Dask scheduler"))
    group["farm_address"].setTooltip("tcp://scheduler:8786, tls://..., or local:N for N worker processes here.")
    add(nuke.File_Knob("farm_path", "bundle / outline"))
    group["farm_path"].setTooltip("OpenJD: the job bundle folder to write. OpenCue: the outline file to write "
                                  "(submitted where CUEBOT_HOSTS is set).")
    add(nuke.Int_Knob("farm_chunk", "chunk size"))
    group["farm_chunk"].setTooltip("Frames per farm task; 0: Howard's default.")
    add(nuke.EvalString_Knob("howard_cli", "howard executable"))
    group["howard_cli"].setTooltip("Path to `howard` (empty: $HOWARD_CLI, $HOWARD_PYTHON, then howard on PATH).")
    export = nuke.PyScript_Knob("export_torchscript", "Export TorchScript for Inference...",
                                "import howard_nuke; howard_nuke.export_torchscript(nuke.thisNode())")
    export.setFlag(nuke.STARTLINE)
    add(export)


def _refresh_colour_choices(node):
    """Offer the script's colour spaces (the internal Read's colorspace menu is the config's)."""
    spaces = logic.colour_choices(node.node(READ)["colorspace"].values())
    for name in ("plate_colorspace", "clean_colorspace"):
        knob = node[name]
        current = knob.value()
        knob.setValues(spaces if current in spaces else spaces + [current])
        knob.setValue(current)


def _values(node):
    names = ("frame_range", "preset", "refine_mode", "backbone_scale", "sample_pixels", "refine_threshold", "device",
             "precision",
             "plate_colorspace", "clean_colorspace", "extra_layers", "locked_off", "hold_missing", "resume")
    values = {name: node[name].value() for name in names + ("farm", "farm_chunk")}
    values["model"] = node["model"].evaluate()  # a path may hold [getenv ...] / $VAR
    values["farm_address"] = node["farm_address"].evaluate()
    values["farm_path"] = node["farm_path"].evaluate()
    return values


def _state(node):
    try:
        return json.loads(node[STATE].value() or "{}")
    except ValueError:
        return {}


def _set_state(node, **fields):
    """Status line and saved state together (the state knob is what a saved script keeps)."""
    state = _state(node)
    state.update(fields)
    node[STATE].setValue(json.dumps(state, sort_keys=True))
    if "status" in fields:
        node["status"].setValue(fields["status"])
    if fields.get("log"):
        node["log_file"].setValue(logic.nuke_path(fields["log"]))


def restore(node):
    """onCreate (also run when a script is opened): a pull saved while running is either still
    running in this session, or was cut off with its Nuke session."""
    _refresh_colour_choices(node)
    state = _state(node)
    if state.get("state") == "on farm" and state.get("farm_report"):
        _watch_farm_report(state["job"], state["farm_report"])
    if state.get("state") == "pulling" and state.get("job") not in _jobs:
        _set_state(node, state="interrupted",
                   status="interrupted: Nuke closed or the script was reopened while pulling; "
                          "pull again with resume on to finish the missing frames")


def _find_job_node(job_id):
    for node in nuke.allNodes("Group", nuke.root(), True):
        knob = node.knob(STATE)
        if knob is not None and _state(node).get("job") == job_id:
            return node
    return None


def _expanded(knob):
    """A path knob's text with TCL and variables substituted (value() is the text as typed)."""
    return knob.evaluate() if isinstance(knob, nuke.EvalString_Knob) else knob.value()


def _proxy_on():
    return bool(nuke.root()["proxy"].value())


def _full_res_filename(read):
    path = logic.full_res_path(read, nuke.filename, _proxy_on(), nuke.frame())
    if path is None:
        raise ValueError(f"{read.name()}: cannot tell its full-resolution file name in proxy mode; turn proxy mode off "
                         "and pull again")
    return path


def _render_input(group, index, label, folder):
    """Input `index` rendered at full resolution to EXR under `folder` (main thread, Nuke's own
    progress). Proxy mode is switched off for the render: mattes are always full size."""
    root = nuke.root()
    proxy = root["proxy"].value()
    with group:
        inp = nuke.toNode("plate" if index == 0 else "cleanplate")
        if inp is None:
            raise ValueError(f"{group.name()}: its {label} input node is missing; make a new HowardMatte node")
        first, last = int(inp.firstFrame()), int(inp.lastFrame())
        os.makedirs(folder, exist_ok=True)
        path = logic.nuke_path(os.path.join(folder, "{}.####.exr".format(label.replace(" ", "_"))))
        # raw: the working space's values as they are, which is what Howard is told they are.
        write = nuke.nodes.Write(file=path, file_type="exr", channels="rgb", raw=True, inputs=[inp])
        try:
            root["proxy"].setValue(False)
            nuke.execute(write, first, last)
        finally:
            root["proxy"].setValue(proxy)
            nuke.delete(write)
    return path, first, last


def _working_space():
    knob = nuke.root().knob("workingSpaceLUT")
    return (knob.value() if knob is not None else "") or "linear"


def _input_source(group, index, label, folder, override):
    """(path, first, last, Howard colorspace, internal-Read colorspace, raw, is_read) of input `index`:
    the upstream Read's own files when it is a plain Read, else the input rendered to EXR."""
    source = logic.upstream(group.input(index))
    if source is None:
        raise ValueError(f"connect the {label} to input {index + 1}")
    choices = group.node(READ)["colorspace"].values()
    plain = logic.plain_read(source, _full_res_filename, sequence_only=(index == 0))
    if plain is not None:
        howard, nuke_space, raw = logic.plate_colour(source["colorspace"].value(), source["raw"].value(), plain[0],
                                                     override, choices)
        return plain + (howard, nuke_space, raw, True)
    path, first, last = _render_input(group, index, label, folder)
    space = _working_space()
    howard, nuke_space, raw = logic.plate_colour(space, False, path, override, choices)
    return path, first, last, howard, (nuke_space if nuke_space in choices else "default"), raw, False


def pull_matte(node):
    """The "Pull matte" button (main thread). Errors found before the job starts are one
    dialog (the artist just pressed the button); the job's end is reported on the node."""
    running = _state(node).get("job")
    if running in _jobs:
        _message("a matte is already being pulled for this node; cancel it from its progress bar first")
        return
    try:
        hostcli = _hostcli(node)
    except BootError as exc:
        _message(str(exc))
        return
    try:
        root = nuke.root()
        saved = root.name()
        script = saved if saved and saved != "Root" else None
        source = logic.upstream(node.input(0))
        plain = logic.plain_read(source, _full_res_filename, sequence_only=True) if source is not None else None
        folder = logic.output_folder(node["output_folder"].evaluate(), plain[0] if plain else None, script,
                                     node.name(), tempfile.gettempdir())
        inputs = os.path.join(folder, "howard_inputs")
        values = _values(node)
        plate, first, last, plate_cs, read_cs, read_raw, plate_is_read = _input_source(
            node, 0, "plate", inputs, values["plate_colorspace"])
        clean, _, _, clean_cs, _, _, _ = _input_source(node, 1, "clean plate", inputs, values["clean_colorspace"])
        nuke_dir = os.path.dirname(getattr(nuke, "EXE_PATH", "") or "")
        config = logic.ocio_config(node["ocio_config"].evaluate(), root["OCIO_config"].value(),
                                   _expanded(root["customOCIOConfigPath"]), nuke_dir, os.environ)
        options = logic.options_from_values(values, hostcli, frames=f"{first}-{last}" if plate_is_read
                                            else None, colour=(plate_cs, clean_cs, config))
        runner = hostcli.resolve_runner(cli=_cli_setting(node) or None)
        argv, farm_report = hostcli.pull_command(plate, clean, folder, options, logic.farm_target(values, hostcli),
                                                 runner=runner)
        job = hostcli.Job(argv, expect_done=farm_report is None).start()
    except (ValueError, RuntimeError, OSError, hostcli.HostError) as exc:  # RuntimeError: a cancelled render
        _message(str(exc))
        return
    job_id = uuid.uuid4().hex
    _jobs[job_id] = job
    _set_state(node, job=job_id, state="pulling", status="pulling...", folder=folder, plate_first=first,
               plate_last=last, colorspace=read_cs, raw=bool(read_raw), command=hostcli.format_command(argv),
               log=os.path.join(folder, f"howard_{job_id[:8]}.log"), farm_report=farm_report)
    threading.Thread(target=_watch, args=(job_id, job, f"Howard matte ({node.name()})"),
                     name="howard-nuke", daemon=True).start()


def _watch(job_id, job, title):
    """Worker thread: progress bar and cancel button, then hand over to the main thread. It
    uses no node or knob (Nuke's API is main-thread only), and always hands over."""
    failure = None
    try:
        task = nuke.ProgressTask(title)
        while not job.finished:
            job.poll()
            if task.isCancelled() and not job.cancelled:
                job.cancel()
            task.setProgress(int(job.progress.fraction * 100))
            task.setMessage(job.progress.status())
            time.sleep(_POLL_S)
        del task  # closes the progress bar
    except Exception as exc:  # noqa: BLE001 - reported on the node below
        failure = f"the progress watcher failed ({type(exc).__name__}: {exc})"
    finally:
        if not job.finished:  # this thread failed: stop the job rather than orphan it
            job.cancel()
            job.wait(timeout=30)
        nuke.executeInMainThread(_finish, args=(job_id, job, failure))


def _write_log(path, job, state, lines):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write("command: {}\n".format(state.get("command", "")))
            f.write(f"exit code: {job.returncode}\n")
            for line in list(job.noise) + list(job.stderr_tail) + list(lines):
                f.write(line + "\n")
    except OSError:
        return None
    return path


def _finish(job_id, job, failure=None):
    """Main thread: point the internal Read at the written mattes and say how it went, on the node."""
    _jobs.pop(job_id, None)
    node = _find_job_node(job_id)
    if node is None:  # deleted while it ran
        return
    state = _state(node)
    job.poll()
    message = failure or job.error
    result = None
    if message is None and state.get("farm_report"):
        # The job was handed to the farm; the mattes load when its merged report appears.
        log = _write_log(state.get("log") or "", job, state, []) if state.get("log") else None
        _set_state(node, state="on farm", status="submitted to the farm; the mattes load when its report appears: "
                   + state["farm_report"], log=log)
        _watch_farm_report(job_id, state["farm_report"])
        return
    if message is None:
        try:
            result = job.result()
        except Exception as exc:  # noqa: BLE001 - hostcli.HostError from the loaded kit
            message = str(exc)
    lines = result.summary() if result is not None else [f"failed: {message}"]
    log = _write_log(state.get("log") or "", job, state, lines) if state.get("log") else None
    _show_result(node, state, result, message, log)


def _watch_farm_report(job_id, report):
    """A farm job runs without this Nuke: a daemon thread looks for its merged report and hands the
    mattes to the main thread when it appears (restarted by `restore` when the script is reopened)."""
    def watch():
        while not os.path.exists(report):
            time.sleep(_FARM_POLL_S)
        nuke.executeInMainThread(_farm_done, args=(job_id, report))

    threading.Thread(target=watch, name="howard-nuke-farm", daemon=True).start()


def _farm_done(job_id, report):
    node = _find_job_node(job_id)
    if node is None or _state(node).get("state") != "on farm":
        return
    try:
        result = _hostcli(node).result_from_report(report)
        message = None
    except Exception as exc:  # noqa: BLE001 - hostcli.HostError, BootError
        result, message = None, str(exc)
    _show_result(node, _state(node), result, message, _state(node).get("log"))


def _show_result(node, state, result, message, log):
    """Main thread: the internal Read on the written mattes and the status line, or the failure."""
    if result is None:
        _set_state(node, state="failed", status=f"failed: {message}", log=log)
        return
    if not result.frames:
        _set_state(node, state="failed", status=f"failed: howard wrote no frame files ({result.output})",
                   log=log)
        return
    first, last = logic.read_range(result.frames, state.get("plate_first"), state.get("plate_last"))
    read = node.node(READ)
    read["file"].fromUserText(f"{logic.nuke_path(result.output)} {first}-{last}")
    read["proxy"].setValue("")  # no proxy files: in proxy mode Nuke scales the full-size matte
    missing = node["missing_mattes"].value()
    read["on_error"].setValue("error" if missing == "error" else "black")
    read["before"].setValue("black")
    read["after"].setValue("black")
    choices = read["colorspace"].values()
    space = state.get("colorspace") or "default"
    read["colorspace"].setValue(space if space in choices else "default")
    read["raw"].setValue(bool(state.get("raw")))
    read["reload"].execute()
    node.node(COPY)["disable"].setValue(False)
    gaps = logic.missing_frames(result.frames, first, last)
    status = f"done: {len(result.frames)} matte(s), {logic.frame_ranges(result.frames)}"
    if gaps:
        status += "; NO matte for {} ({} there)".format(gaps, "the node errors" if missing == "error"
                                                        else "black alpha")
    if result.flagged:
        status += f"; {len(result.flagged)} flagged for review"
    if result.warnings:
        status += "; " + result.warnings[0]
    _set_state(node, state="done", status=status, missing=gaps, output=result.output, log=log)


def export_torchscript(node=None):
    """Menu command / button: `howard export-nuke` to a .pt file for the Inference node."""
    path = nuke.getFilename("Save Howard TorchScript for the Inference node", "*.pt", type="save")
    if not path:
        return
    if not path.endswith(".pt"):
        path += ".pt"
    try:
        hostcli = _hostcli(node)
        # The node's network knobs, so the Inference node mattes as the node's pulls do.
        options = logic.options_from_values(_values(node), hostcli) if node is not None else None
        runner = hostcli.resolve_runner(cli=_cli_setting(node) or None)
        argv = hostcli.export_nuke_command(path, options, runner=runner)
        job = hostcli.Job(argv, expect_done=False).start()
    except BootError as exc:
        _message(str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - hostcli.HostError
        _message(str(exc))
        return
    threading.Thread(target=_watch_export, args=(job, path), name="howard-nuke-export", daemon=True).start()


def _watch_export(job, path):
    """Worker thread: progress until the export ends; the one message always reaches the main thread."""
    failure = None
    try:
        task = nuke.ProgressTask("Howard: exporting TorchScript")
        task.setMessage(os.path.basename(path))
        while not job.finished:
            job.poll()
            if task.isCancelled() and not job.cancelled:
                job.cancel()
            time.sleep(_POLL_S)
        del task
    except Exception as exc:  # noqa: BLE001 - reported below
        failure = f"the export's progress watcher failed ({type(exc).__name__}: {exc}); the export was stopped"
    finally:
        if not job.finished:
            job.cancel()
            job.wait(timeout=30)
        message = failure or job.error
        if message is None:
            message = (f"wrote {path}. Convert it to .cat with a CatFileCreator node (NukeX): Channels In rgba.red, "
                       "rgba.green, rgba.blue for the plate and three more channels holding the ALIGNED clean plate "
                       "(e.g. forward.u, forward.v, backward.u), Channels Out rgba.red, rgba.green, rgba.blue, "
                       "rgba.alpha; convert linear plates to sRGB before Inference and the foreground back after. "
                       "See nuke_plugin/README.md.")
        nuke.executeInMainThread(_message, args=(message,))
