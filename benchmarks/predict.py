"""Predict-tab latency (issue #15): one input through a finished run's method on the CPU.

    .venv/bin/python benchmarks/predict.py RUN_FOLDER [RUN_FOLDER ...] [--reps 10]

For every finished method of every run given, prints the time to open it (the backbone and the
adapter, loaded once per run and then cached by the app: ``open_s``) and the median wall time of one
prediction (``sve.experiments.predictor.Predictor``): a sample of the run's test set and, for image
runs, an uploaded PNG (decoded, converted, resized) or, for text runs, a typed text. The goal is a
prediction under 1 s on the CPU for the zoo backbones; the numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np


def _median_s(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(p, method: str, reps: int) -> str:
    """One line of timings for ``method`` of the opened run ``p`` (a ``Predictor``)."""
    from PIL import Image

    start = time.perf_counter()
    first = p.predict_sample(method, "test", 0)      # loads the backbone (first method) and the adapter
    open_s = time.perf_counter() - start
    sample_s = _median_s(lambda: p.predict_sample(method, "test", 1), reps)
    if p.modality == "image":
        buf = io.BytesIO()
        Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(buf, format="PNG")
        own, item = "upload_s", buf.getvalue()
    else:
        own, item = "text_s", "Shares rose after the company reported higher profits."
    own_s = _median_s(lambda: p.predict(item, method), reps)
    return (f"{p.run.path.name} {p.config.backbone} {method} (M={first.members}): open_s {open_s:.2f}  "
            f"sample_s {sample_s:.3f}  {own} {own_s:.3f}")


def main() -> None:
    import torch

    from sve.experiments.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (made by sve.experiments.run / the app)")
    parser.add_argument("--reps", type=int, default=10, help="predictions timed per case (median)")
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}")
    for path in args.runs:
        p = Predictor(path)
        for method in dict.fromkeys(m for m, _ in p.run.done):
            print(bench(p, method, args.reps), flush=True)


if __name__ == "__main__":
    main()
