#!/usr/bin/env python3
"""Howard's one developer entry point.

    python3 build.py setup            create/refresh the local .venv (idempotent)
    python3 build.py test [ARGS]      setup, setup-blender, lint, then the test suite (ARGS go to pytest)
    python3 build.py setup-blender    one virtualenv per tested Blender version with its bpy wheel (idempotent)
    python3 build.py demo [ARGS]      setup, then `howard demo` (the main job on the embedded default)
    python3 build.py bench WHAT       setup, then a benchmark printing JSON (model | align | pipeline)
    python3 build.py lint             ruff over the tree
    python3 build.py dist             wheel of howard-core plus zipped Nuke and Blender adapters in dist/

Only the standard library is used here, so it runs on a bare Python 3.11.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".howard-setup"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
# Where this platform keeps its local CPU build of torch; pip's own config may already name it.
LOCAL_WHEELS = Path("/opt/wheels")
# The Blender releases the add-on is tested in (the bpy wheels on PyPI): the current LTS and the newest 5.x for
# Python 3.11 ($HOWARD_BLENDER_VERSIONS, space-separated, tries others). Each wheel pins its own numpy (<2),
# so each gets a virtualenv of its own beside .venv.
BLENDER_VERSIONS = tuple(os.environ.get("HOWARD_BLENDER_VERSIONS", "4.5.15 5.0.1").split())
BLENDER_VENVS = ROOT / ".venv-blender"


def _run(cmd: list[str | os.PathLike], **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)


def _setup_fingerprint() -> str:
    # Reinstall when the declared dependencies or the interpreter change, not otherwise.
    h = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()


def setup() -> None:
    if STAMP.exists() and STAMP.read_text() == _setup_fingerprint() and PY.exists():
        _compile()
        return
    if sys.version_info < (3, 11):  # noqa: UP036 - build.py must explain itself on an older Python
        sys.exit(f"build.py: Python 3.11+ is required, this is {sys.version.split()[0]}")
    if not PY.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if LOCAL_WHEELS.is_dir():
        pip += ["--find-links", LOCAL_WHEELS]
    # torch first and exactly pinned, so nothing later can resolve a different (CUDA) build.
    _run(pip + ["torch==2.13.0"])
    _run(pip + ["-e", ".[test,train,farm]"])
    STAMP.write_text(_setup_fingerprint())
    _compile()


def _compile() -> None:
    # pip byte-compiles what it installs, but an editable install leaves the sources to be compiled on
    # import, and where PYTHONDONTWRITEBYTECODE is set (as on these machines) that happens on every
    # run: about 70 ms of each howard command's start. Only sources changed since are recompiled.
    _run([PY, "-m", "compileall", "-q", "howard_core"], stdout=subprocess.DEVNULL)


def blender_python(version: str) -> Path:
    """The interpreter of the virtualenv holding bpy `version` (tests/test_blender_real.py runs Blender in it)."""
    return BLENDER_VENVS / version / PY.relative_to(VENV)


def setup_blender() -> None:
    pip_flags = ["--disable-pip-version-check", "-q"]  # pip's own cache serves the 375 MB wheels on repeat runs
    for version in BLENDER_VERSIONS:
        home = BLENDER_VENVS / version
        stamp = home / ".howard-setup"
        python = blender_python(version)
        if stamp.exists() and stamp.read_text() == sys.version and python.exists():
            continue
        print(f"creating {home} (bpy {version})", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(home)
        _run([python, "-m", "pip", "install", *pip_flags, f"bpy=={version}"])
        stamp.write_text(sys.version)


def lint() -> None:
    setup()
    _run([PY, "-m", "ruff", "check", "."])


def test(args: list[str]) -> None:
    lint()
    setup_blender()
    # The real-Blender tests fail, rather than skip, when a Blender from setup_blender is missing.
    env = dict(os.environ, HOWARD_REQUIRE_BLENDER="1")
    proc = subprocess.run([str(PY), "-m", "pytest", *args], cwd=ROOT, env=env)
    sys.exit(proc.returncode)


def demo(args: list[str]) -> None:
    setup()
    sys.exit(subprocess.run([str(BIN / "howard"), "demo", *args], cwd=ROOT).returncode)


def bench(args: list[str]) -> None:
    setup()
    sys.exit(subprocess.run([str(BIN / "howard"), "bench", *args], cwd=ROOT).returncode)


# The one source of the file that lets a host's Python find Howard (it cannot be imported from
# howard_core: it is what finds howard_core), and where each adapter carries its copy.
HOSTBOOT = ROOT / "howard_core" / "howard_hostboot.py"
HOSTBOOT_IN = {"nuke_plugin": Path("howard_nuke") / "howard_hostboot.py", "blender_addon": Path("howard_hostboot.py")}


def adapter_files(name: str) -> list[tuple[Path, Path]]:
    """(source file, path inside the adapter folder) for every file a host adapter ships."""
    src = ROOT / name
    files = [(f, f.relative_to(src)) for f in sorted(src.rglob("*")) if f.is_file() and "__pycache__" not in f.parts]
    return files + [(HOSTBOOT, HOSTBOOT_IN[name])]


def assemble_adapter(name: str, out: Path) -> Path:
    """out/<name>/: the adapter folder as users install it (the tests load it from there)."""
    for source, inside in adapter_files(name):
        (out / name / inside).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / name / inside)
    return out / name


def adapter_zip(name: str, out: Path) -> Path:
    """out/howard_<name>.zip: the adapter's files under one folder `name/` (tests install this zip)."""
    path = out / f"howard_{name}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for source, inside in adapter_files(name):
            zf.write(source, Path(name) / inside)
    return path


def dist() -> None:
    setup()
    out = ROOT / "dist"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    _run([PY, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, "."])
    for name in ("nuke_plugin", "blender_addon"):
        adapter_zip(name, out)
    for f in sorted(out.iterdir()):
        print(f.relative_to(ROOT))


def main(argv: list[str]) -> None:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return
    cmd, rest = argv[0], argv[1:]
    actions = {
        "setup": lambda: setup(),
        "setup-blender": lambda: setup_blender(),
        "lint": lambda: lint(),
        "test": lambda: test(rest),
        "demo": lambda: demo(rest),
        "bench": lambda: bench(rest),
        "dist": lambda: dist(),
    }
    if cmd not in actions:
        sys.exit(f"build.py: unknown command {cmd!r}; expected one of {', '.join(actions)}")
    try:
        actions[cmd]()
    except subprocess.CalledProcessError as exc:
        sys.exit(f"build.py {cmd}: step failed with exit code {exc.returncode}")


if __name__ == "__main__":
    main(sys.argv[1:])
