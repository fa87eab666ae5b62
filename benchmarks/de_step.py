"""Deep-ensemble training step: independent members against the joint step (issue #13, docs/PERFORMANCE.md).

    .venv/bin/python benchmarks/de_step.py                              # tiny ViT and DINOv2-S at 56 px
    .venv/bin/python benchmarks/de_step.py --settings dinov2-56 --members 4 --steps 12 --rounds 3

What is timed: the steps of ``sve.train.fit`` itself, on a deep ensemble (``sve.methods.build
("deep_ensemble", ...)``, vmapped members), once with ``independent=True`` (each member draws its own
batch from its own shuffled loader, the M batches are stacked member-major and run in one vmapped
step, the gradient norm is clipped per member) and once with ``independent=False`` (the joint step:
one loader, every member on the same batch, one clip norm). A step is the wall time between two
``"step"`` callbacks, so it counts everything ``fit`` does per step: fetching and collating the
batch(es), forward, loss, backward, clipping, the AdamW step. The first step of each fit is left out
(loader start-up). The two modes alternate, ``--rounds`` times, so that load drift on a shared
machine hits both alike; each round builds a fresh model and runs one epoch of ``--steps`` steps.
Printed, per mode: the median wall time of a step and the median CPU time of the process over a
step (``time.process_time``: with one torch thread, what the step itself computed, little touched
by other jobs on a busy machine), and each ``ratio`` = independent / joint (the issue's budget: at
most 1.10). Data: random N(0, 1) images, 10 classes, in memory (a Dataset of dict items, as
``sve.data.prepare`` gives); grad clip 1.0 (the recipe's); no validation set.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import torch
from torch.utils.data import Dataset

from sve import methods
from sve.backbones import from_model, load_backbone
from sve.train import fit

NUM_CLASSES = 10
SETTINGS: dict[str, dict[str, Any]] = {
    # a random timm ViT: patch 8 at 32 px (16 tokens), width 192, 6 blocks
    "tiny-vit": {"backbone": "tiny-vit", "image_size": 32, "batch": 16},
    "dinov2-56": {"backbone": "dinov2-small", "image_size": 56, "batch": 16},
}
MODES = ("joint", "independent")


class RandomImages(Dataset):
    """``n`` random images with random labels, as dict items (what ``sve.data.prepare`` gives)."""

    def __init__(self, n: int, size: int):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, size, size, generator=gen)
        self.y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def load(setting: dict[str, Any]) -> Any:
    if setting["backbone"] == "tiny-vit":
        from timm.models.vision_transformer import VisionTransformer

        torch.manual_seed(0)
        return from_model(VisionTransformer(img_size=setting["image_size"], patch_size=8, embed_dim=192,
                                            depth=6, num_heads=3, num_classes=0), name="tiny-vit")
    return load_backbone(setting["backbone"], image_size=setting["image_size"])


def step_times(backbone: Any, data: Dataset, members: int, batch: int,
               independent: bool) -> list[tuple[float, float]]:
    """(wall s, process CPU s) of each step of one fit epoch but the first."""
    stamps: list[tuple[float, float]] = []
    model = methods.build("deep_ensemble", backbone, members, NUM_CLASSES, seed=0)
    fit(model, data, None, epochs=1, warmup_epochs=0, lr=1e-4, grad_clip=1.0, batch_size=batch, seed=0,
        progress=False, independent=independent,
        callbacks=[lambda event, info: stamps.append((time.perf_counter(), time.process_time()))
                   if event == "step" else None])
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--steps", type=int, default=10, help="steps per fit (the first is not timed)")
    p.add_argument("--rounds", type=int, default=3, help="fits per mode, alternating")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [s for s in args.settings.split(",") if s]
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown or args.steps < 2 or args.rounds < 1 or args.members < 1:
        p.error(f"settings from {sorted(SETTINGS)} (unknown: {unknown}); steps ≥ 2, rounds ≥ 1, members ≥ 1")
    print(f"# {' '.join(sys.argv)}\n# torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.2f} at start")
    print("| setting | M | batch | wall s: joint | independent | ratio | CPU s: joint | independent | ratio "
          "| wall spread max/min: joint, indep. |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        setting = SETTINGS[name]
        backbone = load(setting)
        data = RandomImages(setting["batch"] * args.steps, setting["image_size"])
        times: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                independent = mode == "independent"
                times[mode] += step_times(backbone, data, args.members, setting["batch"], independent)
        cells = []
        for kind in (0, 1):  # wall, CPU
            joint, indep = (statistics.median(t[kind] for t in times[mode]) for mode in MODES)
            cells += [f"{joint:.4f}", f"{indep:.4f}", f"{indep / joint:.3f}"]
        walls = [[t[0] for t in times[mode]] for mode in MODES]
        spread = ", ".join(f"{max(w) / min(w):.2f}" for w in walls)
        row = [name, str(args.members), str(setting['batch']), *cells, spread]
        print(f"| {' | '.join(row)} |", flush=True)
    print(f"# load {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
