"""Corruptions (the CIFAR-100-C analog): ``corrupt(data, kind, severity, seed)``.

Image kinds ``CORRUPTIONS``, severity 1..5; the parameters follow Hendrycks & Dietterich (2019),
spatial ones scaled to the image side. Text: ``corrupt(texts, "typos", severity, seed)``.

Internally images are x in [0,1], shape (N,C,H,W) float32; every random draw comes from the seed and does
not depend on the severity, so a higher severity only scales the same perturbation. Spatial
parameters are given for a 28-px side and scale with max(side, 28) / 28.
"""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sve.data.container import Dataset, check_int
from sve.errors import DataError, UnknownNameError

#: per corruption, the parameter at severities 1..5
_SEVERITY: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # noise std
    "shot_noise": (60, 25, 12, 5, 3),  # photons per unit intensity
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),  # salt-and-pepper fraction
    "gaussian_blur": (0.5, 0.75, 1.0, 1.25, 1.5),  # sigma in pixels
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # kept fraction of the deviation from the mean
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),  # added intensity
    "rotation": (10, 20, 30, 45, 60),  # degrees, random sign per image
    "elastic": (1.0, 1.5, 2.0, 2.5, 3.0),  # max displacement in pixels
    "pixelate": (2, 3, 4, 5, 6),  # block side in pixels
    "jpeg": (25, 18, 15, 10, 7),  # JPEG quality
}
CORRUPTIONS: tuple[str, ...] = tuple(_SEVERITY)
TEXT_CORRUPTIONS: tuple[str, ...] = ("typos",)
_TYPO_RATE = (0.02, 0.05, 0.1, 0.15, 0.2)  # fraction of letters hit


def _gaussian_blur(x: Any, sigma: float) -> Any:
    """Separable Gaussian blur (replicate padding) of a (N,C,H,W) tensor or (N,C,H,W)-like array."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def _warp(x: Any, flow: Any, padding: str) -> Any:
    """Sample x at pixel positions + flow ((N,H,W,2) displacement in pixels, (dx, dy)), bilinear."""
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    px = xs + flow[..., 0]
    py = ys + flow[..., 1]
    grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def _corrupt_nchw(x: Any, kind: str, c: float, rng: np.random.Generator) -> Any:
    n, ch, h, w = x.shape
    scale = max(min(h, w), 28) / 28
    if kind == "gaussian_noise":
        return x + c * torch.from_numpy(rng.standard_normal(x.shape, dtype=np.float32))
    if kind == "shot_noise":
        return torch.from_numpy(rng.poisson(x.numpy() * c).astype(np.float32) / c)
    if kind == "impulse_noise":
        u = torch.from_numpy(rng.random(x.shape, dtype=np.float32))
        return torch.where(u < c / 2, 0.0, torch.where(u > 1 - c / 2, 1.0, x))
    if kind == "gaussian_blur":
        return _gaussian_blur(x, c * scale)
    if kind == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * c + mean
    if kind == "brightness":
        return x + c
    if kind == "rotation":
        angle = torch.from_numpy(rng.choice([-1.0, 1.0], size=n).astype(np.float32)) * np.deg2rad(c)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) - (h - 1) / 2,
                                torch.arange(w, dtype=torch.float32) - (w - 1) / 2, indexing="ij")
        cos, sin = torch.cos(angle).view(n, 1, 1), torch.sin(angle).view(n, 1, 1)
        src_x, src_y = cos * xs + sin * ys, -sin * xs + cos * ys  # inverse rotation of the target grid
        return _warp(x, torch.stack([src_x - xs, src_y - ys], dim=-1), "zeros")
    if kind == "elastic":
        field_ = torch.from_numpy(rng.standard_normal((n, 2, h, w), dtype=np.float32))
        field_ = _gaussian_blur(field_, max(h, w) / 8)
        field_ = field_ / field_.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
        return _warp(x, (c * scale) * field_.permute(0, 2, 3, 1), "border")
    if kind == "pixelate":  # mean over b×b blocks (edge-padded), each block filled with its mean
        b = max(1, min(_round_half_up(c * scale), min(h, w) // 2))
        pad = F.pad(x, (0, -w % b, 0, -h % b), mode="replicate")
        blocks = F.avg_pool2d(pad, b).repeat_interleave(b, dim=2).repeat_interleave(b, dim=3)
        return blocks[..., :h, :w]
    if kind == "jpeg":
        out = []
        for img in (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy():
            buf = io.BytesIO()
            Image.fromarray(img[..., 0] if ch == 1 else img).save(buf, format="JPEG", quality=int(c))
            out.append(np.asarray(Image.open(buf), dtype=np.float32).reshape(h, w, ch) / 255)
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)
    raise AssertionError(kind)


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _typos(texts: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    """Hit each letter with probability ``rate`` by one of: delete, swap with next, replace, insert."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = []
    for t in texts:
        u, op, ch = rng.random(len(t)), rng.integers(0, 4, len(t)), rng.integers(0, 26, len(t))
        chars, i = list(t), 0
        res = []
        while i < len(chars):
            a = chars[i]
            if not (a.isalpha() and u[i] < rate):
                res.append(a)
            elif op[i] == 1 and i + 1 < len(chars):
                res += [chars[i + 1], a]
                i += 1
            elif op[i] == 2:
                res.append(letters[ch[i]])
            elif op[i] == 3:
                res += [a, letters[ch[i]]]
            i += 1  # op 0 (delete) appends nothing
        out.append("".join(res))
    return out


def corrupt(data: np.ndarray | list[str] | Dataset, kind: str, severity: int, seed: int = 0) -> Any:
    """Apply a corruption at ``severity`` 1..5, deterministically given ``(data, kind, severity, seed)``.

    data: uint8 images ``(N,H,W)`` / ``(N,H,W,3)`` (kinds ``CORRUPTIONS``) → uint8 of the same shape;
    a list of texts (kinds ``TEXT_CORRUPTIONS``) → a list of texts; or a ``Dataset`` → a Dataset
    with its images/texts corrupted and ``info["corruption"] = (kind, severity, seed)``.
    """
    if isinstance(data, Dataset):
        if data.on_disk:
            raise DataError(f"{data.name!r} keeps its images in files; corrupt needs them in memory: "
                            "call corrupt(ds.in_memory(size), ...) on a split that fits in memory")
        new = corrupt(data.images if data.modality == "image" else data.texts, kind, severity, seed)
        field_ = {"images": new} if data.modality == "image" else {"texts": new}
        return replace(data, **field_, info={**data.info, "corruption": (kind, severity, seed)}, ood=None)
    is_text = isinstance(data, (list, tuple))
    valid = TEXT_CORRUPTIONS if is_text else CORRUPTIONS
    if kind not in valid:
        raise UnknownNameError(f"unknown {'text ' if is_text else ''}corruption {kind!r}; valid kinds: "
                               f"{', '.join(valid)}")
    severity = check_int("severity", severity, 1, 5)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    if is_text:
        return _typos(list(data), _TYPO_RATE[severity - 1], rng)
    x = np.asarray(data)
    if x.dtype != np.uint8 or not (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 3)):
        raise DataError(f"corrupt expects uint8 images (N,H,W) or (N,H,W,3); got {x.dtype} {x.shape}")
    t = torch.from_numpy(np.ascontiguousarray(x)).float() / 255
    t = t.unsqueeze(1) if x.ndim == 3 else t.permute(0, 3, 1, 2)
    y = _corrupt_nchw(t, kind, _SEVERITY[kind][severity - 1], rng)
    y = (y.clamp(0, 1) * 255).round().to(torch.uint8)
    return (y[:, 0] if x.ndim == 3 else y.permute(0, 2, 3, 1)).numpy()
