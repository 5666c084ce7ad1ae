"""The training loop: the published two-stage BGMv2 recipe on synthetic or user data.

Stage "base" trains `MattingBase` (backbone + ASPP + decoder) at the training
resolution. Stage "refine" trains the whole `MattingRefine`, starting from the
base weights (`--init`, or `<out>/base.pt` when it exists), with the refiner
working on error-selected patches ("sampling" mode) as in the paper.

Optimiser: Adam with the published per-part learning rates (base: backbone
1e-4, ASPP 5e-4, decoder 5e-4; refine: backbone 5e-5, ASPP 5e-5, decoder 1e-4,
refiner 3e-4), all multiplied by `lr_scale`. The published runs start the
backbone from DeepLabV3 weights, which Howard cannot download; from scratch it
needs many more steps.

Files written in `out/` for a stage S:

    S-last.pt     resumable checkpoint (weights + optimizer + step + RNG + history),
                  every `save_every` steps, at the end, and on Ctrl-C or SIGTERM
    S.pt          the final weights in Howard's format (what --init and load_model take)
    S-loss.png    loss curves;  S-losses.csv  the same numbers

Sample k of the run is data index k (batch b of step s holds indices
s*B .. s*B+B-1), so a resumed run sees exactly the data it would have seen.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import howard_core
from howard_core.errors import HowardError
from howard_core.io.atomic import write_text_atomic
from howard_core.model.checkpoint import save_checkpoint

from .checkpoint import lr_phases as read_lr_phases
from .checkpoint import read_training_checkpoint
from .data import FolderDataset, SyntheticComposites
from .losses import base_loss, refine_loss
from .plot import write_loss_plot

STAGES = ("base", "refine")
BACKBONES = ("mobilenetv2", "resnet50", "resnet101")
DEFAULT_SIZE = {"base": 256, "refine": 512}
LEARNING_RATES = {
    "base": {"backbone": 1e-4, "aspp": 5e-4, "decoder": 5e-4},
    "refine": {"backbone": 5e-5, "aspp": 5e-5, "decoder": 1e-4, "refiner": 3e-4},
}


@dataclass
class TrainConfig:
    """One training run. `size` is an int (square) or (H, W); None picks the stage's default."""

    stage: str = "base"
    steps: int = 2000  # total steps of the stage; a resumed run continues up to this
    batch_size: int = 4
    size: int | tuple[int, int] | None = None
    out: str = "runs/howard"
    resume: str | None = None
    init: str | None = None
    data: str = "synthetic"
    device: str = "auto"
    seed: int = 0
    backbone: str | None = None  # None: the --init checkpoint's, else mobilenetv2
    lr_scale: float | None = None  # None: 1.0 for a new run, the checkpoint's own when resuming
    log_every: int = 10
    save_every: int = 500
    workers: int = 0
    amp: bool = True  # mixed precision on CUDA, as published; ignored on CPU
    backbone_scale: float = 0.25
    refine_sample_pixels: int = 80_000
    extra_meta: dict = field(default_factory=dict)

    def hw(self) -> tuple[int, int]:
        size = DEFAULT_SIZE[self.stage] if self.size is None else self.size
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _check_config(cfg: TrainConfig) -> None:
    if cfg.stage not in STAGES:
        raise HowardError(f"--stage {cfg.stage}: unknown stage; use base (first) or refine (second)")
    if cfg.backbone is not None and cfg.backbone not in BACKBONES:
        raise HowardError(f"--backbone {cfg.backbone}: unknown; use one of {', '.join(BACKBONES)}")
    if cfg.steps < 1:
        raise HowardError(f"--steps {cfg.steps}: must be at least 1")
    if cfg.batch_size < 2:
        # BatchNorm cannot normalise the ASPP's 1x1 pooled features of a single image.
        raise HowardError(f"--batch-size {cfg.batch_size}: training needs at least 2 images per batch")
    h, w = cfg.hw()
    if cfg.stage == "base":
        unit, why = 16, "the base stage needs multiples of 16 (the encoder's stride)"
    else:
        unit = round(16 / cfg.backbone_scale)
        if abs(unit * cfg.backbone_scale - 16) > 1e-9:
            raise HowardError(f"--backbone-scale {cfg.backbone_scale}: use 1/2, 1/4 or 1/8 for training")
        why = f"the refine stage needs multiples of {unit} (16 at backbone scale {cfg.backbone_scale})"
    for name, v in (("height", h), ("width", w)):
        if v % unit or v <= 0:
            near = max(unit, round(v / unit) * unit)
            raise HowardError(f"--size {h}x{w}: {name} {v} does not fit; {why}, e.g. {near}")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HowardError(f"--device {name}: not a device; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HowardError(f"--device {name}: this torch build or machine has no CUDA; use --device cpu")
    return device


def _dataset(cfg: TrainConfig):
    h, w = cfg.hw()
    if cfg.data == "synthetic":
        return SyntheticComposites(length=cfg.steps * cfg.batch_size, size=(h, w), seed=cfg.seed, split="train")
    return FolderDataset(cfg.data, size=(h, w), seed=cfg.seed, split="train")


def _build(stage: str, backbone: str, cfg: TrainConfig) -> torch.nn.Module:
    from howard_core.model import MattingBase, MattingRefine

    if stage == "base":
        return MattingBase(backbone)
    return MattingRefine(backbone, backbone_scale=cfg.backbone_scale, refine_mode="sampling",
                         refine_sample_pixels=cfg.refine_sample_pixels)


def _init_source(path: str) -> tuple[torch.nn.Module, str]:
    """Any checkpoint howard_core.model.load_model reads (Howard, official state_dict or TorchScript)."""
    from howard_core.model import load_model

    model = load_model(path)
    return model, getattr(model, "howard_meta", {}).get("backbone") or model.backbone_name


def _copy_matching(dst: torch.nn.Module, src: torch.nn.Module) -> tuple[int, int]:
    """Copy every tensor whose name and shape match; returns (copied, total in dst)."""
    target = dst.state_dict()
    matched = {k: v for k, v in src.state_dict().items() if k in target and v.shape == target[k].shape}
    dst.load_state_dict(matched, strict=False)
    return len(matched), len(target)


def _optimizer(model: torch.nn.Module, stage: str, lr_scale: float) -> torch.optim.Adam:
    groups = [{"params": getattr(model, part).parameters(), "lr": lr * lr_scale}
              for part, lr in LEARNING_RATES[stage].items()]
    return torch.optim.Adam(groups)


def _set_lr_scale(optimizer: torch.optim.Adam, stage: str, lr_scale: float) -> None:
    for group, lr in zip(optimizer.param_groups, LEARNING_RATES[stage].values(), strict=True):
        group["lr"] = lr * lr_scale


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _config_dict(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    d["size"] = list(cfg.hw())
    return d


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _write_csv(path: Path, history: list[dict]) -> None:
    if not history:
        return
    buf = io.StringIO()
    names = list(history[0])
    writer = csv.DictWriter(buf, fieldnames=names, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)

    write_text_atomic(path, buf.getvalue())


def _loader(cfg: TrainConfig, step: int, device: torch.device) -> DataLoader:
    """Batches of samples step * B .. steps * B - 1 of the run's data stream, in order."""
    return DataLoader(_dataset(cfg), batch_size=cfg.batch_size,
                      sampler=range(step * cfg.batch_size, cfg.steps * cfg.batch_size),
                      num_workers=cfg.workers, drop_last=True, pin_memory=device.type == "cuda",
                      # Its own generator: the loader draws a seed when iterated, which would otherwise
                      # shift the global stream (dropout) between a resumed and an uninterrupted run.
                      generator=torch.Generator().manual_seed(cfg.seed))


class _Progress:
    """Loss sums over the steps since the last log line (one window), and the run's speed."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.count = 0
        self.run_steps = 0
        self.t_window, self.t_run = time.perf_counter(), time.perf_counter()

    def add(self, loss: torch.Tensor, terms: dict[str, float]) -> None:
        self.run_steps += 1
        self.sums["loss"] = self.sums.get("loss", 0.0) + float(loss.detach())
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def close_window(self, step: int) -> tuple[dict, float]:
        """The history entry of the window ending at `step` (mean losses, its it/s) and the whole run's it/s;
        the next window starts now."""
        now = time.perf_counter()
        rate = self.count / max(now - self.t_window, 1e-9)
        entry = {"step": step, **{k: v / self.count for k, v in self.sums.items()}, "it_s": rate}
        overall = self.run_steps / max(now - self.t_run, 1e-9)
        self.sums, self.count, self.t_window = {}, 0, now
        return entry, overall


class _Run:
    """One stage's training state: the model, optimizer and AMP scaler, the step, the loss history and the
    learning-rate phases, where they are saved, and what the run started from (a resumed checkpoint, an
    --init checkpoint, or nothing). Batches are dicts of (B, C, H, W) float32 tensors, sRGB 0..1."""

    def __init__(self, cfg: TrainConfig, log):
        self.cfg, self.log = cfg, log
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = _device(cfg.device)
        self.last_path, self.final_path = self.out / f"{cfg.stage}-last.pt", self.out / f"{cfg.stage}.pt"
        self.plot_path, self.csv_path = self.out / f"{cfg.stage}-loss.png", self.out / f"{cfg.stage}-losses.csv"
        self.started = datetime.now(UTC).isoformat(timespec="seconds")
        resume, init_model = self._start_from()
        self._build_model(init_model)
        del init_model
        if resume is not None:
            self._restore(resume)

    def _start_from(self) -> tuple[dict | None, torch.nn.Module | None]:
        """(the checkpoint to resume or None, the --init model or None); sets the backbone and init name."""
        cfg = self.cfg
        resume = read_training_checkpoint(cfg.resume) if cfg.resume else None
        self.init_name = cfg.init
        if resume is not None:
            if resume["kind"] != cfg.stage:
                raise HowardError(f"{cfg.resume}: is a {resume['kind']} checkpoint but --stage is {cfg.stage}; "
                                  f"resume with --stage {resume['kind']}, or start the refine stage with --init")
            self.backbone = resume["backbone"]
            if cfg.backbone and cfg.backbone != self.backbone:
                raise HowardError(f"{cfg.resume}: was trained with {self.backbone}; drop --backbone {cfg.backbone}")
            return resume, None
        if self.init_name is None and cfg.stage == "refine" and (self.out / "base.pt").exists():
            self.init_name = str(self.out / "base.pt")
        if self.init_name is None:
            self.backbone = cfg.backbone or "mobilenetv2"
            return None, None
        init_model, self.backbone = _init_source(self.init_name)
        if cfg.backbone and cfg.backbone != self.backbone:
            raise HowardError(f"{self.init_name}: holds a {self.backbone} model; drop --backbone {cfg.backbone} "
                              f"or pick a {cfg.backbone} checkpoint")
        return None, init_model

    def _build_model(self, init_model: torch.nn.Module | None) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.model = _build(cfg.stage, self.backbone, cfg)
        if init_model is not None:
            copied, total = _copy_matching(self.model, init_model)
            if copied == 0:
                raise HowardError(f"{self.init_name}: no weight matches the {self.backbone} {cfg.stage} model; "
                                  f"pick a BGMv2 checkpoint of that backbone")
            self.log(f"init: {copied}/{total} tensors from {self.init_name}")
        self.model.to(self.device).train()
        lr_scale = 1.0 if cfg.lr_scale is None else cfg.lr_scale
        self.optimizer = _optimizer(self.model, cfg.stage, lr_scale)
        self.lr_phases = [{"from_step": 0, "lr_scale": lr_scale}]
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step, self.history = 0, []

    def _restore(self, resume: dict) -> None:
        cfg = self.cfg
        self.model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                    for k, v in resume["state_dict"].items()})
        state = resume["train"]
        self.optimizer.load_state_dict(state["optimizer"])
        if self.use_amp and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], self.device)
        self.step, self.history = int(state["step"]), list(state["history"])
        self.init_name = resume["meta"].get("init")
        self.lr_phases = read_lr_phases(state)
        self.log(f"resume: {cfg.resume} at step {self.step}")
        # A resumed run keeps its learning rates unless told otherwise: then from this step on
        # (e.g. a lower rate to finish a run).
        if cfg.lr_scale is not None and cfg.lr_scale != self.lr_phases[-1]["lr_scale"]:
            _set_lr_scale(self.optimizer, cfg.stage, cfg.lr_scale)
            self.lr_phases.append({"from_step": self.step, "lr_scale": cfg.lr_scale})
            self.log(f"lr: scale {cfg.lr_scale} from step {self.step} (was {self.lr_phases[-2]['lr_scale']})")

    def meta(self) -> dict:
        cfg = self.cfg
        return {"trainer": "howard_core.train", "recipe": "BGMv2 two-stage (Lin et al., CVPR 2021)",
                "howard_version": howard_core.__version__, "torch": str(torch.__version__), "stage": cfg.stage,
                "backbone": self.backbone, "steps": self.step, "batch_size": cfg.batch_size, "size": list(cfg.hw()),
                "data": cfg.data, "seed": cfg.seed, "init": self.init_name, "device": str(self.device),
                "started": self.started, "saved": datetime.now(UTC).isoformat(timespec="seconds"),
                "losses": self.history[-1] if self.history else None, **cfg.extra_meta}

    def save_last(self) -> None:
        """The resumable checkpoint, the loss plot and the CSV of the losses so far."""
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict() if self.use_amp else None, "rng": _rng_state(self.device),
                 "history": self.history, "config": _config_dict(self.cfg), "lr_phases": self.lr_phases}
        save_checkpoint(self.last_path, self.model, self.meta(), train_state=state)
        h, w = self.cfg.hw()
        write_loss_plot(self.plot_path, self.history,
                        f"Howard training: {self.cfg.stage} stage, {self.backbone}, {h}x{w}")
        _write_csv(self.csv_path, self.history)

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """One optimizer step on a batch (src, bgr, pha, fgr); returns the loss and its terms."""
        device = self.device
        src = batch["src"].to(device, non_blocking=True)
        bgr = batch["bgr"].to(device, non_blocking=True)
        true_pha = batch["pha"].to(device, non_blocking=True)
        true_fgr = batch["fgr"].to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=self.use_amp):
            if self.cfg.stage == "base":
                pha, fgr, err, _ = self.model(src, bgr)
                loss, terms = base_loss(pha, fgr, err, true_pha, true_fgr)
            else:
                pha, fgr, pha_sm, fgr_sm, err_sm, _ = self.model(src, bgr)
                loss, terms = refine_loss(pha, fgr, pha_sm, fgr_sm, err_sm, true_pha, true_fgr)
        if not torch.isfinite(loss):
            raise HowardError(f"step {self.step + 1}: the loss is {float(loss)}; lower --lr-scale or resume from "
                              f"{self.last_path}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return loss, terms

    def log_window(self, progress: _Progress) -> None:
        """Add the mean losses since the last log line to the history and print them."""
        cfg = self.cfg
        entry, overall = progress.close_window(self.step)
        self.history.append(entry)
        parts = " ".join(f"{k} {v:.4f}" for k, v in entry.items() if k not in ("step", "loss", "it_s"))
        self.log(f"{cfg.stage} step {self.step}/{cfg.steps}  loss {entry['loss']:.4f} [{parts}]  "
                 f"{entry['it_s']:.2f} it/s  eta {_fmt_time((cfg.steps - self.step) / overall)}")


def train(config: TrainConfig, log=print) -> Path:
    """Run (or resume) one stage; returns the path of the final weights `<out>/<stage>.pt`.

    Ctrl-C saves `<out>/<stage>-last.pt` and the plot, then re-raises
    KeyboardInterrupt. User-fixable problems raise HowardError.
    """
    cfg = config
    _check_config(cfg)
    run = _Run(cfg, log)
    if run.step >= cfg.steps:
        raise HowardError(f"{cfg.resume}: already at step {run.step}; raise --steps above {run.step} to train "
                          f"further")
    loader = _loader(cfg, run.step, run.device)
    progress = _Progress()
    try:
        for batch in loader:
            loss, terms = run.train_step(batch)
            progress.add(loss, terms)
            if run.step % cfg.log_every == 0 or run.step == cfg.steps:
                run.log_window(progress)
            if run.step % cfg.save_every == 0 and run.step < cfg.steps:
                run.save_last()
    except KeyboardInterrupt:
        run.save_last()
        log(f"interrupted at step {run.step}; resume with --resume {run.last_path}")
        raise

    run.save_last()
    save_checkpoint(run.final_path, run.model, run.meta())
    log(f"done: {run.final_path} ({run.step} steps); curves in {run.plot_path}")
    return run.final_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="howard train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=STAGES, default="base", help="base first, then refine (default base)")
    p.add_argument("--steps", type=int, default=2000, help="total steps of the stage (default 2000)")
    p.add_argument("--batch-size", type=int, default=4, help="images per step, at least 2 (default 4)")
    p.add_argument("--size", default=None,
                   help="training size, N or HxW (default 256 for base, 512 for refine)")
    p.add_argument("--out", default="runs/howard", help="folder for checkpoints and plots (default runs/howard)")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                   help="continue a run; without a value, <out>/<stage>-last.pt")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from these weights (Howard, official BGMv2 .pth or TorchScript)")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' or a folder with fgr/, pha/, bgr/ and optional clean/ (default synthetic)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the data stream (default 0)")
    p.add_argument("--backbone", choices=BACKBONES, default=None, help="default: the --init model's, or mobilenetv2")
    p.add_argument("--lr-scale", type=float, default=None,
                   help="multiplies the published learning rates (default 1; on --resume, the run's own, "
                        "and a new value applies from the resumed step on)")
    p.add_argument("--log-every", type=int, default=10, help="print progress every N steps (default 10)")
    p.add_argument("--save-every", type=int, default=500, help="write <stage>-last.pt every N steps (default 500)")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes (default 0: in the loop)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="disable mixed precision on CUDA")
    return p


def _parse_size(text: str | None):
    if text is None:
        return None
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return (parts[0], parts[1])
    raise HowardError(f"--size {text}: expected N or HxW, e.g. 256 or 256x384")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig(stage=args.stage, steps=args.steps, batch_size=args.batch_size, size=_parse_size(args.size),
                      out=args.out, init=args.init, data=args.data, device=args.device, seed=args.seed,
                      backbone=args.backbone, lr_scale=args.lr_scale, log_every=max(1, args.log_every),
                      save_every=max(1, args.save_every), workers=args.workers, amp=args.amp)
    if args.resume is not None:
        cfg.resume = args.resume or str(Path(args.out) / f"{args.stage}-last.pt")
    return cfg


def _stop(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    """`howard train ...`; returns the exit code (130 after Ctrl-C or SIGTERM). HowardError propagates
    to the CLI."""
    args = build_parser().parse_args(argv)
    # Farm schedulers and `kill` stop a job with SIGTERM (and a background job never sees Ctrl-C):
    # both save the resumable checkpoint, as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        train(config_from_args(args), log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
