"""Paper Table 1 on one GPU, from a bundle (issue #17): configs/gpu/table1-224.yaml.

    python3 benchmarks/gpu_table1.py              # on the GPU machine: bf16, outputs under $OUT
    DRY=1 python benchmarks/gpu_table1.py         # CPU dry run of the same path at a tiny size
    ESTIMATE=1 python benchmarks/gpu_table1.py    # CPU: FLOPs per step → the H200 time estimate

The GPU machine has torch, timm, transformers, accelerate, pandas, safetensors, but not the asset
packages: the backbone and the data come from a bundle (``python -m sve bundle``, carried with
the working tree): with ``SVE_BUNDLE`` set, ``sve.backbones.load_backbone`` and
``sve.data.load_dataset`` read it (``sve.bundle``). bf16 autocast: the config's
``mixed_precision`` (``PRECISION`` below overrides it).

Environment (all optional):
    SVE_BUNDLE    the bundle folder (default data/cache/bundles/table1)
    OUT           where the results go (default artifacts/gpu-table1)
    SVE_GPU_RUNS  the folder holding the run folders, one per seed (default /tmp/sve-gpu-runs); a
                  second command on the same warm machine resumes them (finished method × seed kept)
    BUDGET_S      stop cleanly once this many seconds have passed (default 480): finished pairs
                  are kept and written; a pair (a seed) is not started when the last one of its
                  method (the last seed) took longer than the time left
    PRECISION     bf16 (default) or no (fp32)
    SET           config overrides "key=value;key=value" (e.g. "seeds=[0];epochs=5")
    DRY=1         28 px, 32/16/16 images, 1 epoch, M = 2, seed 0 on the CPU: the same script
                  path at a size that runs in under a minute (bf16 autocast on the CPU)

Seeds run one after another, each in its own run folder ``<id>-gpu-table1-224-seed<k>`` (all four
methods of a seed before the next seed), so a run cut short by the budget holds paired seeds.
Writes to ``$OUT``: ``metrics.csv`` (every seed's rows), ``summary.json`` (device, precision, states,
errors, seconds and ms per training step of every method × seed), ``run.tar.gz`` (the run folders:
logits.npz, history, spectra, ...), and prints the ensemble summary table; exit code 0 when every
seed is complete, 3 otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

T0 = time.time()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the working tree's sve, also without an editable install
CONFIG = ROOT / "configs" / "gpu" / "table1-224.yaml"
DRY_SET = ["image_size=28", "train_limit=32", "val_limit=16", "test_limit=16", "epochs=1", "warmup_epochs=0",
           "members=2", "seeds=[0]", "eval_batch_size=16"]
#: measured H200 bf16 training steps (benchmarks/results/cuda-h200-bf16.json, dinov2-224, batch 16,
#: M = 4, ms): the floor set by kernel launches, which FLOPs alone underestimate
H200_STEP_MS = {"sve": 61.4, "lora_ensemble": 61.7, "limit_m4": 38.5}
H200_PEAK_TFLOPS, UTILISATION = 790.0, 0.30
#: assumed, not measured: one-off start (imports, CUDA init, bundle, resizing to 224 px, SVDs) and
#: the evaluation of a method × seed (val every epoch, test, metrics and temperature fits)
FIXED_S, EVAL_S_PER_PAIR = 60.0, 6.0


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default




class Deadline:
    """A ``sve.experiments`` callback: stop cleanly once ``budget_s`` has passed since the script started,
    and do not start a pair whose method's last pair took longer than the time left."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s, self.started, self.took = budget_s, 0.0, {}

    def left(self) -> float:
        return self.budget_s - (time.time() - T0)

    def __call__(self, event: str, info: dict) -> bool:
        if event == "method_start":
            self.started = time.time()
            need = self.took.get(info["method"], 0.0)
            if need > self.left():
                print(f"[{time.time() - T0:6.0f}s] not starting {info['method']} seed{info['seed']}: its "
                      f"last pair took {need:.0f}s, {self.left():.0f}s left", flush=True)
                return False
            print(f"[{time.time() - T0:6.0f}s] {info['method']} seed{info['seed']} ({info['steps']} steps)",
                  flush=True)
        elif event == "method_end":
            self.took[info["method"]] = time.time() - self.started
            print(f"[{time.time() - T0:6.0f}s] {info['method']} seed{info['seed']} done in "
                  f"{self.took[info['method']]:.0f}s: {info.get('summary')}", flush=True)
        elif event == "step" and self.left() < 0:
            print(f"[{time.time() - T0:6.0f}s] time budget spent: stopping", flush=True)
            return False
        return True


def pair_timings(run_dir: Path) -> list[dict]:
    """Seconds and ms per training step of every finished method × seed of a run folder."""
    rows = []
    for done in sorted(run_dir.glob("*/seed*/done.json")):
        folder = done.parent
        cost = json.loads((folder / "cost.json").read_text())
        steps = json.loads((folder / "history.json").read_text())["fit"]["steps"]
        rows.append({"method": folder.parent.name, "seed": int(folder.name[4:]), "steps": steps,
                     "train_s": round(cost["train_time_s"], 2), "eval_s": round(cost["eval_time_s"], 2),
                     "ms_per_step": round(1000 * cost["train_time_s"] / max(steps, 1), 2),
                     "cuda_peak_mb": cost.get("train_cuda_peak_mb")})
    return rows


def export(run_dirs: list[Path], out: Path, summary: dict) -> None:
    """metrics.csv (all seeds), run.tar.gz (every run folder) and summary.json under ``out``."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    run_dirs = [d for d in run_dirs if d.is_dir()]
    tables = [pd.read_csv(d / "metrics.csv") for d in run_dirs if (d / "metrics.csv").is_file()]
    tables = [t for t in tables if not t.empty]
    if tables:
        pd.concat(tables, ignore_index=True).to_csv(out / "metrics.csv", index=False)
    if run_dirs:
        with tarfile.open(out / "run.tar.gz", "w:gz") as tar:
            for d in run_dirs:
                tar.add(d, arcname=d.name)
    summary["pairs"] = [p for d in run_dirs for p in pair_timings(d)]
    summary["run_dirs"] = [str(d) for d in run_dirs]
    summary["seconds"] = round(time.time() - T0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")


def run_seeds(config: Any, runs_root: Path, deadline: Deadline, summary: dict) -> list[Path]:
    """One run folder per seed, seed after seed (``sve.experiments`` orders a run's pairs method-major):
    a time-limited command then ends with every method of its finished seeds, paired. A seed is not
    started when the last one took longer than the time left; a failed seed is recorded and the
    next one tried."""
    from sve import experiments

    run_dirs, errors, last_s = [], {}, 0.0
    for seed in config.seeds:
        if last_s > deadline.left():
            print(f"[{time.time() - T0:6.0f}s] not starting seed {seed}: the last took {last_s:.0f}s, "
                  f"{deadline.left():.0f}s left", flush=True)
            break
        one = config.with_overrides([f"seeds=[{seed}]", f"name={config.name}-seed{seed}"])
        started = time.time()
        try:
            run_dirs.append(experiments.run(one, out_dir=runs_root, callbacks=[deadline], resume=True))
        except Exception as err:  # e.g. one method failing on this device: keep the other seeds going
            errors[seed] = f"{type(err).__name__}: {err}"
            print(f"[{time.time() - T0:6.0f}s] seed {seed} failed: {errors[seed]}", flush=True)
            found = sorted(runs_root.glob(f"*-{one.name}-*"))
            run_dirs += found[-1:]
        last_s = time.time() - started
        if deadline.left() < 0:
            break
    summary["states"] = {d.name: experiments.read_status(d).get("state") for d in run_dirs}
    summary["errors"] = errors
    return run_dirs


def _train_step(model: Any, x: Any, y: Any) -> None:
    """Forward + mean member cross-entropy + backward (the optimiser step is negligible here)."""
    import torch.nn.functional as F

    logits = model(pixel_values=x)
    F.cross_entropy(logits.flatten(0, 1), y.repeat(logits.shape[1])).backward()


def estimate(config: Any) -> dict:
    """FLOPs of one training step per method at the config's size (counted on the CPU with a batch
    of 1 and scaled to the batch; that step's CPU time too), and the H200 time of the whole run they
    imply: per step the larger of FLOPs / (30 % of 790 TFLOP/s) and the measured H200 step."""
    import math

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sve import bundle, methods

    folder = bundle.bundle_dir()
    bb = bundle.load_backbone(folder, image_size=config.image_size)
    x = torch.randn(1, 3, config.image_size, config.image_size)
    y = torch.zeros(1, dtype=torch.long)
    steps = math.ceil(config.train_limit / config.batch_size) * config.epochs
    out: dict[str, Any] = {"steps_per_pair": steps, "pairs": {}}
    total_s = 0.0
    for spec in config.method_specs():
        model = methods.build(spec.name, bb, spec.members, 10, seed=0)
        with FlopCounterMode(display=False) as counter:
            _train_step(model, x, y)
        cpu_s = time.perf_counter()
        _train_step(model, x, y)  # timed on its own (the counter slows it down)
        cpu_s = time.perf_counter() - cpu_s
        tflop = counter.get_total_flops() * config.batch_size / 1e12
        flop_ms = 1000 * tflop / (H200_PEAK_TFLOPS * UTILISATION)
        floor_ms = H200_STEP_MS.get(spec.name, H200_STEP_MS["limit_m4"] * (1 if spec.name == "single" else
                                                                           spec.members))
        ms = max(flop_ms, floor_ms)
        total_s += ms * steps / 1000 * len(config.seeds)
        out["pairs"][spec.label] = {"cpu_ms_one_image": round(1000 * cpu_s),
                                    "cpu_gflops": round(counter.get_total_flops() / cpu_s / 1e9, 1),
                                    "tflop_per_step": round(tflop, 3), "flop_bound_ms": round(flop_ms, 1),
                                    "measured_floor_ms": floor_ms,
                                    "estimate_s_per_seed": round(ms * steps / 1000)}
        del model
    per_seed = total_s / len(config.seeds) + EVAL_S_PER_PAIR * len(out["pairs"])
    budget = float(_env("BUDGET_S", "480"))
    out.update({"train_s_all_seeds": round(total_s), "seconds_per_seed": round(per_seed),
                "seconds_all_seeds": round(FIXED_S + per_seed * len(config.seeds)),
                "seeds_within_budget": int(max(0.0, budget - FIXED_S) // per_seed), "budget_s": budget,
                "assumed": {"fixed_s": FIXED_S, "eval_s_per_pair": EVAL_S_PER_PAIR,
                            "utilisation": UTILISATION, "peak_tflops": H200_PEAK_TFLOPS}})
    return out


def main() -> int:
    dry = _env("DRY", "0") == "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["SVE_BUNDLE"] = _env("SVE_BUNDLE", str(ROOT / "data" / "cache" / "bundles" / "table1"))
    precision = _env("PRECISION", "bf16")
    os.environ["ACCELERATE_MIXED_PRECISION"] = precision  # also for fits outside the run (the estimate)
    out = Path(_env("OUT", str(ROOT / "artifacts" / "gpu-table1")))
    runs_root = Path(_env("SVE_GPU_RUNS", "/tmp/sve-gpu-runs" if not dry else str(out / "runs")))

    import torch

    from sve import bundle, experiments

    manifest = bundle.read_manifest(bundle.bundle_dir())  # checks every file's sha256 first
    overrides = (DRY_SET if dry else []) + [f"mixed_precision={precision}"] + [
        s for s in _env("SET", "").split(";") if s.strip()]
    config = experiments.as_config(CONFIG).with_overrides(overrides)
    if _env("ESTIMATE", "0") == "1":
        print(json.dumps(estimate(config), indent=1))
        return 0
    cuda = torch.cuda.is_available()
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    summary: dict[str, Any] = {
        "config": config.to_dict(), "overrides": overrides, "dry": dry, "precision": precision,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
        "bundle": {"path": os.environ["SVE_BUNDLE"], "backbone": manifest["backbone"]["name"],
                   "dtype": manifest["backbone"]["dtype"], "total_mb": manifest["total_mb"]},
        "budget_s": float(_env("BUDGET_S", "480")),
    }
    print(f"[{time.time() - T0:6.0f}s] {summary['device']}, precision {precision}, "
          f"torch {torch.__version__}, bundle {manifest['total_mb']} MiB", flush=True)
    run_dirs: list[Path] = []
    try:
        run_dirs = run_seeds(config, runs_root, Deadline(summary["budget_s"]), summary)
        from accelerate.state import AcceleratorState

        summary["accelerate_mixed_precision"] = AcceleratorState().mixed_precision
    finally:
        run_dirs = run_dirs or sorted(runs_root.glob(f"*-{config.name}-seed*"))
        export(run_dirs, out, summary)
        print(json.dumps({k: summary.get(k) for k in ("states", "errors", "seconds", "pairs")}, indent=1,
                         default=str), flush=True)
    complete = len(run_dirs) == len(config.seeds) and set(summary["states"].values()) == {"complete"}
    summary["state"] = "complete" if complete else "incomplete"
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    if (out / "metrics.csv").is_file():
        import pandas as pd

        from sve.cli import summary_table

        metrics = pd.read_csv(out / "metrics.csv")
        print(summary_table(metrics[metrics["split"] == "test"]).to_string())
    return 0 if complete else 3


if __name__ == "__main__":
    from sve.errors import SVEError

    try:
        sys.exit(main())
    except SVEError as err:  # bad input (no bundle, a damaged file, a bad SET): one line, exit 2
        print(f"gpu_table1: error: {err}", file=sys.stderr)
        sys.exit(2)
