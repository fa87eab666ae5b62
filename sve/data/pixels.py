"""Resizing uint8 images to a backbone's square input, from an array or from files.

Bilinear, antialiased when shrinking (``torch.nn.functional.interpolate``), rounded back to uint8,
channels first: ``(N,H,W[,3])`` → ``(N,C,S,S)`` with C = 1 (grayscale) or 3.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sve.data.container import ImageFiles

CHUNK_BYTES = 64 << 20


def resize_pixels(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N,H,W[,3]) → uint8 (N,C,size,size), bilinear (antialiased when shrinking).

    Works through chunks whose float32 input or output stays under ``CHUNK_BYTES`` (64 MiB), so the
    transient memory does not grow with N (the uint8 result does).
    """
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.unsqueeze(1) if images.ndim == 3 else x.permute(0, 3, 1, 2)
    if x.shape[-2:] == (size, size):
        return x.contiguous()
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    per_item = 4 * x.shape[1] * max(size * size, x.shape[2] * x.shape[3])
    chunk = max(1, CHUNK_BYTES // per_item)
    for start in range(0, x.shape[0], chunk):
        b = x[start:start + chunk].float()
        y = F.interpolate(b, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[start:start + chunk] = y.round_().clamp_(0, 255)
    return out


def decode_resized(images: np.ndarray | ImageFiles, idx: Any, size: int) -> torch.Tensor:
    """The images at positions ``idx``, resized: uint8 ``(len(idx),C,size,size)``.

    An array is gathered and resized as one batch; files are decoded and resized one by one (their
    sizes may differ), so only the requested images are ever in memory.
    """
    idx = np.asarray(idx, dtype=np.int64)
    if not isinstance(images, ImageFiles):
        return resize_pixels(images[idx], size)
    channels = 1 if images.ndim == 3 else 3
    out = torch.empty((len(idx), channels, size, size), dtype=torch.uint8)
    for j, i in enumerate(idx):
        out[j] = resize_pixels(images.decode(int(i))[None], size)[0]
    return out
