"""Performance benchmark: SVE against "the limit" and its peers (issue #9, docs/PERFORMANCE.md).

    .venv/bin/python benchmarks/bench.py                       # the full grid (hours on 2 CPU cores)
    .venv/bin/python benchmarks/bench.py --settings dinov2-56 --members 1,4,8
    .venv/bin/python benchmarks/bench.py --quick               # smoke run (tiny models, seconds)
    .venv/bin/python benchmarks/bench.py --device cuda --bf16  # on a GPU, bf16 autocast
    python3 benchmarks/bench.py --device cuda --random-init    # a GPU machine without the asset packages

Settings: ``dinov2-224`` (DINOv2-S, 224 px, batch 16), ``minilm-128`` (MiniLM-L6, 128 tokens, batch
32), ``dinov2-56`` (DINOv2-S, 56 px, batch 32); M ∈ {1, 4, 8, 16}; 10 classes; random inputs.
Methods (``--methods``): ``limit`` (the plain backbone fully fine-tuned on the M-times repeated batch:
what M members that differ in every layer cannot beat), ``sve-auto`` / ``sve-dense`` /
``sve-factored`` (``sve.wrap`` with that ``mode``), ``authors`` (the authors' published layer:
dense ``einsum`` rebuild of every W_m at every forward, ``repeat_interleave`` sample-major batch;
``sve.methods.reference``), ``deep_ensemble``, ``lora_ensemble``, ``batch_ensemble`` (``sve.methods``),
``last-k`` (SVE on the last third of the blocks).

What is measured, per setting × M (one process, all methods built side by side):
- ``train_s``: one training step = forward + mean member cross-entropy + backward + AdamW step +
  ``zero_grad``; ``eval_s``: one no-grad forward (SVE's dense member weights are cached: the first,
  warm-up, call builds them). Methods are timed round-robin (one step of each, ``--reps`` rounds,
  after ``--warmup`` rounds) so that load drift on a shared machine hits all of them alike; the
  median is reported, and ``*_ratio`` = median / the limit's median in the same run.
- ``setup_s`` / ``setup_cpu_s``: wall / CPU time of building the model (``sve.wrap`` incl. the SVD of
  every target, the trunk copy), SVD cache emptied first; the backbone fingerprint is computed
  once beforehand (``fingerprint_s`` in ``settings``).
- ``mem_train_mb`` / ``mem_eval_mb``: peak memory, each configuration in a fresh subprocess. CPU:
  peak resident set size (the kernel's ``VmHWM``, reset through ``/proc/self/clear_refs`` before each
  phase; glibc is told to return freed blocks ≥ 128 kB to the OS, so RSS follows live memory) minus
  the RSS before the model was built — so it counts the model copy, its gradients and optimiser
  state, and the activations. Eval phase (2 forwards) first, then the training phase (2 steps).
  CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before the build.

JSON (``--out``; default ``benchmarks/results/<device>-<UTC time>.json``, ``--quick`` writes only
with ``--out``), schema ``sve-bench/1``::

    {"schema": "sve-bench/1", "command": str, "machine": {cpu, cores, torch, threads, device,
     load_before, load_after, date}, "settings": {name: {backbone, batch, image_size | tokens,
     blocks, fingerprint_s}},
     "results": [{"setting", "members", "method", "train_s", "eval_s", "train_ratio", "eval_ratio",
                  "train_all": [s...], "eval_all": [s...], "mem_train_mb", "mem_eval_mb",
                  "mem_train_ratio", "mem_eval_ratio", "setup_s", "setup_cpu_s", "trainable",
                  "error"}],          # null where not measured; error: why a method failed
     "setup": [{"backbone", "svd_dtype", "layers", "setup_s", "setup_cpu_s", "error"}]}

``--cost-model`` prints the multiply-adds that ``sve.methods.sve.path_costs`` predicts per layer shape
(no timing). ``--setup`` (default on, off in ``--quick``) also times ``sve.wrap`` alone for dinov2-small,
minilm-l6 and smollm2-135m (if installed) with both SVD dtypes. ``--profile`` prints the top
operators (torch.profiler, self CPU time) of one training step of each method. ``--plots DIR``
turns result JSON files (``--out``, else ``benchmarks/results/cpu-*.json``) into the figures of
docs/PERFORMANCE.md (no benchmark run).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import sve
from sve import ensemble, methods
from sve.backbones import load_backbone
from sve.methods import reference
from sve.methods import sve as svem

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 10
SETTINGS: dict[str, dict[str, Any]] = {
    "dinov2-224": {"backbone": "dinov2-small", "image_size": 224, "batch": 16},
    "minilm-128": {"backbone": "minilm-l6", "tokens": 128, "batch": 32},
    "dinov2-56": {"backbone": "dinov2-small", "image_size": 56, "batch": 32},
}
QUICK_SETTINGS: dict[str, dict[str, Any]] = {
    "quick-vit": {"backbone": "timm:vit_tiny_patch16_224", "image_size": 32, "batch": 2,
                  "options": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3,
                              "num_heads": 2, "num_classes": 0, "random": True}},
    "quick-text": {"backbone": "tiny-bert", "tokens": 16, "batch": 2},  # random BertModel, width 32
}
QUICK_MEMORY_SETTING = "quick-vit"  # --quick measures memory here only, for QUICK_MEMORY
METHODS = ("limit", "sve-auto", "sve-dense", "sve-factored", "authors", "deep_ensemble",
           "lora_ensemble", "batch_ensemble", "last-k")
MEMBERS = (1, 4, 8, 16)
SETUP_BACKBONES = ("dinov2-small", "minilm-l6", "smollm2-135m")
QUICK_MEMORY = ("limit", "sve-auto")  # one fresh process each
ROW_KEYS = ("setting", "members", "method", "train_s", "eval_s", "train_ratio", "eval_ratio", "train_all",
            "eval_all", "mem_train_mb", "mem_eval_mb", "mem_train_ratio", "mem_eval_ratio", "setup_s",
            "setup_cpu_s", "trainable", "error")  # every result row has all of them (null: not measured)
LABELS = {"limit": "limit", "sve-auto": "SVE auto", "sve-dense": "SVE dense", "sve-factored": "SVE fact.",
          "authors": "authors", "deep_ensemble": "deep ens.", "lora_ensemble": "LoRA-Ens.",
          "batch_ensemble": "BatchEns.", "last-k": "last:K"}  # figure labels
LR_OF = {"limit": "single", "authors": "sve", "last-k": "sve"}  # else "sve-*" -> sve, or the name


# ----------------------------------------------------------------------------------------------
# the authors' layer, as a reference (sve.methods.reference): linear targets with a bias, as published


def authors_model(backbone: Any, members: int) -> reference.AuthorsModel:
    targets = [n for n in ensemble.select_targets(backbone, "all")
               if isinstance(backbone.model.get_submodule(n), torch.nn.Linear)
               and backbone.model.get_submodule(n).bias is not None]
    return reference.authors_model(backbone, members, NUM_CLASSES, targets, seed=0)


# ----------------------------------------------------------------------------------------------
# one configuration


def load(setting: dict[str, Any]) -> Any:
    if setting["backbone"] == "tiny-bert":
        from transformers import BertConfig, BertModel

        from sve.backbones import from_model

        torch.manual_seed(0)
        config = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                            intermediate_size=128, max_position_embeddings=64)
        return from_model(BertModel(config, add_pooling_layer=False), name="tiny-bert")
    if "image_size" in setting and setting["backbone"] == "dinov2-small":
        return load_backbone("dinov2-small", image_size=setting["image_size"], **setting.get("options", {}))
    return load_backbone(setting["backbone"], **setting.get("options", {}))


def make_batch(backbone: Any, setting: dict[str, Any]) -> tuple[dict[str, Tensor], Tensor]:
    """Random inputs of the setting's shape (images: N(0, 1) pixels; text: full-length token ids)."""
    gen = torch.Generator().manual_seed(0)
    B = setting["batch"]
    labels = torch.randint(0, NUM_CLASSES, (B,), generator=gen)
    if backbone.modality == "image":
        S = setting["image_size"]
        return {"pixel_values": torch.randn(B, 3, S, S, generator=gen)}, labels
    vocab = backbone.model.config.vocab_size
    ids = torch.randint(min(1000, vocab // 2), vocab, (B, setting["tokens"]), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, labels


def build(method: str, backbone: Any, members: int) -> ensemble.EnsembleModel:
    if method == "limit":
        return methods.build("single", backbone, 1, NUM_CLASSES, seed=0)
    if method.startswith("sve-"):
        return sve.wrap(backbone, members, NUM_CLASSES, seed=0, mode=method[4:])
    if method == "last-k":
        k = max(1, len(backbone.blocks) // 3)
        return sve.wrap(backbone, members, NUM_CLASSES, targets=f"last:{k}", seed=0)
    if method == "authors":
        return authors_model(backbone, members)
    return methods.build(method, backbone, members, NUM_CLASSES, seed=0)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Case:
    """A built method with its optimiser and inputs; ``train_step`` / ``eval_step`` as measured."""

    def __init__(self, method: str, backbone: Any, members: int, batch: dict[str, Tensor],
                 labels: Tensor, device: str, bf16: bool):
        svem.clear_svd_cache()
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        self.model = build(method, backbone, members).to(device)
        sync(device)
        self.setup_s, self.setup_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        rep = members if method == "limit" else 1  # the limit: one model on the M-times repeated batch
        self.inputs = {k: v.repeat(rep, *[1] * (v.ndim - 1)).to(device) for k, v in batch.items()}
        self.labels = labels.repeat(rep).repeat_interleave(self.model.num_members).to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        lr = methods.default_lr(LR_OF.get(method, "sve" if method.startswith("sve-") else method))
        self.opt = torch.optim.AdamW(params, lr=lr)
        self.device, self.bf16 = device, bf16

    def _autocast(self) -> Any:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16)

    def train_step(self) -> None:
        self.model.train()
        with self._autocast():
            logits = self.model(**self.inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), self.labels)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def eval_step(self) -> None:
        self.model.eval()
        with torch.no_grad(), self._autocast():
            self.model(**self.inputs)

    def timed(self, fn: Any) -> float:
        sync(self.device)
        t0 = time.perf_counter()
        fn()
        sync(self.device)
        return time.perf_counter() - t0


def time_methods(setting: dict[str, Any], backbone: Any, members: int, names: list[str],
                 args: argparse.Namespace) -> list[dict[str, Any]]:
    """Build every method, then time training and evaluation round-robin; one row per method."""
    batch, labels = make_batch(backbone, setting)
    cases: dict[str, Case] = {}
    rows = {n: {**dict.fromkeys(ROW_KEYS), "method": n, "members": members} for n in names}
    for n in names:
        try:
            cases[n] = Case(n, backbone, members, batch, labels, args.device, args.bf16)
            rows[n].update(setup_s=cases[n].setup_s, setup_cpu_s=cases[n].setup_cpu_s,
                           trainable=cases[n].trainable)
        except Exception as e:  # a method that cannot run here is reported, not fatal
            rows[n]["error"] = f"{type(e).__name__}: {e}"[:300]
    for phase in ("train", "eval"):
        times: dict[str, list[float]] = {n: [] for n in cases}
        for r in range(args.warmup + args.reps):
            for n, case in list(cases.items()):
                try:
                    t = case.timed(case.train_step if phase == "train" else case.eval_step)
                except Exception as e:
                    rows[n]["error"] = f"{phase}: {type(e).__name__}: {e}"[:300]
                    del cases[n]
                    continue
                if r >= args.warmup:
                    times[n].append(t)
            if args.verbose:
                print(f"  {phase} round {r + 1}/{args.warmup + args.reps} done", file=sys.stderr, flush=True)
        for n, ts in times.items():
            if n in cases:
                rows[n][f"{phase}_all"] = ts
                rows[n][f"{phase}_s"] = statistics.median(ts)
    if args.profile:
        profile(cases)
    return [rows[n] for n in names]


def profile(cases: dict[str, Case]) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for n, case in cases.items():
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            case.train_step()
        print(f"\n--- torch.profiler: one training step of {n} ---")
        ops = prof.key_averages()
        print(ops.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=44))


# ----------------------------------------------------------------------------------------------
# peak memory, in a fresh process per configuration


def _rss_mb(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1)) / 1024


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def _memory_now(device: str) -> tuple[float, float]:
    """(current, peak since the last reset) in MB."""
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20
    return _rss_mb("VmRSS"), _rss_mb("VmHWM")


def release_memory() -> None:
    """Free the timing phase's models and hand glibc's free heap back to the OS (Linux)."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def memory_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh process: build one configuration, 2 eval forwards, then 2 training steps."""
    torch.set_num_threads(spec["threads"])
    setting = spec["setting_spec"]
    backbone = load(setting)
    backbone.fingerprint()
    batch, labels = make_batch(backbone, setting)
    device = spec["device"]
    base = _memory_now(device)[0]
    _reset_peak(device)
    case = Case(spec["method"], backbone, spec["members"], batch, labels, device, spec["bf16"])
    out = {}
    for phase, fn in (("eval", case.eval_step), ("train", case.train_step)):
        _reset_peak(device)
        fn()
        fn()
        out[f"mem_{phase}_mb"] = _memory_now(device)[1] - base
    return out


def measure_memory(setting_name: str, setting: dict[str, Any], members: int, method: str,
                   args: argparse.Namespace) -> dict[str, Any]:
    spec = {"setting_spec": setting, "members": members, "method": method, "device": args.device,
            "bf16": args.bf16, "threads": torch.get_num_threads()}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.memory_timeout)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY ")), None)
    if proc.returncode or line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"mem_error": f"memory worker for {setting_name}/{method}/M={members} failed: {tail[0]}"[:300]}
    return json.loads(line[len("MEMORY "):])


# ----------------------------------------------------------------------------------------------
# set-up (SVD) alone


def measure_setup(names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Wall and CPU time of ``sve.wrap`` (M = 4) per backbone and SVD dtype, fingerprint excluded."""
    rows = []
    for name in names:
        try:
            backbone = load_backbone(name)
            backbone.fingerprint()
        except Exception as e:
            rows.append({"backbone": name, "error": f"{type(e).__name__}: {e}"[:300]})
            continue
        for dtype in ("float64", "float32"):
            svem.clear_svd_cache()
            t0, c0 = time.perf_counter(), time.process_time()
            model = sve.wrap(backbone, 4, NUM_CLASSES, seed=0, svd_dtype=dtype)
            rows.append({"backbone": name, "svd_dtype": dtype, "layers": len(model.layers()),
                         "setup_s": time.perf_counter() - t0, "setup_cpu_s": time.process_time() - c0,
                         "error": None})
            del model
    svem.clear_svd_cache()
    return rows


# ----------------------------------------------------------------------------------------------
# the cost model (multiply-adds in the targeted linear layers, from sve.methods.sve.path_costs)


def cost_model(names: list[str], members: int, lora_rank: int = 8) -> str:
    """Predicted training multiply-adds of the targeted layers, relative to the limit's 3·R·out·in,
    per layer shape and summed (SVE auto / factored / dense, LoRA-Ensemble), at ``members``."""
    lines = [f"training multiply-adds in the targeted linear layers, × the limit (3·R·out·in), M = {members}",
             "setting | layer out×in (count) | rows/member T | dense | factored | auto picks | LoRA r=8"]
    for name in names:
        setting = SETTINGS[name]
        backbone = load(setting)
        T = setting["batch"] * (setting["tokens"] if "tokens" in setting
                                else (setting["image_size"] // backbone.patch_size) ** 2 + 1)
        R = members * T
        shapes: dict[tuple[int, int], int] = {}
        for n in ensemble.select_targets(backbone, "all"):
            o, i = backbone.model.get_submodule(n).weight.shape
            shapes[(o, i)] = shapes.get((o, i), 0) + 1
        total = dict.fromkeys(("limit", "dense", "factored", "auto", "lora"), 0)
        for (o, i), count in shapes.items():
            d, f = svem.path_costs(R, members, o, i, min(o, i), train=True)
            lora = 2 * R * o * i + 4 * R * lora_rank * (i + o)  # W x, ∂x through W; A, B and their grads
            limit = 3 * R * o * i
            costs = {"limit": limit, "dense": d, "factored": f, "auto": min(d, f), "lora": lora}
            for key, v in costs.items():
                total[key] += count * v
            lines.append(f"{name} | {o}×{i} ({count}) | {T} | {d / limit:.2f} | {f / limit:.2f} | "
                         f"{'dense' if d <= f else 'factored'} | {lora / limit:.2f}")
        lines.append(f"{name} | all targets | {T} | {total['dense'] / total['limit']:.2f} | "
                     f"{total['factored'] / total['limit']:.2f} | {total['auto'] / total['limit']:.2f} | "
                     f"{total['lora'] / total['limit']:.2f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# report


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def table(rows: list[dict[str, Any]], settings: dict[str, dict[str, Any]]) -> str:
    cols = [("method", "method"), ("train_s", "train s"), ("train_ratio", "×limit"), ("eval_s", "eval s"),
            ("eval_ratio", "×limit"), ("mem_train_mb", "train MB"), ("mem_train_ratio", "×limit"),
            ("mem_eval_mb", "eval MB"), ("mem_eval_ratio", "×limit"), ("setup_s", "setup s"),
            ("trainable", "trainable")]
    lines = []
    groups = sorted({(r["setting"], r["members"]) for r in rows},
                    key=lambda g: (list(settings).index(g[0]), g[1]))
    for name, M in groups:
        s = settings[name]
        size = f"{s['image_size']} px" if "image_size" in s else f"{s['tokens']} tokens"
        lines.append(f"\n{name}: {s['backbone']} @ {size}, batch {s['batch']}, M = {M}")
        lines.append(" | ".join(h for _, h in cols))
        lines.append(" | ".join("---" for _ in cols))
        for r in (r for r in rows if (r["setting"], r["members"]) == (name, M)):
            cells = [_fmt(r.get(k)) for k, _ in cols]
            lines.append(" | ".join(cells) + (f"  ({r['error']})" if r.get("error") else ""))
    return "\n".join(lines)


def add_ratios(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        limit = next((x for x in rows if x["method"] == "limit" and x["setting"] == r["setting"]
                      and x["members"] == r["members"]), {})
        for key in ("train_s", "eval_s", "mem_train_mb", "mem_eval_mb"):
            ratio = key.replace("_s", "_ratio") if key.endswith("_s") else key.replace("_mb", "_ratio")
            a, b = r.get(key), limit.get(key)
            r[ratio] = a / b if a is not None and b else None


def machine(device: str) -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown") if Path("/proc/cpuinfo").exists() else "unknown"
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": device, "python": sys.version.split()[0],
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "load_before": list(os.getloadavg())}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ----------------------------------------------------------------------------------------------
# figures for docs/PERFORMANCE.md


def plots(files: list[Path], out_dir: Path) -> list[Path]:
    """Time and memory (ratios to the limit) versus M, and the M = 4 bars per setting, as PNGs."""
    import pandas as pd
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from sve import plots as sp

    frames = [pd.DataFrame(json.loads(f.read_text())["results"]) for f in files]
    df = pd.concat(frames, ignore_index=True).dropna(subset=["train_s"])
    df = df.drop_duplicates(["setting", "members", "method"], keep="last")
    figs = {}
    metrics = [("train_ratio", "training step (× limit)"), ("eval_ratio", "eval forward (× limit)"),
               ("mem_train_mb", "peak training memory (MB)")]
    for setting, sub in df.groupby("setting"):
        if sub["members"].nunique() < 2:
            continue
        fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[t for _, t in metrics],
                            horizontal_spacing=0.08)
        for i, method in enumerate(m for m in METHODS if m in set(sub["method"])):
            line = sub[sub["method"] == method].sort_values("members")
            style = {"color": sp._color(i), "dash": "dash" if i >= 8 else "solid"}  # 8 colours, 9 methods
            for j, (col, _) in enumerate(metrics):
                trace = go.Scatter(x=line["members"], y=line[col], mode="lines+markers", name=LABELS[method],
                                   legendgroup=method, showlegend=j == 0, line=style)
                fig.add_trace(trace, 1, j + 1)
        fig.update_xaxes(title_text="members M", type="log", tickvals=sorted(sub["members"].unique()))
        figs[f"perf_{setting}_vs_M"] = sp._finish(fig, f"{setting}: cost versus M", 1300, 430)
    for setting, sub in df[df["members"] == 4].groupby("setting"):
        bars = sub.set_index("method").reindex([m for m in METHODS if m in set(sub["method"])]).reset_index()
        bars["method"] = bars["method"].map(LABELS)
        fig = sp.cost_bars(
            bars, columns=["train_ratio", "eval_ratio", "mem_train_ratio"],
            titles={"train_ratio": "training step (× limit)", "eval_ratio": "eval forward (× limit)",
                    "mem_train_ratio": "peak training memory (× limit)"},
            title=f"{setting}, M = 4: cost relative to the limit (dotted line)")
        for j in range(3):
            fig.add_hline(y=1.0, line_dash="dot", line_color="grey", row=1, col=j + 1)
        figs[f"perf_{setting}_M4"] = fig
    out_dir.mkdir(parents=True, exist_ok=True)
    return sp.export(figs, out_dir, formats=("png",))


# ----------------------------------------------------------------------------------------------
# main


def _csv(text: str, valid: tuple | list) -> list[str]:
    values = [v for v in text.split(",") if v]
    bad = [v for v in values if v not in valid]
    if bad or not values:
        raise SystemExit(f"bench.py: invalid {bad or text!r}; choose from {', '.join(valid)}")
    return values


def _members(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise SystemExit(f"bench.py: --members {text!r}: give integers ≥ 1, e.g. 1,4,8,16 (the grid)")
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--members", default=",".join(map(str, MEMBERS)))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in forward passes")
    p.add_argument("--random-init", action="store_true",
                   help="randomly initialised backbones (same shapes and cost; no asset package needed)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-configuration memory processes")
    p.add_argument("--setup", action=argparse.BooleanOptionalAction, default=None,
                   help="time sve.wrap alone on dinov2-small, minilm-l6, smollm2-135m")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny models, M = 2, one round")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--memory-timeout", type=float, default=3600)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--plots", type=Path, default=None, metavar="DIR",
                   help="make the figures from --out / benchmarks/results/*.json into DIR and exit")
    p.add_argument("--cost-model", action="store_true",
                   help="print the predicted multiply-adds per layer (no timing) for --settings and exit")
    p.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_worker:
        print("MEMORY " + json.dumps(memory_worker(json.loads(args.memory_worker))), flush=True)
        return 0
    if args.plots:
        files = [args.out] if args.out else sorted((ROOT / "benchmarks" / "results").glob("cpu-*.json"))
        for path in plots(files, args.plots):
            print(path)
        return 0
    if args.cost_model:
        for M in _members(args.members):
            print(cost_model(_csv(args.settings, list(SETTINGS)), M) + "\n")
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench.py: --device cuda but torch sees no GPU; run on CPU (the default).")
    if args.threads:
        torch.set_num_threads(args.threads)
    all_settings = {**SETTINGS, **QUICK_SETTINGS}
    if args.quick:
        settings = list(QUICK_SETTINGS)
        members, names = [2], _csv(args.methods, METHODS)
        args.reps, args.warmup = 1, 1
    else:
        settings = _csv(args.settings, list(SETTINGS))
        members, names = _members(args.members), _csv(args.methods, METHODS)
    run_setup = args.setup if args.setup is not None else not args.quick
    command = " ".join(["benchmarks/bench.py"] + (sys.argv[1:] if argv is None else argv))
    report: dict[str, Any] = {"schema": "sve-bench/1", "command": command, "machine": machine(args.device),
                              "settings": {}, "results": [], "setup": []}
    for name in settings:
        setting = all_settings[name]
        if args.random_init:
            setting = {**setting, "options": {**setting.get("options", {}), "pretrained": False}}
        backbone = load(setting)
        t0 = time.perf_counter()
        backbone.fingerprint()
        report["settings"][name] = {**{k: v for k, v in setting.items() if k != "options"},
                                    "pretrained": backbone.pretrained,
                                    "blocks": len(backbone.blocks), "fingerprint_s": time.perf_counter() - t0}
        for M in members:
            print(f"[{name} M={M}] timing {len(names)} methods ...", file=sys.stderr, flush=True)
            rows = time_methods(setting, backbone, M, names, args)
            release_memory()  # the memory processes below should not run beside a bloated parent
            for row in rows:
                row["setting"] = name
                wanted = not args.no_memory and (not args.quick or (
                    row["method"] in QUICK_MEMORY and name == QUICK_MEMORY_SETTING))
                if wanted and row["error"] is None:
                    print(f"[{name} M={M}] memory of {row['method']} ...", file=sys.stderr, flush=True)
                    mem = measure_memory(name, setting, M, row["method"], args)
                    row.update({k: v for k, v in mem.items() if k != "mem_error"})
                    row["error"] = mem.get("mem_error")
            report["results"].extend(rows)
            add_ratios(report["results"])
            print(table(rows, all_settings), flush=True)
    if run_setup:
        report["setup"] = measure_setup(SETUP_BACKBONES)
        print("\nSVD set-up (sve.wrap, M = 4, fingerprint excluded)")
        print("backbone | svd dtype | layers | wall s | CPU s")
        for r in report["setup"]:
            cells = [_fmt(r.get(k)) for k in ("backbone", "svd_dtype", "layers", "setup_s", "setup_cpu_s")]
            print(" | ".join(cells) + (f"  ({r['error']})" if r.get("error") else ""))
    report["machine"]["load_after"] = list(os.getloadavg())
    out = args.out
    if out is None and not args.quick:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        out = ROOT / "benchmarks" / "results" / f"{args.device.split(':')[0]}-{stamp}.json"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
