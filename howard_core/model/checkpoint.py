"""Loading and saving checkpoints: official BGMv2 state_dicts, TorchScript, and Howard's own format.

A checkpoint is untrusted input. Pickled checkpoints are read with
`torch.load(..., weights_only=True)`, which refuses anything but tensors and
plain containers. TorchScript archives hold TorchScript code rather than
pickled Python; we load one only to read its tensors and attributes, then rebuild
our own eager model from them, so the archive's code never runs on a frame.

Howard's format is a plain dict saved with `torch.save`:
`{"format": "howard-checkpoint", "version": 1, "kind": "refine"|"base",
"backbone": str, "state_dict": {...}, "meta": {...}}` where `meta` records
provenance (what trained it, on what, for how long) and may hold a model card.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from howard_core.errors import HowardError

from .backbones import BACKBONES
from .network import REFINE_SETTINGS, MattingBase, MattingRefine

HOWARD_FORMAT = "howard-checkpoint"
HOWARD_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "howard_mobilenetv2.pt"
# What a checkpoint may record of the refining model: its run-time settings and its build.
REFINE_OPTIONS = (*REFINE_SETTINGS, "refine_kernel_size", "refine_prevent_oversampling")
# Attributes the official TorchScript modules expose and we carry over as defaults.
_TORCHSCRIPT_ATTRS = REFINE_SETTINGS


def detect_architecture(state_dict: dict, where: str = "checkpoint") -> tuple[str, str]:
    """(backbone, kind) from the checkpoint's key names; HowardError if they fit no known model.

    `where` names the file in error messages."""
    keys = set(state_dict)
    kind = "refine" if any(k.startswith("refiner.") for k in keys) else "base"
    if "backbone.features.0.0.weight" in keys:
        return "mobilenetv2", kind
    if "backbone.conv1.weight" in keys:
        blocks = [int(m.group(1)) for k in keys if (m := re.match(r"backbone\.layer3\.(\d+)\.", k))]
        depth = max(blocks, default=-1) + 1
        if depth == 6:
            return "resnet50", kind
        if depth == 23:
            return "resnet101", kind
        raise HowardError(f"{where} has a ResNet backbone with {depth} blocks in layer3; expected 6 "
                          f"(resnet50) or 23 (resnet101)")
    sample = ", ".join(sorted(keys)[:3]) or "no keys at all"
    raise HowardError(f"{where}: keys do not look like a BGMv2 model (found {sample}, ...); expected "
                      f"'backbone.features.*' (mobilenetv2) or 'backbone.conv1.*' (resnet50/101)")


def build_model(backbone: str, kind: str = "refine", **options) -> torch.nn.Module:
    """A fresh, untrained model of the given backbone and kind ('refine' or 'base')."""
    if backbone not in BACKBONES:
        raise HowardError(f"unknown backbone {backbone!r}; expected one of {', '.join(BACKBONES)}")
    if kind == "base":
        if options:
            raise HowardError(f"a base (coarse-only) checkpoint has no refiner; drop {', '.join(sorted(options))}")
        return MattingBase(backbone)
    bad = set(options) - set(REFINE_OPTIONS)
    if bad:
        raise HowardError(f"unknown model option(s) {', '.join(sorted(bad))}; expected {', '.join(REFINE_OPTIONS)}")
    try:
        return MattingRefine(backbone, **options)
    except ValueError as exc:
        raise HowardError(str(exc)) from None


def _describe(keys, limit: int = 4) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _check_state_dict(model: torch.nn.Module, state_dict: dict, path: Path, backbone: str, kind: str) -> dict:
    expected = model.state_dict()
    # num_batches_tracked only matters for training statistics; some exporters drop it.
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = set(expected) - set(state_dict) - optional
    unexpected = set(state_dict) - set(expected)
    where = f"{path.name} ({backbone} {kind} model)"
    if missing:
        raise HowardError(f"{where}: {len(missing)} weights missing ({_describe(missing)}); the file is "
                          f"truncated or from a different model")
    if unexpected:
        raise HowardError(f"{where}: {len(unexpected)} unexpected weights ({_describe(unexpected)}); expected "
                          f"exactly the BGMv2 {backbone} layout")
    wrong = [f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if wrong:
        raise HowardError(f"{where}: {len(wrong)} weights have the wrong shape (e.g. {wrong[0]}); expected the "
                          f"BGMv2 {backbone} layout")
    out = {}
    for k, v in state_dict.items():
        if not torch.is_tensor(v):
            raise HowardError(f"{where}: entry {k} is a {type(v).__name__}, not a tensor")
        ref = expected[k]
        if ref.is_floating_point():
            if not v.is_floating_point():
                raise HowardError(f"{where}: entry {k} has dtype {v.dtype}, expected floating point")
            v = v.float()  # Howard's bundled checkpoint stores fp16; inference starts from fp32
        out[k] = v
    _check_finite(out, where)
    return out


def _check_finite(tensors: dict, where: str) -> None:
    """Raise naming the first floating-point entry with a NaN or infinity. First one L1 norm over all of
    them (PyTorch's foreach kernels): a check per tensor cost 17 ms of the model's load on the first
    frame's path. An infinite total, which huge but finite weights could also give, is looked into
    entry by entry."""
    floats = [(k, v) for k, v in tensors.items() if v.is_floating_point()]
    if not floats or torch.isfinite(torch.nn.utils.get_total_norm([v for _, v in floats], 1.0, foreach=True)):
        return
    for k, v in floats:
        if not torch.isfinite(v).all():
            raise HowardError(f"{where}: entry {k} contains NaN or infinite values; the file is damaged")


def _zero_untracked(model: torch.nn.Module) -> None:
    """The BatchNorm step counters a file may leave out (`_check_state_dict` allows it), as a freshly
    built model has them: 0. Anything else still without storage is a bug, not a file problem."""
    for name, module in model.named_modules():
        for key, buf in module._buffers.items():
            if buf is not None and buf.is_meta:
                if not key.endswith("num_batches_tracked"):
                    raise RuntimeError(f"{name}.{key} was not loaded")
                module._buffers[key] = torch.zeros(buf.shape, dtype=buf.dtype)
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise RuntimeError(f"parameters not loaded: {', '.join(left[:3])}")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in n or n.startswith("code/") for n in zf.namelist())
    except zipfile.BadZipFile:
        return False


def _read_file(path: Path) -> tuple[dict, dict, str]:
    """(state_dict, defaults, format) from any supported checkpoint file."""
    if _is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any failure here means an unusable archive
            raise HowardError(f"{path}: TorchScript archive could not be read ({_first_line(exc)}); the file is "
                              f"damaged or from an incompatible exporter") from None
        defaults = {}
        # The official archives expose the settings on the top module; a scripted Howard or
        # reference model keeps them on its refiner (as mode, sample_pixels, threshold).
        refiner = getattr(module, "refiner", None)
        for name in _TORCHSCRIPT_ATTRS:
            short = name.replace("refine_", "")
            if hasattr(module, name):
                defaults[name] = getattr(module, name)
            elif name != "backbone_scale" and refiner is not None and hasattr(refiner, short):
                defaults[name] = getattr(refiner, short)
        return dict(module.state_dict()), defaults, "torchscript"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only names the offending global when the file is a real pickle with Python objects.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise HowardError(f"{path}: refused to load: it contains Python object {found.group(1)}; "
                              f"checkpoints may only hold tensors and plain containers") from None
        raise HowardError(f"{path}: not a readable PyTorch checkpoint (not a valid pickle); the file is "
                          f"truncated or not a checkpoint") from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/EOFError/... for damaged files
        raise HowardError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)}); the file is truncated "
                          f"or not a checkpoint") from None
    if not isinstance(obj, dict):
        raise HowardError(f"{path}: checkpoint holds a {type(obj).__name__}, expected a state_dict (dict)")
    if obj.get("format") == HOWARD_FORMAT:
        if obj.get("version") != HOWARD_VERSION:
            raise HowardError(f"{path}: Howard checkpoint version {obj.get('version')} is not supported by this "
                              f"release (expects {HOWARD_VERSION}); upgrade howard-core")
        return obj["state_dict"], {"meta": obj.get("meta", {})}, "howard"
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    # Strip the DataParallel prefix some training scripts leave behind.
    if obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj, {}, "state_dict"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def load_model(path: str | os.PathLike | None = None, **overrides) -> torch.nn.Module:
    """Load a checkpoint into an eval-mode `MattingRefine` (or `MattingBase`) on the CPU.

    `path=None` loads Howard's bundled default. Accepts an official BGMv2
    state_dict (refine or base), an official TorchScript module, or Howard's own
    format. The backbone and model kind are detected from the keys. `overrides`
    are `MattingRefine` options (backbone_scale, refine_mode, ...). The returned
    model carries `howard_meta` (backbone, kind, format, source, sha256, meta).
    Any problem with the file raises a one-line `HowardError`.
    """
    if path is None:
        return load_default_model(**overrides)
    path = Path(path)
    if not path.exists():
        raise HowardError(f"checkpoint {path} does not exist; pass the path to a .pth/.pt file "
                          f"(see `howard weights list`)")
    if path.is_dir():
        raise HowardError(f"checkpoint {path} is a folder; pass the .pth/.pt file inside it")
    if path.stat().st_size == 0:
        raise HowardError(f"checkpoint {path} is empty (0 bytes); download or copy it again")
    state_dict, defaults, fmt = _read_file(path)
    meta = defaults.pop("meta", {})
    backbone, kind = detect_architecture(state_dict, str(path))
    options = {**defaults, **overrides} if kind == "refine" else dict(overrides)
    # Built without storage and given the file's tensors: every weight comes from the file, so
    # the random initialisation a fresh model gets (0.1 s for MobileNetV2, on the way to the
    # first frame) would only be overwritten.
    with torch.device("meta"):
        model = build_model(backbone, kind, **options)
    model.load_state_dict(_check_state_dict(model, state_dict, path, backbone, kind), strict=False, assign=True)
    _zero_untracked(model)
    model.eval()
    model.howard_meta = {"backbone": backbone, "kind": kind, "format": fmt, "source": str(path),
                         "sha256": sha256_file(path), "meta": meta, "trained": meta.get("trained", True)}
    return model


def load_default_model(**overrides) -> torch.nn.Module:
    """Howard's bundled MobileNetV2 weights, or, where none are bundled, an untrained stand-in.

    The stand-in keeps the whole pipeline runnable on a machine with nothing
    downloaded; its `howard_meta["trained"]` is False and callers must say so,
    because its mattes are meaningless.
    """
    if DEFAULT_WEIGHTS.exists():
        return load_model(DEFAULT_WEIGHTS, **overrides)
    torch.manual_seed(0)
    model = build_model("mobilenetv2", "refine", **overrides).eval()
    model.howard_meta = {"backbone": "mobilenetv2", "kind": "refine", "format": "untrained", "source": None,
                         "sha256": None, "meta": {}, "trained": False}
    return model


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, meta: dict | None = None,
                    half: bool = False, train_state: dict | None = None) -> Path:
    """Write `model` in Howard's format, atomically; returns the path.

    The kind and backbone are read off the model's keys. `half=True` stores
    floats as fp16 (the bundled weights). `train_state` adds the "train" section
    the trainer resumes from; loaders of the plain format ignore it.
    """
    from howard_core.io.atomic import atomic_write

    backbone, kind = detect_architecture(model.state_dict())
    sd = {k: (v.detach().to("cpu", torch.float16 if half and v.is_floating_point() else v.dtype)).clone()
          for k, v in model.state_dict().items()}
    # A JSON round trip keeps meta to plain types, which weights_only loading requires
    # (torch.__version__, for one, is a str subclass it refuses).
    payload = {"format": HOWARD_FORMAT, "version": HOWARD_VERSION, "kind": kind, "backbone": backbone,
               "state_dict": sd, "meta": json.loads(json.dumps(meta or {}, default=str))}
    if train_state is not None:
        payload["train"] = train_state
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)
