"""`howard train bundle RUN`: turn a finished training run into Howard's bundled default weights.

A run folder holds what `howard train` wrote for both stages (`base-last.pt`,
`refine-last.pt`, ...). Bundling takes the latest refine weights (`refine-last.pt`,
also written when a run is stopped with Ctrl-C), evaluates them on a held-out
synthetic set against the difference-key baseline, then writes

    <out>.pt     the refine weights in fp16, Howard's format, with the model card in meta
    <out>.json   the same model card, readable without torch

The model card records what the model is (a demo model trained on synthetic
data), the data, both stages' settings and step counts, the last losses, and
the held-out metrics of the model and of the baseline. `--out` defaults to the
package's `weights/howard_mobilenetv2`, the file `load_model()` loads with no
argument.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

from howard_core.errors import HowardError
from howard_core.io.atomic import write_json_atomic
from howard_core.model.checkpoint import DEFAULT_WEIGHTS, load_model, save_checkpoint

from .checkpoint import lr_phases, read_training_checkpoint
from .data import PHOTOS, PlateGap
from .evaluate import evaluate

MAX_BYTES = 12 * 1024 * 1024
PRODUCTION_NOTE = ("For production mattes install the official BGMv2 weights (MIT licence, "
                   "https://github.com/PeterL1n/BackgroundMattingV2): `howard weights install "
                   "pytorch_resnet50.pth`, then `howard matte ... --model resnet50`.")


def _stage_summary(ck: dict) -> dict:
    train = ck["train"]
    cfg, history = train["config"], train["history"]
    return {"steps": int(train["step"]), "batch_size": cfg["batch_size"], "size": cfg["size"],
            "lr_phases": lr_phases(train),
            "seed": cfg["seed"], "data": cfg["data"], "device": ck["meta"].get("device"),
            "backbone_scale": cfg.get("backbone_scale"), "refine_sample_pixels": cfg.get("refine_sample_pixels"),
            "started": ck["meta"].get("started"), "saved": ck["meta"].get("saved"),
            "last_losses": history[-1] if history else None}


def model_card(run: Path, evaluation: dict) -> dict:
    """The card for the weights of `run`, given their held-out `evaluation` (from `evaluate`)."""
    stages = {}
    for stage in ("base", "refine"):
        path = run / f"{stage}-last.pt"
        if path.is_file():
            stages[stage] = _stage_summary(read_training_checkpoint(path))
    model, base = evaluation["model"], evaluation["baseline"]
    margin = {k: round(base[k] / model[k], 2) for k in evaluation["units"] if model.get(k)}
    gap = PlateGap()
    return {
        "name": "Howard demo model (BGMv2, MobileNetV2 backbone)",
        "what_it_is": ("A small demo model trained by Howard's own pipeline on synthetic composites only. It "
                       "lets `howard demo`, CI and offline machines pull a real matte with nothing downloaded. "
                       "It has never seen real footage of people; expect rough edges and failures on real "
                       "plates. " + PRODUCTION_NOTE),
        "architecture": "BGMv2 MattingRefine (Lin et al., CVPR 2021), exact layer layout of the official weights",
        "data": {"generator": "howard_core.train.data.SyntheticComposites (split 'train')",
                 "subjects": "procedural person-like layers: silhouettes, hair-like strands, motion blur, "
                             "semi-transparent cloth",
                 "backgrounds": f"procedural scenes and crops of {len(PHOTOS)} CC0/public-domain photographs "
                                f"shipped in the scikit-image wheel ({', '.join(PHOTOS)})",
                 "plate_gap": {"corner_shift": gap.corner_shift, "parallax": gap.parallax,
                               "exposure_log2_std": gap.exposure, "white_balance_log2_std": gap.white_balance,
                               "noise_max": gap.noise, "blur_max": gap.blur, "shadow_prob": gap.shadow_prob,
                               "note": "fractions of max(H, W); the clean plate lacks the subject's shadow"}},
        "training": {"recipe": "base stage, then whole network with the refiner; published BGMv2 losses",
                     "init": "from scratch (no ImageNet/DeepLabV3 weights can be downloaded)", **stages},
        "evaluation": {"set": f"SyntheticComposites split 'heldout', seed {evaluation['seed']}, "
                              f"{evaluation['n']} samples of {evaluation['size'][0]}x{evaluation['size'][1]}",
                       "units": evaluation["units"], "model": {k: model[k] for k in evaluation["units"]},
                       "baseline": {k: base[k] for k in evaluation["units"]},
                       "baseline_over_model": margin},
        "bundled": datetime.now(UTC).isoformat(timespec="seconds"),
        "licence": "MIT, like the rest of Howard",
    }


def bundle(run, out=None, n: int = 64, size: int = 512, seed: int = 0, log=print) -> Path:
    """Evaluate `run/refine-last.pt`, then write it as fp16 `out`.pt with its model card (and `out`.json)."""
    run = Path(run)
    weights = run / "refine-last.pt"
    if not weights.is_file():
        raise HowardError(f"{run}: no refine-last.pt; train the refine stage first "
                          f"(`howard train --stage refine --out {run}`)")
    model = load_model(weights)
    if model.howard_meta["kind"] != "refine":
        raise HowardError(f"{weights}: is a {model.howard_meta['kind']} model; bundle a refine-stage checkpoint")
    nbytes = sum(v.numel() * 2 for v in model.state_dict().values() if v.is_floating_point())
    if nbytes > MAX_BYTES:
        raise HowardError(f"{weights}: its fp16 weights alone take {nbytes / 2**20:.1f} MiB, over the "
                          f"{MAX_BYTES / 2**20:.0f} MiB a bundle may take; bundle a MobileNetV2 model")
    # The bundle is fp16: evaluate the weights exactly as they will ship.
    model.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                           for k, v in model.state_dict().items()})
    log(f"evaluating {weights} on {n} held-out samples of {size}x{size} ...")
    with torch.inference_mode():
        evaluation = evaluate(model, n=n, size=size, seed=seed)
    card = model_card(run, evaluation)
    target = Path(out) if out is not None else DEFAULT_WEIGHTS
    pt = target.with_suffix(".pt")
    save_checkpoint(pt, model, {"trained": True, "demo": True, "model_card": card}, half=True)
    write_json_atomic(pt.with_suffix(".json"), card)
    log(f"wrote {pt} ({pt.stat().st_size / 2**20:.1f} MiB) and {pt.with_suffix('.json')}")
    log("held-out SAD/1e3: model {:.3f}, baseline {:.3f} (baseline/model {:.2f}x)".format(
        card["evaluation"]["model"]["sad_div1e3"], card["evaluation"]["baseline"]["sad_div1e3"],
        card["evaluation"]["baseline_over_model"].get("sad_div1e3", float("nan"))))
    return pt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="howard train bundle", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="the --out folder of a finished two-stage training run")
    p.add_argument("--out", default=None, help=f"weights path without suffix (default {DEFAULT_WEIGHTS})")
    p.add_argument("--n", type=int, default=64, help="held-out samples to evaluate (default 64)")
    p.add_argument("--size", type=int, default=512, help="held-out sample size (default 512)")
    p.add_argument("--seed", type=int, default=0, help="which held-out set (default 0)")
    args = p.parse_args(argv)
    bundle(args.run, args.out, n=args.n, size=args.size, seed=args.seed, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
