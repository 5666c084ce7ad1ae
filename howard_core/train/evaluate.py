"""`howard eval`: matting errors of a model and of the classical baseline on a held-out synthetic set.

The held-out set is `SyntheticComposites(split="heldout", seed=S)`: the
"heldout" split feeds different entropy to the sample generator than the
"train" split the trainer uses, so no training run, whatever its seed, sees
these samples; S (default 0) picks among reproducible held-out sets. Samples
have the same plate gap as training (misaligned, regraded, noisy clean plate,
subject shadow in the plate only).

Reported per method, averaged over the samples (units in the key names, see
`metrics`): sad_div1e3, mse_x1e3, grad_div1e3, conn_div1e3, fgr_mse_x1e3,
measured over the whole frame.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from howard_core.errors import HowardError
from howard_core.io.atomic import write_bytes_atomic, write_text_atomic

from .baseline import difference_key
from .data import SyntheticComposites
from .metrics import matting_errors

UNITS = {
    "sad_div1e3": "sum |alpha error| / 1000 (alpha 0..1)",
    "mse_x1e3": "mean squared alpha error x 1000",
    "grad_div1e3": "sum (|grad pred| - |grad true|)^2 / 1000, Gaussian derivative sigma 1.4",
    "conn_div1e3": "connectivity error / 1000, threshold step 0.1",
    "fgr_mse_x1e3": "mean squared foreground error where true alpha > 0, x 1000 (sRGB 0..1)",
}


def _check_size(model: torch.nn.Module, h: int, w: int) -> None:
    scale = getattr(model, "backbone_scale", None)
    if scale is None:
        unit, what = 16, "the base model needs multiples of 16"
    else:
        unit, what = max(4, round(16 / scale)), f"this refine model (backbone scale {scale}) needs multiples"
        what += f" of {unit}"
    if h % unit or w % unit:
        raise HowardError(f"--size {h}x{w}: {what}; e.g. --size {max(unit, round(h / unit) * unit)}")


def _run_model(model: torch.nn.Module, src: np.ndarray, bgr: np.ndarray, device) -> tuple[np.ndarray, np.ndarray]:
    """Model alpha (H, W) and foreground (H, W, 3) for one plate / clean plate pair (H, W, 3)."""
    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].to(device)

    with torch.no_grad():
        out = model(t(src), t(bgr))
    return out[0][0, 0].float().cpu().numpy(), out[1][0].float().cpu().numpy().transpose(1, 2, 0)


def _grey(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[:, :, None], 3, axis=2)


def side_by_side(src: np.ndarray, true_pha: np.ndarray, baseline_pha: np.ndarray,
                 model_pha: np.ndarray | None = None) -> np.ndarray:
    """A labelled strip (H + 24, k*W, 3) uint8 BGR: plate | truth | baseline | model.

    src (H, W, 3) sRGB 0..1, alphas (H, W) 0..1; the model panel is left out when None.
    """
    panels = [("plate", src), ("truth", _grey(true_pha)), ("baseline", _grey(baseline_pha))]
    if model_pha is not None:
        panels.append(("model", _grey(model_pha)))
    h, w = true_pha.shape
    strip = np.full((h + 24, w * len(panels), 3), 255, np.uint8)
    for i, (label, img) in enumerate(panels):
        strip[24:, i * w:(i + 1) * w] = (np.clip(img, 0, 1)[:, :, ::-1] * 255 + 0.5).astype(np.uint8)
        cv2.putText(strip, label, (i * w + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def write_side_by_side(path, *args) -> Path:
    """`side_by_side(*args)` written to `path` as PNG, atomically."""
    ok, buf = cv2.imencode(".png", side_by_side(*args))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return write_bytes_atomic(path, buf.tobytes())


def _mean(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def evaluate(model=None, n: int = 64, size=512, seed: int = 0, device: str = "cpu", images=None,
             max_images: int = 8) -> dict:
    """Errors of `model` and of the difference-key baseline on `n` held-out samples.

    `model`: None (baseline only), a `MattingBase`/`MattingRefine` module, or a
    checkpoint path for `howard_core.model.load_model`. `size`: N or (H, W).
    `images`: a folder to receive side-by-side PNGs of the first `max_images`
    samples. Returns a JSON-ready dict with "baseline" and "model" (None
    without a model) holding the averaged metrics.
    """
    info = None
    if isinstance(model, (str, Path)):
        from howard_core.model import load_model

        model = load_model(model)
    if model is not None:
        meta = getattr(model, "howard_meta", {})
        info = {"class": type(model).__name__, "source": meta.get("source"), "trained": meta.get("trained", True),
                "backbone": meta.get("backbone", getattr(model, "backbone_name", None))}
        model = model.to(device).eval()
    ds = SyntheticComposites(length=n, size=size, seed=seed, split="heldout")
    h, w = ds.size
    if model is not None:
        _check_size(model, h, w)
    rows_base, rows_model = [], []
    for i in range(n):
        s = ds.sample(i)
        base_pha, base_fgr = difference_key(s.src, s.bgr)
        rows_base.append(matting_errors(base_pha, s.pha, base_fgr, s.fgr))
        model_pha = None
        if model is not None:
            model_pha, model_fgr = _run_model(model, s.src, s.bgr, device)
            rows_model.append(matting_errors(model_pha, s.pha, model_fgr, s.fgr))
        if images is not None and i < max_images:
            write_side_by_side(Path(images) / f"heldout_{seed}_{i:04d}.png", s.src, s.pha, base_pha, model_pha)
    return {"split": "heldout", "seed": seed, "n": n, "size": [h, w], "units": UNITS,
            "baseline": {"name": "clean-plate difference key", **_mean(rows_base)},
            "model": ({**info, **_mean(rows_model)} if model is not None else None)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="howard eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None,
                   help="weights to evaluate (default: Howard's bundled model)")
    p.add_argument("--baseline-only", action="store_true", help="only the classical difference key")
    # The defaults are those of the bundled model's card, so `howard eval` reproduces its figures.
    p.add_argument("--n", type=int, default=64, help="held-out samples (default 64)")
    p.add_argument("--size", type=int, default=512, help="square sample size (default 512)")
    p.add_argument("--seed", type=int, default=0, help="which held-out set (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--images", default=None, metavar="DIR", help="write plate|truth|baseline|model PNGs here")
    p.add_argument("--out", default=None, metavar="JSON", help="also write the report to this file")
    return p


def main(argv=None) -> int:
    """`howard eval ...`: prints the report as JSON; HowardError propagates to the CLI."""
    args = build_parser().parse_args(argv)
    if args.n < 1:
        raise HowardError(f"--n {args.n}: evaluate at least 1 sample")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise HowardError(f"--device {args.device}: this machine has no CUDA; use --device cpu")
    model = None
    if not args.baseline_only:
        from howard_core.model import load_model

        model = load_model(args.checkpoint)
    report = evaluate(model, n=args.n, size=args.size, seed=args.seed, device=args.device, images=args.images)
    text = json.dumps(report, indent=2)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
