"""The Nuke plug-in's Python as Nuke's own interpreters see it: it parses as Python 3.7
(Nuke 13) and 3.9 (Nuke 14 and 15), as does the host kit it loads (howard_core/hostcli.py),
and it type-checks against the `types-nuke` stubs of Nuke's API (mypy), so a call to a
function or knob method Nuke does not have fails here."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from adapters import NUKE_DIR

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = NUKE_DIR  # the plug-in folder as users install it (build.py adds howard_hostboot.py)
# What Nuke's Python loads: the plug-in folder, and the stdlib-only host kit it finds through howard_hostboot.
HOST_FILES = sorted(PLUGIN.rglob("*.py")) + [ROOT / "howard_core" / name for name in
                                             ("hostcli.py", "settings.py", "events.py")]
# howard_hostboot.py (shipped in blender_addon/ too) is not checked against the stubs here (it does
# not use nuke); mypy still reads it for the imports.
TYPED = ["howard_nuke/__init__.py", "howard_nuke/node.py", "howard_nuke/logic.py", "menu.py", "init.py"]


@pytest.mark.parametrize("version", [(3, 7), (3, 9)], ids=["nuke13-py3.7", "nuke14-py3.9"])
@pytest.mark.parametrize("path", HOST_FILES, ids=lambda p: p.name)
def test_host_side_python_parses_for_nukes_interpreters(path, version):
    ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=version)


def _mypy(args, cache):
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), "--no-error-summary",
                           "--check-untyped-defs", "--follow-imports=silent", *args],
                          cwd=PLUGIN, capture_output=True, text=True, timeout=300)


def test_the_plugin_type_checks_against_the_nuke_stubs(tmp_path):
    proc = _mypy(TYPED, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_nuke_stubs_are_the_ones_checked_against(tmp_path):
    """The check above means something only if `nuke` resolves to the stubs: a call Nuke does
    not have, and a knob method no knob has, must be reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("import nuke\nnuke.no_such_function()\nnuke.root()['proxy'].evaluateTwice()\n")
    proc = _mypy([str(probe)], tmp_path / "cache")
    assert proc.returncode == 1
    assert 'Module has no attribute "no_such_function"' in proc.stdout
    assert '"Knob" has no attribute "evaluateTwice"' in proc.stdout
