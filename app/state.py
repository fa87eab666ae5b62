"""Background training jobs for the dashboard: one worker thread per run, never two at once.

Streamlit re-executes the page script on every interaction, so nothing that must outlive a rerun
can live in local variables. The design:

- ``JobRegistry`` (one per server process, held by ``st.cache_resource`` in ``registry()``) owns
  every job. ``start`` refuses a second job while one is training, under a lock, so a double
  click or a second browser tab cannot start training twice.
- A ``Job`` runs ``sve.experiments.run(config, out_dir, callbacks=[job.callback])`` in a daemon thread.
  The callback (called from the worker) only appends to lock-protected fields; the page reads a
  consistent copy with ``job.snapshot()``. Returning ``False`` from the callback is the
  contract of ``sve.experiments`` for "stop cleanly after the current step, keep what finished": the
  Stop button just sets ``job.stop_event``.
- The page keeps only the job id in ``st.session_state``; the live panel polls the snapshot.

No ML happens here: the worker calls ``sve.experiments.run`` and nothing else.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNNING, FINISHED, STOPPED, FAILED = "running", "finished", "stopped", "failed"


def _num(info: dict, key: str) -> float | None:
    value = info.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _member_count(info: dict) -> int:
    """How many ``member<i>_val_acc`` keys (each member's validation accuracy) an epoch event holds."""
    count = 0
    while f"member{count}_val_acc" in info:
        count += 1
    return count


def _int(value, default: int | None) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


@dataclass
class Snapshot:
    """A consistent, read-only copy of a job's progress for one page render."""

    id: str
    status: str
    method: str | None
    units_done: int          # finished (method, seed) pairs
    units_total: int
    step: int | None         # step inside the current method (1-based)
    steps: int | None        # steps of the current method
    epoch: int | None
    epochs: int | None
    elapsed: float           # seconds
    fraction: float          # 0..1 of the whole run
    curve: list[dict]        # {"event", "x": step in its method, "method", "loss", "acc"} points; epoch
                             # points add "epoch" (1-based) and "members": each member's val accuracy
    run_path: Path | None
    error: str | None
    remaining: float | None  # seconds left at the current method's step rate (None: not known yet)

    @property
    def phase(self) -> str:
        """What the worker is doing, for the progress text."""
        if self.method is None:
            return "loading the backbone and data"
        if not self.step:
            return f"{self.method}: building the model"
        if self.steps and self.step >= self.steps and self.status == RUNNING:
            return f"{self.method}: evaluating on the test, validation, OOD and shifted sets"
        return self.method


@dataclass
class Job:
    """One training run in a worker thread. Fields below ``_lock`` are written by the worker."""

    config: Any                       # sve.experiments.ExperimentConfig
    out_dir: Path | None              # None: sve.experiments' default (sve.paths.runs_dir())
    units_total: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    stop_event: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    status: str = RUNNING
    method: str | None = None
    units_done: int = 0
    step: int | None = None
    steps: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    curve: list[dict] = field(default_factory=list)
    anchor: tuple[float, float] | None = None     # (time, fraction) at the current method's first step
    run_path: Path | None = None
    error: str | None = None
    thread: threading.Thread | None = None

    # -- called from the worker thread -------------------------------------------------------
    def callback(self, event: str, info: dict) -> bool:
        """``sve.experiments.run`` progress callback; returns False once Stop was pressed.

        Keys used (the ``sve.experiments`` contract): every event has ``run_dir``; ``method_start`` and
        later have ``method``, ``index`` (0-based pair), ``total`` (pairs), ``epochs``, ``steps``
        (of this method); ``step`` adds ``step`` (1..steps), ``epoch`` (0-based) and ``loss``;
        ``epoch`` adds ``epoch`` (0-based), ``train_loss``, ``val_acc`` and, for ensembles,
        ``member<i>_val_acc`` (member i's own validation accuracy).
        """
        info = info or {}
        with self._lock:
            if info.get("run_dir") is not None:
                self.run_path = Path(info["run_dir"])
            if isinstance(info.get("total"), int):
                self.units_total = max(info["total"], 1)
            if event == "method_start":
                self.method, self.units_done = str(info.get("method")), int(info.get("index", 0))
                self.step, self.epoch, self.anchor = 0, 0, None
            if event in ("method_start", "step", "epoch"):
                self._progress(event, info)
            elif event == "method_end":
                self.units_done = int(info.get("index", self.units_done)) + 1
        return not self.stop_event.is_set()

    def _progress(self, event: str, info: dict) -> None:
        self.steps = _int(info.get("steps"), self.steps)
        self.epochs = _int(info.get("epochs"), self.epochs)
        if event == "step":
            self.step = _int(info.get("step"), self.step)
            self.epoch = _int(info.get("epoch"), -1) + 1 or self.epoch     # 1-based, current
            self.curve.append({"event": "step", "x": self.step, "method": self.method,
                               "loss": _num(info, "loss"), "acc": None})
            if self.anchor is None:
                self.anchor = (time.monotonic(), self._fraction())
        elif event == "epoch":
            self.epoch = _int(info.get("epoch"), -1) + 1 or self.epoch     # 1-based, completed
            members = [_num(info, f"member{m}_val_acc") for m in range(_member_count(info))]
            self.curve.append({"event": "epoch", "x": self.step, "epoch": self.epoch, "method": self.method,
                               "loss": _num(info, "train_loss"), "acc": _num(info, "val_acc"),
                               "members": members})

    def work(self, run_fn) -> None:
        """Thread body: run, then record how it ended (never raises)."""
        try:
            path = run_fn(self.config, out_dir=self.out_dir, callbacks=[self.callback])
            with self._lock:
                self.run_path = Path(path) if path else self.run_path
                self.status = STOPPED if self.stop_event.is_set() else FINISHED
        except BaseException as exc:  # noqa: BLE001 - reported on the page, never re-raised
            traceback.print_exc()
            with self._lock:
                self.status = STOPPED if self.stop_event.is_set() and _is_stop(exc) else FAILED
                self.error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self.ended = time.monotonic()

    # -- called from page renders ------------------------------------------------------------
    def request_stop(self) -> None:
        self.stop_event.set()

    def _fraction(self) -> float:
        """Done share of the run: finished (method, seed) pairs plus the current one's steps."""
        if self.status == FINISHED:
            return 1.0
        within = min(self.step / self.steps, 1.0) if self.step and self.steps else 0.0
        done = self.units_done + (within if self.status == RUNNING else 0.0)
        return min(done / max(self.units_total, 1), 1.0)

    def snapshot(self) -> Snapshot:
        with self._lock:
            now = time.monotonic()
            fraction, remaining = self._fraction(), None
            if self.status == RUNNING and self.anchor and fraction > self.anchor[1]:
                rate = (fraction - self.anchor[1]) / (now - self.anchor[0])   # run share per second
                remaining = (1 - fraction) / rate
            elapsed = (self.ended or now) - self.started
            return Snapshot(self.id, self.status, self.method, self.units_done, self.units_total,
                            self.step, self.steps, self.epoch, self.epochs, elapsed, fraction,
                            list(self.curve), self.run_path, self.error, remaining)


def _is_stop(exc: BaseException) -> bool:
    return type(exc).__name__ == "StopTraining"


class BusyError(RuntimeError):
    """A job is already training in this server process."""


class JobRegistry:
    """All jobs of this server process; at most one trains at a time (2 CPU cores)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.jobs: dict[str, Job] = {}

    def active(self) -> Job | None:
        with self._lock:
            return next((j for j in self.jobs.values() if j.thread and j.thread.is_alive()), None)

    def get(self, job_id: str | None) -> Job | None:
        with self._lock:
            return self.jobs.get(job_id) if job_id else None

    def start(self, config: Any, out_dir: Path | None, units_total: int, run_fn) -> Job:
        """Start ``run_fn(config, out_dir=..., callbacks=[...])`` in a daemon thread.

        Raises BusyError when another job is still training.
        """
        with self._lock:
            busy = next((j for j in self.jobs.values() if j.thread and j.thread.is_alive()), None)
            if busy is not None:
                raise BusyError(f"run {busy.id} is still training; stop it or wait for it to finish")
            job = Job(config=config, out_dir=out_dir, units_total=max(int(units_total), 1))
            job.thread = threading.Thread(target=job.work, args=(run_fn,), daemon=True,
                                          name=f"sve-train-{job.id}")
            self.jobs[job.id] = job
            job.thread.start()
            return job


def format_seconds(seconds: float | None) -> str:
    """``75.2`` → ``"1:15"``; None → ``"–"``."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
