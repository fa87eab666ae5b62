"""sve.train: joint training on real data (sklearn digits), determinism, checkpoints, callbacks,
non-finite loss, σ decay toward the pretrained values, prediction, and DDP on 2 CPU processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import accelerate
import pytest
import torch
from tiny import vit as tiny_vit
from torch.utils.data import DataLoader, Dataset

from sve import ensemble, io, methods, train
from sve.errors import ConfigError, DataError, MissingAssetError, TrainingError
from sve.methods import sve as svem

TESTS = Path(__file__).resolve().parent
pytestmark = pytest.mark.usefixtures("one_thread")


class Items(Dataset):
    """A Dataset of dict items, as sve.data.prepare gives."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def digits(n_train: int = 96, n_val: int = 48, size: int = 32) -> tuple[Items, Items]:
    """Real data: sklearn's 8×8 digits, upsampled to size×size×3 and standardised."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear").repeat(1, 3, 1, 1)
    x, y = (x - 0.3) / 0.4, torch.tensor(d.target)
    return Items(x[:n_train], y[:n_train]), Items(x[n_train:n_train + n_val], y[n_train:n_train + n_val])


def _model(seed: int = 0, members: int = 2) -> ensemble.EnsembleModel:
    return svem.wrap(tiny_vit(), members, 10, seed=seed)


def _state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


FAST = dict(epochs=2, warmup_epochs=1, lr=1e-2, progress=False)


# ----------------------------------------------------------------------------------------------


def test_lr_schedule_is_warmup_then_cosine():
    f = [train.lr_factor(i, 10, 5) for i in range(10)]
    assert f[:5] == [0.2, 0.4, 0.6, 0.8, 1.0]  # (e+1)/5, as the authors' snippet
    assert f[5] == 1.0 and all(a > b for a, b in zip(f[5:], f[6:])) and f[-1] > 0
    assert train.lr_factor(0, 3, 0) == 1.0 and train.lr_factor(4, 3, 5) == 1.0


def test_warmup_is_clamped_to_half_the_epochs():
    """The default 5 warm-up epochs with 3 epochs used to ramp up to 0.6·lr and never decay."""
    tr, _ = digits(16, 8)
    result = train.fit(_model(), tr, None, epochs=3, lr=1e-2, progress=False)  # warmup_epochs=5
    assert [r["lr"] for r in result.history] == [1e-2 * train.lr_factor(i, 3, 1) for i in range(3)]
    assert result.warmup_epochs == 1


def test_fit_result_says_whether_it_converged():
    rows = lambda *nll: [{"epoch": i, "val_nll": v} for i, v in enumerate(nll)]
    assert train.FitResult(history=rows(1.0, 0.8, 0.85)).converged
    assert not train.FitResult(history=rows(1.0, 0.8, 0.7)).converged
    assert not train.FitResult(history=rows(0.8)).converged
    with pytest.raises(DataError, match="val_nll"):
        _ = train.FitResult(history=[{"epoch": 0, "train_loss": 1.0}]).converged


@pytest.mark.parametrize("fixture, data", [("dinov2_small", "mnist5k"), ("minilm_l3", "bbc-news")])
def test_loss_falls_on_real_data_with_a_real_backbone(fixture, data, request):
    from sve.data import load_dataset, prepare

    try:
        bb = request.getfixturevalue(fixture)  # dinov2-small at 56 px
        tr, va = (load_dataset(data, split, limit=n) for split, n in (("train", 64), ("val", 32)))
    except MissingAssetError as e:
        pytest.skip(f"asset not installed: {e}")
    classes = len(tr.classes)
    tr, va = prepare(tr, bb, max_length=32), prepare(va, bb, max_length=32)
    model = svem.wrap(bb, 2, classes, targets="last:2", seed=0)
    result = train.fit(model, tr, va, epochs=3, warmup_epochs=1, lr=1e-2, progress=False)
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.8 * losses[0]
    assert result.best["val_acc"] > 2 / classes  # twice chance
    assert not model.training


def test_fit_is_deterministic_for_a_seed():
    tr, va = digits(48, 16)
    runs = []
    for _ in range(2):
        model = _model()
        result = train.fit(model, tr, va, seed=3, **FAST)
        runs.append((_state(model), [{k: v for k, v in r.items() if k != "seconds"} for r in result.history],
                     result.temperature))
    (s1, h1, t1), (s2, h2, t2) = runs
    assert h1 == h2 and t1 == t2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_best_checkpoint_is_kept_and_temperature_fitted(tmp_path):
    tr, va = digits(48, 32)
    model = _model()
    snapshots = {}
    cb = lambda event, info: snapshots.__setitem__(info["epoch"], _state(model)) if event == "epoch" else None
    result = train.fit(model, tr, va, epochs=3, warmup_epochs=1, lr=5e-2, progress=False, callbacks=[cb],
                       checkpoint_dir=tmp_path)
    keys = [(r["val_acc"], -r["val_nll"]) for r in result.history]
    assert result.best_epoch == keys.index(max(keys)) and result.best == result.history[result.best_epoch]
    best = snapshots[result.best_epoch]
    assert all(torch.equal(p, best[n]) for n, p in _state(model).items())  # restored at the end
    saved = io.load(tiny_vit(), tmp_path / "best.safetensors")
    assert all(torch.equal(p, best[n]) for n, p in _state(saved).items())
    assert result.temperature > 0 and model.temperature == result.temperature
    assert saved.temperature == 1.0  # saved during training, before the temperature fit


def test_callbacks_see_events_and_can_stop():
    tr, va = digits(48, 16)
    events = []
    result = train.fit(_model(), tr, va, callbacks=[lambda e, info: events.append((e, dict(info)))], **FAST)
    kinds = [e for e, _ in events]
    assert kinds.count("step") == result.steps == 6 and kinds.count("epoch") == 2 and kinds[-1] == "end"
    assert {"epoch", "step", "loss", "lr"} <= set(events[0][1])
    assert {"train_loss", "val_acc", "val_nll", "lr"} <= set(events[3][1])

    result = train.fit(_model(), tr, va, callbacks=[lambda e, info: e != "step"], **FAST)
    assert result.steps == 1 and "callback" in result.stopped and len(result.history) == 1

    def stop_after_epoch(event, info):
        if event == "epoch":
            raise train.StopTraining

    result = train.fit(_model(), tr, va, callbacks=[stop_after_epoch], **FAST)
    assert result.steps == 3 and len(result.history) == 1 and result.stopped


class PoisonAfter(Items):
    """Returns NaN images once ``n`` items have been read (i.e. in the second epoch)."""

    def __init__(self, base: Items, n: int):
        super().__init__(base.x, base.y)
        self.n, self.reads = n, 0

    def __getitem__(self, i: int) -> dict:
        self.reads += 1
        item = super().__getitem__(i)
        return {**item, "pixel_values": item["pixel_values"] * float("nan")} if self.reads > self.n else item


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint():
    tr, va = digits(48, 16)
    model = _model()
    snapshots = {}
    cb = lambda event, info: snapshots.__setitem__(info["epoch"], _state(model)) if event == "epoch" else None
    loader = DataLoader(PoisonAfter(tr, 48 + 16), batch_size=16, shuffle=False)
    with pytest.raises(TrainingError, match=r"non-finite loss.*epoch 2, step 2") as e:
        train.fit(model, loader, va, callbacks=[cb], **FAST)
    assert all(torch.equal(p, snapshots[0][n]) for n, p in _state(model).items())
    assert e.value.result.best_epoch == 0 and len(e.value.result.history) == 1


class CPUScalerAccelerator(accelerate.Accelerator):
    """Accelerate makes a grad scaler for fp16 only on GPUs (on the CPU, fp16 is silently off); this one
    also turns on fp16 autocast and a real ``torch.amp.GradScaler`` on the CPU, so that fit's fp16 path
    runs here. Its initial scale (2^20; the default 2^16 happens to fit this tiny model) makes the first
    scaled backward passes overflow fp16: the scaler skips those steps and halves the scale until the
    gradients fit, as it routinely does on a GPU."""

    init_scale = 2.0**20

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.state.mixed_precision == "fp16" and self.scaler is None:
            self.scaler, self.native_amp = torch.amp.GradScaler("cpu", init_scale=self.init_scale), True


def _fp16_fit(monkeypatch, **kwargs) -> tuple[train.FitResult, list[dict], list[dict]]:
    """An fp16 fit with the CPU scaler: (result, trainable state before each step, and after it)."""
    monkeypatch.setattr(accelerate, "Accelerator", CPUScalerAccelerator)
    tr, va = digits(48, 16)
    model = _model()
    after = []
    cb = lambda event, info: after.append(_state(model)) if event == "step" else None
    start = _state(model)
    result = train.fit(model, tr, va, mixed_precision="fp16", callbacks=[cb], **{**FAST, **kwargs})
    return result, [start, *after[:-1]], after


def _unchanged(a: dict, b: dict) -> bool:
    return all(torch.equal(a[n], b[n]) for n in a)


def test_fp16_overflow_skips_the_step_instead_of_stopping(monkeypatch):
    result, before, after = _fp16_fit(monkeypatch)
    skipped = [_unchanged(a, b) for a, b in zip(before, after)]
    assert result.steps == 6 and result.stopped is None and len(result.history) == 2
    assert result.skipped_steps == sum(skipped) >= 1 and not all(skipped)  # overflow, then training
    assert skipped == sorted(skipped, reverse=True)  # the first steps, until the scale fits


def test_fp16_skipped_steps_do_not_decay_sigma(monkeypatch):
    result, before, after = _fp16_fit(monkeypatch, sigma_decay="pretrained", weight_decay=5.0)
    sigma = [n for n in after[0] if n.endswith("sigma")]
    assert sigma and result.skipped_steps >= 1
    for i in range(result.skipped_steps):  # a skipped step changes nothing, the anchored σ included
        assert _unchanged(before[i], after[i]), i
    assert not _unchanged(before[-1], after[-1])


def test_fp16_overflow_that_does_not_end_stops_training(monkeypatch):
    monkeypatch.setattr(CPUScalerAccelerator, "init_scale", 2.0**28)  # overflows all 6 steps
    monkeypatch.setattr(train, "MAX_SKIPPED_IN_A_ROW", 2)
    with pytest.raises(TrainingError, match="3 optimizer steps in a row") as e:
        _fp16_fit(monkeypatch)
    assert e.value.result.skipped_steps == 3


def test_precision_can_change_between_fits_in_one_process(monkeypatch):
    """accelerate keeps the precision process-wide: it refused fp16 after a plain fit, and a plain fit
    after an fp16 one silently ran in fp16 (here: with the scaler, whose first steps overflow)."""
    monkeypatch.setattr(accelerate, "Accelerator", CPUScalerAccelerator)
    tr, va = digits(48, 16)
    assert train.fit(_model(), tr, va, **FAST).skipped_steps == 0
    assert _fp16_fit(monkeypatch)[0].skipped_steps >= 1
    assert train.fit(_model(), tr, va, **FAST).skipped_steps == 0


def test_sigma_decay_toward_pretrained_values():
    tr, _ = digits(48, 16)
    dist = {}
    for mode in ("zero", "pretrained"):
        model = _model()
        train.fit(model, tr, None, sigma_decay=mode, weight_decay=50.0, **{**FAST, "lr": 1e-3})
        spec = svem.spectra(model)
        dist[mode] = sum(float((s - s0).norm() / s0.norm()) for s, s0 in spec.values()) / len(spec)
        shrink = sum(float(s.mean() / s0.mean()) for s, s0 in spec.values()) / len(spec)
        if mode == "zero":
            assert shrink < 0.99  # AdamW pulls σ toward 0
    assert dist["pretrained"] < 0.5 * dist["zero"]
    groups, anchored = train._param_groups(_model(), 0.05, "pretrained")
    sigmas = {id(p) for p, _ in anchored}
    held = [{id(p) for p in g["params"]} for g in groups]
    assert sigmas and [g["weight_decay"] for g, h in zip(groups, held) if h == sigmas] == [0.0]
    assert sum(len(sigmas & h) for h in held) == len(sigmas)  # in exactly one group


@pytest.mark.parametrize("head_lr", [None, 1e-2])
def test_head_lr_sets_the_heads_step_only(head_lr):
    """AdamW's first step moves every tensor by about its lr (no decay, one step at the peak lr): the
    heads by ``head_lr`` (``lr`` when None), the singular values by ``lr``."""
    tr, _ = digits(16, 8)
    model = _model()
    before = _state(model)
    train.fit(model, tr, None, epochs=1, warmup_epochs=0, lr=1e-4, weight_decay=0.0, batch_size=16,
              progress=False, head_lr=head_lr)
    after = _state(model)
    step = {n: float((after[n] - before[n]).abs().max()) for n in before}
    head = max(v for n, v in step.items() if "sve_head" in n)
    sigma = max(v for n, v in step.items() if n.endswith("sigma"))
    assert head == pytest.approx(head_lr or 1e-4, rel=0.05)
    assert sigma == pytest.approx(1e-4, rel=0.05)
    with pytest.raises(ConfigError, match="head_lr"):
        train.fit(_model(), tr, None, epochs=1, head_lr=0.0, progress=False)


def test_predict_takes_a_dataset_or_a_loader():
    tr, _ = digits(40, 8)
    model = _model()
    a = train.predict(model, tr, batch_size=16)
    b = train.predict(model, DataLoader(tr, batch_size=7))
    assert a.shape == (40, 2, 10) and torch.allclose(a, b, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(a[:5], model(tr.x[:5]), atol=1e-6)


def test_grad_clip_per_member_is_torch_clip_on_each_member():
    gen = torch.Generator().manual_seed(0)
    shapes, M = [(3, 5, 4), (3, 7), (3,)], 3
    params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for p, scale in zip(params, (1.0, 0.1, 0.01)):
        p.grad = torch.randn(p.shape, generator=gen) * scale
    params[0].grad[2] *= 1e-3  # member 2 is under the limit: left as it is
    alone = [[torch.nn.Parameter(torch.zeros(s[1:])) for s in shapes] for _ in range(M)]
    for m, ps in enumerate(alone):
        for p, q in zip(ps, params):
            p.grad = q.grad[m].clone()
    norms = train._clip_per_member(params, 0.5, M)
    for m, ps in enumerate(alone):
        assert torch.equal(norms[m], torch.nn.utils.clip_grad_norm_(ps, 0.5))
        assert all(torch.equal(p.grad, q.grad[m]) for p, q in zip(ps, params))
    assert norms[2] < 0.5 < norms[0]


def test_member_histories_and_convergence_per_member():
    rows = [{"epoch": i, "val_nll": v, "member0_val_acc": 0.5, "member0_val_nll": a, "member1_val_acc": 0.5,
             "member1_val_nll": b} for i, (v, a, b) in enumerate([(1.0, 1.0, 1.0), (0.8, 0.9, 0.7)])]
    assert [[r["val_nll"] for r in h] for h in train.member_histories(rows)] == [[1.0, 0.9], [1.0, 0.7]]
    assert train.member_histories([{"epoch": 0, "val_nll": 1.0}]) is None
    assert not train.FitResult(history=rows).converged  # member 1 still gains > 1 %
    rows[1]["member1_val_nll"] = 1.0
    assert not train.FitResult(history=rows).converged  # member 0 still gains 10 %
    rows[1]["member0_val_nll"] = 1.0
    assert train.FitResult(history=rows).converged  # though the ensemble's NLL gained 20 %


def test_independent_members_need_a_model_that_has_them_and_a_dataset():
    tr, va = digits(32, 16)
    with pytest.raises(ConfigError, match="independent"):
        train.fit(_model(), tr, va, independent=True, **FAST)
    de = methods.build("deep_ensemble", tiny_vit(), 2, 10, seed=0)
    loader = DataLoader(tr, batch_size=16)
    with pytest.raises(ConfigError, match="Dataset"):
        train.fit(de, loader, va, independent=True, **FAST)
    with pytest.warns(UserWarning, match="DataLoader"):
        result = train.fit(de, loader, va, **FAST)
    assert result.member_best_epochs is None  # trained jointly
    assert train.fit(de, tr, va, **FAST).member_best_epochs is not None


def test_bad_fit_input():
    tr, va = digits(32, 16)
    model = _model()
    with pytest.raises(ConfigError, match="sigma_decay"):
        train.fit(model, tr, va, sigma_decay="one")
    with pytest.raises(ConfigError, match="schedule"):
        train.fit(model, tr, va, schedule="hourly")
    with pytest.raises(ConfigError, match="epochs"):
        train.fit(model, tr, va, epochs=0)
    with pytest.raises(ConfigError, match="mixed_precision"):
        train.fit(model, tr, va, mixed_precision="fp32")
    with pytest.raises(DataError, match="dicts"):
        train.fit(model, [(tr.x[i], tr.y[i]) for i in range(32)], va, **FAST)
    with pytest.raises(DataError, match="labels"):
        train.fit(model, [{"pixel_values": tr.x[i]} for i in range(32)], va, **FAST)
    with pytest.raises(DataError, match="validation batches need 'labels'"):
        train.fit(model, tr, [{"pixel_values": tr.x[i]} for i in range(8)], **FAST)
    with pytest.raises(ConfigError, match="sve.wrap"):
        train.fit(torch.nn.Linear(2, 2), tr, va)


# ----------------------------------------------------------------------------------------------
# DDP: the same fit on 2 CPU processes (accelerate launch) == one process


def ddp_main(out: str) -> None:
    """Run by `accelerate launch` (and in-process by the test): a small fit, trainable state saved."""
    from accelerate import PartialState

    torch.set_num_threads(1)
    tr, va = digits(64, 32)
    model = _model()
    result = train.fit(model, tr, va, epochs=2, warmup_epochs=1, lr=1e-2, batch_size=16, progress=False)
    state = PartialState()
    if state.is_main_process:
        torch.save({"state": _state(model), "history": result.history, "steps": result.steps,
                    "processes": state.num_processes}, out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                      "from test_train import ddp_main\nddp_main(sys.argv[1])\n")
    # torchrun starts the two processes; ACCELERATE_USE_CPU makes Accelerate use them (gloo) on a
    # CUDA build of torch without a GPU (`accelerate launch --cpu --num_processes 2` started one)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(script), str(tmp_path / "ddp.pt")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_main(str(tmp_path / "one.pt"))
    ddp, one = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "one.pt")
    assert (ddp["processes"], one["processes"]) == (2, 1)
    assert ddp["steps"] == one["steps"] == 8  # 64 samples / global batch 16 × 2 epochs
    for n, p in one["state"].items():
        q = ddp["state"][n]
        if n.endswith("qkv.sve_bias"):  # the key bias has no gradient (softmax ignores a shift of its
            d = p.shape[-1] // 3      # logits): Adam turns the roundoff there into ±lr steps, so it is
            p, q = p[..., [*range(d), *range(2 * d, 3 * d)]], q[..., [*range(d), *range(2 * d, 3 * d)]]
        assert torch.allclose(q, p, atol=1e-5, rtol=1e-4), n
    for a, b in zip(ddp["history"], one["history"]):
        assert abs(a["val_acc"] - b["val_acc"]) < 1e-6 and abs(a["train_loss"] - b["train_loss"]) < 1e-4
