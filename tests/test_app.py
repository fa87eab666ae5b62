"""The Streamlit dashboard through AppTest: widgets, presets, bad input, the worker thread, the
run picker and every tab on a real (tiny) run trained by clicking Train.

The browser test (tests/test_app_browser.py) covers what AppTest cannot: a live server, Chromium,
the drawn charts and a real download.
"""

from __future__ import annotations

import io
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "main.py"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

from app import inputs, state  # noqa: E402


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("SVE_RUNS", str(root))
    return root


def _app(**env) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def app(runs_root) -> AppTest:
    return _app()


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _train_disabled(at: AppTest) -> bool:
    return at.button(key="train").disabled


def _png(color: int = 128, size: int = 12) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), color, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _image_folder(path: Path, classes=("a", "b"), n: int = 3) -> Path:
    for k, name in enumerate(classes):
        (path / name).mkdir(parents=True)
        for i in range(n):
            (path / name / f"{i}.png").write_bytes(_png(40 * k + 10 * i))
    return path


# ----------------------------------------------------------------------------- widgets and presets


def test_default_page_is_the_quick_demo(app):
    ss = app.session_state
    assert app.selectbox(key="w_preset").value == "Quick demo"
    assert app.selectbox(key="w_backbone").value == "dinov2-small"
    assert app.selectbox(key="w_dataset").value == "mnist5k"
    assert "animal-mnist" in app.multiselect(key="w_ood").value
    assert {"sve", "single"} <= set(app.multiselect(key="w_methods").value)   # SVE and what it improves on
    assert ss["w_members"] >= 1 and ss["w_epochs"] >= 1
    assert not _errors(app) and not _train_disabled(app)
    assert any("No runs yet" in i.value for i in app.info)
    for key in ("w_backbone", "w_dataset", "w_targets", "w_preset"):    # every widget has a value
        assert app.selectbox(key=key).value is not None
    for key in ("w_members", "w_epochs", "w_lr", "w_init_std", "w_image_size", "w_max_length",
                "w_train_limit"):
        assert app.number_input(key=key).value is not None


def test_presets_write_every_widget_and_switch_back(app):
    quick = {k: app.session_state[k] for k in ("w_members", "w_epochs", "w_image_size", "w_seeds",
                                                "w_train_limit", "w_methods")}
    app.selectbox(key="w_preset").set_value("Paper-like").run()
    assert app.number_input(key="w_members").value == 4
    assert app.number_input(key="w_epochs").value == 10
    assert app.number_input(key="w_image_size").value == 224
    assert app.number_input(key="w_train_limit").value == 0        # 0 = the whole training split
    assert app.text_input(key="w_seeds").value == "0, 1, 2"
    assert "sve" in app.multiselect(key="w_methods").value
    app.selectbox(key="w_preset").set_value("Text demo").run()
    assert app.selectbox(key="w_backbone").value == "minilm-l3"
    assert app.selectbox(key="w_dataset").value == "bbc-news"
    assert app.multiselect(key="w_ood").value == ["chatterbot"]
    app.selectbox(key="w_preset").set_value("Quick demo").run()
    assert {k: app.session_state[k] for k in quick} == quick
    assert not _errors(app) and not app.exception


def test_targets_last_k_and_lr_default(app):
    app.selectbox(key="w_targets").set_value("last:K").run()
    app.number_input(key="w_last_k").set_value(3).run()
    app.checkbox(key="w_lr_auto").set_value(False).run()
    assert not app.number_input(key="w_lr").disabled
    assert not _errors(app)


def test_bad_seeds_are_named(app):
    app.text_input(key="w_seeds").set_value("0, x").run()
    assert any("Seeds '0, x'" in e for e in _errors(app)) and _train_disabled(app)
    app.text_input(key="w_seeds").set_value("1,2").run()
    assert not _errors(app)


# ----------------------------------------------------------------------------- bad input


def test_unknown_backbone_name_is_refused_then_fixed(app):
    app.selectbox(key="w_backbone").set_value(app.selectbox(key="w_backbone").options[-1]).run()
    app.text_input(key="w_backbone_other").set_value("resnet-9000").run()
    errors = _errors(app)
    assert any("Unknown backbone 'resnet-9000'" in e and "dinov2-small" in e for e in errors), errors
    assert _train_disabled(app) and not app.exception
    app.text_input(key="w_backbone_other").set_value("timm:resnet18").run()
    assert not _errors(app) and not _train_disabled(app)


def test_folder_with_no_images(app, tmp_path):
    folder = tmp_path / "noimg"
    (folder / "cats").mkdir(parents=True)
    (folder / "cats" / "readme.txt").write_text("not a picture")
    app.radio(key="w_data_src").set_value("Path").run()
    app.text_input(key="w_dataset_path").set_value(str(folder)).run()
    errors = _errors(app)
    assert any("no readable image" in e and "readme.txt" in e for e in errors), errors
    assert _train_disabled(app) and not app.exception
    app.text_input(key="w_dataset_path").set_value(str(_image_folder(tmp_path / "good"))).run()
    assert not _errors(app)


def test_path_that_does_not_exist(app, tmp_path):
    app.radio(key="w_data_src").set_value("Path").run()
    app.text_input(key="w_dataset_path").set_value(str(tmp_path / "nope")).run()
    assert any("No such file or folder" in e for e in _errors(app))


def test_ood_set_equal_to_id_set(app, tmp_path):
    folder = _image_folder(tmp_path / "imgs")
    app.radio(key="w_data_src").set_value("Path").run()
    app.text_input(key="w_dataset_path").set_value(str(folder)).run()
    app.radio(key="w_ood_src").set_value("Path").run()
    app.text_input(key="w_ood_path").set_value(str(folder) + "/").run()
    errors = _errors(app)
    assert any("is the in-distribution data set itself" in e for e in errors), errors
    assert _train_disabled(app)
    # a zoo ID set never offers itself as OOD
    app.radio(key="w_data_src").set_value("Zoo").run()
    app.radio(key="w_ood_src").set_value("Zoo").run()
    assert app.selectbox(key="w_dataset").value not in app.multiselect(key="w_ood").options


def test_upload_that_is_not_an_image(app):
    app.radio(key="w_ood_src").set_value("Upload").run()
    app.file_uploader(key="w_ood_upload").set_value(
        [("fine.png", _png(), "image/png"), ("broken.png", b"this is text, not a PNG", "image/png")]).run()
    errors = _errors(app)
    assert any("'broken.png' is not an image" in e for e in errors), errors
    assert not any("fine.png" in e for e in errors) and _train_disabled(app) and not app.exception
    app.file_uploader(key="w_ood_upload").set_value([("fine.png", _png(), "image/png")]).run()
    assert not _errors(app)


def test_upload_that_is_not_a_csv(app):
    app.radio(key="w_data_src").set_value("Upload").run()
    app.file_uploader(key="w_dataset_upload").set_value([("data.csv", _png(), "text/csv")]).run()
    errors = _errors(app)
    assert any("'data.csv' is not a CSV" in e for e in errors), errors
    assert _train_disabled(app) and not app.exception
    # other extensions are refused by the uploader itself (type=UPLOAD_TYPES); save_upload too
    with pytest.raises(inputs.DataError, match="'notes.txt' is not an image, a CSV or a ZIP"):
        inputs.save_upload([("notes.txt", b"hello")], "ood", Path("/nonexistent"))


def test_csv_without_text_and_label_columns(app):
    app.radio(key="w_data_src").set_value("Upload").run()
    app.file_uploader(key="w_dataset_upload").set_value(
        [("reviews.csv", b"review,stars\ngood,5\nbad,1\n", "text/csv")]).run()
    errors = _errors(app)
    assert any("lacks column(s)" in e and "'review', 'stars'" in e for e in errors), errors
    app.file_uploader(key="w_dataset_upload").set_value(
        [("reviews.csv", b"text,label\ngood film,pos\nbad film,neg\n", "text/csv")]).run()
    assert not _errors(app) and not _train_disabled(app)


def test_ood_csv_needs_no_label_column(app, tmp_path):
    chat = tmp_path / "chat.csv"
    chat.write_text("text\nhello there\nhow are you\n")
    assert "lacks column" in inputs.check_data_path(str(chat))     # not as training data
    assert inputs.check_data_path(str(chat), ood=True) is None
    app.radio(key="w_ood_src").set_value("Upload").run()
    app.file_uploader(key="w_ood_upload").set_value([("chat.csv", chat.read_bytes(), "text/csv")]).run()
    assert not any("chat.csv" in e for e in _errors(app)), _errors(app)


def test_zip_upload_of_class_folders(app, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for cls in ("a", "b"):
            for i in range(2):
                zf.writestr(f"{cls}/{i}.png", _png(60 * i))
        zf.writestr("../../evil.png", _png())          # a zip-slip attempt
    app.radio(key="w_data_src").set_value("Upload").run()
    upload = [("imgs.zip", buf.getvalue(), "application/zip")]
    app.file_uploader(key="w_dataset_upload").set_value(upload).run()
    assert not _errors(app)
    folder = inputs.save_upload([("imgs.zip", buf.getvalue())], "id", tmp_path / "up")
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["a", "b"]
    assert not list(tmp_path.glob("evil.png")) and (folder / "evil.png").is_file()   # kept inside


def test_safe_name_and_ood_comparison(tmp_path):
    assert inputs.safe_name("../../etc/passwd") == "etc_passwd"
    assert inputs.safe_name("ECE / NLL (T=1.2)") == "ECE_NLL_T_1.2"
    assert inputs.safe_name("///") == "file"
    folder = _image_folder(tmp_path / "x")
    assert inputs.same_data(str(folder), str(folder) + "/.")
    assert inputs.check_ood("mnist5k", ["animal-mnist"]) is None
    assert "itself" in inputs.check_ood("mnist5k", ["MNIST5K"])


def test_uncertain_samples_show_texts_and_every_members_prediction(monkeypatch):
    from types import SimpleNamespace

    from app import tabs

    ds = SimpleNamespace(images=None, texts=["word " * 100, "a short text"], classes=["pos", "neg"])
    monkeypatch.setattr(tabs, "_samples", lambda path, split: ds)

    def page():
        from types import SimpleNamespace

        import numpy as np

        from app import tabs

        run = SimpleNamespace(path="run", config=SimpleNamespace(combine="prob"))
        z = np.array([[[2.0, 0.0], [0.0, 2.0]], [[3.0, 0.0], [3.0, 0.0]]])      # (N=2, M=2, C=2)
        tabs._show_samples(run, np.array([0, 1]), z, np.array([0, 1]), np.array([0.7, 0.1]), "a", "most")

    at = AppTest.from_function(page).run()
    assert not at.exception, [e.value for e in at.exception]
    texts = [c.value for c in at.caption]
    assert texts[0].endswith("…") and len(texts[0]) == 301 and texts[1] == "a short text"
    cards = [m.value for m in at.markdown]
    assert "true **pos**" in cards[0] and "m0: pos (0.88)" in cards[0] and "m1: neg (0.88)" in cards[0]
    assert "ensemble: **" in cards[0] and "m1: pos (0.95)" in cards[1] and "true **neg**" in cards[1]


# ----------------------------------------------------------------------------- the worker thread


def test_job_registry_never_trains_twice_and_stops_cleanly(tmp_path):
    release, gate, seen = threading.Event(), threading.Event(), []

    def fake_run(config, out_dir=None, callbacks=()):
        (cb,) = callbacks
        cb("run_start", {"run_dir": tmp_path, "total": 2})
        for index in range(2):
            cb("method_start", {"run_dir": tmp_path, "method": f"m{index}", "index": index, "total": 2,
                                "steps": 4, "epochs": 2})
            for step in range(1, 5):
                release.wait(5)
                if len(seen) >= 5:       # hold the worker here until the test pressed Stop
                    gate.wait(5)
                go_on = cb("step", {"run_dir": tmp_path, "method": f"m{index}", "step": step, "steps": 4,
                                    "epoch": (step - 1) // 2, "loss": 1.0 / step})
                seen.append((index, step))
                if go_on is False:
                    return tmp_path
            cb("method_end", {"run_dir": tmp_path, "index": index, "total": 2})
        return tmp_path

    reg = state.JobRegistry()
    job = reg.start("cfg", out_dir=None, units_total=2, run_fn=fake_run)
    with pytest.raises(state.BusyError, match="still training"):
        reg.start("cfg", out_dir=None, units_total=2, run_fn=fake_run)
    assert reg.active() is job
    release.set()
    deadline = time.monotonic() + 10
    while len(seen) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    job.request_stop()
    gate.set()
    job.thread.join(10)
    snap = job.snapshot()
    assert snap.status == state.STOPPED and snap.run_path == tmp_path
    assert snap.units_done == 1 and len(seen) == 6          # stopped at the next step of method 2
    assert [p["x"] for p in snap.curve if p["method"] == "m0"] == [1, 2, 3, 4]
    assert reg.active() is None
    again = reg.start("cfg", out_dir=None, units_total=2, run_fn=fake_run)  # free again
    again.thread.join(10)
    assert again.snapshot().status == state.FINISHED and again.snapshot().fraction == 1.0


def test_job_failure_is_reported_not_raised():
    def broken(config, out_dir=None, callbacks=()):
        raise ValueError("dataset 'x' lacks a label column")

    job = state.JobRegistry().start("cfg", out_dir=None, units_total=1, run_fn=broken)
    job.thread.join(10)
    snap = job.snapshot()
    assert snap.status == state.FAILED and "lacks a label column" in snap.error


def test_progress_fraction_phase_and_remaining_time():
    job = state.Job(config=None, out_dir=None, units_total=2)
    assert job.snapshot().phase == "loading the backbone and data"
    job.callback("method_start", {"method": "sve", "index": 1, "total": 2, "steps": 10, "epochs": 2})
    snap = job.snapshot()
    assert snap.phase == "sve: building the model" and snap.fraction == 0.5 and snap.remaining is None
    job.callback("step", {"step": 1, "epoch": 0, "loss": 0.5})
    time.sleep(0.05)
    job.callback("step", {"step": 5, "epoch": 0, "loss": 0.4})
    snap = job.snapshot()
    assert snap.fraction == pytest.approx(0.75) and snap.epoch == 1 and snap.steps == 10
    # 4 steps (0.2 of the run) took >= 50 ms, so the last 0.25 take >= 62 ms at that rate
    assert snap.remaining is not None and snap.remaining >= 0.0625 * 0.99
    job.callback("step", {"step": 10, "epoch": 1, "loss": 0.3})
    assert job.snapshot().phase.startswith("sve: evaluating")
    assert state.format_seconds(75.2) == "1:15" and state.format_seconds(3725) == "1:02:05"


# ----------------------------------------------------------------------------- real training


TAB_NAMES = ("Reliability", "Spectrum", "OOD", "Members", "Cost")


def _wait_for_job(at: AppTest, timeout: float = 600) -> state.Snapshot:
    """Join the job this session started (looked up by id: it may already have ended)."""
    from app.training import registry

    job = registry().get(at.session_state["job_id"])
    assert job is not None, "the session has no job"
    job.thread.join(timeout)
    assert not job.thread.is_alive(), "training did not finish in time"
    return job.snapshot()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train the tiny preset by clicking Train in AppTest (the real sve.experiments in the worker thread)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("runs")
    mp.setenv("SVE_RUNS", str(root))
    mp.setenv("SVE_APP_TINY", "1")
    try:
        at = _app()
        assert at.selectbox(key="w_preset").value == "Tiny (tests)"
        at.button(key="train").click().run()
        assert not _errors(at), _errors(at)
        assert at.button(key="train").disabled                 # never started twice
        assert at.session_state["job_id"]
        snap = _wait_for_job(at)
        assert snap.status == state.FINISHED, snap.error
        assert snap.curve and snap.units_done == 2
        at.run()
        yield at, root, snap
    finally:
        mp.undo()


def test_train_button_runs_sve_runs_in_the_background(trained):
    at, root, snap = trained
    assert [p.name for p in root.iterdir()] == [snap.run_path.name]
    assert (snap.run_path / "sve" / "seed0" / "done.json").is_file()
    assert (snap.run_path / "single" / "seed0" / "done.json").is_file()
    assert any("Training finished" in s.value for s in at.success)
    assert at.selectbox(key="pick_a").value == str(snap.run_path)       # the new run is selected
    assert not at.button(key="train").disabled


def _chart_specs(at: AppTest) -> list[dict]:
    import json

    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return [s for s in specs if s["layout"].get("title", {}).get("text") != "Training curve"]


def test_every_tab_draws_for_the_trained_run(trained):
    at, _, _ = trained
    at.session_state["view"] = "Details"
    seen = {}
    for tab in TAB_NAMES:
        at.session_state["tab"] = tab
        at.run()
        assert not at.exception, (tab, [e.value for e in at.exception])
        assert not _errors(at), (tab, _errors(at))
        seen[tab] = _chart_specs(at)
        assert seen[tab], f"{tab} drew no chart"
        assert len(at.get("download_button")) >= 3 * len(seen[tab])   # PNG/SVG/PDF per figure
        if tab == "OOD":        # 6 most + 6 least uncertain test images, each with its predictions
            assert len(at.image) == 12
            assert sum("ensemble:" in m.value for m in at.markdown) == 12
    bar_traces = [t for spec in seen["Reliability"] for t in spec["data"] if t["type"] == "bar"]
    assert bar_traces, "the reliability diagram has no bars"
    assert any(t["type"] == "heatmap" for spec in seen["Spectrum"] for t in spec["data"])
    at.session_state["tab"] = "OOD"
    at.run()
    at.selectbox(key="score-a").set_value("energy").run()
    assert not at.exception and any(m.label == "AUROC" for m in at.metric)
    at.session_state["tab"] = "Reliability"
    at.run()
    at.toggle(key="ts-a").set_value(True).run()
    assert not at.exception and not _errors(at)
    titles = [spec["layout"]["title"]["text"] for spec in _chart_specs(at)]
    assert any("temperature-scaled" in t for t in titles), titles


def test_run_picker_after_restart_and_compare(trained, monkeypatch):
    import shutil

    _, root, snap = trained
    monkeypatch.setenv("SVE_RUNS", str(root))
    twin = root / (snap.run_path.name + "-copy")
    shutil.copytree(snap.run_path, twin, ignore=shutil.ignore_patterns(".lock"))
    at = _app()                                            # a fresh session: what a restart sees
    options = at.selectbox(key="pick_a").options
    assert len(options) == 2 and not any("Training" in s.value for s in at.success)
    other = str(twin) if at.selectbox(key="pick_a").value != str(twin) else str(snap.run_path)
    at.session_state["view"] = "Details"                   # the tabs with each run's downloads
    at.selectbox(key="pick_b").set_value(other).run()
    assert not at.exception and not _errors(at)
    titles = [spec["layout"]["title"]["text"] for spec in _chart_specs(at)]
    assert titles.count("Reliability on test") == 2         # both runs drew the Reliability tab
    assert any(b.key == "dl-all-b-zip" for b in at.get("download_button"))


def test_download_all_zip_and_export(trained):
    pytest.importorskip("kaleido")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("figure export needs Debian chromium: apt-get install -y chromium")
    from app import export
    from app.runpicker import open_run

    at, _, snap = trained
    run = open_run(snap.run_path)
    figs = run.figures()
    data = export.zip_bytes({k: figs[k] for k in list(figs)[:2]}, {"metrics": run.metrics})
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert "metrics.csv" in names and zf.read("metrics.csv").startswith(b"method,")
        svgs = [n for n in names if n.endswith(".svg")]
        assert len(svgs) == 2 and b"<svg" in zf.read(svgs[0])[:500]
        assert all(zf.read(n)[:4] == b"%PDF" for n in names if n.endswith(".pdf"))
        assert all(zf.read(n)[:8] == b"\x89PNG\r\n\x1a\n" for n in names if n.endswith(".png"))


def test_stop_ends_cleanly(trained, monkeypatch):
    from sve import experiments

    _, root, _ = trained
    monkeypatch.setenv("SVE_RUNS", str(root))
    monkeypatch.setenv("SVE_APP_TINY", "1")
    original = state.Job.callback

    def held(self, event, info=None):    # the tiny run cannot finish before Stop is pressed
        if event == "step":
            self.stop_event.wait(120)
        return original(self, event, info)

    monkeypatch.setattr(state.Job, "callback", held)
    at = _app()
    at.text_input(key="w_seeds").set_value("7").run()     # another config: a new run folder
    at.button(key="train").click().run()
    at.button(key="stop").click().run()
    snap = _wait_for_job(at)
    assert snap.status == state.STOPPED, snap.error
    stopped = [r for r in experiments.list_runs(root) if r["path"] == snap.run_path]
    assert stopped and stopped[0]["state"] == "stopped"
    at.run()
    assert any("stopped" in w.value for w in at.warning) and not at.button(key="train").disabled


# ----------------------------------------------------------------------------- comparison, live curve


def test_page_opens_on_the_comparison_of_both_methods(trained):
    import pandas as pd

    from sve import experiments

    at, _, snap = trained
    at.session_state["view"] = "Comparison"
    at.run()
    assert not at.exception and not _errors(at), _errors(at)
    specs = {s["layout"]["title"]["text"]: s for s in _chart_specs(at)}
    reliability = specs["Reliability on test"]
    panels = [a["text"] for a in reliability["layout"]["annotations"]]
    assert any(t.startswith("sve · ECE") for t in panels)
    assert any(t.startswith("single · ECE") for t in panels)
    roc = next(s for t, s in specs.items() if t.startswith("OOD detection: test vs animal-mnist"))
    names = [t["name"] for t in roc["data"]]
    assert len(names) == 3 and names[0].startswith("sve · ") and names[1].startswith("single · ")
    assert not any(n.startswith("single · mutual") for n in names)     # not defined for one member
    table = at.dataframe[0].value
    assert isinstance(table, pd.DataFrame) and list(table.index) == ["sve", "single"]
    assert {"accuracy", "ece", "nll", "epochs", "converged"} <= set(table.columns)
    run = experiments.load_run(snap.run_path)
    rows = run.metrics.query("split == 'test' and member == 'ensemble' and calibration == 'none'")
    assert table.loc["sve", "ece"] == pytest.approx(rows.set_index("method").loc["sve", "ece"])
    assert any("Best score per method" in c.value for c in at.caption)


def test_live_curve_draws_each_members_validation_accuracy(trained):
    from app import training

    _, _, snap = trained
    epochs = [p for p in snap.curve if p["event"] == "epoch"]
    sve = next(p for p in epochs if p["method"] == "sve")
    single = next(p for p in epochs if p["method"] == "single")
    assert len(sve["members"]) == 2 and all(0 <= a <= 1 for a in sve["members"]) and single["members"] == []
    fig = training._curve_figure(snap)
    members = [t for t in fig.data if t.name and " member " in t.name]
    assert [t.name for t in members] == ["sve member 0", "sve member 1"]
    assert list(members[1].y) == [p["members"][1] for p in epochs if p["method"] == "sve"]
    assert list(members[0].x) == [1] and all(t.line.dash == "dot" for t in members)


def test_a_finished_method_opens_while_the_run_still_trains(tmp_path, monkeypatch):
    """When a method ends, the panel reruns the page with the run selected (its tabs can open)."""
    from app import training

    gate, done = threading.Event(), threading.Event()

    def fake_run(config, out_dir=None, callbacks=()):
        (cb,) = callbacks
        cb("method_start", {"run_dir": tmp_path, "method": "sve", "index": 0, "total": 2, "steps": 1})
        cb("method_end", {"run_dir": tmp_path, "index": 0, "total": 2})
        done.set()
        gate.wait(30)              # the second method "trains" until the test is done
        return tmp_path

    monkeypatch.setattr(training, "registry", lambda: reg)
    reg = state.JobRegistry()
    job = reg.start("cfg", out_dir=None, units_total=2, run_fn=fake_run)
    try:
        assert done.wait(10)

        def page():
            from app import training

            training._panel()

        at = AppTest.from_function(page)
        at.session_state["job_id"] = job.id
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.session_state["pick_a"] == str(tmp_path) and at.session_state["job_units_seen"] == 1
    finally:
        gate.set()
        job.thread.join(10)


# ----------------------------------------------------------------------------- Predict tab


def _predict_page(at: AppTest) -> AppTest:
    at.session_state["view"] = "Predict"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _upload(at: AppTest, name: str, data: bytes, mime: str = "image/png") -> AppTest:
    at.radio(key="pred-src-a").set_value("Upload an image").run()
    at.file_uploader(key="pred-upload-a").set_value([(name, data, mime)]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_predict_tab_shows_members_scores_and_histograms(trained):
    at, _, _ = trained
    _predict_page(at)
    assert not _errors(at), _errors(at)
    specs = {s["layout"]["title"]["text"]: s for s in _chart_specs(at)}
    bars = specs["sve: each member's class probabilities (orange: the true class)"]
    assert [t["type"] for t in bars["data"]] == ["bar"] * 3                    # 2 members + the ensemble
    assert {m.label for m in at.metric} == {"Predictive entropy (nats)", "Mutual information (nats)",
                                            "Member disagreement"}
    hist = specs["Where this input's mutual information falls"]
    assert [t["name"] for t in hist["data"]] == ["test (ID)", "animal-mnist (OOD)"]
    lines = [sh for sh in hist["layout"]["shapes"] if sh["type"] == "line"]
    assert len(lines) == 2 and any(sh["line"]["dash"] == "dash" for sh in lines)   # threshold + input
    assert any("threshold that catches 95 % of animal-mnist" in m.value for m in at.markdown)
    for kind in ("most_uncertain", "most_confident", "misclassified"):
        at.radio(key="pred-kind-a").set_value(kind).run()
        assert not at.exception and not _errors(at), (kind, _errors(at))
    at.radio(key="pred-src-a").set_value("OOD sample").run()
    assert "misclassified" not in at.radio(key="pred-kind-a").options     # OOD samples have no label
    at.radio(key="pred-kind-a").set_value("most_uncertain").run()
    assert not _errors(at) and any("predicts" in m.value for m in at.markdown)
    at.selectbox(key="pred-method-a").set_value("single").run()
    assert "mutual_info" not in at.selectbox(key="pred-score-a").options and not _errors(at)


def test_predict_an_uploaded_image_and_refuse_bad_ones(trained):
    at, _, _ = trained
    _predict_page(at)
    _upload(at, "digit.png", _png(200, size=56))
    assert not _errors(at), _errors(at)
    assert any("resized from 56×56 to 28×28" in i.value for i in at.info)
    assert any("predicts" in m.value for m in at.markdown)
    _upload(at, "notes.png", b"name,label\nnot an image,1\n")
    assert any("not an image" in e for e in _errors(at)), _errors(at)
    cmyk = io.BytesIO()
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).convert("CMYK").save(cmyk, format="JPEG")
    _upload(at, "print.jpg", cmyk.getvalue(), "image/jpeg")
    assert any("4 channels (mode CMYK)" in e and "grayscale" in e for e in _errors(at)), _errors(at)
    rgba = io.BytesIO()
    Image.fromarray(np.zeros((28, 28, 4), np.uint8)).save(rgba, format="PNG")
    _upload(at, "rgba.png", rgba.getvalue())
    assert not _errors(at) and any("alpha channel was dropped" in i.value for i in at.info)


def _copy_run(snap, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(snap.run_path, tmp_path / "runs" / snap.run_path.name,
                                ignore=shutil.ignore_patterns(".lock")))


def test_predict_with_missing_adapters_or_backbone_says_so(trained, tmp_path, monkeypatch):
    from sve.errors import MissingAssetError
    from sve.experiments import predictor

    _, _, snap = trained
    run = _copy_run(snap, tmp_path)
    monkeypatch.setenv("SVE_RUNS", str(run.parent))
    (run / "sve" / "seed0" / "adapter.safetensors").unlink()
    at = _predict_page(_app())
    errors = _errors(at)
    assert any("sve/seed0" in e and "no saved adapter" in e and "train it again" in e for e in errors), errors
    at.selectbox(key="pred-method-a").set_value("single").run()
    assert not _errors(at), _errors(at)                                   # the other method still predicts

    def missing(config):
        raise MissingAssetError("the Python package 'x' is not installed; install it with: pip install x")

    monkeypatch.setattr(predictor, "run_backbone", missing)
    other = _copy_run(snap, tmp_path / "b")                    # a fresh path: not in the predictor cache
    monkeypatch.setenv("SVE_RUNS", str(other.parent))
    at = _predict_page(_app())
    assert any("is not installed; install it with: pip install x" in e for e in _errors(at)), _errors(at)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    from sve import experiments

    config = dict(name="text", backbone="minilm-l3", dataset="bbc-news", ood=["chatterbot"], methods=["sve"],
                  members=2, targets="last:1", epochs=1, warmup_epochs=0, max_length=16, train_limit=32,
                  val_limit=16, test_limit=16, ood_limit=16, seeds=[0])
    return experiments.run(config, tmp_path_factory.mktemp("textruns"))


def test_predict_typed_text_empty_and_too_long(text_run, monkeypatch):
    monkeypatch.setenv("SVE_RUNS", str(text_run.parent))
    at = _predict_page(_app())
    assert "Upload an image" not in at.radio(key="pred-src-a").options
    at.radio(key="pred-src-a").set_value("Type a text").run()
    assert not any("predicts" in m.value for m in at.markdown)           # nothing before Predict
    at.button(key="pred-go-a").click().run()
    assert any("the text is empty" in e for e in _errors(at)), _errors(at)
    at.text_area(key="pred-text-a").set_value(" ".join(["shares"] * 40)).run()
    assert not _errors(at), _errors(at)
    assert any("only the first 16" in i.value for i in at.info)
    assert any("predicts" in m.value for m in at.markdown)


# ----------------------------------------------------------------------------- ZIP bomb


def test_zip_that_would_expand_past_the_limit_is_refused_before_writing(app, tmp_path, monkeypatch):
    from sve.paths import cache_dir

    monkeypatch.setattr(inputs, "MAX_ZIP_BYTES", 1 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/0.png", _png())
        zf.writestr("a/zeros.png", bytes(2 << 20))             # 2 MiB of zeros: a few KB compressed
    assert len(buf.getvalue()) < 20_000
    with pytest.raises(inputs.DataError, match="would expand to 2 MiB, more than the 1 MiB"):
        inputs.save_upload([("bomb.zip", buf.getvalue())], "id", tmp_path / "up")
    assert not (tmp_path / "up").exists()                       # nothing written
    uploads = cache_dir("uploads")
    before = set(uploads.iterdir()) if uploads.exists() else set()
    app.radio(key="w_data_src").set_value("Upload").run()
    bomb = [("bomb.zip", buf.getvalue(), "application/zip")]
    app.file_uploader(key="w_dataset_upload").set_value(bomb).run()
    assert any("'bomb.zip' would expand to 2 MiB" in e and "nothing was written" in e for e in _errors(app))
    assert _train_disabled(app) and not app.exception
    assert (set(uploads.iterdir()) if uploads.exists() else set()) == before
    monkeypatch.setattr(inputs, "MAX_ZIP_FILES", 1)
    with pytest.raises(inputs.DataError, match="holds 2 files, more than the 1"):
        inputs.save_upload([("many.zip", buf.getvalue())], "id", tmp_path / "up")
