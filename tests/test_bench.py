"""benchmarks/bench.py: the ``--quick`` smoke run end to end (tiny random ViT and BERT, M = 2).

Nothing about speed is asserted: only that every method runs, that the JSON follows the documented
schema, that ratios are taken against the limit of the same run, and that the per-configuration
memory processes report a peak.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_the_documented_json(bench, tmp_path, capsys):
    out = tmp_path / "quick.json"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "sve-bench/1" and report["command"].endswith(f"--quick --out {out}")
    assert {"cpu", "cores", "torch", "threads", "load_before", "load_after"} <= set(report["machine"])
    assert set(report["settings"]) == set(bench.QUICK_SETTINGS) and report["setup"] == []
    rows = report["results"]
    assert {(r["setting"], r["method"]) for r in rows} == {
        (s, m) for s in bench.QUICK_SETTINGS for m in bench.METHODS}
    for r in rows:
        assert r["error"] is None, r
        assert r["members"] == 2 and len(r["train_all"]) == len(r["eval_all"]) == 1
        assert r["train_s"] > 0 and r["eval_s"] > 0 and r["setup_s"] > 0 and r["trainable"] > 0
        limit = next(x for x in rows if x["setting"] == r["setting"] and x["method"] == "limit")
        assert math.isclose(r["train_ratio"], r["train_s"] / limit["train_s"])
        assert math.isclose(r["eval_ratio"], r["eval_s"] / limit["eval_s"])
        measured = r["setting"] == bench.QUICK_MEMORY_SETTING and r["method"] in bench.QUICK_MEMORY
        assert (r["mem_train_mb"] is not None) == measured, r
        if measured:
            assert r["mem_train_mb"] > 0 and r["mem_eval_mb"] > 0
            assert math.isclose(r["mem_train_ratio"], r["mem_train_mb"] / limit["mem_train_mb"])
    # SVE's trainable tensors are a small fraction of the limit's (the whole trunk + head)
    by = {(r["setting"], r["method"]): r for r in rows}
    for s in bench.QUICK_SETTINGS:
        assert by[(s, "sve-auto")]["trainable"] < by[(s, "limit")]["trainable"] / 5
        assert by[(s, "sve-auto")]["trainable"] == by[(s, "sve-dense")]["trainable"]
    printed = capsys.readouterr().out
    assert all(m in printed for m in bench.METHODS) and "×limit" in printed


def test_authors_reference_layer_is_the_same_ensemble(bench):
    """The authors' reference (sample-major, dense einsum) computes the same members as SVE."""
    import torch

    bb = bench.load(bench.QUICK_SETTINGS["quick-vit"])
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ours, ref = bench.build("sve-auto", bb, 2), bench.build("authors", bb, 2)
    with torch.no_grad():
        for a, b in zip(ref.layers().values(), ours.layers().values(), strict=True):
            a.sve_sigma.copy_(b.sigma())
            a.sve_bias.copy_(b.sve_bias)
        ref.sve_head_weight.copy_(ours.sve_head_weight)
        torch.testing.assert_close(ref(pixel_values=x), ours(pixel_values=x), atol=1e-4, rtol=1e-4)


def test_bad_arguments_name_the_choices(bench):
    with pytest.raises(SystemExit, match="choose from limit, sve-auto"):
        bench.main(["--methods", "limit,nope", "--no-memory"])
    for bad in ("0", "four"):
        with pytest.raises(SystemExit, match="integers ≥ 1"):
            bench.main(["--members", bad])
    with pytest.raises(SystemExit, match="choose from dinov2-224"):
        bench.main(["--settings", "vit"])
