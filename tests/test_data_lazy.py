"""Tests of prepare()'s lazy per-batch image path: same items as the cached path, chosen by size,
usable by the DataLoaders sve.train builds, and for images kept in files."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sve import data as D
from sve.errors import ConfigError, DataError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BB = SimpleNamespace(name="stub-vit", modality="image", image_size=28, patch_size=14, mean=MEAN, std=STD,
                     tokenizer=None, max_length=None)


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(D.MAX_BYTES_ENV, raising=False)


def array_set(n=20, rgb=True, side=11, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, side, side, 3) if rgb else (n, side, side)
    return D.new_dataset("toy", "image", np.arange(n) % 3, ["a", "b", "c"],
                         images=rng.integers(0, 256, shape, dtype=np.uint8))


def file_set(tmp_path, n=7):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (9 + 2 * i, 13 + i, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return D.new_dataset("files", "image", np.arange(n) % 2, ["x", "y"], images=D.ImageFiles(paths))


def _all_items(prep):
    return torch.stack([prep[i]["pixel_values"] for i in range(len(prep))])


@pytest.mark.parametrize("rgb", [True, False])
def test_lazy_items_equal_cached_items(rgb):
    ds = array_set(rgb=rgb)
    eager, lazy = D.prepare(ds, BB, lazy=False), D.prepare(ds, BB, lazy=True)
    assert isinstance(lazy, D.LazyImageDataset) and isinstance(eager, D.PreparedDataset)
    assert lazy.lazy and not eager.lazy and lazy.cache_path is None and not lazy.from_cache
    assert len(lazy) == len(eager) and torch.equal(lazy.labels, eager.labels)
    assert torch.equal(_all_items(lazy), _all_items(eager))
    batch = lazy.__getitems__([4, 0, 7])
    assert torch.equal(batch.batch["pixel_values"], _all_items(eager)[[4, 0, 7]])
    assert batch.batch["pixel_values"].shape == (3, 3, 28, 28)


def test_plain_dataloader_and_workers_give_the_cached_batches():
    ds = array_set(n=19)
    eager, lazy = D.prepare(ds, BB, lazy=False), D.prepare(ds, BB, lazy=True)
    ref = list(DataLoader(eager, batch_size=8))
    for loader in (DataLoader(lazy, batch_size=8),  # what sve.train builds: default collate
                   lazy.loader(8, num_workers=1)):  # a worker process, whole batches
        got = list(loader)
        assert [b["labels"].tolist() for b in got] == [b["labels"].tolist() for b in ref]
        assert all(torch.equal(g["pixel_values"], r["pixel_values"]) for g, r in zip(got, ref))
    assert lazy.loader(8).worker_init_fn is D.release_freed_memory  # workers' buffers go back to the OS
    D.release_freed_memory(0)
    orders = [[x["labels"].tolist() for x in lazy.loader(5, shuffle=True, seed=s, num_workers=0)]
              for s in (3, 3, 4)]
    assert orders[0] == orders[1] != orders[2] and sorted(sum(orders[0], [])) == sorted(lazy.labels.tolist())


def test_size_switch(monkeypatch):
    ds = array_set(n=20)  # 20·3·28·28 = 47,040 bytes resized
    assert D.resized_bytes(20, 3, 28) == 47_040
    assert isinstance(D.prepare(ds, BB), D.PreparedDataset)
    monkeypatch.setenv(D.MAX_BYTES_ENV, "47040")
    assert isinstance(D.prepare(ds, BB), D.PreparedDataset)
    monkeypatch.setenv(D.MAX_BYTES_ENV, "47039")
    assert isinstance(D.prepare(ds, BB), D.LazyImageDataset)
    assert isinstance(D.prepare(ds, BB, lazy=False), D.PreparedDataset)
    monkeypatch.setenv(D.MAX_BYTES_ENV, "1GB")
    with pytest.raises(ConfigError, match="SVE_PREPARE_MAX_BYTES"):
        D.prepare(ds, BB)
    monkeypatch.delenv(D.MAX_BYTES_ENV)
    assert D.max_cached_bytes() == D.preprocess.MAX_CACHED_BYTES


def test_files_lazy_and_cached_agree(tmp_path):
    ds = file_set(tmp_path)
    assert ds.on_disk and ds.images.shape == (7, None, None, 3) and ds.images[2].shape == (13, 15, 3)
    eager, lazy = D.prepare(ds, BB, lazy=False), D.prepare(ds, BB, lazy=True)
    assert torch.equal(_all_items(lazy), _all_items(eager))
    one = torch.from_numpy(np.array(Image.open(tmp_path / "img3.png"))).permute(2, 0, 1)[None]
    ref = torch.nn.functional.interpolate(one.float(), size=(28, 28), mode="bilinear", antialias=True)
    px = ref.round().clamp(0, 255)[0] / 255
    assert torch.allclose(eager[3]["pixel_values"], (px - eager.mean) / eager.std)
    assert D.prepare(ds, BB, lazy=False).from_cache
    sub = ds.subset([1, 4])
    assert sub.on_disk and len(sub) == 2 and np.array_equal(sub.images[1], ds.images[4])


def test_files_need_a_size_and_corrupt_needs_memory(tmp_path):
    ds = file_set(tmp_path)
    no_size = SimpleNamespace(**{**vars(BB), "image_size": None, "patch_size": None})
    assert D.prepare(ds, no_size, lazy=True).size == 224
    with pytest.raises(DataError, match="in_memory"):
        D.corrupt(ds, "contrast", 2)
    mem = ds.in_memory(16)
    assert mem.images.shape == (7, 16, 16, 3) and mem.images.dtype == np.uint8
    out = D.corrupt(mem, "contrast", 2)
    assert out.images.shape == mem.images.shape and out.info["corruption"] == ("contrast", 2, 0)


def test_unreadable_file_is_named(tmp_path):
    ds = file_set(tmp_path)
    (tmp_path / "img5.png").write_bytes(b"not an image")
    lazy = D.prepare(ds, BB, lazy=True)
    with pytest.raises(DataError, match=r"img5\.png"):
        lazy[5]


def test_memory_benchmark_smoke(tmp_path, monkeypatch):
    """benchmarks/memory.py end to end on a tiny set: it reports the path prepare took and a peak."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("memory", Path(__file__).resolve().parents[1] / "benchmarks"
                                                  / "memory.py")
    memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(memory)
    monkeypatch.setenv(D.MAX_BYTES_ENV, "1")  # a 1-byte limit: the lazy path even for 60 images
    out = tmp_path / "memory.json"
    assert memory.main(["--images", "60", "--size", "16", "--batch", "16", "--workers", "0",
                        "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["path"] == "lazy" and r["seen"] == 60 and r["peak_main_mb"] >= r["baseline_mb"] > 0
    assert r["cached_uint8_gb"] == round(60 * 3 * 16 * 16 / 2**30, 2)
