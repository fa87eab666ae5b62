"""Linear-probe accuracy of the frozen DINOv2-S features on Fashion-MNIST at several input sizes.

Chooses the study's image size by measurement (issue #13): logistic regression on the pooled
features of the training images, accuracy on the test images (``sve.experiments.probe``).

    python benchmarks/probe.py [--sizes 28 56 112] [--train 2000] [--test 2000] [--seeds 0 1 2] [--append]

Writes ``notebooks/results/probe.csv`` (one row per size × data seed) and prints the mean ± std
table that ``docs/RESULTS.md`` shows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from sve.experiments import ExperimentConfig
from sve.experiments.probe import linear_probe

OUT = Path(__file__).resolve().parents[1] / "notebooks" / "results" / "probe.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 56, 112])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="data seeds (the split)")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--append", action="store_true", help="add rows to an existing --out table")
    args = parser.parse_args()
    before = pd.read_csv(args.out) if args.append and args.out.is_file() else None
    rows = []
    for size in args.sizes:
        for seed in args.seeds:
            config = ExperimentConfig(name="probe", backbone="dinov2-small", dataset=args.dataset, ood=[],
                                      train_limit=args.train, test_limit=args.test, data_seed=seed)
            result = linear_probe(config, size)
            rows.append({**result.as_dict(), "data_seed": seed})
            print(f"{size:4d} px seed {seed}: probe accuracy {100 * result.accuracy:.2f} % "
                  f"(features {result.feature_seconds:.0f} s, fit {result.fit_seconds:.0f} s)", flush=True)
        table = pd.concat([before, pd.DataFrame(rows)], ignore_index=True) if before is not None else (
            pd.DataFrame(rows))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)  # after every size: a long run keeps what it measured
    summary = table.groupby("image_size")["accuracy"].agg(["mean", "std", "count"]) * [100, 100, 1]
    print(summary.round(2).to_string())


if __name__ == "__main__":
    main()
