"""The host adapters as users install them (what `build.py dist` zips: each adapter folder plus
the one `howard_hostboot.py`), assembled once per test process in a temporary folder."""

import atexit
import importlib.util
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _build():
    spec = importlib.util.spec_from_file_location("howard_build", ROOT / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _build()
_OUT = Path(tempfile.mkdtemp(prefix="howard-adapters-"))
atexit.register(shutil.rmtree, _OUT, ignore_errors=True)
NUKE_DIR = BUILD.assemble_adapter("nuke_plugin", _OUT)
BLENDER_DIR = BUILD.assemble_adapter("blender_addon", _OUT)
