"""Memory benchmark of ``sve.data.prepare``'s lazy path: one epoch over a large 32x32 set at 224 px
(issue #14, docs/PERFORMANCE.md "Data loading memory").

    .venv/bin/python benchmarks/memory.py                      # 50,000 images, 224 px, batch 16, 2 workers
    .venv/bin/python benchmarks/memory.py --images 2000 --size 56 --workers 0   # a quick look

What it does: writes a synthetic CIFAR-10 in its own on-disk format (``cifar-10-batches-py/``,
pickled ``data_batch_1..5`` + ``test_batch`` + ``batches.meta``; random pixels, so torchvision's md5
check, the one thing that cannot pass on synthetic files, is switched off in the measuring
process), then in a fresh subprocess: ``load_dataset("cifar10", split="train", val_frac=0)``,
``prepare(ds, backbone)`` for a stand-in backbone with ``image_size`` = ``--size`` (``prepare``
picks its path by size: lazy above ``max_cached_bytes()``), and one epoch of
``prepared.loader(batch, num_workers=W)`` whose batches go through a cheap stand-in (the mean of
``pixel_values``; no backbone forward).

Printed (and ``--json``): the path ``prepare`` took; the peak resident set size of the measuring
process (``VmHWM``) and of its largest worker; the peak over the epoch (sampled every 50 ms) of the
process tree's memory, ``peak_tree_mb`` = the main process's RSS + the workers' private pages (the
forked workers share torch's libraries and the source array with the parent: those count once),
and of its summed RSS (``peak_tree_rss_mb``: shared pages counted once per process, an upper
bound); the RSS right after ``import torch, torchvision, sve.data`` (``baseline_mb``; the CUDA build
of torch alone is about 0.7 GB of mostly shared library pages); the epoch's wall time; and what the
cached path would have materialised: the resized uint8 pixels (``N·3·S²`` bytes) and the same as
float32.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

PER_BATCH_FILE = 10_000
ROOT = Path(__file__).resolve().parents[1]


def write_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """Random uint8 images in CIFAR-10's python format: five train batches and one test batch."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = [n_train // 5 + (i < n_train % 5) for i in range(5)]
    for name, n in [*((f"data_batch_{i + 1}", s) for i, s in enumerate(sizes)), ("test_batch", n_test)]:
        with open(base / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": (np.arange(n) % 10).tolist()}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, f)


def _status_kb(pid: int, key: str, file: str = "status") -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (VmRSS, VmHWM) or ``smaps_rollup`` (Pss); 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class TreeSampler(threading.Thread):
    """Samples this process and its workers: the largest value of (this process's RSS + the
    workers' private memory) and of the summed RSS, and the largest worker RSS high-water mark."""

    def __init__(self, every: float = 0.05):
        super().__init__(daemon=True)
        self.every, self.stop = every, threading.Event()
        self.tree_kb = self.rss_kb = self.worker_hwm_kb = 0

    def run(self) -> None:
        me = os.getpid()
        while not self.stop.is_set():
            procs = [me, *_children(me)]
            private = sum(_status_kb(k, f"Private_{kind}", "smaps_rollup")
                          for k in procs[1:] for kind in ("Clean", "Dirty"))
            self.tree_kb = max(self.tree_kb, _status_kb(me, "VmRSS") + private)
            self.rss_kb = max(self.rss_kb, sum(_status_kb(p, "VmRSS") for p in procs))
            self.worker_hwm_kb = max([self.worker_hwm_kb, *(_status_kb(k, "VmHWM") for k in procs[1:])])
            time.sleep(self.every)


def measure(root: str, size: int, batch: int, workers: int, max_batches: int | None) -> dict:
    """The measuring process: load, prepare, one epoch; returns the numbers (see the docstring)."""
    import torch
    import torchvision.datasets.cifar

    from sve import data

    baseline_kb = _status_kb(os.getpid(), "VmRSS")
    torchvision.datasets.cifar.check_integrity = lambda *a, **k: True  # synthetic files: no published md5
    sampler = TreeSampler()
    sampler.start()
    t0 = time.perf_counter()
    ds = data.load_dataset("cifar10", split="train", root=root, val_frac=0.0)
    backbone = argparse.Namespace(name="stand-in", modality="image", image_size=size, patch_size=None,
                                  mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    prepared = data.prepare(ds, backbone, cache=False)
    load_s = time.perf_counter() - t0
    total, seen, t1 = 0.0, 0, time.perf_counter()
    for i, b in enumerate(prepared.loader(batch, num_workers=workers)):
        total += float(b["pixel_values"].mean())  # the cheap stand-in for a forward pass
        seen += len(b["labels"])
        if max_batches is not None and i + 1 >= max_batches:
            break
    epoch_s = time.perf_counter() - t1
    sampler.stop.set()
    sampler.join()
    n = len(ds)
    return {
        "images": n, "size": size, "batch": batch, "workers": workers, "seen": seen,
        "path": "lazy" if getattr(prepared, "lazy", False) else "cached",
        "source_mb": round(ds.images.nbytes / 2**20, 1),
        "baseline_mb": round(baseline_kb / 1024, 1),
        "peak_main_mb": round(_status_kb(os.getpid(), "VmHWM") / 1024, 1),
        "peak_worker_mb": round(sampler.worker_hwm_kb / 1024, 1),
        "peak_tree_mb": round(sampler.tree_kb / 1024, 1),
        "peak_tree_rss_mb": round(sampler.rss_kb / 1024, 1),
        "load_s": round(load_s, 2), "epoch_s": round(epoch_s, 2),
        "cached_uint8_gb": round(data.resized_bytes(n, 3, size) / 2**30, 2),
        "cached_float32_gb": round(4 * data.resized_bytes(n, 3, size) / 2**30, 2),
        "max_cached_gb": round(data.max_cached_bytes() / 2**30, 2),
        "threads": torch.get_num_threads(), "check": total,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=50_000, help="training images (default 50,000)")
    p.add_argument("--size", type=int, default=224, help="side the images are resized to (default 224)")
    p.add_argument("--batch", type=int, default=16, help="batch size (default 16, the runs' default)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    p.add_argument("--max-batches", type=int, default=None, help="stop the epoch early (smoke runs)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(measure(a.child, a.size, a.batch, a.workers, a.max_batches)))
        return 0
    with tempfile.TemporaryDirectory(prefix="sve-memory-") as tmp:
        write_cifar10(Path(tmp), a.images, min(a.images, PER_BATCH_FILE))
        cmd = [sys.executable, __file__, "--child", tmp, "--size", str(a.size), "--batch", str(a.batch),
               "--workers", str(a.workers)] + (["--max-batches", str(a.max_batches)] if a.max_batches else [])
        # the checkout's sve first (the script's own folder, benchmarks/, is what Python puts on the path)
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
    if out.returncode:
        sys.stderr.write(out.stderr)
        return out.returncode
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{r['images']} images 32x32 -> {r['size']} px, batch {r['batch']}, {r['workers']} workers: "
          f"prepare took the {r['path']} path (cached-path limit {r['max_cached_gb']} GiB)")
    print(f"  source array {r['source_mb']} MB; RSS after imports {r['baseline_mb']} MB")
    print(f"  peak RSS: main process {r['peak_main_mb']} MB, largest worker {r['peak_worker_mb']} MB")
    print(f"  peak of the process tree (sampled): main RSS + workers' private memory {r['peak_tree_mb']} MB; "
          f"RSS sum {r['peak_tree_rss_mb']} MB (shared pages counted per process)")
    print(f"  load + prepare {r['load_s']} s, epoch ({r['seen']} images) {r['epoch_s']} s")
    print(f"  the cached path would materialise {r['cached_uint8_gb']} GiB of uint8 pixels "
          f"({r['cached_float32_gb']} GiB as float32)")
    if a.json:
        a.json.write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
