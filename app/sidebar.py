"""The sidebar: presets and the experiment settings, turned into ``sve.experiments.ExperimentConfig`` fields.

Widget values live in ``st.session_state`` under the keys of ``KEYS``; a preset writes all of them
at once (``apply_preset``), so switching presets never fights with what a widget holds. Fields a
preset sets that have no widget (warm-up, validation/test/OOD limits, severities, ...) are kept
in ``st.session_state["preset_extra"]`` and passed through unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from app.inputs import UPLOAD_TYPES, check_backbone, check_data_path, check_ood, describe, save_upload

OTHER = "other (timm: / hf: name)…"
SOURCES = ("Zoo", "Path", "Upload")
TARGETS = ("all", "attention", "mlp", "last:K")
TINY_ENV = "SVE_APP_TINY"   # set to 1 to add (and default to) the tiny preset used by the browser test
QUICK, PAPER, TEXT, TINY = "Quick demo", "Paper-like", "Text demo", "Tiny (tests)"
#: widget keys, each holding one widget's value in st.session_state
KEYS = ("w_backbone", "w_backbone_other", "w_data_src", "w_dataset", "w_dataset_path", "w_ood",
        "w_ood_path", "w_ood_src", "w_shifts", "w_methods", "w_members", "w_epochs", "w_lr_auto",
        "w_lr", "w_init_std", "w_targets", "w_last_k", "w_image_size", "w_max_length",
        "w_train_limit", "w_seeds", "w_preset")
#: fields that have a widget; everything else of a preset goes to "preset_extra"
WIDGET_FIELDS = {"backbone", "dataset", "ood", "shifts", "methods", "members", "epochs", "lr",
                 "init_std", "targets", "image_size", "max_length", "train_limit", "seeds"}


@dataclass
class Catalog:
    """The names the widgets offer, read from the `sve` registries."""

    backbones: list[str]
    datasets: dict[str, str]
    ood_pairs: dict[str, tuple[str, ...]]
    corruptions: list[str]
    methods: list[str]


@st.cache_resource(show_spinner=False)
def catalog() -> Catalog:
    from sve import backbones, data
    from sve.methods import METHODS

    method_names = list(METHODS)
    corruptions = list(data.CORRUPTIONS) + list(getattr(data, "TEXT_CORRUPTIONS", ()))
    return Catalog(list(backbones.list_backbones()), dict(data.list_datasets()), dict(data.OOD_PAIRS),
                   corruptions, method_names)


def presets() -> dict[str, dict]:
    """Preset name → ExperimentConfig fields. "Quick demo" is ``configs/quick-demo.yaml``."""
    from sve.experiments import ExperimentConfig
    from sve.paths import project_root

    root = project_root() or Path.cwd()
    path = root / "configs" / "quick-demo.yaml"
    quick = (ExperimentConfig.load(path) if path.is_file() else ExperimentConfig()).to_dict()
    methods = catalog().methods
    paper = {**quick, "name": "paper-like", "members": 4, "epochs": 10, "warmup_epochs": 5,
             "lr": None, "image_size": 224, "train_limit": None, "val_limit": None,
             "test_limit": None, "ood_limit": None, "seeds": [0, 1, 2],
             "methods": [m for m in ("sve", "single", "deep_ensemble", "lora_ensemble") if m in methods]}
    text = {**quick, "name": "text-demo", "backbone": "minilm-l3", "dataset": "bbc-news",
            "ood": ["chatterbot"], "shifts": [], "image_size": None, "max_length": 64}
    out = {QUICK: quick, PAPER: paper}
    if "minilm-l3" in catalog().backbones:
        out[TEXT] = text
    if os.environ.get(TINY_ENV):
        out[TINY] = {**quick, "name": "tiny", "methods": ["sve", "single"], "members": 2, "epochs": 1,
                     "warmup_epochs": 0,
                     "targets": "last:2", "image_size": 28, "train_limit": 96, "val_limit": 32,
                     "test_limit": 64, "ood_limit": 64, "shifts": []}
    return out


def default_preset() -> str:
    return TINY if os.environ.get(TINY_ENV) else QUICK


def apply_preset(name: str | None = None) -> None:
    """Write a preset's values into every widget key (the preset select box's callback)."""
    ss = st.session_state
    name = name or ss.get("w_preset") or default_preset()
    values = presets()[name]
    cat = catalog()
    ss["w_preset"] = name
    ss["preset_extra"] = {k: v for k, v in values.items() if k not in WIDGET_FIELDS}
    zoo_backbone = values["backbone"] in cat.backbones
    ss["w_backbone"] = values["backbone"] if zoo_backbone else OTHER
    ss["w_backbone_other"] = "" if zoo_backbone else values["backbone"]
    zoo_data = values["dataset"] in cat.datasets
    ss["w_data_src"] = "Zoo" if zoo_data else "Path"
    ss["w_dataset"] = values["dataset"] if zoo_data else next(iter(cat.datasets))
    ss["w_dataset_path"] = "" if zoo_data else values["dataset"]
    ss["w_ood"] = [o for o in values["ood"] if o in cat.datasets]
    ss["w_ood_path"] = ", ".join(o for o in values["ood"] if o not in cat.datasets)
    ss["w_ood_src"] = "Path" if ss["w_ood_path"] else "Zoo"
    ss["w_shifts"] = [s for s in values["shifts"] if s in cat.corruptions]
    ss["w_methods"] = [m if isinstance(m, str) else m["name"] for m in values["methods"]]
    ss["w_members"], ss["w_epochs"] = int(values["members"]), int(values["epochs"])
    ss["w_lr_auto"] = values["lr"] is None
    ss["w_lr"] = float(values["lr"] or 1e-3)
    ss["w_init_std"] = float(values["init_std"])
    targets = values["targets"] if isinstance(values["targets"], str) else "all"
    ss["w_targets"] = "last:K" if targets.startswith("last:") else targets
    ss["w_last_k"] = int(targets.split(":")[1]) if targets.startswith("last:") else 2
    ss["w_image_size"] = int(values["image_size"] or 0)
    ss["w_max_length"] = int(values["max_length"] or 0)
    ss["w_train_limit"] = int(values["train_limit"] or 0)
    ss["w_seeds"] = ", ".join(str(s) for s in values["seeds"])


def _keep_widget_state() -> None:
    """Widgets that are not drawn in a run lose their state; re-assigning keeps it (hidden inputs)."""
    ss = st.session_state
    if "w_preset" not in ss:
        apply_preset(default_preset())
    for key in KEYS:
        if key in ss:
            ss[key] = ss[key]


@st.cache_data(ttl=120, max_entries=32, show_spinner="Checking the data…")
def _check_path_cached(path: str, stamp: float, ood: bool) -> str | None:
    return check_data_path(path, ood=ood)


def _check_path(path: str, ood: bool = False) -> str | None:
    """``check_data_path``, cached per path and modification time (a big folder is read once)."""
    try:
        stamp = Path(path).expanduser().stat().st_mtime
    except OSError:
        stamp = 0.0
    return _check_path_cached(path, stamp, ood)


@st.cache_data(max_entries=16, show_spinner="Reading the upload…")
def _saved_upload(files: tuple[tuple[str, bytes], ...], role: str) -> tuple[str | None, str | None]:
    """(data path, None) or (None, error) for one upload; written and checked once per content."""
    from sve.paths import cache_dir

    try:
        return str(save_upload(list(files), role, cache_dir("uploads"))), None
    except Exception as exc:  # noqa: BLE001 - DataError and anything unexpected
        return None, describe(exc)


def _upload_path(key: str, role: str, errors: list[str]) -> str | None:
    files = st.session_state.get(key)
    files = [f for f in (files if isinstance(files, list) else [files]) if f is not None]
    if not files:
        errors.append(f"Upload the {role} data (a CSV of text,label; a ZIP with one folder per class; "
                      "or image files), or pick another source.")
        return None
    path, problem = _saved_upload(tuple((f.name, f.getvalue()) for f in files), role)
    if problem:
        errors.append(problem)
    return path


def _parse_seeds(text: str, errors: list[str]) -> list[int]:
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        errors.append(f"Seeds {text!r}: give distinct non-negative integers separated by commas, "
                      "e.g. 0 or 0,1,2.")
        return [0]
    return seeds


def _data_section(cat: Catalog, errors: list[str]) -> tuple[str | None, list[str]]:
    """Dataset and OOD widgets → (dataset spec, OOD specs); problems go to ``errors``."""
    st.subheader("Data")
    src = st.radio("Dataset source", SOURCES, key="w_data_src", horizontal=True)
    dataset: str | None
    if src == "Zoo":
        dataset = st.selectbox("Dataset", list(cat.datasets), key="w_dataset",
                               help="\n".join(f"- **{k}**: {v}" for k, v in cat.datasets.items()))
    elif src == "Path":
        dataset = st.text_input("Image folder (one sub-folder per class) or CSV (text,label)",
                                key="w_dataset_path").strip()
        problem = _check_path(dataset) if dataset else "Type the path of an image folder or a CSV."
        if problem:
            errors.append(problem)
            dataset = None
    else:
        st.file_uploader("CSV (text,label), ZIP of class folders", type=UPLOAD_TYPES,
                         accept_multiple_files=True, key="w_dataset_upload")
        dataset = _upload_path("w_dataset_upload", "in-distribution", errors)

    ood_src = st.radio("OOD source", SOURCES, key="w_ood_src", horizontal=True)
    ood: list[str] = []
    if ood_src == "Zoo":
        options = [d for d in cat.datasets if d != dataset]
        st.session_state["w_ood"] = [o for o in st.session_state.get("w_ood", []) if o in options]
        ood = st.multiselect("OOD sets", options, key="w_ood",
                             help="Suggested for the zoo data sets: " + "; ".join(
                                 f"{k} → {', '.join(v)}" for k, v in cat.ood_pairs.items()))
    elif ood_src == "Path":
        text = st.text_input("OOD image folder(s) / CSV(s) (a text column; no label needed), "
                             "comma-separated", key="w_ood_path")
        for spec in (s.strip() for s in text.split(",") if s.strip()):
            problem = _check_path(spec, ood=True)
            errors.append(problem) if problem else ood.append(spec)
    else:
        st.file_uploader("OOD images, CSV or ZIP", type=UPLOAD_TYPES, accept_multiple_files=True,
                         key="w_ood_upload")
        path = _upload_path("w_ood_upload", "ood", errors)
        ood = [path] if path else []
    if dataset:
        problem = check_ood(dataset, ood)
        if problem:
            errors.append(problem)
    return dataset, ood


def render() -> tuple[dict, list[str]]:
    """Draw the sidebar; return (ExperimentConfig fields, list of problems to show)."""
    _keep_widget_state()
    cat = catalog()
    errors: list[str] = []
    names = list(presets())
    st.selectbox("Preset", names, key="w_preset", on_change=apply_preset,
                 help="Quick demo: configs/quick-demo.yaml, SVE and the single model trained on the "
                      "same data until the validation NLL stops improving (about a minute on 2 CPU "
                      "cores). Paper-like: the paper's settings (M=4, 10 epochs, 224 px, full data, "
                      "3 seeds, the main baselines): hours on a CPU.")

    st.subheader("Model")
    choice = st.selectbox("Backbone", [*cat.backbones, OTHER], key="w_backbone")
    backbone = choice
    if choice == OTHER:
        backbone = st.text_input("Backbone name", key="w_backbone_other",
                                 placeholder="timm:resnet18 or hf:bert-base-uncased").strip()
        problem = check_backbone(backbone, cat.backbones)
        if problem:
            errors.append(problem)

    dataset, ood = _data_section(cat, errors)
    shifts = st.multiselect("Distribution shifts (corruptions)", cat.corruptions, key="w_shifts")

    st.subheader("Training")
    methods = st.multiselect("Methods", cat.methods, key="w_methods")
    if not methods:
        errors.append("Choose at least one method.")
    members = st.number_input("Members M", 1, 64, key="w_members")
    epochs = st.number_input("Epochs", 1, 500, key="w_epochs")
    lr_auto = st.checkbox("Each method's default learning rate", key="w_lr_auto")
    lr = st.number_input("Learning rate", 1e-6, 1.0, key="w_lr", format="%.1e", disabled=lr_auto)
    init_std = st.number_input("init_std (σ jitter)", 0.0, 1.0, key="w_init_std", format="%.3f",
                               step=0.005)
    target = st.selectbox("Targets", TARGETS, key="w_targets",
                          help="which weights get per-member singular values")
    if target == "last:K":
        target = f"last:{st.number_input('K (last blocks)', 1, 100, key='w_last_k')}"
    image_size = st.number_input("Image size (px, 0 = backbone default)", 0, 1024, key="w_image_size",
                                 step=14, help="image backbones; a multiple of 14 for DINOv2")
    max_length = st.number_input("Max tokens (0 = backbone default)", 0, 4096, key="w_max_length",
                                 step=16, help="text backbones")
    train_limit = st.number_input("Training samples (0 = all)", 0, 1_000_000, key="w_train_limit", step=64)
    seeds = _parse_seeds(st.text_input("Seed(s)", key="w_seeds"), errors)

    fields = {**st.session_state.get("preset_extra", {}), "backbone": backbone, "dataset": dataset,
              "ood": ood, "shifts": shifts, "methods": methods, "members": int(members),
              "epochs": int(epochs), "lr": None if lr_auto else float(lr), "init_std": float(init_std),
              "targets": target, "image_size": int(image_size) or None,
              "max_length": int(max_length) or None, "train_limit": int(train_limit) or None,
              "seeds": seeds}
    return fields, errors
