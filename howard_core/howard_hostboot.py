"""Find Howard's host kit (`howard_core.hostcli`) from inside a host application.

A host's own Python (Nuke's, Blender's) usually does not have Howard installed, and must
not: Howard needs torch. The kit itself is standard-library only, so this loads it from
wherever the configured Howard installation keeps it:

1. `import howard_core.hostcli` when the host's Python can import howard_core;
2. else ask the interpreter of the Howard that will run (the first set of: `cli`, `python`,
   $HOWARD_CLI, $HOWARD_PYTHON, `howard` on PATH; for a `howard` executable, the python
   behind it) where the file is (`python -m howard_core.hostcli --where`) and load that one
   file by path. Nothing is added to sys.path, so the host never picks up that
   environment's numpy or torch.

This file's one source is howard_core/howard_hostboot.py (it cannot be imported from there:
it is what finds howard_core); `build.py dist` copies it into the Nuke plug-in (howard_nuke/) and
the Blender add-on.
"""

import importlib.util
import os
import shutil
import subprocess
import sys

MODULE_NAME = "howard_hostcli"
NOT_FOUND = ("Howard is not installed where this host can find it: set HOWARD_CLI to the `howard` executable "
             "(or HOWARD_PYTHON to the python) of the environment where Howard is installed")


class BootError(Exception):
    """One line for the host to show: Howard could not be located."""


def _interpreter_for_cli(cli):
    """The Python behind a `howard` console script: the python beside it (a virtual
    environment's bin/ or Scripts/), else the one its first line names."""
    path = cli if os.path.isfile(cli) else shutil.which(cli)
    if not path:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    for name in ("python.exe", "python3", "python"):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    try:
        with open(path, "rb") as f:
            first = f.readline(4096).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if first.startswith("#!"):
        words = first[2:].split()
        if words and os.path.basename(words[0]) == "env" and len(words) > 1:
            return shutil.which(words[1])
        if words and os.path.isfile(words[0]):
            return words[0]
    return None


def load_hostcli(cli=None, python=None):
    """The `howard_core.hostcli` module; raises BootError with a one-line reason."""
    try:
        from howard_core import hostcli

        return hostcli
    except ImportError:
        pass
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    env = os.environ
    interpreter = None
    # The same order as hostcli.resolve_runner, so the kit comes from the Howard that will run.
    for value, is_cli in ((cli, True), (python, False), (env.get("HOWARD_CLI"), True),
                          (env.get("HOWARD_PYTHON"), False), ("howard", True)):
        if value and str(value).strip():
            value = os.path.expanduser(str(value).strip())
            interpreter = _interpreter_for_cli(value) if is_cli else value
            break
    if not interpreter:
        raise BootError(NOT_FOUND)
    clean = {k: v for k, v in env.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
    try:
        proc = subprocess.run([os.path.expanduser(interpreter), "-m", "howard_core.hostcli", "--where"],
                              capture_output=True, text=True, timeout=120, env=clean)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BootError(f"could not run {interpreter}: {exc}") from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not os.path.isfile(lines[-1]):
        raise BootError(f"{interpreter} cannot import howard_core.hostcli; {NOT_FOUND}")
    spec = importlib.util.spec_from_file_location(MODULE_NAME, lines[-1])
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[MODULE_NAME]
        raise BootError(f"{lines[-1]} could not be loaded in this host's Python: {exc}") from exc
    return module
