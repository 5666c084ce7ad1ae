"""`howard demo`: the whole main job on a generated shot, with nothing downloaded.

It renders a short hand-held plate (scene-linear EXR sequence, frames 1001 on)
and a clean-plate take (ProRes movie, different length, exposure and camera
path), runs `howard_core.matte` on them exactly as the CLI would, and writes a
contact sheet PNG: plate | aligned clean plate | alpha | composite over a
checkerboard, for a first, middle and last frame, read back from the written EXRs.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from howard_core.errors import HowardError

SHEET_COLUMNS = ("plate", "aligned clean plate", "alpha", "over checkerboard")


def make_inputs(folder: Path, width: int, height: int, frames: int, seed: int) -> tuple[str, str]:
    """Write the generated plate and clean plate under `folder`; returns (plate pattern, clean movie)."""
    from howard_core.io import open_sink
    from howard_core.synth import make_shot, srgb_to_linear

    shot = make_shot(width=width, height=height, plate_frames=frames, clean_frames=frames + 6, seed=seed,
                     clean_offset=2.0)
    plate = folder / "plate" / "plate.####.exr"
    clean = folder / "clean_plate.mov"
    opaque = np.ones((height, width), np.float32)
    with open_sink(plate, "exr", colorspace="linear") as sink:
        for k, frame in enumerate(shot.plate):
            sink.write(1001 + k, srgb_to_linear(frame), opaque)
    with open_sink(clean, "prores", colorspace="srgb", fps=24) as sink:
        for k, frame in enumerate(shot.clean):
            sink.write(k, frame, np.ones(frame.shape[:2], np.float32))
    return str(plate), str(clean)


def _read_exr(path: str) -> dict[str, np.ndarray]:
    import OpenImageIO as oiio

    buf = oiio.ImageBuf(path)
    if buf.has_error:
        raise HowardError(f"{path}: could not be read back ({buf.geterror()})")
    pixels = buf.get_pixels(oiio.FLOAT)
    return {name: pixels[..., c] for c, name in enumerate(buf.spec().channelnames)}


def _checkerboard(h: int, w: int, cell: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // cell) + (xx // cell)) % 2 == 0, 0.8, 0.55).astype(np.float32)
    return np.repeat(board[..., None], 3, axis=2)


def contact_sheet(report: dict, out_path: Path, thumb_width: int = 400) -> Path:
    """Build the contact sheet from the frames the run wrote (their RGBA and `bg` layer)."""
    from howard_core.io import write_bytes_atomic
    from howard_core.synth import linear_to_srgb

    rows_meta = report["frames"]
    if not rows_meta:
        raise HowardError("the run wrote no frames, so there is nothing for a contact sheet")
    picks = sorted({0, len(rows_meta) // 2, len(rows_meta) - 1})
    rows = []
    for k in picks:
        ch = _read_exr(rows_meta[k]["output"])
        alpha = ch["A"]
        premult_lin = np.stack([ch["R"], ch["G"], ch["B"]], axis=2)
        bg = linear_to_srgb(np.stack([ch["bg.R"], ch["bg.G"], ch["bg.B"]], axis=2))
        # The plate: the premultiplied foreground over the aligned clean plate would hide alignment
        # errors, so show the plate itself as the run read it.
        plate = _plate_frame(report, rows_meta[k]["frame"])
        board = _checkerboard(*alpha.shape)
        comp = linear_to_srgb(premult_lin + (1 - alpha[..., None]) * _srgb_to_lin(board))
        tiles = [plate, bg, np.repeat(alpha[..., None], 3, axis=2), comp]
        h = int(round(alpha.shape[0] * thumb_width / alpha.shape[1]))
        row = [_to_u8(cv2.resize(np.clip(t, 0, 1), (thumb_width, h), interpolation=cv2.INTER_AREA)) for t in tiles]
        label = np.full((h, 90, 3), 30, np.uint8)
        cv2.putText(label, str(rows_meta[k]["frame"]), (8, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (230, 230, 230), 1, cv2.LINE_AA)
        rows.append(np.concatenate([label, *row], axis=1))
    header = np.full((34, rows[0].shape[1], 3), 30, np.uint8)
    for c, name in enumerate(SHEET_COLUMNS):
        cv2.putText(header, name, (90 + c * thumb_width + 8, 23), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (230, 230, 230), 1, cv2.LINE_AA)
    sheet = np.concatenate([header, *rows], axis=0)
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise HowardError(f"{out_path}: PNG encoding failed")
    return write_bytes_atomic(out_path, png.tobytes())


def _to_u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def _srgb_to_lin(x: np.ndarray) -> np.ndarray:
    from howard_core.synth import srgb_to_linear

    return srgb_to_linear(x)


def _plate_frame(report: dict, frame: int) -> np.ndarray:
    from howard_core.io import open_source

    with open_source(report["plate"], frames=[frame]) as src:
        return src.read(frame)


def run_demo(out: str | Path = "howard_demo", width: int = 960, height: int = 540, frames: int = 12,
             seed: int = 2026, progress=None, **options) -> dict:
    """Generate the inputs, run the pipeline on them, write the contact sheet; returns the report
    with `contact_sheet` and `inputs` added. `options` go to `howard_core.matte`."""
    from howard_core.pipeline import matte
    from howard_core.runtime import cpu_cores

    out = Path(out)
    plate, clean = make_inputs(out / "inputs", width, height, frames, seed)
    options.setdefault("layers", ["fg", "err", "ref", "bg"])
    # A measured thread budget changes inference's thread count mid-run, and oneDNN's sums then round
    # differently (one half-float step in a few pixels): a fixed count makes the demo reproducible, run
    # to run and before and after a change.
    options.setdefault("threads", cpu_cores())
    report = matte(plate, clean, out / "matte" / "plate_matte.####.exr", progress=progress, **options)
    report["contact_sheet"] = str(contact_sheet(report, out / "contact_sheet.png"))
    report["inputs"] = {"plate": plate, "clean_plate": clean}
    return report
