"""sve.experiments: config validation, atomic files, run folders, a real tiny run, stop / kill / resume.

The real runs use the smallest real setting: DINOv2-S at 28 px (4 patch tokens), SVE on the last 2
blocks (8 SVDs instead of 48), 64 train / 32 val / 32 test / 32 OOD MNIST-5k images, 1 epoch, M = 2;
prepared data is cached by sve.data on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sve import experiments
from sve.errors import ConfigError, SVEError
from sve.experiments import ExperimentConfig
from sve.train import StopTraining

TINY = dict(name="tiny", backbone="dinov2-small", image_size=28, dataset="mnist5k", ood=["animal-mnist"],
            methods=["sve"], members=2, targets="last:2", epochs=1, warmup_epochs=0, batch_size=16,
            train_limit=64, val_limit=32, test_limit=32, ood_limit=32, seeds=[0])


# ------------------------------------------------------------------------------------------
# config


def test_config_round_trip_yaml_and_json(tmp_path):
    config = ExperimentConfig(
        name="rt", backbone_options={"random": True}, holdout=["8", "9"], shifts=["contrast"], severities=[2],
        methods=["single", {"name": "sve", "label": "sve-std0.1", "members": 8, "lr": 3e-3,
                            "sigma_decay": "pretrained", "options": {"init_std": 0.1}}],
        lr="1e-3", targets=["qkv", "fc1"], seeds=[0, 1, 2], combine="logit", image_size=56)
    assert config.lr == 1e-3  # YAML 1.1 reads 1e-3 as a string; numeric strings are accepted
    for suffix in (".yaml", ".json"):
        path = config.save(tmp_path / f"c{suffix}")
        text = path.read_text()
        assert "format_version" in text
        back = ExperimentConfig.load(path)
        assert back == config and back.fingerprint() == config.fingerprint()
    assert json.loads((tmp_path / "c.json").read_text())["format_version"] == experiments.FORMAT_VERSION
    single, spec = config.method_specs()
    assert (spec.label, spec.members, spec.lr, spec.epochs) == ("sve-std0.1", 8, 3e-3, config.epochs)
    assert (spec.sigma_decay, spec.combine, single.sigma_decay, single.combine) == (
        "pretrained", "logit", "zero", "logit")  # per-method values, else the run's
    assert single.members == config.members
    assert ExperimentConfig(seeds=[1]).fingerprint() != ExperimentConfig(seeds=[2]).fingerprint()


def test_unknown_keys_are_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config field 'epoch' \(did you mean 'epochs'\?\).*seeds"):
        ExperimentConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match=r"'methods\[0\]\.option'.*did you mean 'options'"):
        ExperimentConfig(methods=[{"name": "sve", "option": {}}])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbatchsize: 8\n")
    with pytest.raises(ConfigError, match="'batchsize'.*did you mean 'batch_size'"):
        ExperimentConfig.load(bad)
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ExperimentConfig.load(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        ExperimentConfig.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="format_version 7, but this sve reads format_version 1"):
        ExperimentConfig.from_dict({"format_version": 7, "name": "future"})


@pytest.mark.parametrize("field, value, allowed", [
    ("combine", "mean", "'prob', 'logit'"),
    ("sigma_decay", "none", "'zero', 'pretrained'"),
    ("members", 0, "an integer >= 1"),
    ("members", True, "an integer >= 1"),
    ("epochs", 1.5, "an integer >= 1"),
    ("severities", [0, 6], "integers in 1..5"),
    ("targets", "last:x", "'last:K'"),
    ("seeds", [], "non-empty list of distinct integers"),
    ("seeds", [1, 1], "non-empty list of distinct integers"),
    ("lr", "fast", "null or a number > 0"),
    ("head_lr", 0, "null or a number > 0"),
    ("init_std", -0.1, "a number >= 0"),
    ("train_limit", 0, "null or an integer >= 1"),
    ("methods", [], "a non-empty list"),
    ("backbone_options", "random", "a mapping"),
])
def test_invalid_values_name_the_field_and_the_allowed_values(field, value, allowed):
    with pytest.raises(ConfigError, match=rf"'{field}' = .* is invalid.*allowed values are .*{allowed}"):
        ExperimentConfig(**{field: value})


def test_config_cross_field_errors():
    with pytest.raises(ConfigError, match=r"'ood\[0\]' = 'mnist5k' is the ID dataset itself"):
        ExperimentConfig(dataset="mnist5k", ood=["mnist5k"])
    with pytest.raises(ConfigError, match="two entries labelled 'sve'.*distinct 'label'"):
        ExperimentConfig(methods=["sve", {"name": "sve", "options": {"init_std": 0.1}}])
    with pytest.raises(ConfigError, match=r"'methods\[0\]\.combine' = 'mean' is invalid.*'prob', 'logit'"):
        ExperimentConfig(methods=[{"name": "sve", "combine": "mean"}])
    with pytest.raises(ConfigError, match=r"'methods\[0\]\.label'.*names a folder"):
        ExperimentConfig(methods=[{"name": "sve", "label": "a/b"}])


def test_overrides():
    config = ExperimentConfig().with_overrides(["epochs=2", "backbone_options.random=true", "lr=1e-4",
                                                      "methods=[sve, svf]"])
    assert (config.epochs, config.backbone_options, config.lr, config.methods) == (
        2, {"random": True}, 1e-4, ["sve", "svf"])
    with pytest.raises(ConfigError, match="unknown config field 'epoch'"):
        config.with_overrides(["epoch=2"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        config.with_overrides(["epochs"])
    with pytest.raises(ConfigError, match="'members' = 'four'"):
        config.with_overrides(["members=four"])


def test_names_are_checked_against_the_registries():
    with pytest.raises(ConfigError, match="'backbone' = 'dinov2-smal'.*did you mean 'dinov2-small'"):
        ExperimentConfig(backbone="dinov2-smal").check_names()
    with pytest.raises(ConfigError, match=r"'shifts\[0\]' = 'fog'.*'gaussian_noise'"):
        ExperimentConfig(shifts=["fog"]).check_names()
    with pytest.raises(ConfigError, match=r"'methods\[0\]\.name' = 'svee'.*'sve'"):
        ExperimentConfig(methods=["svee"]).check_names()
    with pytest.raises(ConfigError, match=r"'ood\[0\]' = 'cifar11'.*'animal-mnist'"):
        ExperimentConfig(ood=["cifar11"]).check_names()
    with pytest.raises(ConfigError, match=r"method 'sve' has no option 'rnak'.*init_std"):
        ExperimentConfig(methods=[{"name": "sve", "options": {"rnak": 4}}]).check_names()
    with pytest.raises(ConfigError, match="sets 'seed': use the run-level 'seeds'"):
        ExperimentConfig(methods=[{"name": "sve", "options": {"seed": 4}}]).check_names()
    ExperimentConfig(backbone="timm:resnet18", ood=[]).check_names()  # pass-through names are fine


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    config = ExperimentConfig.load(path)
    config.check_names()
    assert config.name == path.stem.replace("_", "-")


def test_method_options():
    config = ExperimentConfig(targets="attention", init_std=0.05,
                                   methods=["sve", "lora_ensemble", "single", {"name": "svf", "options":
                                                                              {"init_std": 0.2}}])
    sve, lora, single, svf = config.method_specs()
    assert experiments.method_options(sve, 3, config) == {"seed": 3, "targets": "attention", "init_std": 0.05}
    # its own init_std
    assert experiments.method_options(lora, 3, config) == {"seed": 3, "targets": "attention"}
    assert experiments.method_options(single, 3, config) == {"seed": 3}
    assert experiments.method_options(svf, 3, config)["init_std"] == 0.2


# ------------------------------------------------------------------------------------------
# files and folders


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = experiments.atomic_write(tmp_path / "f.json", "old")

    def crash(f):
        f.write(b"half a fi")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        experiments.atomic_write(path, crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary left behind
    experiments.write_npz(tmp_path / "a.npz", {"x": np.arange(3), "ood:y": np.ones((2, 1, 3))})
    with np.load(tmp_path / "a.npz") as npz:
        assert npz["ood:y"].shape == (2, 1, 3)
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask


def test_new_run_dirs_are_unique(tmp_path):
    dirs = [experiments.new_run_dir(tmp_path, "same name!") for _ in range(30)]
    assert len(set(dirs)) == 30 and all(d.is_dir() for d in dirs)
    assert all(d.name.split("-", 2)[2].startswith("same-name") for d in dirs)


def test_run_lock(tmp_path):
    first, second = experiments.RunLock(tmp_path), experiments.RunLock(tmp_path)
    assert first.acquire()
    assert not second.acquire() and second.held_elsewhere()
    first.release()
    assert not second.held_elsewhere() and second.acquire()
    second.release()


def test_incompatible_and_foreign_folders(tmp_path):
    old = tmp_path / "20200101-000000-old-abcdef"
    old.mkdir()
    (old / "config.yaml").write_text("format_version: 0\nname: old\n")
    with pytest.raises(experiments.RunFormatError, match="format_version 0.*reads format_version 1"):
        experiments.load_run(old)
    with pytest.raises(experiments.RunFormatError, match="not a run folder"):
        experiments.load_run(tmp_path)
    listed = experiments.list_runs(tmp_path)
    assert [(it["id"], it["state"]) for it in listed] == [(old.name, "incompatible")]
    assert "format_version" in listed[0]["error"]
    assert experiments.list_runs(tmp_path / "missing") == []


class _FakeTraining:
    """Stand-in for the training of one method × seed: writes the files a finished pair has."""

    def __init__(self):
        self.trained = []

    def __call__(self, runner, spec, seed, index, data):
        folder = runner.pair_dir(spec, seed)
        folder.mkdir(parents=True, exist_ok=True)
        if not runner.emit("method_start", method=spec.label, seed=seed):
            return False
        self.trained.append((spec.label, seed))
        row = {"method": spec.label, "seed": seed, "split": "test", "member": "ensemble",
               "calibration": "none", "converged": False}
        experiments.write_json(folder / "metrics.json", {"rows": [row]})
        experiments.write_json(folder / "done.json", {})
        runner.write_metrics()
        return runner.emit("method_end", method=spec.label, seed=seed)


def test_resume_logic_with_a_stand_in_trainer(tmp_path, monkeypatch):
    """Stop after one pair; the same config continues that folder and trains only the rest; a new
    config, resume=False or a complete run give a new folder."""
    fake = _FakeTraining()
    monkeypatch.setattr(experiments.runner._Runner, "train_pair", lambda runner, *args: fake(runner, *args))
    monkeypatch.setattr(experiments.runner, "_RunData", lambda config: None)
    config = ExperimentConfig(name="fake", methods=["sve", {"name": "sve", "label": "b"}], seeds=[0, 1])
    stop_after_first = lambda event, info: event != "method_end"
    first = experiments.run(config, tmp_path, callbacks=[stop_after_first])
    assert fake.trained == [("sve", 0)] and experiments.read_status(first)["state"] == "stopped"
    again = experiments.run(config, tmp_path)
    # seed-major: seed 0 of every method, then seed 1 (a run stopped part-way holds whole seeds)
    assert again == first and fake.trained == [("sve", 0), ("b", 0), ("sve", 1), ("b", 1)]
    assert experiments.read_status(first)["state"] == "complete"
    assert experiments.load_run(first).metrics["method"].tolist() == ["sve", "sve", "b", "b"]
    assert experiments.run(config, tmp_path) != first  # complete: a new run
    assert experiments.run(config, tmp_path, callbacks=[lambda e, i: False], resume=False) != first

    def raise_stop(event, info):
        raise StopTraining

    stopped = experiments.run(config, tmp_path, callbacks=[raise_stop])
    assert experiments.read_status(stopped)["state"] == "stopped" and len(fake.trained) == 8
    with pytest.raises(ConfigError, match=r"another config \(fields \['seeds'\] differ\)"):
        experiments.run(config.with_overrides(["seeds=[5]"]), first)
    lock = experiments.RunLock(first)
    assert lock.acquire()
    try:
        with pytest.raises(SVEError, match="in use by another live process"):
            experiments.run(config, first)
    finally:
        lock.release()


def test_two_runs_started_at_once_get_different_folders(tmp_path):
    """Both runs hold their folder at ``run_start`` at the same moment (a barrier), so neither can
    have claimed the other's: each made its own."""
    barrier, paths = threading.Barrier(2, timeout=60), []
    config = ExperimentConfig(**TINY)

    def hold(event, info):
        if event == "run_start":
            barrier.wait()
        return False

    start = lambda: paths.append(experiments.run(config, tmp_path, callbacks=[hold]))
    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(paths) == 2 and paths[0] != paths[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    assert all(experiments.read_status(p)["state"] == "stopped" for p in paths)


# ------------------------------------------------------------------------------------------
# real runs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real run stopped by a callback at its first step, then resumed to the end."""
    root = tmp_path_factory.mktemp("runs")
    config = ExperimentConfig(**{**TINY, "holdout": ["8", "9"], "shifts": ["contrast"],
                                      "severities": [3], "train_limit": 32})
    stopped = experiments.run(config, root, callbacks=[lambda event, info: event != "step"])
    state = {"status": experiments.read_status(stopped), "files": sorted(p.name for p in stopped.iterdir())}
    events = []
    record = lambda event, info: events.append((event, info)) and None
    path = experiments.run(config, root, callbacks=[record])
    return path, stopped, state, events


def test_stop_is_clean_and_resume_finishes(tiny_run):
    path, stopped, state, events = tiny_run
    assert path == stopped
    assert state["status"]["state"] == "stopped" and state["status"]["done"] == []
    assert "sve" not in state["files"]  # the unfinished pair was discarded
    names = [e for e, _ in events]
    assert names[:2] == ["run_start", "method_start"] and names[-2:] == ["method_end", "run_end"]
    assert names.count("step") == 2 and names.count("epoch") == 1  # 32 images / batch 16, 1 epoch
    assert all(info["run_dir"] == path for _, info in events)
    step = next(info for e, info in events if e == "step")
    assert (step["method"], step["seed"], step["step"], step["steps"]) == ("sve", 0, 1, 2)
    assert np.isfinite(step["loss"])


def test_run_folder_contents(tiny_run):
    path = tiny_run[0]
    top = {"config.yaml", "env.json", "metrics.csv", "status.json", "sve"}
    assert {p.name for p in path.iterdir()} >= top
    pair = path / "sve" / "seed0"
    assert {p.name for p in pair.iterdir()} == {"logits.npz", "metrics.json", "history.json", "spectra.npz",
                                                "adapter.safetensors", "cost.json", "done.json"}
    assert not list(path.rglob("*.tmp"))
    status = experiments.read_status(path)
    assert (status["state"], status["done"], status["format_version"]) == ("complete", [["sve", 0]], 1)
    env = experiments.read_json(path / "env.json")
    assert env["packages"]["torch"] and env["torch_threads"] >= 1 and env["device"] == "cpu"
    assert env["git"] is None or len(env["git"]["commit"]) == 40
    assert len(env["previous"]) == 1  # the stopped session's environment is kept
    backbone = experiments.read_json(path / "backbone.json")  # which weights were used
    assert (backbone["name"], backbone["pretrained"]) == ("dinov2-small", True) and backbone["source"]
    cost = experiments.read_json(pair / "cost.json")
    assert cost["trainable_params"] == cost["sigma"] + cost["bias"] + cost["heads"] > 0
    assert 0 < cost["overhead_pct"] < 2 and cost["train_time_s"] > 0 and cost["eval_time_s"] > 0
    assert cost["train_peak_rss_mb"] > 0 and cost["adapter"] == "adapter.safetensors"
    from sve.io import read_metadata

    assert read_metadata(pair / "adapter.safetensors")["config"]["num_members"] == 2


def test_metrics_table(tiny_run):
    run = experiments.load_run(tiny_run[0])
    table = run.metrics
    splits = ["test", "val", "ood:animal-mnist", "ood:holdout", "shift:contrast:3"]
    assert run.splits == splits
    assert set(table["split"]) == set(splits)
    assert set(table["member"]) == {"ensemble", "0", "1"} and set(table["calibration"]) == {"none", "ts"}
    assert len(table) == len(splits) * 3 * 2
    assert set(table["combine"]) == {"prob"} and set(table["sigma_decay"]) == {"zero"}
    import pandas as pd

    written = pd.read_csv(tiny_run[0] / "metrics.csv")["converged"]          # by the runner, per row
    assert written.dtype == bool and not written.any()                      # 1 epoch: nothing to compare
    assert experiments.read_json(tiny_run[0] / "sve" / "seed0" / "history.json")["fit"]["converged"] is False
    ens = table[(table["member"] == "ensemble") & (table["calibration"] == "none")].set_index("split")
    assert 0 <= ens.loc["test", "accuracy"] <= 1 and np.isnan(ens.loc["ood:animal-mnist", "accuracy"])
    for score in ("msp", "entropy", "mutual_info", "energy"):
        for key in ("auroc", "aupr_in", "fpr95"):
            assert 0 <= ens.loc["ood:holdout", f"{key}_{score}"] <= 1
    member = table[(table["member"] == "0") & (table["split"] == "ood:animal-mnist")]
    assert member["auroc_mutual_info"].isna().all() and member["auroc_entropy"].notna().all()
    ts = table[(table["member"] == "ensemble") & (table["calibration"] == "ts")]
    assert (ts["temperature"] == run.temperature("sve")).all() and run.temperature("sve") > 0
    assert (table["trainable_params"] == run.cost("sve")["trainable_params"]).all()
    # the ensemble row is computed from the saved logits
    from sve import metrics

    z, y = run.logits("sve", 0, "test")
    assert ens.loc["test", "accuracy"] == pytest.approx(metrics.accuracy(z, y))


def test_load_run_accessors(tiny_run):
    run = experiments.load_run(tiny_run[0])
    assert run.done == [("sve", 0)] and run.methods == ["sve"]
    z, y = run.logits("sve", split="test")
    assert z.shape == (32, 2, 8) and z.dtype == np.float32 and y.shape == (32,)  # digits 8, 9 held out
    zo, yo = run.logits("sve", 0, "ood:holdout")
    assert zo.shape[1:] == (2, 8) and len(zo) > 0 and (yo == -1).all()
    assert set(y.tolist()) <= set(range(8))
    samples = run.samples("test")
    assert len(samples) == 32 and (samples.labels == y).all()
    assert run.samples("shift:contrast:3").images.shape == samples.images.shape
    history = run.history("sve")
    assert len(history["step"]) == 2 and len(history["epoch"]) == 1 and history["fit"]["best_epoch"] == 0
    assert history["epoch"]["lr"].iloc[0] == pytest.approx(1e-3)  # no lr in the config: SVE's default
    snapshots = run.spectra_history("sve")
    assert [epoch for epoch, _ in snapshots] == [0, 1]
    assert [step for step, _ in run.spectra_history("sve", by="step")] == [0, 2]
    spectra = run.spectra("sve")
    sigma, sigma0 = next(iter(spectra.values()))
    assert sigma.shape == (2, sigma0.shape[0]) and len(spectra) == 8  # 2 blocks × qkv, proj, fc1, fc2
    assert not np.allclose(snapshots[0][1][next(iter(spectra))][0], sigma)  # σ moved in training
    with pytest.raises(ConfigError, match="no finished seed.*sve/seed0"):
        run.logits("svf")
    with pytest.raises(ConfigError, match="seed 3 .* finished seeds: \\[0\\]"):
        run.logits("sve", 3)
    with pytest.raises(ConfigError, match="split 'ood:x' is not in this run"):
        run.logits("sve", 0, "ood:x")
    listed = experiments.list_runs(tiny_run[0].parent)
    assert [(it["path"], it["state"], it["done"], it["total"]) for it in listed] == [
        (tiny_run[0], "complete", 1, 1)]


def test_figures_of_a_run(tiny_run):
    """Every standard figure is there and draws the run's numbers (the reliability diagrams and ROC
    curves against the metrics rows: tests/test_results.py)."""
    run = experiments.load_run(tiny_run[0])
    figs = run.figures()
    assert {"reliability_test", "reliability_test_ts", "ood_animal-mnist_roc", "ood_holdout_roc", "shift",
            "spectrum_sve", "spectrum_history_sve", "member_distances_sve", "cost"} <= set(figs)
    assert all(fig.data for fig in figs.values())
    table = run.metrics
    ens = table[(table["member"] == "ensemble") & (table["calibration"] == "none")].set_index("split")
    shift = figs["shift"].data       # one trace per metric; severity 0 = the clean test set
    assert [t.name for t in shift] == ["sve"] * 3
    for trace, column in zip(shift, ("accuracy", "ece", "mean_entropy")):
        assert list(trace.x) == [0, 3]
        assert list(trace.y) == pytest.approx([ens.loc["test", column], ens.loc["shift:contrast:3", column]])
    cost = run.cost("sve")
    bars = {trace.name: trace.y[0] for trace in figs["cost"].data}
    assert bars == pytest.approx({"params": cost["trainable_params"], "time_s": cost["train_time_s"],
                                  "memory_mb": cost["train_peak_rss_mb"]})
    from sve import metrics

    distance = np.asarray(figs["member_distances_sve"].data[0].z, dtype=float)   # the kept σ, all layers
    assert distance == pytest.approx(100 * metrics.spectrum_distances(run.spectra("sve")))
    assert distance[0, 1] > 0


KILL_SCRIPT = """
import sys, time
from pathlib import Path
from sve import experiments
from sve.experiments import ExperimentConfig

config, root, marker = ExperimentConfig.load(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

def hang_in_second_method(event, info):
    if event == "step" and info["method"] == "svf":
        marker.write_text(str(info["run_dir"]))
        time.sleep(600)

experiments.run(config, root, callbacks=[hang_in_second_method])
"""


def _digest(folder: Path) -> dict[str, tuple[int, str]]:
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.iterdir())}


def test_killed_run_resumes_without_retraining_finished_methods(tmp_path):
    """A subprocess is SIGKILLed while training its second method; re-running the same config
    continues that folder, keeps the first method's files untouched and trains only the second."""
    second = {"name": "sve", "label": "svf", "members": 1}  # SVF = SVE with M = 1
    config = ExperimentConfig(**{**TINY, "methods": ["sve", second], "train_limit": 32, "val_limit": 16,
                                      "test_limit": 16, "ood_limit": 16})
    config_path = config.save(tmp_path / "config.yaml")
    root, marker = tmp_path / "runs", tmp_path / "marker"
    script = tmp_path / "kill_me.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))
    proc = subprocess.Popen([sys.executable, str(script), str(config_path), str(root), str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the subprocess never reached the second method"
            time.sleep(0.2)
        run_dir = Path(marker.read_text())
        assert experiments.read_status(run_dir)["state"] == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    first = run_dir / "sve" / "seed0"
    assert (first / "done.json").is_file() and not (run_dir / "svf" / "seed0" / "done.json").exists()
    before = _digest(first)
    assert experiments.read_status(run_dir)["state"] == "interrupted"
    assert experiments.list_runs(root)[0]["state"] == "interrupted"

    events = []
    record = lambda event, info: events.append((event, info.get("method")))
    resumed = experiments.run(config, root, callbacks=[record])
    assert resumed == run_dir
    assert _digest(first) == before  # not retrained, not rewritten
    assert [m for e, m in events if e == "method_start"] == ["svf"]
    run = experiments.load_run(run_dir)
    assert run.status["state"] == "complete" and run.done == [("sve", 0), ("svf", 0)]
    assert run.logits("svf")[0].shape == (16, 1, 10)
    assert list(dict.fromkeys(run.metrics["method"])) == ["sve", "svf"]
    assert set(run.metrics[run.metrics["method"] == "svf"]["member"]) == {"ensemble"}  # M = 1: no member rows
