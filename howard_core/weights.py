"""Installed weights: the official BGMv2 checkpoints by name, in a per-user folder.

The folder is `$HOWARD_WEIGHTS`, else `$XDG_CACHE_HOME/howard/weights`, else
`~/.cache/howard/weights`. Each installed checkpoint sits beside a small JSON
record (name, backbone, kind, format, SHA-256, where it came from). Nothing
here touches the network except `download`, which only runs when a user asks.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from howard_core.errors import HowardError

# The official checkpoints (MIT licence), published by the BGMv2 authors at
# https://github.com/PeterL1n/BackgroundMattingV2 (links to the files are on that page).
# Their SHA-256 sums are not published there, so none are pinned here: `install`
# records the sum of the file you installed, and `verify` checks against that record.
OFFICIAL = {
    "mobilenetv2": {"file": "pytorch_mobilenetv2.pth", "backbone": "mobilenetv2", "format": "state_dict"},
    "resnet50": {"file": "pytorch_resnet50.pth", "backbone": "resnet50", "format": "state_dict"},
    "resnet101": {"file": "pytorch_resnet101.pth", "backbone": "resnet101", "format": "state_dict"},
    "torchscript-mobilenetv2": {"file": "torchscript_mobilenetv2_fp32.pth", "backbone": "mobilenetv2",
                                "format": "torchscript"},
    "torchscript-resnet50": {"file": "torchscript_resnet50_fp32.pth", "backbone": "resnet50",
                             "format": "torchscript"},
    "torchscript-resnet101": {"file": "torchscript_resnet101_fp32.pth", "backbone": "resnet101",
                              "format": "torchscript"},
}
SOURCE_PAGE = "https://github.com/PeterL1n/BackgroundMattingV2"


def weights_dir() -> Path:
    if os.environ.get("HOWARD_WEIGHTS"):
        return Path(os.environ["HOWARD_WEIGHTS"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "howard" / "weights"


def _record_path(name: str) -> Path:
    return weights_dir() / f"{name}.json"


def installed() -> dict[str, dict]:
    """name -> record, for every checkpoint installed in `weights_dir()`."""
    out = {}
    folder = weights_dir()
    if folder.is_dir():
        for rec in sorted(folder.glob("*.json")):
            try:
                data = json.loads(rec.read_text())
            except (OSError, ValueError):
                continue
            data["path"] = str(folder / data.get("file", ""))
            out[rec.stem] = data
    return out


def list_weights() -> list[dict]:
    """One row per known or installed checkpoint: name, installed, path, sha256, backbone, kind."""
    have = installed()
    rows = []
    for name in sorted(set(OFFICIAL) | set(have)):
        rec = have.get(name, {})
        info = OFFICIAL.get(name, {})
        rows.append({"name": name, "installed": bool(rec) and Path(rec["path"]).is_file(),
                     "path": rec.get("path"), "sha256": rec.get("sha256"),
                     "backbone": rec.get("backbone", info.get("backbone")), "kind": rec.get("kind"),
                     "format": rec.get("format", info.get("format")), "official": name in OFFICIAL})
    return rows


def install(path: str | os.PathLike, name: str | None = None, source: str | None = None) -> dict:
    """Validate a checkpoint file (it must load), copy it into `weights_dir()`, record it."""
    from howard_core.io.atomic import atomic_write, write_json_atomic
    from howard_core.model import load_model

    path = Path(path)
    model = load_model(path)  # raises a one-line HowardError for anything unusable
    meta = model.howard_meta
    if name is None:
        name = next((n for n, o in OFFICIAL.items() if o["file"] == path.name), None)
        if name is None:
            name = path.stem
    if not name.replace("-", "").replace("_", "").isalnum():
        raise HowardError(f"weights name {name!r} may only hold letters, digits, '-' and '_'")
    expected = OFFICIAL.get(name)
    if expected and expected["backbone"] != meta["backbone"]:
        raise HowardError(f"{path}: is a {meta['backbone']} checkpoint but {name!r} is the official "
                          f"{expected['backbone']} one; pass --name to install it under another name")
    folder = weights_dir()
    target = folder / (expected["file"] if expected else f"{name}{path.suffix or '.pth'}")
    with atomic_write(target) as tmp:
        shutil.copyfile(path, tmp)
    record = {"name": name, "file": target.name, "sha256": meta["sha256"], "backbone": meta["backbone"],
              "kind": meta["kind"], "format": meta["format"], "source": source or str(path.resolve())}
    write_json_atomic(_record_path(name), record)
    return {**record, "path": str(target)}


def verify() -> list[dict]:
    """Re-hash and re-load every installed checkpoint; one row each with `ok` and `problem`."""
    from howard_core.model import load_model
    from howard_core.model.checkpoint import sha256_file

    rows = []
    for name, rec in installed().items():
        path = Path(rec["path"])
        problem = None
        if not path.is_file():
            problem = f"{path} is missing; reinstall with `howard weights install FILE`"
        elif sha256_file(path) != rec.get("sha256"):
            problem = f"{path} has changed since it was installed (SHA-256 differs); reinstall it"
        else:
            try:
                load_model(path)
            except HowardError as exc:
                problem = str(exc)
        rows.append({"name": name, "path": str(path), "sha256": rec.get("sha256"), "ok": problem is None,
                     "problem": problem})
    return rows


def download(name: str, url: str) -> dict:
    """Fetch a checkpoint from `url` (an explicit, user-invoked command) and install it as `name`."""
    # Imported here: urllib pulls in http.client and email (20 ms), which every matte run would pay.
    import urllib.request

    from howard_core.io.atomic import atomic_write

    folder = weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(folder / f".download-{name}.pth") as tmp:
            with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as f:  # noqa: S310
                shutil.copyfileobj(resp, f)
            record = install(tmp, name=name, source=url)
    except OSError as exc:
        raise HowardError(f"download of {name} from {url} failed ({exc}); check the address and your "
                          f"connection, or fetch the file by hand and use `howard weights install FILE`") from None
    return record


def resolve(model: str | os.PathLike) -> Path:
    """A checkpoint path from an existing path or an installed name."""
    path = Path(model)
    if path.exists():
        return path
    rec = installed().get(str(model))
    if rec and Path(rec["path"]).is_file():
        return Path(rec["path"])
    names = ", ".join(sorted(installed())) or "none installed"
    raise HowardError(f"model {model!r} is neither a file nor an installed weights name ({names}); "
                      f"see `howard weights list`, or get the official files from {SOURCE_PAGE}")


# -- loaded models -------------------------------------------------------------------------------------


def resolve_model(model):
    """A loaded network for `model`: None (the bundled default), a checkpoint path, an installed
    weights name, or a network already loaded (returned as it is)."""
    from howard_core.model import load_model
    from howard_core.model.network import MattingBase

    if isinstance(model, MattingBase):
        return model
    if model is None:
        return load_model()
    return load_model(resolve(model))


def weights_status(net) -> dict:
    """{"trained", "demo"} of a loaded model: False for the untrained stand-in, True for Howard's demo weights."""
    meta = getattr(net, "howard_meta", {})
    return {"trained": meta.get("trained", True), "demo": bool(meta.get("meta", {}).get("demo"))}


def model_info(net, matter) -> dict:
    """The run report's and start event's "model" record: what was loaded and how it runs."""
    meta = dict(getattr(net, "howard_meta", {}))
    return {"backbone": meta.get("backbone", getattr(net, "backbone_name", None)), "kind": meta.get("kind"),
            "format": meta.get("format"), "source": meta.get("source"), "sha256": meta.get("sha256"),
            **weights_status(net), "settings": dict(matter.settings)}


def default_weights_info(path: Path) -> dict:
    """What `howard info` says of the bundled default weights at `path`, from its model card (the
    JSON beside it): name, what it is, training steps, held-out figures and the note runs print."""
    from howard_core.events import DEMO_NOTE, UNTRAINED_NOTE

    if not path.exists():
        return {"path": None, "note": UNTRAINED_NOTE}
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    ev = card.get("evaluation", {})
    return {"path": str(path), "name": card.get("name"), "note": DEMO_NOTE, "what_it_is": card.get("what_it_is"),
            "trained_steps": {k: v["steps"] for k, v in card.get("training", {}).items() if isinstance(v, dict)},
            "heldout": {"set": ev.get("set"), "model": ev.get("model"), "baseline": ev.get("baseline")}}
