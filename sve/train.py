"""Joint training of all ensemble members (HF Accelerate) and batched prediction.

Recipe (the authors' snippet): AdamW (lr 1e-3, weight decay 0.05 on every trainable tensor),
grad-norm clip 1.0, 10 epochs, linear warm-up for 5 epochs then cosine decay, batch 16 (before the
M-fold fan-out). The learning-rate factor at unit ``i`` (an epoch with ``schedule="epoch"``, as the
authors; a step with ``schedule="step"``) of ``n`` units, ``w`` of them warm-up::

    f(i) = (i + 1) / w                              for i < w
    f(i) = ½ (1 + cos(π (i − w) / (n − w)))         otherwise

The warm-up is at most half of the epochs, as in the recipe (5 of 10): ``fit`` clamps a longer one
to ``⌊epochs / 2⌋`` (``FitResult.warmup_epochs`` holds the one used), so that a short run with the
default ``warmup_epochs=5`` still reaches the full lr and decays, rather than ramping up to the end.

Loss: the mean over members of the cross-entropy, every member on the whole batch,
``CE(logits.flatten(0, 1), labels.repeat_interleave(M))``.

Independent members (a model with ``independent_members = True``: the deep ensemble; ``fit``'s
``independent=None`` asks the model): the members are trained as M separate fine-tunings in one
vectorised loop. Member m draws its batches from its own loader, shuffled with seed
``member_seed(seed, m) = seed + 1000·m`` (the data order ``fit(seed=member_seed(seed, m))`` gives a
model trained alone; member 0's is ``fit(seed=seed)``'s, and runs at different seeds share no data
order); one step stacks the M batches member-major (M·B rows) and the model runs member m on its
own rows (``member_batches=True``); the loss is the mean over members of each member's cross-entropy
on its own labels. The gradient
norm is clipped per member (``grad_clip`` on each member's own norm: every trainable tensor holds
the members on dim 0, and member m's norm is taken over the slices ``[m]``), and each member keeps
its own best epoch by the rule below applied to its own validation logits; the ensemble is assembled
from those slices at the end (``FitResult.member_best_epochs``; the history rows carry
``member{m}_val_acc`` / ``member{m}_val_nll``, see :func:`member_histories`). Global random draws
(dropout) are seeded once for the whole ensemble. ``independent=False`` trains such a model jointly
(all members on the same batches, one clip norm, one best epoch); a DataLoader as ``train`` fixes one
data order, so it trains jointly too (with a warning unless ``independent=False`` is passed).

``sigma_decay="pretrained"`` takes the singular values out of AdamW's decay and instead applies,
with each optimizer step, the decoupled update ``σ ← σ − lr·wd·(σ − σ₀)`` toward the pretrained
values (σ taken before the step, as AdamW's own decay; any per-member layer's ``decay_anchors()``),
and not on a step the fp16 grad scaler skips; ``"zero"`` is the authors' choice (σ decays to 0).

Best checkpoint: highest validation accuracy of the combined prediction (ties: lower NLL), kept in
memory (and written with ``sve.save`` to ``checkpoint_dir`` if given) and restored at the end;
then one temperature is fitted on its validation logits (``sve.calibration.fit_temperature``).
Independent members: the same rule per member, on that member's own prediction.

Distributed: ``accelerate launch --cpu --num_processes 2 script.py`` runs the same ``fit`` with
DDP. Batches are split across processes (``split_batches``), so a global batch of 16 gives the
same model as one process, up to float summation order.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from sve.ensemble import EnsembleModel, member_seed, unwrap
from sve.errors import ConfigError, DataError, TrainingError
from sve.io import save
from sve.stats import converged as history_converged

Callback = Callable[[str, dict], Any]

#: fp16 (``mixed_precision="fp16"``): the grad scaler skips a step whose scaled gradients overflow and
#: halves its scale (from 2^16). That is routine in the first steps; this many skips in a row (the
#: scale is then below 2^-9, so even the unscaled gradients overflow) are divergence: ``TrainingError``.
MAX_SKIPPED_IN_A_ROW = 25
#: what ``fit(mixed_precision=...)`` takes (None: the ``accelerate launch`` setting, else "no")
MIXED_PRECISIONS = (None, "no", "fp16", "bf16", "fp8")


class StopTraining(Exception):
    """Raise from a callback (or return False) to stop training cleanly after this step."""


@dataclass
class FitResult:
    """``history``: one dict per epoch (epoch, lr, train_loss, val_loss, val_acc, val_nll, seconds; with
    M > 1 members also ``member<i>_val_acc``, member i's own validation accuracy);
    ``best_epoch`` and its ``best`` row; ``temperature`` fitted on validation; ``steps`` done;
    ``warmup_epochs``: the warm-up used (at most half the epochs, see the module docstring);
    ``stopped``: why training ended early (None if it ran all epochs); ``skipped_steps``: optimizer
    steps the fp16 grad scaler skipped because a gradient overflowed (counted in ``steps``).
    Independent members (module docstring): ``member_best_epochs[m]`` is the epoch whose weights
    member m keeps; ``best_epoch`` the latest of them, and ``best`` the validation metrics of the
    assembled ensemble (with ``member_best_epochs``) rather than one history row."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best: dict | None = None
    temperature: float = 1.0
    steps: int = 0
    warmup_epochs: int = 0
    stopped: str | None = None
    skipped_steps: int = 0
    member_best_epochs: list[int] | None = None

    @property
    def converged(self) -> bool:
        """Whether the run converged by the project's rule (``sve.stats.converged``): its best validation
        NLL came before the last epoch, or the last epoch improved it by less than 1 %; with independent
        members, every member by its own NLL (:func:`member_histories`). False with fewer than 2
        epochs; a fit without validation data has no NLL to judge (``DataError``)."""
        members = member_histories(self.history)
        return history_converged(members if members is not None else self.history)


def member_histories(history: Sequence[dict]) -> list[list[dict]] | None:
    """Each member's own history of a fit with independent members: member m's rows are
    ``{"epoch", "val_acc", "val_nll"}`` from the ``member{m}_val_*`` entries of ``history`` (a
    ``FitResult.history``, or the epoch rows the runner stores); None when the rows have none."""
    count = 0
    while history and f"member{count}_val_nll" in history[0]:
        count += 1
    if not count:
        return None
    return [[{"epoch": row.get("epoch"), "val_acc": row[f"member{m}_val_acc"],
              "val_nll": row[f"member{m}_val_nll"]} for row in history] for m in range(count)]


def lr_factor(i: int, n: int, warmup: int) -> float:
    """Linear warm-up then cosine decay (see the module docstring)."""
    if i < warmup:
        return (i + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, n - warmup)))


def _loader(data: Dataset | DataLoader, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise DataError(f"expected a Dataset of dict items or a DataLoader, got {type(data).__name__}.")
    if len(data) == 0:
        raise DataError("the dataset is empty.")
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen)


def _lockstep(loaders: Sequence[Iterable]) -> Iterator[list[Any]]:
    """One batch of each loader per step. Every iterator is run to its end (an Accelerate loader
    only closes its epoch then); the loaders have the same length (same dataset and batch size)."""
    iters, end = [iter(dl) for dl in loaders], object()
    while True:
        batches = [next(it, end) for it in iters]
        if all(b is end for b in batches):
            return
        if any(b is end for b in batches):
            raise DataError("the member loaders ran out at different steps; they must share the dataset "
                            "and batch size.")
        yield batches


def _split(model: nn.Module, batch: Any, need_labels: bool) -> tuple[dict[str, Tensor], Tensor | None]:
    """Batch dict → (model inputs, labels)."""
    if not isinstance(batch, dict):
        raise DataError(f"batches must be dicts of tensors (pixel_values / input_ids, labels), got "
                        f"{type(batch).__name__}; sve.data.prepare(ds, backbone) makes them.")
    names = unwrap(model).input_names
    labels = batch.get("labels")
    if need_labels and not isinstance(labels, Tensor):
        raise DataError(f"the batch has no 'labels' tensor (keys {sorted(batch)}).")
    return {k: v for k, v in batch.items() if k in names}, labels


def _member_batch(model: nn.Module, batches: Sequence[Any]) -> tuple[dict[str, Tensor], Tensor]:
    """One batch per member → the member-major model inputs (M·B rows) and the labels (B, M)."""
    parts = [_split(model, b, need_labels=True) for b in batches]
    try:
        inputs = {k: torch.cat([p[0][k] for p in parts]) for k in parts[0][0]}
        return inputs, torch.stack([p[1] for p in parts], 1)
    except (RuntimeError, KeyError) as e:
        raise DataError(f"the members' batches do not stack ({e}); every item needs the same keys and "
                        "shapes (sve.data.prepare pads texts to one max_length).") from e


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _logits(model: nn.Module, loader: Iterable, accelerator: Any = None) -> tuple[Tensor, Tensor | None]:
    """All (N, M, C) logits of a loader (and its labels, if every batch has them), on CPU.

    With an ``accelerator`` each process runs its shard and the results are gathered.
    """
    was_training = model.training
    model.eval()
    device = accelerator.device if accelerator else _device_of(model)
    outs, labels = [], []
    for batch in loader:
        inputs, y = _split(model, batch, need_labels=False)
        z = model(**{k: v.to(device) for k, v in inputs.items()}).float()
        y = y.to(device) if isinstance(y, Tensor) else None
        if accelerator is not None:
            z, y = accelerator.gather_for_metrics((z, y)) if y is not None else (
                accelerator.gather_for_metrics(z), None)
        outs.append(z.cpu())
        labels.append(y.cpu() if y is not None else None)
    model.train(was_training)
    has_labels = bool(labels) and all(t is not None for t in labels)
    return torch.cat(outs), torch.cat(labels) if has_labels else None


def predict(model: nn.Module, data: Dataset | DataLoader, batch_size: int = 64) -> Tensor:
    """Member logits ``(N, M, C)`` (CPU float32) for a Dataset of dict items or a DataLoader."""
    return _logits(model, _loader(data, batch_size, shuffle=False, seed=0))[0]


def _member_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over members and rows; logits (B, M, C), labels (B,) shared by the members
    or (B, M), column m member m's own."""
    if labels.ndim == 1:
        labels = labels.unsqueeze(1).expand(-1, logits.shape[1])
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())


def _best_key(metrics: dict[str, float]) -> tuple[float, float]:
    """fit's best-epoch rule: higher validation accuracy, ties lower NLL (a larger key is better)."""
    return metrics["val_acc"], -metrics["val_nll"]


def _clip_per_member(params: Sequence[Tensor], max_norm: float, members: int) -> Tensor:
    """``torch.nn.utils.clip_grad_norm_`` applied to each member on its own: member m's norm is the
    2-norm over the slices ``[m]`` of every gradient, and its slices are scaled by
    ``min(1, max_norm / (norm_m + 1e-6))``. Returns the (M,) norms before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    per_tensor = [torch.linalg.vector_norm(g.reshape(members, -1), dim=1) for g in grads]
    norms = torch.linalg.vector_norm(torch.stack(per_tensor, 1), dim=1)
    coef = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.ndim - 1)))
    return norms


def _independent(core: EnsembleModel, train: Any, independent: bool | None) -> bool:
    """Whether this fit trains the members as M separate models (module docstring)."""
    able = bool(getattr(core, "independent_members", False))
    if independent and not able:
        raise ConfigError(f"independent=True: the {core.config.get('method')!r} model does not train its "
                          "members independently (only models with independent_members, e.g. "
                          "deep_ensemble); use independent=None or False.")
    if able and independent is not False and isinstance(train, DataLoader):
        if independent:
            raise ConfigError("independent=True needs a Dataset as `train` (each member gets its own "
                              "shuffled loader); a DataLoader fixes one data order for all members.")
        warnings.warn("fit: `train` is a DataLoader, so the members of this ensemble all see its batches "
                      "(trained jointly); pass a Dataset for one data order per member, or "
                      "independent=False to silence this.", stacklevel=3)
        return False
    if able and independent is not False:
        bad = [n for n, p in core.named_parameters()
               if p.requires_grad and (p.ndim == 0 or p.shape[0] != core.num_members)]
        if bad:
            raise ConfigError(f"independent members need every trainable tensor to hold the members on "
                              f"dim 0; {bad[:3]} do not. Pass independent=False.")
        return True
    return False


def _val_metrics(logits: Tensor, labels: Tensor, combine: str) -> dict[str, float]:
    from sve.metrics import ensemble_log_probs

    logp, y = ensemble_log_probs(logits, combine), labels.numpy()  # numpy (N, C)
    row = {"val_loss": _member_loss(logits, labels).item(),
           "val_acc": float((logp.argmax(-1) == y).mean()),
           "val_nll": float(-logp[range(len(y)), y].mean())}
    if logits.shape[1] > 1:  # each member's own accuracy, for per-member curves
        hits = (logits.argmax(-1) == labels[:, None]).float().mean(0)
        row.update({f"member{m}_val_acc": float(a) for m, a in enumerate(hits)})
    return row


def _call(callbacks: Iterable[Callback], event: str, info: dict) -> bool:
    """Run the callbacks; True means "stop"."""
    stop = False
    for cb in callbacks:
        try:
            stop |= cb(event, info) is False
        except StopTraining:
            stop = True
    return stop


def _diverged(core: EnsembleModel, good: dict[str, Tensor], result: FitResult, what: str, epoch: int,
              step: int) -> TrainingError:
    """Restore the last good checkpoint and return the ``TrainingError`` to raise (``.result`` set)."""
    _restore(core, good)
    result.stopped = f"{what} at epoch {epoch + 1}, step {step + 1}"
    err = TrainingError(
        f"{what} at epoch {epoch + 1}, step {step + 1} (global step {result.steps + 1}); training stopped "
        f"and the model was restored to the last good checkpoint (epoch "
        f"{result.best_epoch if result.best_epoch is not None else 'initial'}). Lower lr "
        "(e.g. ×0.1), keep grad_clip, or check the inputs for NaN/inf.")
    err.result = result
    return err


def _anywhere(acc: Any, flag: bool) -> bool:
    """True if ``flag`` is True on any process (so that all processes stop together)."""
    if acc.num_processes == 1:
        return flag
    return acc.reduce(torch.tensor(float(flag), device=acc.device), "sum").item() > 0


def _trainable(model: EnsembleModel) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _restore(model: EnsembleModel, state: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in state:
                p.copy_(state[n])


def _use_precision(mixed_precision: str | None) -> None:
    """Let this fit use ``mixed_precision`` even if an earlier fit in the process used another one.

    Accelerate keeps the precision in a process-wide ``AcceleratorState`` that refuses a change
    (``ValueError: AcceleratorState has already been initialized``) and that a later
    ``mixed_precision=None`` silently inherits. ``None`` here means the launcher's choice
    (``ACCELERATE_MIXED_PRECISION``, ``"no"`` outside ``accelerate launch``). Only the precision state
    is reset, never the process group (``PartialState``).
    """
    from accelerate.state import AcceleratorState

    want = mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    # accelerate has no public way to ask whether the state exists, nor to change it once it does
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != want:
        AcceleratorState._reset_state(reset_partial_state=False)


HEAD_PARAMS = ("sve_head_weight", "sve_head_bias")


def _param_groups(model: EnsembleModel, weight_decay: float, sigma_decay: str, head_lr_scale: float = 1.0):
    """AdamW groups (each with its ``lr_scale``: the heads' is ``head_lr_scale``, the others' 1) and
    the (param, anchor) pairs decayed toward their pretrained value."""
    anchored: list[tuple[Tensor, Tensor]] = []
    if sigma_decay == "pretrained":
        for layer in model.layers().values():
            for name, anchor in layer.decay_anchors().items():
                anchored.append((getattr(layer, name), anchor))
    ids = {id(p) for p, _ in anchored}
    heads = {id(p) for name, p in model.named_parameters() if name in HEAD_PARAMS and p.requires_grad}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": [p for p in params if id(p) not in heads], "weight_decay": weight_decay,
               "lr_scale": 1.0}]
    if heads:
        groups.append({"params": [p for p in params if id(p) in heads], "weight_decay": weight_decay,
                       "lr_scale": head_lr_scale})
    if anchored:
        groups.append({"params": [p for p, _ in anchored], "weight_decay": 0.0, "lr_scale": 1.0})
    return [g for g in groups if g["params"]], anchored


def _member_best(core: EnsembleModel, z: Tensor, y: Tensor, combine: str, epoch: int, row: dict,
                 keys: list[tuple[float, float] | None], good: dict[str, Tensor], result: FitResult) -> bool:
    """Independent members: add each member's own validation metrics to ``row``; for every member
    whose own best-epoch key improved, keep its slices of the trainable tensors in ``good``.
    Returns whether any member improved."""
    improved = False
    for m in range(z.shape[1]):
        metrics = _val_metrics(z[:, m:m + 1], y, combine)
        row[f"member{m}_val_acc"], row[f"member{m}_val_nll"] = metrics["val_acc"], metrics["val_nll"]
        if keys[m] is None or _best_key(metrics) > keys[m]:
            keys[m], improved = _best_key(metrics), True
            result.member_best_epochs = result.member_best_epochs or [epoch] * z.shape[1]
            result.member_best_epochs[m] = epoch
            with torch.no_grad():
                for name, p in core.named_parameters():
                    if name in good:
                        good[name][m] = p[m]
    result.best_epoch = max(result.member_best_epochs)
    return improved


def _save_kept(core: EnsembleModel, good: dict[str, Tensor], path: Path) -> None:
    """``sve.save`` of the model with the kept weights ``good`` (its own weights are put back)."""
    current = _trainable(core)
    _restore(core, good)
    try:
        save(core, path)
    finally:
        _restore(core, current)


def fit(model: nn.Module, train: Dataset | DataLoader, val: Dataset | DataLoader | None = None,
        epochs: int = 10, lr: float = 1e-3, weight_decay: float = 0.05, warmup_epochs: int = 5,
        grad_clip: float | None = 1.0, batch_size: int = 16, seed: int = 0,
        callbacks: Iterable[Callback] = (), *, sigma_decay: str = "zero", schedule: str = "epoch",
        combine: str = "prob", checkpoint_dir: str | Path | None = None, progress: bool = True,
        mixed_precision: str | None = None, independent: bool | None = None,
        head_lr: float | None = None) -> FitResult:
    """Train a wrapped model's members jointly; returns a ``FitResult`` (see the module docstring).

    ``train`` / ``val``: Datasets of dict items (``pixel_values`` or ``input_ids``/``attention_mask``,
    and ``labels``) or DataLoaders. Callbacks get ``(event, info)`` for ``"step"`` (epoch, step,
    loss, lr), ``"epoch"`` (the history row) and ``"end"`` (the result); returning False or raising
    ``StopTraining`` stops after the current step. A non-finite loss or gradient raises
    ``TrainingError`` naming the step, after restoring the last good (best) checkpoint; except that
    with ``mixed_precision="fp16"`` an overflowing gradient is the grad scaler's business: it skips
    that optimizer step (the anchored σ decay too) and lowers its scale, counted in
    ``result.skipped_steps``; only ``MAX_SKIPPED_IN_A_ROW`` skips in a row raise. Accelerate runs
    fp16 only on GPUs (on a CPU it trains in float32). Each call sets the process's precision anew.
    Under ``accelerate launch`` every process runs the callbacks; a stop on any one stops all.
    The model is left on its training device with the best weights, in eval mode, with
    ``model.temperature`` set. ``independent``: train the members as M separate models (module
    docstring); None (default): if the model trains its members independently (the deep ensemble)
    and ``train`` is a Dataset. ``head_lr``: the heads' peak learning rate (same schedule and weight
    decay as the rest); None (default): ``lr``, one lr for everything, as the authors.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
    from tqdm.auto import tqdm

    core = unwrap(model)
    if mixed_precision not in MIXED_PRECISIONS:
        raise ConfigError(f"mixed_precision={mixed_precision!r}: use one of {MIXED_PRECISIONS}.")
    if sigma_decay not in ("zero", "pretrained"):
        raise ConfigError(f"sigma_decay={sigma_decay!r}: use 'zero' (AdamW, the authors) or 'pretrained'.")
    if schedule not in ("epoch", "step"):
        raise ConfigError(f"schedule={schedule!r}: use 'epoch' (the authors) or 'step'.")
    if not (isinstance(epochs, int) and epochs >= 1 and lr > 0 and weight_decay >= 0 and batch_size >= 1
            and warmup_epochs >= 0 and (head_lr is None or head_lr > 0)):
        raise ConfigError("need epochs ≥ 1, lr > 0, weight_decay ≥ 0, warmup_epochs ≥ 0, batch_size ≥ 1, "
                          f"head_lr None or > 0; got {epochs=}, {lr=}, {weight_decay=}, {warmup_epochs=}, "
                          f"{batch_size=}, {head_lr=}.")
    independent = _independent(core, train, independent)
    M = core.num_members
    set_seed(seed)
    _use_precision(mixed_precision)
    acc = Accelerator(mixed_precision=mixed_precision,
                      dataloader_config=DataLoaderConfiguration(split_batches=True),
                      kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
    # independent members: member m's loader is the one fit(seed=member_seed(seed, m)) gives a model alone
    train_dls = [_loader(train, batch_size, shuffle=True, seed=member_seed(seed, m))
                 for m in range(M if independent else 1)]
    val_dl = _loader(val, batch_size, shuffle=False, seed=seed) if val is not None else None
    head_scale = 1.0 if head_lr is None else head_lr / lr
    groups, anchored = _param_groups(core, weight_decay, sigma_decay, head_scale)
    opt = torch.optim.AdamW(groups, lr=lr)
    dmodel, opt, *train_dls = acc.prepare(core, opt, *train_dls)
    val_dl = acc.prepare(val_dl) if val_dl is not None else None
    anchored = [(p, a.to(p.device)) for p, a in anchored]
    trainable = [p for p in core.parameters() if p.requires_grad]
    forward_kw = {"member_batches": True} if independent else {}
    steps_per_epoch = len(train_dls[0])
    warmup_epochs = min(warmup_epochs, epochs // 2)  # at most half (see the module docstring)
    n_units, n_warm = (epochs, warmup_epochs) if schedule == "epoch" else (
        epochs * steps_per_epoch, warmup_epochs * steps_per_epoch)
    result, best_key = FitResult(warmup_epochs=warmup_epochs), None
    member_keys: list[tuple[float, float] | None] = [None] * M  # independent members: each one's best
    good = _trainable(core)  # the last good checkpoint: the initial state until a best epoch exists
    stop, lr_now, in_a_row = False, 0.0, 0  # in_a_row: optimizer steps skipped in a row
    for epoch in range(epochs):
        core.train()
        t0, losses = time.time(), []
        batches = _lockstep(train_dls) if independent else train_dls[0]
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", leave=False, total=steps_per_epoch,
                   disable=not (progress and acc.is_main_process))
        for step, batch in enumerate(bar):
            unit = epoch if schedule == "epoch" else result.steps
            lr_now = lr * lr_factor(unit, n_units, n_warm)
            for g in opt.param_groups:
                g["lr"] = lr_now * g["lr_scale"]
            inputs, labels = _member_batch(core, batch) if independent else _split(core, batch, True)
            with acc.autocast():
                loss = _member_loss(dmodel(**inputs, **forward_kw).float(), labels)
            acc.backward(loss)
            if grad_clip and independent:
                acc.unscale_gradients()  # as acc.clip_grad_norm_ does (fp16)
                norm = _clip_per_member(trainable, grad_clip, M)
            else:
                norm = acc.clip_grad_norm_(core.parameters(), grad_clip) if grad_clip else None
            loss_all = acc.reduce(loss.detach().clone(), "mean")  # over processes; NaN anywhere -> NaN
            bad_grad = norm is not None and not bool(torch.isfinite(norm).all())
            if not torch.isfinite(loss_all) or (bad_grad and acc.scaler is None):
                what = "loss" if not torch.isfinite(loss_all) else "gradient"
                raise _diverged(core, good, result, f"non-finite {what} ({loss_all.item():.4g})", epoch, step)
            with torch.no_grad():  # the anchored decay, from the values before the step
                decay = [(p, lr_now * weight_decay * (p - anchor)) for p, anchor in anchored]
            opt.step()  # with a grad scaler (fp16): skipped, and the scale lowered, if a gradient overflowed
            opt.zero_grad(set_to_none=True)
            skipped = bool(opt.step_was_skipped)  # AcceleratedOptimizer: True when the scaler skipped it
            if not skipped:  # a step the scaler skipped changes nothing, the anchored σ included
                with torch.no_grad():
                    for p, d in decay:
                        p.sub_(d)
            result.skipped_steps += skipped
            in_a_row = in_a_row + 1 if skipped else 0
            if in_a_row > MAX_SKIPPED_IN_A_ROW:
                raise _diverged(core, good, result, f"fp16 gradients overflowed {in_a_row} optimizer steps "
                                "in a row (the grad scaler skipped them all)", epoch, step)
            result.steps += 1
            losses.append(loss_all.item())  # loss_all is detached: no grad-to-scalar warning
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            stop = _call(callbacks, "step", {"epoch": epoch, "step": step, "global_step": result.steps,
                                             "loss": losses[-1], "lr": lr_now})
            if _anywhere(acc, stop):
                result.stopped = f"stopped by a callback at epoch {epoch + 1}, step {step + 1}"
                break
        row = {"epoch": epoch, "lr": lr_now, "train_loss": sum(losses) / max(1, len(losses))}
        if val_dl is not None:
            z, y = _logits(dmodel, val_dl, acc)
            if y is None:
                raise DataError("validation batches need 'labels' (best-epoch choice and temperature).")
            row.update(_val_metrics(z, y, combine))
            if independent:
                improved = _member_best(core, z, y, combine, epoch, row, member_keys, good, result)
            elif best_key is None or _best_key(row) > best_key:
                best_key, result.best_epoch, good, improved = _best_key(row), epoch, _trainable(core), True
            else:
                improved = False
            if improved and checkpoint_dir is not None and acc.is_main_process:
                path = Path(checkpoint_dir) / "best.safetensors"
                if independent:
                    _save_kept(core, good, path)
                else:  # the kept weights are the model's own
                    save(core, path)
        row["seconds"] = time.time() - t0
        result.history.append(row)
        if _anywhere(acc, _call(callbacks, "epoch", dict(row)) or stop):
            result.stopped = result.stopped or f"stopped by a callback after epoch {epoch + 1}"
            break
    if val_dl is None:
        result.best_epoch, good = len(result.history) - 1, _trainable(core)
        result.member_best_epochs = [result.best_epoch] * M if independent else None
    _restore(core, good)
    result.best = result.history[result.best_epoch] if result.history else None
    if val_dl is not None:
        from sve.calibration import fit_temperature

        z, y = _logits(dmodel, val_dl, acc)
        if independent:  # the assembled ensemble is no epoch's: its own metrics
            result.best = {**_val_metrics(z, y, combine),
                           "member_best_epochs": list(result.member_best_epochs or [])}
        result.temperature = fit_temperature(z, y, combine=combine)
    core.temperature = result.temperature
    core.eval()
    _call(callbacks, "end", {"result": result})
    return result
