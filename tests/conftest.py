"""Shared fixtures: the BGMv2 reference data in ../shared/bgmv2 (see its README)."""

import importlib.util
from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "bgmv2"

# Keep the suite's torch work on the cores we are given, without oversubscribing.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def reference_path(name: str) -> Path:
    path = REFERENCE / name
    if not path.exists():
        pytest.fail(f"reference data {path} is missing: the tests need ../shared/bgmv2 beside the checkout")
    return path


def _weights_module():
    spec = importlib.util.spec_from_file_location("bgmv2_deterministic_weights",
                                                  reference_path("deterministic_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def deterministic_state_dict(backbone: str, seed: int = 0, base: bool = False) -> dict:
    """Seed-driven weights for the refining model (or the base model: no `refiner.*`)."""
    mod = _weights_module()
    sd = mod.make_state_dict(mod.load_manifest(reference_path(f"manifest_{backbone}.json")), seed)
    return {k: v for k, v in sd.items() if not (base and k.startswith("refiner."))}


def manifest(backbone: str):
    return _weights_module().load_manifest(reference_path(f"manifest_{backbone}.json"))
