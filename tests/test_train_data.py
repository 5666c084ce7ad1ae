"""The synthetic composite generator and the user-folder dataset."""

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from howard_core.errors import HowardError
from howard_core.train.data import FolderDataset, PlateGap, SyntheticComposites

KEYS = {"src": 3, "bgr": 3, "pha": 1, "fgr": 3, "bgr_true": 3}


def test_samples_are_deterministic_per_split_seed_and_index():
    a = SyntheticComposites(size=64, seed=3)
    b = SyntheticComposites(size=64, seed=3)
    first, again = a[5], b[5]
    for k in KEYS:
        assert torch.equal(first[k], again[k]), k
    assert not torch.equal(a[5]["src"], a[6]["src"])
    assert not torch.equal(a[5]["src"], SyntheticComposites(size=64, seed=4)[5]["src"])
    held = SyntheticComposites(size=64, seed=3, split="heldout")
    assert not torch.equal(a[5]["pha"], held[5]["pha"])


def test_shapes_types_and_ranges():
    ds = SyntheticComposites(size=(64, 96), seed=0)
    soft = 0
    for i in range(4):
        s = ds[i]
        assert set(s) == set(KEYS)
        for k, c in KEYS.items():
            assert s[k].shape == (c, 64, 96) and s[k].dtype == torch.float32, k
            assert float(s[k].min()) >= 0 and float(s[k].max()) <= 1, k
        pha = s["pha"]
        assert (pha == 0).any() and (pha == 1).any()  # background and solid subject both present
        soft += int(((pha > 0.05) & (pha < 0.95)).sum())
    assert soft > 0  # soft edges / strands / cloth


def test_without_a_gap_the_plate_is_the_exact_composite_and_clean_plate_is_true_background():
    ds = SyntheticComposites(size=64, seed=1, gap=PlateGap.none())
    for i in range(3):
        s = ds.sample(i)
        expected = s.fgr * s.pha[:, :, None] + s.bgr_true * (1 - s.pha[:, :, None])
        np.testing.assert_allclose(s.src, expected, atol=1e-5)
        np.testing.assert_array_equal(s.bgr, s.bgr_true)


def test_clean_plate_is_misaligned_and_regraded():
    gap = replace(PlateGap(), noise=0.0, blur=0.0, shadow_prob=0.0)
    aligned = SyntheticComposites(size=96, seed=2, gap=replace(gap, corner_shift=0.0, parallax=0.0))
    shifted = SyntheticComposites(size=96, seed=2, gap=gap)
    moved, channel_spread = 0, []
    for i in range(6):
        a, s = aligned.sample(i), shifted.sample(i)
        # Without geometric gap the clean plate is exactly the regraded true background...
        np.testing.assert_allclose(a.bgr, np.clip(a.bgr_true * a.gain, 0, 1), atol=1e-6)
        # ...with it, the warp moves the frame corners by up to corner_shift * size, and the content moves too.
        corners = np.array([[0, 0], [96, 0], [96, 96], [0, 96]], np.float64)
        warped = cv2.perspectiveTransform(corners[None], s.warp)[0]
        shift = np.linalg.norm(warped - corners, axis=1).max()
        assert shift <= gap.corner_shift * 96 + 1e-6
        assert np.abs(s.flow).max() <= gap.parallax * 96 + 1e-6
        regraded = np.clip(s.bgr_true * s.gain, 0, 1)
        if shift + np.abs(s.flow).max() > 0.2:
            moved += 1
            # The content moves as far as warp + flow say: to first order the clean plate differs from
            # the regraded background by gradient . displacement (smooth photographs change little).
            grid = np.stack(np.meshgrid(np.arange(96, dtype=np.float32), np.arange(96, dtype=np.float32)), 2)
            d = cv2.perspectiveTransform(grid, s.warp) + s.flow - grid
            gx = cv2.Sobel(regraded, cv2.CV_32F, 1, 0, ksize=3) / 8
            gy = cv2.Sobel(regraded, cv2.CV_32F, 0, 1, ksize=3) / 8
            predicted = float(np.abs(gx * d[..., :1] + gy * d[..., 1:]).mean())
            assert predicted > 1e-4 and np.abs(s.bgr - regraded).mean() > 0.5 * predicted
        channel_spread.append(float(np.ptp(np.log2(s.gain))))
        assert not np.allclose(s.gain, 1.0)
    assert moved >= 4
    assert max(channel_spread) > 0.005  # white balance differs per channel, not just exposure


def test_shadow_darkens_the_plate_but_not_the_clean_plate():
    ds = SyntheticComposites(size=96, seed=0, gap=PlateGap.none(shadow_prob=1.0))
    seen = 0
    for i in range(3):
        s = ds.sample(i)
        where = (s.pha == 0) & (s.shadow > 0.05)
        if not where.any():
            continue
        seen += 1
        np.testing.assert_allclose(s.src[where], (s.bgr_true * (1 - s.shadow[:, :, None]))[where], atol=1e-5)
        assert (s.src[where].sum(axis=1) < s.bgr_true[where].sum(axis=1)).all()
        np.testing.assert_array_equal(s.bgr[where], s.bgr_true[where])
    assert seen >= 2


def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def _folder(tmp_path, clean=True):
    fg = np.zeros((40, 30, 3), np.uint8)
    fg[:] = (0, 0, 255)  # BGR order on disk: pure red subject
    pha = np.zeros((40, 30), np.uint8)
    pha[5:35, 8:22] = 255
    _write(tmp_path / "fgr" / "a.png", fg)
    _write(tmp_path / "pha" / "a.png", pha)
    _write(tmp_path / "bgr" / "x.png", np.full((50, 60, 3), 40, np.uint8))
    if clean:
        _write(tmp_path / "clean" / "x.png", np.full((50, 60, 3), 200, np.uint8))
    return tmp_path


def test_folder_dataset_composites_user_layers_and_uses_real_clean_plates(tmp_path):
    root = _folder(tmp_path)
    ds = FolderDataset(root, size=32, seed=0, gap=PlateGap.none(), length=4)
    assert len(ds) == 4
    s = ds.sample(0)
    assert s.src.shape == (32, 32, 3) and s.pha.shape == (32, 32)
    assert 0 < s.pha.mean() < 1
    solid = s.pha > 0.99
    np.testing.assert_allclose(s.src[solid], np.broadcast_to([1.0, 0, 0], s.src[solid].shape), atol=1e-5)
    np.testing.assert_allclose(s.src[s.pha == 0], 40 / 255, atol=1e-5)
    np.testing.assert_allclose(s.bgr, 200 / 255, atol=1e-5)  # the clean/ image, not a synthesised one
    assert torch.equal(ds[1]["src"], FolderDataset(root, size=32, seed=0, gap=PlateGap.none())[1]["src"])


def test_folder_dataset_without_clean_plates_synthesises_the_gap(tmp_path):
    root = _folder(tmp_path, clean=False)
    s = FolderDataset(root, size=32, seed=0, gap=replace(PlateGap.none(), exposure=0.3)).sample(0)
    np.testing.assert_allclose(s.bgr, np.clip(s.bgr_true * s.gain, 0, 1), atol=1e-6)
    assert not np.allclose(s.gain, 1.0)


def test_folder_layout_errors_name_the_file_and_the_fix(tmp_path):
    root = _folder(tmp_path)
    (root / "pha" / "a.png").rename(root / "pha" / "b.png")
    with pytest.raises(HowardError, match=r"a\.png.*pha/a\.png"):
        FolderDataset(root)
    (root / "pha" / "b.png").rename(root / "pha" / "a.png")
    _write(root / "clean" / "y.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(HowardError, match=r"y\.png: clean plate without a background"):
        FolderDataset(root)
    (root / "clean" / "y.png").unlink()
    _write(root / "pha" / "a.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(HowardError, match=r"a\.png: alpha is 10x10 but a\.png is 30x40"):
        FolderDataset(root).sample(0)
    with pytest.raises(HowardError, match="no 'fgr/' folder"):
        FolderDataset(tmp_path / "fgr")
    with pytest.raises(HowardError, match="not found"):
        FolderDataset(tmp_path / "missing")


def test_photo_library_is_the_cc0_photographs_shipped_with_scikit_image():
    from howard_core.train.data import PHOTOS, photo_library

    lib = photo_library()
    assert len(lib) == len(PHOTOS)
    for img in lib:
        assert img.dtype == np.float32 and img.ndim == 3 and img.shape[2] == 3
        assert min(img.shape[:2]) >= 300 and 0 <= img.min() and img.max() <= 1
        assert float(img.std()) > 0.05  # real pictures, not blank files


def test_photo_backgrounds_are_reproducible_crops_with_real_texture():
    from howard_core.train.data import photo_background

    a = photo_background(np.random.default_rng(1), 96, 128)
    assert a.shape == (96, 128, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert np.array_equal(a, photo_background(np.random.default_rng(1), 96, 128))
    looks = [photo_background(np.random.default_rng(s), 96, 128) for s in range(12)]
    assert len({round(float(x.mean()), 4) for x in looks}) == 12
    # Photographs have detail at every scale; a flat or purely smooth image has almost no Laplacian energy.
    detail = [float(cv2.Laplacian(x.mean(axis=2), cv2.CV_32F).std()) for x in looks]
    assert np.median(detail) > 0.01


def test_synthetic_backgrounds_mix_photographs_and_procedural_scenes(monkeypatch):
    import howard_core.train.data as data

    calls = []
    real = data.photo_background
    monkeypatch.setattr(data, "photo_background", lambda *a: calls.append(1) or real(*a))
    for i in range(40):
        data.make_background(data.sample_rng("train", 0, i), 48, 48)
    assert 0.2 * 40 < len(calls) < 0.7 * 40  # PHOTO_PROB of 0.45


def test_missing_scikit_image_is_one_clear_error(monkeypatch):
    import importlib.util

    import howard_core.train.data as data

    monkeypatch.setattr(data, "_photo_cache", [])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(HowardError, match=r"howard-core\[train\]"):
        SyntheticComposites(size=64, seed=0)[0]
