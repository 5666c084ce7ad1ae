"""The TorchScript file for Nuke's Inference node: operators libtorch 1.12 has, a record of who
made it inside, and a mode other users can read.

Nuke 14 to 15.0 load TorchScript with libtorch 1.12.1 (Foundry's CopyCat/Cattery notes; Nuke
13 ships 1.6). libtorch loads a scripted file by compiling its serialized code against its own
operator registry, so an operator added later (aten::pad, 1.13) makes the load fail in Nuke.
LIBTORCH_1_12_OPS is the subset of libtorch 1.12.1's registry this network can need, assembled
from that release's documented operator set: aten:: names from the v1.12.1
aten/src/ATen/native/native_functions.yaml and the "TorchScript Builtins" page of the 1.12 docs,
prim:: names from the prim operators TorchScript's IR used in 1.12 (Constant, If, Loop, list and
tuple construction, GetAttr, RaiseException, Uninitialized, unchecked_cast, device, dtype, min).
"""

import json
import os
import stat
import zipfile

import pytest
import torch

import howard_core
from howard_core.model import MattingBase, MattingRefine, export_torchscript
from howard_core.model.export import EXTRA_FILE, read_export_record

LIBTORCH_1_12_OPS = frozenset({
    # tensor math and shape (native_functions.yaml, v1.12.1)
    "aten::adaptive_avg_pool2d", "aten::add", "aten::cat", "aten::clamp", "aten::constant_pad_nd", "aten::conv2d",
    "aten::dim", "aten::dropout", "aten::eq", "aten::floor", "aten::floor_divide", "aten::gt", "aten::hardtanh",
    "aten::hardtanh_", "aten::index", "aten::index_put_", "aten::mul", "aten::ne", "aten::nonzero", "aten::ones",
    "aten::permute", "aten::reflection_pad2d", "aten::relu", "aten::relu_", "aten::remainder",
    "aten::replication_pad2d", "aten::reshape", "aten::scatter_", "aten::select", "aten::sigmoid", "aten::size",
    "aten::slice", "aten::squeeze", "aten::sub", "aten::to", "aten::topk", "aten::unfold", "aten::upsample_bilinear2d",
    "aten::upsample_nearest1d", "aten::upsample_nearest2d", "aten::upsample_nearest3d", "aten::view",
    "aten::zeros", "aten::zeros_like",
    # TorchScript builtins on Python values (1.12 "TorchScript Builtins")
    "aten::Float", "aten::Int", "aten::__contains__", "aten::__getitem__", "aten::__is__", "aten::__isnot__",
    "aten::append", "aten::floordiv", "aten::format", "aten::len", "aten::list",
    # IR structure
    "prim::Constant", "prim::GetAttr", "prim::If", "prim::ListConstruct", "prim::ListUnpack", "prim::Loop",
    "prim::RaiseException", "prim::TupleConstruct", "prim::TupleIndex", "prim::TupleUnpack", "prim::Uninitialized",
    "prim::device", "prim::dtype", "prim::min", "prim::max", "prim::unchecked_cast", "prim::NumToTensor",
})
# Added after 1.12: what torch 2.x's own functional code scripts to. Named so a failure says why.
NEWER_THAN_1_12 = {"aten::pad": "1.13 (F.pad)", "aten::_pad_circular": "1.13", "aten::_upsample_bilinear2d_aa": "1.11",
                   "aten::scaled_dot_product_attention": "2.0"}


def _ops(graph, found=None):
    found = set() if found is None else found
    for node in graph.nodes():
        found.add(node.kind())
        for block in node.blocks():
            _ops(block, found)
    return found


def _scripted_ops(path):
    module = torch.jit.load(str(path), map_location="cpu")
    return _ops(module.inlined_graph)


def _model(kind, mode="sampling"):
    torch.manual_seed(0)
    if kind == "base":
        return MattingBase("mobilenetv2").eval()
    return MattingRefine("mobilenetv2", refine_mode=mode, refine_sample_pixels=16 * 20).eval()


@pytest.mark.parametrize("kind, mode", [("refine", "sampling"), ("refine", "thresholding"), ("refine", "full"),
                                        ("base", None)])
def test_the_scripted_graph_uses_only_ops_libtorch_1_12_has(tmp_path, kind, mode):
    path = export_torchscript(_model(kind, mode or "sampling"), tmp_path / "howard.pt")
    ops = _scripted_ops(path)
    newer = {op: NEWER_THAN_1_12[op] for op in ops if op in NEWER_THAN_1_12}
    assert not newer, f"operators libtorch 1.12 lacks (added in): {newer}"
    assert ops <= LIBTORCH_1_12_OPS, sorted(ops - LIBTORCH_1_12_OPS)
    assert {"aten::replication_pad2d", "aten::conv2d"} <= ops  # the walk saw the real graph


def test_the_exported_module_still_takes_any_size_and_replicates_edges(tmp_path):
    path = export_torchscript(_model("refine"), tmp_path / "howard.pt")
    module = torch.jit.load(str(path))
    x = torch.rand(1, 6, 37, 58)
    with torch.no_grad():
        out = module(x)
    assert out.shape == (1, 4, 37, 58) and torch.isfinite(out).all()
    # The pad is edge replication, as F.pad(mode="replicate"): the same numbers as the eager pad.
    pad = torch.ops.aten.replication_pad2d(x, [0, 2, 0, 3])
    assert torch.equal(pad, torch.nn.functional.pad(x, (0, 2, 0, 3), mode="replicate"))


def test_versions_and_settings_travel_inside_the_file(tmp_path):
    path = export_torchscript(_model("refine", "thresholding"), tmp_path / "howard.pt")
    record = read_export_record(path)
    assert record["howard_version"] == howard_core.__version__ and record["torch_version"] == torch.__version__
    assert record["refine_mode"] == "thresholding" and record["model"] == "MattingRefine"
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        root = names[0].split("/")[0]
        assert json.loads(zf.read(f"{root}/extra/{EXTRA_FILE}")) == record
        # The file format version libtorch checks on load: 1.12 reads up to 10.
        assert int(zf.read(f"{root}/version")) <= 10
    assert root == "archive"  # not the atomic write's hidden temp name
    assert not list(tmp_path.glob(".*"))  # no temp file left beside it


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_the_file_is_readable_as_the_umask_allows(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = export_torchscript(_model("base"), tmp_path / "howard.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
