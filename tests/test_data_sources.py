"""Tests of sve.data's real dataset sources, on small files written in each source's own layout.

torchvision's checksum checks (CIFAR, SVHN, Flowers102) are stubbed where the files are synthetic;
one test keeps them on and expects the refusal.
"""

from __future__ import annotations

import dataclasses
import pickle
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sve import data as D
from sve.errors import ConfigError, DataError, MissingAssetError

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SVE_CACHE", str(tmp_path / "cache"))
    for var in [D.DATA_ROOT_ENV, D.DOWNLOAD_ENV, *(s.env for s in D.SOURCES.values())]:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def no_checksums(monkeypatch):
    """Stub only torchvision's md5 checks (synthetic files cannot match the published sums)."""
    import torchvision.datasets.cifar
    import torchvision.datasets.flowers102
    import torchvision.datasets.svhn

    for mod in (torchvision.datasets.cifar, torchvision.datasets.svhn, torchvision.datasets.flowers102):
        monkeypatch.setattr(mod, "check_integrity", lambda *a, **k: True)


def _pickle(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root, per_batch=4, n_test=10):
    """cifar-10-batches-py/: data_batch_1..5, test_batch ({data: uint8 (n,3072), labels}), batches.meta."""
    base = root / "cifar-10-batches-py"
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        _pickle(base / name, {"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
                              "labels": [int(x) for x in np.arange(n) % 10]})
    _pickle(base / "batches.meta", {"label_names": D.CIFAR10_CLASSES})
    return root


def write_cifar100(root, n_train=20, n_test=10):
    """cifar-100-python/: train, test ({data, fine_labels, coarse_labels}), meta."""
    base = root / "cifar-100-python"
    for name, n in (("train", n_train), ("test", n_test)):
        _pickle(base / name, {"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
                              "fine_labels": [int(x) for x in (np.arange(n) * 7) % 100],
                              "coarse_labels": [0] * n})
    _pickle(base / "meta", {"fine_label_names": D.CIFAR100_CLASSES})
    return root


def write_svhn(root, n_train=6, n_test=5):
    """train_32x32.mat / test_32x32.mat: X uint8 (32,32,3,N), y (N,1) with digit 0 stored as 10."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        y = (np.arange(n) % 10).reshape(-1, 1)
        y[y == 0] = 10
        savemat(root / f"{split}_32x32.mat",
                {"X": RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": y.astype(np.uint8)})
    return root


def write_flowers(root, n=12):
    """flowers-102/: jpg/image_00001.jpg..., imagelabels.mat (1-based labels), setid.mat
    (trnid/valid/tstid)."""
    from scipy.io import savemat

    base = root / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    for i in range(1, n + 1):
        side = (20 + 3 * i, 16 + 2 * i)  # sizes differ, as in the real set
        pixels = RNG.integers(0, 256, (*side[::-1], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(base / "jpg" / f"image_{i:05d}.jpg")
    savemat(base / "imagelabels.mat", {"labels": (np.arange(n) % 3 + 1).reshape(1, -1)})
    ids = np.arange(1, n + 1)
    savemat(base / "setid.mat", {"trnid": ids[:3].reshape(1, -1), "valid": ids[3:6].reshape(1, -1),
                                 "tstid": ids[6:].reshape(1, -1)})
    return root


def write_pets(root):
    """oxford-iiit-pet/: images/<Breed>_<n>.jpg, annotations/{trainval,test}.txt
    ("<image id> <class id> <species> <breed id>")."""
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    breeds = [("Abyssinian", 1, 1), ("american_bulldog", 2, 2), ("Bengal", 3, 1)]
    lines = {"trainval": [], "test": []}
    for b, cls, species in breeds:
        for k in range(1, 5):
            pixels = RNG.integers(0, 256, (24, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(base / "images" / f"{b}_{k}.jpg")
            lines["trainval" if k <= 2 else "test"].append(f"{b}_{k} {cls} {species} 1")
    for split, rows in lines.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def write_cifar_c(root, per=4, corruptions=("gaussian_noise", "contrast")):
    """<corruption>.npy uint8 (5·per,32,32,3) (severity-major) and labels.npy."""
    root.mkdir(parents=True, exist_ok=True)
    for c in corruptions:
        x = np.zeros((5 * per, 32, 32, 3), np.uint8)
        x[:] = (np.arange(5 * per) // per + 1).reshape(-1, 1, 1, 1) * 10  # severity s fills 10·s
        np.save(root / f"{c}.npy", x)
    np.save(root / "labels.npy", np.tile(np.arange(per) % 100, 5).astype(np.int64))
    return root


def write_sst2_parquet(root, n_train=30, n_val=8):
    (root / "data").mkdir(parents=True)
    for split, n in (("train", n_train), ("validation", n_val), ("test", 4)):
        labels = np.arange(n) % 2 if split != "test" else np.full(n, -1)
        pd.DataFrame({"idx": np.arange(n), "sentence": [f"{split} sentence {i}" for i in range(n)],
                      "label": labels}).to_parquet(root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def arc_rows(split, n):
    rows = []
    for i in range(n):
        labels = ["A", "B", "C", "D"] if i % 3 else ["1", "2", "3"]
        rows.append({"id": f"{split}-{i}", "question": f"Question {i} of {split}?",
                     "choices": {"text": [f"choice {k}" for k in range(len(labels))], "label": labels},
                     "answerKey": labels[i % len(labels)]})
    return rows


def write_arc_parquet(root, config="ARC-Easy", bad=None):
    sizes = (("train", 6), ("validation", 3), ("test", 4))
    (root / config).mkdir(parents=True)
    for split, n in sizes:
        rows = arc_rows(split, n)
        if bad == split:
            rows[1]["answerKey"] = "E"
        pd.DataFrame(rows).to_parquet(root / config / f"{split}-00000-of-00001.parquet")
    return root


# ---------------------------------------------------------------------------------------------- vision


def test_cifar10_official_splits_and_pixels(tmp_path, no_checksums):
    root = write_cifar10(tmp_path / "c10")
    full = D.load_dataset("cifar10", split="all", root=root)
    assert full.images.shape == (30, 32, 32, 3) and full.images.dtype == np.uint8
    assert full.classes == D.CIFAR10_CLASSES and full.labels.tolist()[:8] == [0, 1, 2, 3, 0, 1, 2, 3]
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        raw = pickle.load(f)["data"][2]
    assert np.array_equal(full.images[2], raw.reshape(3, 32, 32).transpose(1, 2, 0))  # CHW rows → HWC
    parts = {s: D.load_dataset("cifar10", split=s, root=root, val_frac=0.25)
             for s in ("train", "val", "test")}
    assert sorted(parts["test"].indices.tolist()) == list(range(20, 30))  # the official test batch
    assert len(parts["val"]) + len(parts["train"]) == 20 and len(parts["val"]) >= 4
    assert not set(parts["val"].indices) & set(parts["train"].indices)


def test_cifar100_fine_labels_and_root_forms(tmp_path, monkeypatch, no_checksums):
    root = write_cifar100(tmp_path / "c100")
    ds = D.load_dataset("cifar100", split="test", root=root)
    assert ds.classes == D.CIFAR100_CLASSES and len(ds) == 10
    assert sorted(ds.labels.tolist()) == sorted((np.arange(10) * 7 % 100).tolist())
    inner = D.load_dataset("cifar100", split="test", root=root / "cifar-100-python")  # the folder itself
    assert np.array_equal(inner.images, ds.images)
    monkeypatch.setenv("SVE_CIFAR100_ROOT", str(root))
    assert np.array_equal(D.load_dataset("cifar100", split="test").images, ds.images)
    monkeypatch.delenv("SVE_CIFAR100_ROOT")
    (tmp_path / "all").mkdir()
    (tmp_path / "c100").rename(tmp_path / "all" / "cifar100")
    monkeypatch.setenv(D.DATA_ROOT_ENV, str(tmp_path / "all"))
    assert np.array_equal(D.load_dataset("cifar100", split="test").images, ds.images)


def test_checksums_stay_on(tmp_path):
    root = write_cifar10(tmp_path / "c10")
    with pytest.raises(DataError, match="torchvision refused the files") as e:
        D.load_dataset("cifar10", root=root)
    assert "cifar-10-batches-py" in str(e.value)


def test_missing_file_is_named_with_the_layout(tmp_path, no_checksums):
    root = write_cifar10(tmp_path / "c10")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(MissingAssetError) as e:
        D.load_dataset("cifar10", root=root)
    msg = str(e.value)
    assert "cifar-10-batches-py/data_batch_3 is missing" in msg
    assert "SVE_CIFAR10_ROOT" in msg and "root=" in msg and "download=True" in msg
    with pytest.raises(MissingAssetError, match=r"flowers-102/imagelabels\.mat is missing"):
        D.load_dataset("flowers102", root=tmp_path / "nothing-here")


def test_svhn_zero_label_and_test_split(tmp_path, no_checksums):
    root = write_svhn(tmp_path / "svhn")
    ds = D.load_dataset("svhn", split="test", root=root)
    assert ds.images.shape == (5, 32, 32, 3) and sorted(ds.labels.tolist()) == [0, 1, 2, 3, 4]
    from scipy.io import loadmat

    x = loadmat(root / "test_32x32.mat")["X"]
    pos = {int(i): k for k, i in enumerate(ds.indices - 6)}
    assert np.array_equal(ds.images[pos[0]], x[..., 0])
    (root / "train_32x32.mat").unlink()
    with pytest.raises(MissingAssetError, match="train_32x32.mat is missing"):
        D.load_dataset("svhn", split="test", root=tmp_path / "svhn", download=False)


def test_flowers_official_splits_files_on_disk(tmp_path, no_checksums):
    root = write_flowers(tmp_path / "fl")
    parts = {s: D.load_dataset("flowers102", split=s, root=root) for s in ("train", "val", "test")}
    assert [len(p) for p in parts.values()] == [3, 3, 6]
    assert parts["train"].on_disk
    assert parts["train"].classes[:2] == ["pink primrose", "hard-leaved pocket orchid"]
    assert sorted(parts["val"].indices.tolist()) == [3, 4, 5] and parts["val"].labels.tolist() == [0, 1, 2]
    img = parts["test"].images[0]
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert "images in files" in parts["test"].summary()
    first = sorted(parts["test"].images.paths)[0]
    (root / "flowers-102" / "jpg" / first.rsplit("/", 1)[1]).unlink()
    with pytest.raises(MissingAssetError, match=r"jpg/image_00007\.jpg is missing"):
        D.load_dataset("flowers102", split="test", root=root)


def test_oxford_pets_breeds_and_splits(tmp_path):
    root = write_pets(tmp_path / "pets")
    train, test = (D.load_dataset("oxford-pets", split=s, root=root, val_frac=0.0) for s in ("train", "test"))
    assert train.classes == ["Abyssinian", "American Bulldog", "Bengal"]
    assert len(train) == 6 and len(test) == 6
    assert sorted(test.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert all("_3.jpg" in p or "_4.jpg" in p for p in test.images.paths)
    (root / "oxford-iiit-pet" / "annotations" / "test.txt").unlink()
    with pytest.raises(MissingAssetError, match=r"annotations/test\.txt is missing"):
        D.load_dataset("oxford-pets", root=root, split="test")


def test_cifar100_c_severity_blocks_and_bad_input(tmp_path):
    root = write_cifar_c(tmp_path / "CIFAR-100-C")
    for s in (1, 3, 5):
        ds = D.load_dataset("cifar100-c", split="test", root=root, corruption="contrast", severity=s)
        assert len(ds) == 4 and (ds.images == 10 * s).all() and ds.info["corruption"] == ("contrast", s)
    every = D.load_dataset("cifar100-c", split="all", root=root, corruption="contrast", severity=2)
    assert every.classes[:2] == ["apple", "aquarium_fish"] and len(every) == 4
    with pytest.raises(ConfigError, match="its splits: test, all"):
        D.load_dataset("cifar100-c", split="train", root=root, corruption="contrast", severity=1)
    with pytest.raises(ConfigError, match="contrast, gaussian_noise"):
        D.load_dataset("cifar100-c", split="test", root=root)
    with pytest.raises(MissingAssetError, match="fog.npy is missing"):
        D.load_dataset("cifar100-c", split="test", root=root, corruption="fog", severity=1)
    with pytest.raises(ConfigError, match="severity"):
        D.load_dataset("cifar100-c", split="test", root=root, corruption="contrast", severity=6)
    with pytest.raises(ConfigError, match="it accepts: root, download, corruption, severity"):
        D.load_dataset("cifar100-c", split="test", root=root, corrupton="contrast")
    np.save(root / "blur.npy", np.zeros((7, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"\(50000,32,32,3\)"):
        D.load_dataset("cifar100-c", split="test", root=root, corruption="blur", severity=1)


def test_paper_ood_pairs(tmp_path, monkeypatch, no_checksums):
    assert D.OOD_PAIRS["cifar100"][0] == "cifar10" and "svhn" in D.OOD_PAIRS["cifar10"]
    assert D.OOD_PAIRS["bbc-news"] == ("chatterbot",)  # the zoo's pairs are still there
    write_cifar10(tmp_path / "all")
    write_svhn(tmp_path / "all" / "svhn")
    monkeypatch.setenv(D.DATA_ROOT_ENV, str(tmp_path / "all"))
    monkeypatch.setenv("SVE_CIFAR10_ROOT", str(tmp_path / "all"))
    with pytest.warns(UserWarning, match="cifar100"):
        sets = D.ood_sets("cifar10", split="test", skip_missing=True)
    assert list(sets) == ["svhn"] and set(sets["svhn"].labels.tolist()) == {-1} and len(sets["svhn"]) == 5
    with pytest.raises(MissingAssetError, match="cifar-100-python/train is missing"):
        D.ood_sets("cifar10")


def test_download_failure_says_where_files_go(tmp_path, monkeypatch):
    def offline(folder):
        raise OSError("network is unreachable")

    src = dataclasses.replace(D.SOURCES["cifar10"], fetch=offline)
    monkeypatch.setitem(D.SOURCES, "cifar10", src)
    with pytest.raises(MissingAssetError, match="download into .* failed .*network is unreachable.*"
                                                 "cifar-10-batches-py"):
        D.load_dataset("cifar10", root=tmp_path / "dl", download=True)
    monkeypatch.setenv(D.DOWNLOAD_ENV, "1")
    with pytest.raises(MissingAssetError, match="download into"):
        D.load_dataset("cifar10", root=tmp_path / "dl")


def test_download_then_read(tmp_path, monkeypatch, no_checksums):
    calls = []
    src = dataclasses.replace(D.SOURCES["cifar10"], fetch=lambda folder: calls.append(write_cifar10(folder)))
    monkeypatch.setitem(D.SOURCES, "cifar10", src)
    assert len(D.load_dataset("cifar10", split="test", root=tmp_path / "dl", download=True)) == 10
    assert len(D.load_dataset("cifar10", split="test", root=tmp_path / "dl", download=True)) == 10
    assert len(calls) == 1  # files present: no second download


# ---------------------------------------------------------------------------------------------- text


def test_sst2_parquet_layout(tmp_path):
    root = write_sst2_parquet(tmp_path / "sst2")
    test = D.load_dataset("sst2", split="test", root=root)
    assert test.texts[:2] == ["validation sentence 0", "validation sentence 1"] and len(test) == 8
    assert test.classes == ["negative", "positive"] and test.labels.tolist()[:4] == [0, 1, 0, 1]
    train, val = (D.load_dataset("sst2", split=s, root=root) for s in ("train", "val"))
    assert len(train) + len(val) == 30 and all(t.startswith("train") for t in train.texts + val.texts)
    with pytest.raises(ConfigError, match="valid splits: train, val, test, all"):
        D.load_dataset("sst2", split="validation", root=root)
    (root / "data" / "validation-00000-of-00001.parquet").unlink()
    with pytest.raises(MissingAssetError, match=r"data/validation-00000-of-00001\.parquet is missing.*"
                                                 "save_to_disk"):
        D.load_dataset("sst2", root=root)


def test_parquet_needs_pyarrow_and_intact_files(tmp_path, monkeypatch):
    root = write_sst2_parquet(tmp_path / "sst2")
    (root / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(DataError, match=r"cannot read .*train-\*\.parquet"):
        D.load_dataset("sst2", root=root)
    intact = write_sst2_parquet(tmp_path / "again")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "fastparquet", None)
    with pytest.raises(MissingAssetError, match=r"needs pyarrow.*sve\[hf\]"):
        D.load_dataset("sst2", root=intact)


def test_arc_parquet_rows_carry_choices(tmp_path):
    root = write_arc_parquet(tmp_path / "arc")
    parts = {s: D.load_dataset("arc-easy", split=s, root=root) for s in ("train", "val", "test")}
    assert [len(p) for p in parts.values()] == [6, 3, 4]
    val = parts["val"]
    row = val.row(int(np.flatnonzero(val.indices == 7)[0]))  # validation item 1
    assert row["id"] == "validation-1" and row["question"] == "Question 1 of validation?"
    assert row["choice_labels"] == ["A", "B", "C", "D"] and row["choice_texts"][1] == "choice 1"
    assert row["answer_key"] == "B" and row["label"] == 1
    choices = "\nA. choice 0\nB. choice 1\nC. choice 2\nD. choice 3"
    assert row["text"] == "Question 1 of validation?" + choices + "\nAnswer:"
    numeric = parts["train"].row(int(np.flatnonzero(parts["train"].indices == 0)[0]))
    assert numeric["choice_labels"] == ["1", "2", "3"] and numeric["label"] == 0
    assert val.classes == ["A", "B", "C", "D"]


def test_arc_refuses_an_answer_outside_its_choices(tmp_path):
    root = write_arc_parquet(tmp_path / "arc", config="ARC-Challenge", bad="test")
    with pytest.raises(DataError, match=r"item 'test-1' \(test\) has answer key 'E'.*\['A', 'B', 'C', 'D'\]"):
        D.load_dataset("arc-challenge", root=root)


def test_save_to_disk_needs_datasets(tmp_path, monkeypatch):
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "dataset_dict.json").write_text('{"splits": ["train", "validation"]}')
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingAssetError, match=r"pip install 'sve\[hf\]'"):
        D.load_dataset("sst2", root=tmp_path / "saved")


def test_save_to_disk_layout(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({s: datasets.Dataset.from_list(arc_rows(s, n))
                               for s, n in (("train", 5), ("validation", 2), ("test", 3))})
    dd.save_to_disk(str(tmp_path / "arc"))
    test = D.load_dataset("arc-easy", split="test", root=tmp_path / "arc")
    assert len(test) == 3 and sorted(test.fields["id"]) == ["test-0", "test-1", "test-2"]
    sst = datasets.DatasetDict({s: datasets.Dataset.from_dict({"sentence": [f"{s} {i}" for i in range(6)],
                                                               "label": [0, 1] * 3})
                                for s in ("train", "validation")})
    sst.save_to_disk(str(tmp_path / "sst"))
    assert D.load_dataset("sst2", split="test", root=tmp_path / "sst").texts[0].startswith("validation")


def test_a_run_reads_its_shift_sets_from_the_published_files(tmp_path, monkeypatch, no_checksums):
    """``shift_source: cifar100-c``: ``shift:<corruption>:<severity>`` is read from the published
    files, image i of a severity block being test image i corrupted, so the same test images (same
    limit, same seed) are picked as for the clean test split; bad settings are named."""
    from sve.experiments import ExperimentConfig
    from sve.experiments.runner import load_split

    n = 10
    base = tmp_path / "c100" / "cifar-100-python"
    labels = [int(x) for x in (np.arange(n) * 7) % 100]
    data = np.zeros((n, 3072), np.uint8)
    data[:, 0] = np.arange(n)  # test image i: red (0, 0) = i
    _pickle(base / "test", {"data": data, "fine_labels": labels, "coarse_labels": [0] * n})
    _pickle(base / "train", {"data": data, "fine_labels": labels, "coarse_labels": [0] * n})
    _pickle(base / "meta", {"fine_label_names": D.CIFAR100_CLASSES})
    published = tmp_path / "CIFAR-100-C"
    published.mkdir()
    x = np.zeros((5 * n, 32, 32, 3), np.uint8)
    x[..., 0] = (20 * (np.arange(5 * n) // n + 1) + np.arange(5 * n) % n).reshape(-1, 1, 1)  # 20·s + i
    np.save(published / "contrast.npy", x)
    np.save(published / "labels.npy", np.tile(labels, 5).astype(np.int64))
    monkeypatch.setenv("SVE_CIFAR100_ROOT", str(tmp_path / "c100"))
    monkeypatch.setenv("SVE_CIFAR100_C_ROOT", str(published))

    config = ExperimentConfig(dataset="cifar100", ood=[], shifts=["contrast"], severities=[3],
                              shift_source="cifar100-c", test_limit=4)
    clean, shifted = load_split(config, "test"), load_split(config, "shift:contrast:3")
    picked = np.asarray(clean.images)[:, 0, 0, 0]
    assert len(shifted) == 4 and shifted.info["corruption"] == ("contrast", 3)
    assert (np.asarray(shifted.images)[:, 0, 0, 0] - 60 == picked).all()
    assert (shifted.labels == clean.labels).all()
    loaded = []  # given the clean test split, a shifted split reads the published file only
    load = D.load_dataset
    monkeypatch.setattr(D, "load_dataset", lambda name, *a, **k: loaded.append(name) or load(name, *a, **k))
    again = load_split(config, "shift:contrast:3", clean_test=clean)
    assert loaded == ["cifar100-c"] and (np.asarray(again.images) == np.asarray(shifted.images)).all()
    monkeypatch.setattr(D, "load_dataset", load)

    with pytest.raises(ConfigError, match="'shifts\\[0\\]' = 'elastic'.*elastic_transform"):
        ExperimentConfig(dataset="cifar100", ood=[], shifts=["elastic"],
                         shift_source="cifar100-c").check_names()
    with pytest.raises(ConfigError, match="'shift_source' = 'imagenet-c'.*cifar10-c, cifar100-c"):
        ExperimentConfig(dataset="cifar100", ood=[], shifts=["contrast"], shift_source="imagenet-c")
    wrong = ExperimentConfig(dataset="cifar100", ood=[], shifts=["contrast"], severities=[3],
                             shift_source="cifar10-c", test_limit=4)
    other = tmp_path / "CIFAR-10-C"
    other.mkdir()
    np.save(other / "contrast.npy", x)
    np.save(other / "labels.npy", np.tile(np.asarray(labels) % 10, 5).astype(np.int64))
    monkeypatch.setenv("SVE_CIFAR10_C_ROOT", str(other))
    with pytest.raises(ConfigError, match="classes of cifar10, not those of the run's dataset 'cifar100'"):
        load_split(wrong, "shift:contrast:3")
