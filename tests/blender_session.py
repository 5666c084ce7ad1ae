"""Runs inside real Blender (the Python of a bpy wheel's virtualenv), driven by
tests/test_blender_real.py; it asserts nothing itself, it records what happened.

    python blender_session.py session JOB.json RESULT.json   install, pull, render, bad inputs, file load
    python blender_session.py quit JOB.json RESULT.json      start a pull, then quit Blender
    python blender_session.py legacy JOB.json RESULT.json    install the zip as a legacy add-on

It installs the add-on zip the way Blender installs extensions, builds artists' scenes,
runs `bpy.ops.howard.pull_matte('INVOKE_DEFAULT')` and then calls the operator's own
`modal()` with timer events as Blender's event loop would (Esc to cancel), and renders the
compositor to RGBA EXRs. JOB.json names the zip, the `howard` executable, the plate files
and a scratch folder; RESULT.json gets one record per scenario.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import traceback

import bpy

EXT_MODULE = "bl_ext.user_default.howard_matte"
PULL_TIMEOUT_S = 240


class Event:
    """What modal() reads of a bpy.types.Event; Blender's own events cannot be made from Python."""

    def __init__(self, kind):
        self.type = kind
        self.value = "PRESS" if kind == "ESC" else "NOTHING"


def install(job):
    validator = os.path.join(bpy.utils.system_resource("SCRIPTS"), "addons_core", "bl_pkg", "cli", "blender_ext.py")
    check = subprocess.run([sys.executable, validator, "validate", job["zip"]], capture_output=True, text=True,
                           timeout=120)
    result = bpy.ops.extensions.package_install_files(filepath=job["zip"], repo="user_default",
                                                      enable_on_install=True)
    prefs = bpy.context.preferences.addons[EXT_MODULE].preferences
    prefs.howard_cli = job["howard_cli"]
    return {"validate_rc": check.returncode, "validate_out": (check.stdout + check.stderr).strip(),
            "install": sorted(result), "enabled": EXT_MODULE in bpy.context.preferences.addons,
            "operator": hasattr(bpy.ops.howard, "pull_matte"), "panel": hasattr(bpy.types, "HOWARD_PT_panel"),
            "settings": hasattr(bpy.types.Scene, "howard")}


def ui():
    return sys.modules[EXT_MODULE + ".ui"]


def artist_scene(name, start, end, job, compositor=True):
    """A new scene the way an artist sets one up for a comp: the plate's size, a compositor
    with an output that nothing feeds yet and one node of their own (`compositor` False: no
    compositor at all, as in a new file before the compositor was opened)."""
    scene = bpy.data.scenes.new(name)
    scene.render.resolution_x, scene.render.resolution_y = job["width"], job["height"]
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = start, end
    scene.view_settings.view_transform = "AgX"  # Blender's default for new files; EXR renders stay linear
    bpy.context.window.scene = scene
    if not compositor:
        return scene
    if hasattr(scene, "compositing_node_group"):  # Blender 5: the compositor is a node group with a Group Output
        tree = bpy.data.node_groups.new(f"{name} comp", "CompositorNodeTree")
        tree.interface.new_socket(name="Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        tree.nodes.new("NodeGroupOutput")
        scene.compositing_node_group = tree
    else:  # 4.x: scene.node_tree with a Composite node
        scene.use_nodes = True
        tree = scene.node_tree
        for node in list(tree.nodes):
            if node.bl_idname != "CompositorNodeComposite":
                tree.nodes.remove(node)
    tree.nodes.new("CompositorNodeBlur").name = "Artist Blur"
    return scene


def tree_of(scene):
    return scene.compositing_node_group if hasattr(scene, "compositing_node_group") else scene.node_tree


def graph(scene):
    """The compositor graph as plain data: node names and links."""
    tree = tree_of(scene)
    if tree is None:
        return {"nodes": [], "links": []}
    return {"nodes": sorted(n.name for n in tree.nodes),
            "links": sorted(f"{lk.from_node.name}:{lk.from_socket.name}->{lk.to_node.name}:{lk.to_socket.name}"
                            for lk in tree.links)}


def pull(esc_after_s=None, on_start=None):
    """Invoke Pull Matte and drive its modal() with timer events (Esc after `esc_after_s`) until
    it ends. Returns (operator result or the refusal text, argv, howard's pid, seconds)."""
    t0 = time.monotonic()
    try:
        started = bpy.ops.howard.pull_matte("INVOKE_DEFAULT")
    except RuntimeError as exc:  # an ERROR report from invoke() comes back to a Python caller as this
        return {"refused": str(exc).strip(), "seconds": time.monotonic() - t0}
    if started != {"RUNNING_MODAL"}:
        return {"result": sorted(started), "seconds": time.monotonic() - t0}
    op = ui()._RUNNING[-1]
    job = op._pull.job
    record = {"argv": job.argv, "pid": job.proc.pid, "statuses": []}
    if on_start is not None:
        on_start(record)
        return record
    sent_esc = False
    while time.monotonic() - t0 < PULL_TIMEOUT_S:
        if esc_after_s is not None and not sent_esc and time.monotonic() - t0 > esc_after_s:
            result = op.modal(bpy.context, Event("ESC"))
            sent_esc = True
        else:
            result = op.modal(bpy.context, Event("TIMER"))
        record["statuses"].append(bpy.context.scene.howard.status)
        if result != {"RUNNING_MODAL"}:
            record["result"] = sorted(result)
            break
        time.sleep(0.05)
    record.update(seconds=time.monotonic() - t0, exited=job.proc.poll() is not None,
                  status=bpy.context.scene.howard.status, running=len(ui()._RUNNING))
    return record


def alive(pid):
    """Whether process `pid` is still running (not exited, not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def render(scene, frame, path):
    scene.frame_set(frame)
    scene.render.filepath = path
    settings = scene.render.image_settings
    settings.file_format = "OPEN_EXR"
    settings.color_mode = "RGBA"
    settings.color_depth = "32"
    bpy.ops.render.render(write_still=True, scene=scene.name)
    return path


def matte_pull(job, name, configure, start, end, compositor=True):
    """One artist's pull: a scene, the plate set up by `configure`, the pull, a render of every
    frame of the scene range."""
    scene = artist_scene(name, start, end, job, compositor)
    settings = scene.howard
    settings.clean_source, settings.clean_path = "FILE", job["clean"]
    settings.output_dir = os.path.join(job["scratch"], name)
    configure(scene, settings)
    bpy.ops.ed.undo_push(message=f"artist built {name}")
    before = graph(scene)
    record = pull()
    record.update(before=before, after=graph(scene), renders={
        f: render(scene, f, os.path.join(job["scratch"], f"{name}_render.{f:04d}.exr")) for f in range(start, end + 1)})
    return record


def plate_file(settings, job):
    settings.plate_source, settings.plate_path = "FILE", job["plate"]


def plate_image(settings, job):
    image = bpy.data.images.load(job["plate_first"])
    image.source = "SEQUENCE"
    settings.plate_source, settings.plate_image = "IMAGE", image


def plate_clip(settings, job, frame_start, frame_offset):
    clip = bpy.data.movieclips.load(job["plate_first"])
    clip.frame_start, clip.frame_offset = frame_start, frame_offset
    settings.plate_source, settings.plate_clip = "CLIP", clip


def undo_round_trip(scene_name):
    """Undo once after a pull: the graph as before it (the pull is one undo step); redo: back."""
    after = graph(bpy.data.scenes[scene_name])
    bpy.ops.ed.undo()
    undone = graph(bpy.data.scenes[scene_name])
    bpy.ops.ed.redo()
    return {"after": after, "undone": undone, "redone": graph(bpy.data.scenes[scene_name])}


def bad_input(job, name, configure):
    scene = artist_scene(name, 1001, 1003, job)
    settings = scene.howard
    settings.plate_source, settings.plate_path = "FILE", job["plate"]
    settings.clean_source, settings.clean_path = "FILE", job["clean"]
    settings.output_dir = os.path.join(job["scratch"], name)
    configure(settings)
    before = graph(scene)
    record = pull()
    record.update(before=before, after=graph(scene), status=settings.status,
                  wrote=sorted(os.listdir(settings.output_dir)) if os.path.isdir(settings.output_dir) else [])
    return record


def broken_copy(job, name, damage):
    """The plate copied to its own folder with frame 1002 damaged by `damage(bytes) -> bytes`."""
    folder = os.path.join(job["scratch"], name + "_plate")
    shutil.copytree(os.path.dirname(job["plate"]), folder)
    bad = os.path.join(folder, os.path.basename(job["plate_first"]).replace("1001", "1002"))
    with open(bad, "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(damage(data))
    return os.path.join(folder, os.path.basename(job["plate"])), bad


def garble(data):
    return data[:8] + b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c" + data[20:]


def attempt(out, name, scenario):
    """out[name] = scenario(), or the traceback it raised (the other scenarios still run)."""
    try:
        out[name] = scenario()
    except Exception:
        out[name] = {"crashed": traceback.format_exc()}


def session(job):
    out = {"version": bpy.app.version_string, "install": install(job)}
    area = bpy.context.window.screen.areas[0]  # as an artist works: a Compositor open, where progress shows
    area.type = "NODE_EDITOR"
    area.ui_type = "CompositorNodeTree"
    attempt(out, "file", lambda: matte_pull(job, "file", lambda sc, st: plate_file(st, job), 1, 3))
    attempt(out, "undo", lambda: undo_round_trip("file"))
    attempt(out, "image", lambda: matte_pull(job, "image", lambda sc, st: plate_image(st, job), 1001, 1003))
    attempt(out, "clip", lambda: matte_pull(job, "clip", lambda sc, st: plate_clip(st, job, 5, 1), 5, 7))
    attempt(out, "fresh", lambda: matte_pull(job, "fresh", lambda sc, st: plate_file(st, job), 1001, 1003,
                                             compositor=False))
    attempt(out, "still", lambda: matte_pull(job, "still", lambda sc, st: setattr(st, "plate_path", job["plate_first"]),
                                             1, 2))
    attempt(out, "farm_dask", lambda: matte_pull(job, "farm_dask", lambda sc, st: on_dask(st, job), 1, 3))
    attempt(out, "farm_openjd", lambda: farm_openjd(job))
    attempt(out, "colour", lambda: colour(job))
    attempt(out, "cancel", lambda: cancel(job))
    attempt(out, "no_howard", lambda: no_howard(job))
    missing = os.path.join(job["scratch"], "nowhere", "clean.####.exr")
    attempt(out, "no_howard_on_path", lambda: no_howard_on_path(job))
    attempt(out, "missing_clean", lambda: dict(bad_input(job, "missing_clean",
                                                         lambda st: setattr(st, "clean_path", missing)),
                                               must_name=os.path.dirname(missing)))
    for name, damage in (("truncated", lambda d: d[: len(d) // 2]), ("garbled", garble)):
        attempt(out, name, lambda name=name, damage=damage: damaged_plate(job, name, damage))
    attempt(out, "unexpected", lambda: unexpected(job))
    attempt(out, "load", lambda: load_other_file(job))
    attempt(out, "disable", lambda: disable_addon(job))
    return out


def on_dask(settings, job):
    plate_file(settings, job)
    settings.farm, settings.farm_address, settings.farm_chunk = "dask", "local:1", 2


def farm_openjd(job):
    """Submit to farm as an OpenJD bundle: written, nothing loaded; then the farm (`openjd run`)
    runs it, and the add-on's timer callback loads the matte once the job's report is there."""
    name = "farm_openjd"
    scene = artist_scene(name, 1, 3, job)
    settings = scene.howard
    settings.clean_source, settings.clean_path = "FILE", job["clean"]
    settings.output_dir = os.path.join(job["scratch"], name)
    plate_file(settings, job)
    settings.farm, settings.farm_path = "openjd", os.path.join(job["scratch"], name + "_bundle")
    before = graph(scene)
    record = pull()
    record.update(submitted=settings.status, loaded_before=graph(scene), check_before=ui().check_farm_jobs())
    openjd = os.path.join(os.path.dirname(job["howard_cli"]), "openjd")
    run = subprocess.run([openjd, "run", os.path.join(settings.farm_path, "template.yaml")], capture_output=True,
                         text=True, timeout=PULL_TIMEOUT_S)
    record.update(openjd_rc=run.returncode, openjd_tail=run.stdout[-1500:], check_after=ui().check_farm_jobs())
    record.update(before=before, after=graph(scene), status=settings.status, renders={
        f: render(scene, f, os.path.join(job["scratch"], f"{name}_render.{f:04d}.exr")) for f in range(1, 4)})
    return record


def all_frames(job, settings):
    plate_file(settings, job)
    settings.frames = "ALL"


def colour(job):
    """A plate Image tagged ACEScg: Howard gets that name and Blender's own OCIO config; the matte
    Image is read back in the same space."""
    def acescg(scene, settings):
        plate_image(settings, job)
        settings.plate_image.colorspace_settings.name = "ACEScg"
    record = matte_pull(job, "colour", acescg, 1001, 1001)
    matte = tree_of(bpy.context.scene).nodes["Howard Matte"].image
    record["matte_colorspace"] = matte.colorspace_settings.name
    record["matte_alpha_mode"] = matte.alpha_mode
    return record


def cancel(job):
    scene = artist_scene("cancel", 1, 2, job)
    all_frames(job, scene.howard)
    scene.howard.clean_path, scene.howard.output_dir = job["clean"], os.path.join(job["scratch"], "cancel")
    before = graph(scene)
    record = pull(esc_after_s=0.5)
    record.update(before=before, after=graph(scene))
    return record


def no_howard(job):
    prefs = bpy.context.preferences.addons[EXT_MODULE].preferences
    prefs.howard_cli = job["scratch"] + "/nowhere/howard"
    try:
        return bad_input(job, "no_howard", lambda st: None)
    finally:
        prefs.howard_cli = job["howard_cli"]


def no_howard_on_path(job):
    """Nothing set and no `howard` on PATH: the report says where it looked and where to set it."""
    prefs = bpy.context.preferences.addons[EXT_MODULE].preferences
    saved = {k: os.environ.pop(k, None) for k in ("HOWARD_CLI", "HOWARD_PYTHON")}
    path = os.environ.get("PATH", "")
    prefs.howard_cli = ""
    os.environ["PATH"] = os.path.join(job["scratch"], "empty_bin")
    try:
        return dict(bad_input(job, "no_howard_on_path", lambda st: None), must_name=os.environ["PATH"])
    finally:
        os.environ["PATH"] = path
        os.environ.update({k: v for k, v in saved.items() if v is not None})
        prefs.howard_cli = job["howard_cli"]


def damaged_plate(job, name, damage):
    plate, bad = broken_copy(job, name, damage)
    return dict(bad_input(job, name, lambda st: setattr(st, "plate_path", plate)), must_name=bad)


def unexpected(job):
    module = ui()
    real = module.logic.options_from_settings

    def broken(*args, **kwargs):
        raise KeyError("a bug in the add-on")
    module.logic.options_from_settings = broken
    try:
        return bad_input(job, "unexpected", lambda st: None)
    finally:
        module.logic.options_from_settings = real


def started_pull(job, name):
    """A pull of every plate frame into scratch/NAME, started and left running: (record, output folder)."""
    scene = artist_scene(name, 1, 2, job)
    all_frames(job, scene.howard)
    output = os.path.join(job["scratch"], name)
    scene.howard.clean_path, scene.howard.output_dir = job["clean"], output
    record = pull(on_start=lambda rec: None)
    record["output"] = output
    return record


def load_other_file(job):
    """Loading another file ends a running pull's howard process."""
    saved = os.path.join(job["scratch"], "other.blend")
    bpy.ops.wm.save_as_mainfile(filepath=saved, copy=True)
    record = started_pull(job, "load")
    bpy.ops.wm.open_mainfile(filepath=saved)
    record["alive_after"] = alive(record["pid"])
    record["running_after_load"] = len(ui()._RUNNING)
    return record


def disable_addon(job):
    """Turning the add-on off ends a running pull's howard process."""
    record = started_pull(job, "disable")
    bpy.ops.preferences.addon_disable(module=EXT_MODULE)
    record["alive_after"] = alive(record["pid"])
    return record


def quit_blender(job):
    install(job)
    record = started_pull(job, "quit")
    with open(sys.argv[3], "w") as f:
        json.dump(record, f)
    bpy.ops.wm.quit_blender()


def legacy(job):
    """The same zip installed the pre-extension way (Install legacy Add-on, bl_info)."""
    bpy.ops.preferences.addon_install(filepath=job["zip"], overwrite=True)
    bpy.ops.preferences.addon_enable(module="blender_addon")
    return {"enabled": "blender_addon" in bpy.context.preferences.addons,
            "operator": hasattr(bpy.ops.howard, "pull_matte"), "settings": hasattr(bpy.types.Scene, "howard"),
            "preferences": bpy.context.preferences.addons["blender_addon"].preferences is not None}


def main():
    mode, job_path, result_path = sys.argv[1:4]
    with open(job_path) as f:
        job = json.load(f)
    if mode == "quit":
        quit_blender(job)
        return
    if mode == "legacy":
        with open(result_path, "w") as f:
            json.dump(legacy(job), f)
        return
    try:
        out = session(job)
    except Exception:
        out = {"crashed": traceback.format_exc()}
    with open(result_path, "w") as f:
        json.dump(out, f, indent=1, default=str)


main()
