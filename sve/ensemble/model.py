"""The wrapped model: :class:`EnsembleModel` (trunk + M heads) and ``wrap_with``, the generic
constructor every implicit ensemble uses.

    wrap_with(backbone, layer_factory, num_members, num_classes, targets="all", seed=None,
              method="my-method", options={...}) -> EnsembleModel

``layer_factory(module, name, num_members, generator) -> EnsembleLayer`` is called once per targeted
``nn.Linear`` / ``nn.Conv2d`` (see ``sve.ensemble.targets``). Draw all randomness from
``generator``: it is seeded from ``seed`` and the layer's name (``seed_for``), so one layer's init
does not depend on which other layers are targeted. Heads: member m's head is (C, D) ~ N(0, 0.01²),
bias 0 (``HEAD_INIT_STD``). Logits are (B, M, C).
"""
from __future__ import annotations

import contextlib
import copy
import zlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from sve.ensemble.fanout import FanOut, fan_out_block, repeat_batch
from sve.ensemble.layer import EnsembleLayer
from sve.ensemble.targets import select_targets
from sve.errors import ConfigError, DataError, SVEError

HEAD_INIT_STD = 0.01


TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


@contextlib.contextmanager
def one_thread():
    """LAPACK's threaded SVD / eigh is up to ~30× slower on a busy 2-core machine (its threads
    spin-wait for each other); decompositions run single-threaded, then the count is restored.
    Switching costs ~20 ms, so ``wrap_with`` holds one thread over all its layers (nested: no-op)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def as_backbone(backbone: Any) -> Any:
    """A ``sve.backbones.Backbone`` (or duck-typed equivalent); raw models go through from_model."""
    if isinstance(backbone, EnsembleModel):
        raise ConfigError("this model is already wrapped; pass its backbone (model.backbone) instead.")
    if isinstance(backbone, nn.Module):
        from sve.backbones import from_model

        return from_model(backbone)
    missing = [a for a in ("model", "features", "blocks", "modality", "feature_dim")
               if not hasattr(backbone, a)]
    if missing:
        raise ConfigError(f"expected a sve.backbones.Backbone or a timm / transformers model, got "
                          f"{type(backbone).__name__} (missing {missing}). Load one with "
                          "sve.backbones.load_backbone(name) or pass the nn.Module itself.")
    return backbone


def seed_for(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


#: member m of an ensemble of independently trained members at run seed s has seed s + 1000·m
MEMBER_SEED_STRIDE = 1000


def member_seed(seed: int, m: int) -> int:
    """The seed of member ``m`` of an ensemble of independently trained members (the deep ensemble)
    built or trained with ``seed``: ``seed + 1000·m``. Member 0 is the ``single`` model of the same
    seed; members of runs with different seeds (0 … 999) never coincide, so runs at seeds 0 … 4 are
    five independent ensembles (with ``seed + m``, the runs at seeds s and s + 1 would share M − 1
    members, and seed-paired comparisons would not be independent pairs)."""
    return seed + MEMBER_SEED_STRIDE * m


def input_channels(trunk: nn.Module) -> int | None:
    return next((m.in_channels for m in trunk.modules() if isinstance(m, nn.Conv2d)), None)


class EnsembleModel(nn.Module):
    """A backbone whose targeted layers are per-member layers, plus M linear heads.

    ``forward(**inputs)`` takes the backbone's own inputs (``pixel_values``; or ``input_ids``,
    ``attention_mask``, ...; one positional tensor = ``pixel_values`` / ``input_ids``) and returns
    logits (B, M, C). ``features(**inputs)`` gives the pooled member features (B, M, D).
    The trunk always runs in eval mode (frozen BatchNorm statistics; dropout off unless
    ``dropout=True``, then its ``nn.Dropout`` modules follow ``train()``).
    """

    def __init__(self, backbone: Any, num_members: int, num_classes: int, fan_out_at: str | None,
                 config: dict, fingerprint: str, base_params: int, in_channels: int | None,
                 generator: torch.Generator):
        super().__init__()
        self.backbone, self.trunk = backbone, backbone.model
        self.num_members, self.num_classes = num_members, num_classes
        self.fan_out_at, self.config, self.fingerprint = fan_out_at, config, fingerprint
        self.base_params, self.in_channels, self.temperature = base_params, in_channels, 1.0
        D = backbone.feature_dim
        self.sve_head_weight = nn.Parameter(
            torch.randn(num_members, num_classes, D, generator=generator) * HEAD_INIT_STD)
        self.sve_head_bias = nn.Parameter(torch.zeros(num_members, num_classes))
        self._fan = FanOut(num_members)
        if fan_out_at is not None and num_members > 1:
            blocks = list(backbone.blocks)
            for name in blocks[blocks.index(fan_out_at):]:
                self.trunk.get_submodule(name).register_forward_pre_hook(self._fan, with_kwargs=True)
        self.train(False)

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("pixel_values",) if self.backbone.modality == "image" else TEXT_INPUTS

    def train(self, mode: bool = True) -> EnsembleModel:
        super().train(mode)
        self.trunk.eval()
        if mode and self.config.get("dropout"):
            for m in self.trunk.modules():
                if isinstance(m, nn.Dropout):
                    m.train()
        return self

    def layers(self) -> dict[str, EnsembleLayer]:
        """The per-member layers, by module name inside the trunk."""
        return {n: m for n, m in self.trunk.named_modules() if isinstance(m, EnsembleLayer)}

    def _inputs(self, args: tuple, inputs: dict) -> dict[str, Tensor]:
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
        if args:
            if len(args) > 1 or not isinstance(args[0], Tensor) or self.input_names[0] in inputs:
                raise DataError(f"pass one positional tensor ({self.input_names[0]}) or keyword "
                                f"inputs {self.input_names}.")
            inputs[self.input_names[0]] = args[0]
        check_inputs(inputs, self.backbone.modality, self.in_channels)
        return inputs

    def features(self, *args: Tensor, **inputs: Tensor) -> Tensor:
        """Pooled features of every member, (B, M, D)."""
        inputs = self._inputs(args, inputs)
        M, B = self.num_members, next(iter(inputs.values())).shape[0]
        if self.fan_out_at is None and M > 1:
            inputs = repeat_batch(inputs, B, M, min_dim=1)
        self._fan.batch = B
        try:
            feats = self.backbone.features(**inputs)
        except SVEError:
            raise
        except (RuntimeError, AssertionError, ValueError, IndexError, TypeError) as e:
            if isinstance(e, torch.OutOfMemoryError):
                raise
            shapes = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in inputs.items()}
            raise DataError(f"the backbone {getattr(self.backbone, 'name', '')!r} failed on inputs "
                            f"{shapes}: {e}. Check the image size / token ids match the backbone "
                            "(sve.data.prepare(ds, backbone) makes matching batches).") from e
        finally:
            self._fan.batch = None
        if feats.shape[0] != M * B:
            raise SVEError(f"the trunk returned {feats.shape[0]} rows for a batch of {B} and "
                           f"{M} members; wrap with fan_out='input'.")
        return feats.reshape(M, B, -1).transpose(0, 1)

    def forward(self, *args: Tensor, **inputs: Tensor) -> Tensor:
        f = self.features(*args, **inputs)
        return torch.einsum("bmd,mcd->bmc", f, self.sve_head_weight.to(f.dtype)) + self.sve_head_bias


def check_inputs(inputs: dict[str, Any], modality: str, in_channels: int | None = None) -> None:
    """Raise ``DataError`` (naming the fix) unless ``inputs`` is a valid batch for ``modality``."""
    if modality == "image":
        x = inputs.get("pixel_values")
        extra = sorted(set(inputs) - {"pixel_values"})
        if not isinstance(x, Tensor) or extra:
            raise DataError(f"an image model takes one tensor `pixel_values` (B, C, H, W); got keys "
                            f"{sorted(inputs)}.")
        if not x.is_floating_point():
            raise DataError(f"pixel_values has dtype {x.dtype}; expected float. Convert with "
                            "x.float() / 255 and normalise with the backbone's mean/std "
                            "(sve.data.prepare does this).")
        if x.ndim != 4 or (in_channels is not None and x.shape[1] != in_channels) or not len(x):
            raise DataError(f"pixel_values has shape {tuple(x.shape)}; expected (batch, "
                            f"{in_channels or 'C'}, H, W) with batch ≥ 1. Add a batch dim with "
                            "x.unsqueeze(0); repeat grey images to 3 channels.")
        return
    ids = inputs.get("input_ids")
    extra = sorted(set(inputs) - set(TEXT_INPUTS))
    if not isinstance(ids, Tensor) or extra:
        raise DataError(f"a text model takes `input_ids` (+ attention_mask, token_type_ids); got keys "
                        f"{sorted(inputs)}. Tokenize with backbone.tokenize(texts).")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool or ids.ndim != 2:
        raise DataError(f"input_ids has dtype {ids.dtype} and shape {tuple(ids.shape)}; expected an "
                        "integer tensor (batch, seq_len). Tokenize with backbone.tokenize(texts).")
    for key in ("attention_mask", "token_type_ids", "position_ids"):
        if key in inputs and tuple(inputs[key].shape) != tuple(ids.shape):
            raise DataError(f"{key} has shape {tuple(inputs[key].shape)} but input_ids has "
                            f"{tuple(ids.shape)}; they must match.")


def wrap_with(backbone: Any, layer_factory: Callable[..., EnsembleLayer], num_members: int,
              num_classes: int, targets: str | list[str] = "all", seed: int | None = None, *,
              fan_out: str = "auto", dropout: bool = False, inplace: bool = False,
              method: str = "custom", options: dict | None = None) -> EnsembleModel:
    """Replace the targeted layers of ``backbone`` by ``layer_factory(...)`` and add M heads.

    The generic part of every implicit ensemble (see the module docstring). ``fan_out``:
    ``"auto"`` (at the first targeted block) or ``"input"`` (repeat the inputs; the trunk runs
    M times). ``inplace=False`` deep-copies the trunk so ``backbone`` stays the base model.
    """
    if isinstance(num_members, bool) or not isinstance(num_members, int) or num_members < 1:
        raise ConfigError(f"num_members={num_members!r}: must be an integer ≥ 1 (the paper uses 4–16).")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes={num_classes!r}: must be an integer ≥ 2.")
    if fan_out not in ("auto", "input"):
        raise ConfigError(f"fan_out={fan_out!r}: use 'auto' or 'input'.")
    backbone = as_backbone(backbone)
    names = select_targets(backbone, targets)
    fingerprint = backbone.fingerprint()
    base_params = sum(p.numel() for p in backbone.model.parameters())
    if not inplace:
        backbone = copy.copy(backbone)
        backbone.model = copy.deepcopy(backbone.model)
    trunk = backbone.model.requires_grad_(False)
    in_channels = input_channels(trunk)
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()))
    with one_thread():  # the SVDs of SVE layers (see thin_svd)
        for name in names:
            parent_name, _, child = name.rpartition(".")
            gen = torch.Generator().manual_seed(seed_for(seed, name))
            layer = layer_factory(trunk.get_submodule(name), name=name, num_members=num_members,
                                  generator=gen)
            setattr(trunk.get_submodule(parent_name) if parent_name else trunk, child, layer)
    fan_out_at = fan_out_block(trunk, list(backbone.blocks or []), names) if fan_out == "auto" else None
    config = dict(method=method, num_members=num_members, num_classes=num_classes,
                  targets=targets if isinstance(targets, str) else list(targets), seed=seed,
                  fan_out=fan_out, dropout=dropout, **(options or {}))
    gen = torch.Generator().manual_seed(seed_for(seed, "sve_head"))
    return EnsembleModel(backbone, num_members, num_classes, fan_out_at, config, fingerprint,
                         base_params, in_channels, gen)


def build_plain(cls: type[EnsembleModel], backbone: Any, name: str, M: int, C: int,
           opts: dict[str, Any]) -> EnsembleModel:
    """An EnsembleModel (subclass) with no per-member layers on a copy of the trunk; the trunk is
    trainable for the full fine-tuning methods (all but ``head_ensemble``)."""
    backbone = as_backbone(backbone)
    fingerprint = backbone.fingerprint()
    base_params = sum(p.numel() for p in backbone.model.parameters())
    backbone = copy.copy(backbone)
    backbone.model = copy.deepcopy(backbone.model).requires_grad_(name != "head_ensemble")
    config = dict(method=name, num_members=M, num_classes=C, **opts)
    gen = torch.Generator().manual_seed(seed_for(opts["seed"], "sve_head"))
    return cls(backbone, M, C, None, config, fingerprint, base_params, input_channels(backbone.model), gen)


def unwrap(model: nn.Module) -> EnsembleModel:
    """The EnsembleModel inside a DDP / Accelerate wrapper."""
    while not isinstance(model, EnsembleModel) and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    if not isinstance(model, EnsembleModel):
        raise ConfigError(f"expected a model made by sve.wrap, got {type(model).__name__}.")
    return model
