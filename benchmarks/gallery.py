"""Figure gallery: every `sve.plots` figure type, drawn from a tiny real run, written to docs/figures/.

The run (CPU, about half a minute; self-contained, it does not use `sve.methods`):

- data: scikit-learn's bundled 8×8 digits. In-distribution (ID) = digits 0–6, OOD = digits 7–9.
  A deliberately small training set (40 per class) makes the models over-confident.
- "single": a 64→96→96→96 ReLU MLP trained on ID (it also serves as the pretrained model).
- "SVE (M=4)": the single model's three hidden weights as ``W = U diag(s) Vᵀ``; U, V frozen and shared,
  each member trains its own singular values (init ``s·(1+ε)``, ``ε ~ N(0, 0.01²)``), biases and a fresh
  head; members train jointly on the same batches (mean cross-entropy). σ snapshots every 10 steps.
- "deep ensemble (M=4)": four MLPs like "single" from different seeds.
- temperature scaling of the SVE ensemble on a validation split; Gaussian pixel noise as shift.

Run: ``.venv/bin/python benchmarks/gallery.py [--out docs/figures] [--formats png svg]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from sve import metrics, plots
from sve.calibration import TemperatureScaler

ID_CLASSES = 7
MEMBERS = 4
WIDTH = 96
NOISE = (0.0, 0.15, 0.3, 0.45, 0.6, 0.8)  # Gaussian pixel noise std per shift severity (pixels in [0, 1])


def load_data(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    ind = y < ID_CLASSES
    x_id, y_id = x[ind], y[ind]
    train, rest, y_train, y_rest = train_test_split(
        x_id, y_id, train_size=40 * ID_CLASSES, stratify=y_id, random_state=seed
    )
    val, test, y_val, y_test = train_test_split(
        rest, y_rest, train_size=300, stratify=y_rest, random_state=seed
    )
    t = lambda a, b: (torch.tensor(a), torch.tensor(b))  # noqa: E731
    return {
        "train": t(train, y_train),
        "val": t(val, y_val),
        "test": t(test, y_test),
        "ood": t(x[~ind], y[~ind]),
    }


def mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, WIDTH),
        nn.ReLU(),
        nn.Linear(WIDTH, WIDTH),
        nn.ReLU(),
        nn.Linear(WIDTH, WIDTH),
        nn.ReLU(),
        nn.Linear(WIDTH, ID_CLASSES),
    )


def train(model: nn.Module, data, steps: int, lr: float, seed: int, on_step=None) -> float:
    """Adam on mini-batches of 32 with a fixed seed; returns the wall time in seconds."""
    x, y = data["train"]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        out = model(x[idx])  # (B, C) or (B, M, C)
        loss = nn.functional.cross_entropy(
            out.reshape(-1, out.shape[-1]), y[idx].repeat_interleave(out.shape[1] if out.ndim == 3 else 1)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step + 1)
    return time.perf_counter() - start


class SVELinear(nn.Module):
    """``y_m = U diag(σ_m) Vᵀ x_m + b_m`` for members ``m``; input and output ``(M, B, features)``."""

    def __init__(self, layer: nn.Linear, members: int, std: float, gen: torch.Generator) -> None:
        super().__init__()
        u, s, vh = torch.linalg.svd(layer.weight.detach(), full_matrices=False)
        self.register_buffer("u", u)
        self.register_buffer("vh", vh)
        self.register_buffer("sigma0", s)
        self.sigma = nn.Parameter(s * (1 + std * torch.randn(members, len(s), generator=gen)))
        self.bias = nn.Parameter(layer.bias.detach().repeat(members, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x @ self.vh.T) * self.clamped()[:, None]) @ self.u.T + self.bias[:, None]

    def clamped(self) -> torch.Tensor:
        """Singular values stay non-negative (as in SVE): ``max(σ, 0)``."""
        return self.sigma.clamp(min=0)


class SVEEnsemble(nn.Module):
    def __init__(self, pretrained: nn.Sequential, members: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.layers = nn.ModuleList(SVELinear(m, members, 0.01, gen) for m in list(pretrained)[:-1:2])
        self.head_w = nn.Parameter(torch.randn(members, WIDTH, ID_CLASSES, generator=gen) / WIDTH**0.5)
        self.head_b = nn.Parameter(torch.zeros(members, 1, ID_CLASSES))
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.expand(self.members, *x.shape)
        for layer in self.layers:
            h = torch.relu(layer(h))
        return (h @ self.head_w + self.head_b).transpose(0, 1)  # (B, M, C)

    def spectra(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {
            f"fc{i + 1}": (layer.clamped().detach().numpy().copy(), layer.sigma0.numpy())
            for i, layer in enumerate(self.layers)
        }


class Stack(nn.Module):
    """Independent models as one ensemble: ``(B, M, C)`` logits."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models], 1)


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return model(x).double().numpy()


def run(seed: int = 0) -> dict:
    data = load_data(seed)
    single = mlp(seed)
    t_single = train(single, data, steps=1500, lr=3e-3, seed=seed)
    single_params = trainable(single)

    for p in single.parameters():
        p.requires_grad_(False)
    sve = SVEEnsemble(single, MEMBERS, seed)
    history = [(0, sve.spectra())]
    t_sve = train(
        sve,
        data,
        steps=1500,
        lr=2e-3,
        seed=seed + 1,
        on_step=lambda s: history.append((s, sve.spectra())) if s % 10 == 0 else None,
    )

    deep = Stack([mlp(seed + 100 + m) for m in range(MEMBERS)])
    t_deep = sum(train(m, data, steps=1500, lr=3e-3, seed=seed + 100 + i) for i, m in enumerate(deep.models))

    models = {"single": single, f"SVE (M={MEMBERS})": sve, f"deep ensemble (M={MEMBERS})": deep}
    logits = {
        name: {split: logits_of(m, data[split][0]) for split in ("val", "test", "ood")}
        for name, m in models.items()
    }
    scaler = TemperatureScaler().fit(logits[f"SVE (M={MEMBERS})"]["val"], data["val"][1])
    logits["SVE + TS"] = {k: scaler(v) for k, v in logits[f"SVE (M={MEMBERS})"].items()}

    gen = torch.Generator().manual_seed(seed + 7)
    x_test = data["test"][0]
    shifted = [(x_test + std * torch.randn(x_test.shape, generator=gen)).clamp(0, 1) for std in NOISE]
    shift_rows = []
    for name, m in models.items():
        for severity, x in enumerate(shifted):
            row = metrics.evaluate(logits_of(m, x), data["test"][1]).loc["ensemble"].to_dict()
            shift_rows.append({"method": name, "severity": severity, **row})

    cost = pd.DataFrame(
        {
            "method": list(models),
            "params": [single_params, trainable(sve), sum(trainable(m) for m in deep.models)],
            "time_s": [t_single, t_sve, t_deep],
        }
    )
    cost["state_kb"] = cost["params"] * 4 / 1024
    return {
        "data": data,
        "logits": logits,
        "history": history,
        "spectra": sve.spectra(),
        "shift": pd.DataFrame(shift_rows),
        "cost": cost,
        "temperature": scaler.temperature,
    }


def figures(result: dict) -> dict:
    y_test = result["data"]["test"][1].numpy()
    logits = result["logits"]
    sve_name = f"SVE (M={MEMBERS})"
    sve = logits[sve_name]
    scores = {
        k: (metrics.uncertainty(sve["test"], k), metrics.uncertainty(sve["ood"], k))
        for k in ("msp", "entropy", "mutual_info", "energy")
    }
    by_method = {name: (v["test"], y_test) for name, v in logits.items()}
    spectra, history = result["spectra"], result["history"]
    return {
        "reliability": plots.reliability_diagram(by_method),
        "reliability_overlay": plots.reliability_diagram(by_method, overlay=True),
        "confidence_histogram": plots.confidence_histogram({k: v["test"] for k, v in logits.items()}),
        "ood_histograms": plots.ood_histograms(
            scores, log_y=True, title=f"{sve_name}: digits 0–6 (ID) vs 7–9 (OOD)"
        ),
        "roc_curves": plots.roc_curves(scores, title=f"{sve_name}: OOD detection (digits 7–9)"),
        "risk_coverage": plots.risk_coverage_curves(by_method),
        "shift": plots.shift_curves(result["shift"], title="Under Gaussian pixel noise (severity 0–5)"),
        "spectrum": plots.spectrum_plot(spectra, "fc2"),
        "spectrum_heatmap": plots.spectrum_heatmap(spectra),
        "spectrum_cv_heatmap": plots.spectrum_heatmap(spectra, value="cv"),
        "member_distances": plots.member_distance_matrix(spectra),
        "spectrum_history": plots.spectrum_history(history),
        "cost": plots.cost_bars(
            result["cost"],
            columns=["params", "time_s", "state_kb"],
            titles={"state_kb": "trainable state (KB, fp32)", "time_s": "training time (s)"},
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "figures"))
    parser.add_argument("--formats", nargs="+", default=["png"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    result = run(args.seed)
    y = result["data"]["test"][1].numpy()
    table = pd.concat(
        {
            name: metrics.evaluate(v["test"], y, v["ood"]).loc["ensemble"]
            for name, v in result["logits"].items()
        },
        axis=1,
    ).T
    with pd.option_context("display.width", 160, "display.max_columns", 12, "display.precision", 3):
        print(
            table[
                ["accuracy", "nll", "brier", "ece", "aurc", "auroc_msp", "auroc_entropy", "auroc_mutual_info"]
            ]
        )
    print(f"temperature (SVE ensemble): {result['temperature']:.3f}")
    written = plots.export(figures(result), args.out, formats=tuple(args.formats))
    print(f"wrote {len(written)} files to {args.out}")


if __name__ == "__main__":
    main()
