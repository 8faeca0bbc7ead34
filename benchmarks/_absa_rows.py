"""The rows of the ABSA frontier table: what each row trains, one timed run, the summary over seeds.

A row is a dict: `key` (unique), `method` (the `training_callbacks` method, or `"timer"`),
`schedule` (`"baseline"`, `"timer"` or `"hessian"`), `patience`, `drop_ratio`, `check_every`,
`every` (timer rows). `run_one` trains one row for one seed inside ONE `model.fit` on an adaptive
dataset and times the phases of the run with two callbacks (`_Phases`), one first and one last in
the fit's callback list, so that the batch-size controller's own work falls between them:

* step seconds: from the last callback's `on_train_batch_begin` to the first callback's
  `on_train_batch_end` (the training step alone, without the callbacks' batch hooks);
* Hessian seconds: the controller's `hessian_seconds` (operator build + eigen-solves);
* batch-size change: in an epoch whose batch differs from the last epoch's, the controller's
  `on_epoch_begin` (pipeline re-armed, epoch length told to Keras) plus the first step's excess
  over the epoch's median step, less the typical first-step excess of unchanged epochs
  (iterator start-up every epoch has);
* accumulation: in an epoch whose batch exceeds the physical batch, each step's time beyond
  `batch / physical` steps of the physical batch (the median step of an epoch at the physical
  batch, or the per-example time of the largest unaccumulated epoch); `None` when the run had
  no unaccumulated epoch to compare with;
* compute: step seconds less the two excesses above; other: the rest of the wall time.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from keras_hessian.callbacks import AdaptiveBatchSize, TimerBatchSize, training_callbacks
from keras_hessian.callbacks.schedules import step_decay
from keras_hessian.data import adaptive_dataset
from keras_hessian.models import strided_cnn

BASELINE_LABELS = {
    "baseline": "BL (base batch)",
    "large": "BL (large batch)",
    "fb": "FB (Goyal et al.)",
    "gg": "GG (Smith et al.)",
    "abs": "ABS",
    "absa": "ABSA",
}


def make_rows(config: dict) -> list[dict]:
    """The 19 rows: the six of the original table, timer k = 1, 2, 3, 4, 6, ABS / ABSA x 4 rule settings."""
    rows = []
    for key, label in BASELINE_LABELS.items():
        hessian = key in ("abs", "absa")
        rows.append({
            "key": key, "method": key, "label": label,
            "schedule": "hessian" if hessian else "baseline",
            "patience": config["patience"] if hessian else None,
            "drop_ratio": 2.0 if hessian else None,
            "check_every": config["check_every"] if hessian else None,
        })
    for every in (1, 2, 3, 4, 6):
        rows.append({"key": f"timer{every}", "method": "timer", "label": f"timer, x2 every {every}",
                     "schedule": "timer", "every": every, "patience": None, "drop_ratio": None, "check_every": None})
    for method in ("abs", "absa"):
        for patience, drop in ((None, 2.0), (None, 1.5), (4, 2.0), (8, 2.0)):
            rule = "no patience" if patience is None else f"patience {patience}"
            rows.append({
                "key": f"{method}_p{patience or 0}_d{drop:g}", "method": method,
                "label": f"{BASELINE_LABELS[method]}, {rule}, drop {drop:g}", "schedule": "hessian",
                "patience": patience, "drop_ratio": drop, "check_every": 1,
            })
    return rows


def build_model(setting: str, seed: int, length: int = 40) -> keras.Model:
    """`strided_cnn` (15,914 parameters) for `easy`; for `hard` a short ResNet-style 1-D net, seeded."""
    keras.utils.set_random_seed(seed)
    if setting == "easy":
        return strided_cnn((length, 1))
    layers = keras.layers

    def residual(h, filters):
        r = layers.Conv1D(filters, 3, padding="same", activation="relu")(h)
        r = layers.Conv1D(filters, 3, padding="same")(r)
        return layers.Activation("relu")(layers.Add()([h, r]))

    inputs = keras.Input((length, 1))
    h = layers.Conv1D(32, 5, padding="same", activation="relu")(inputs)
    h = layers.Conv1D(32, 3, strides=2, padding="same", activation="relu")(h)
    h = residual(h, 32)
    h = layers.Conv1D(64, 3, strides=2, padding="same", activation="relu")(h)
    h = residual(h, 64)
    outputs = layers.Dense(10)(layers.Flatten()(h))
    return keras.Model(inputs, outputs, name="resnet1d")


def _callbacks(row: dict, config: dict, hessian_data, seed: int) -> list:
    if row["method"] == "timer":
        timer = TimerBatchSize(row["every"], 2, config["lr_scaling"], config["base_batch"], config["large_batch"],
                               max_physical_batch_size=config["max_physical_batch"])
        return [timer, step_decay(config["lr_milestones"], config["lr_decay"])]
    return training_callbacks(
        row["method"],
        hessian_data=hessian_data,
        base_batch_size=config["base_batch"],
        large_batch_size=config["large_batch"],
        max_physical_batch_size=config["max_physical_batch"],
        lr_milestones=config["lr_milestones"],
        lr_decay=config["lr_decay"],
        warmup_epochs=config["warmup_epochs"],
        epsilon=config["epsilon"],
        adversarial_ratio=config["adversarial_ratio"],
        **({
            "patience": row["patience"], "drop_ratio": row["drop_ratio"], "check_every": row["check_every"],
            "lr_scaling": config["lr_scaling"], "hvp_method": config["hvp_method"],
            "max_iter": config["hessian_iterations"], "tol": config["hessian_tol"], "seed": seed,
        } if row["schedule"] == "hessian" else {}),
    )


class _Phases:
    """Two callbacks, `first` and `last` in the fit's list, timing steps and epoch starts (module doc)."""

    def __init__(self):
        self.epochs: list[dict] = []
        self._t = 0.0
        phases = self

        class First(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                phases.epochs.append({"begin": time.perf_counter(), "steps": []})

            def on_train_batch_end(self, batch, logs=None):
                phases.epochs[-1]["steps"].append(time.perf_counter() - phases._t)

        class Last(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                phases.epochs[-1]["begin"] = time.perf_counter() - phases.epochs[-1]["begin"]

            def on_train_batch_begin(self, batch, logs=None):
                phases._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                phases.epochs[-1]["batch_size"] = int((logs or {}).get("batch_size", 0))

        self.first, self.last = First(), Last()

    def split(self, wall: float, hessian: float, physical: int | None) -> dict:
        epochs = [e for e in self.epochs if e["steps"]]
        step_total = float(sum(sum(e["steps"]) for e in epochs))
        excess = [e["steps"][0] - float(np.median(e["steps"])) for e in epochs]
        changed = [i > 0 and epochs[i]["batch_size"] != epochs[i - 1]["batch_size"] for i in range(len(epochs))]
        usual = [x for x, c in zip(excess[1:], changed[1:]) if not c]
        typical = float(np.median(usual)) if usual else 0.0
        resize_begin = sum(e["begin"] for e, c in zip(epochs, changed) if c)
        resize_steps = sum(max(0.0, x - typical) for x, c in zip(excess, changed) if c)
        accumulation = None
        if physical is not None and any(e["batch_size"] > physical for e in epochs):
            plain = [e for e in epochs if e["batch_size"] <= physical]
            if plain:
                ref = max(plain, key=lambda e: e["batch_size"])
                per_physical = float(np.median(ref["steps"])) * physical / ref["batch_size"]
                accumulation = float(sum(
                    max(0.0, s - per_physical * e["batch_size"] / physical)
                    for e in epochs if e["batch_size"] > physical for s in e["steps"][1:]
                ))
        compute = step_total - resize_steps - (accumulation or 0.0)
        resize = resize_begin + resize_steps
        return {
            "compute": compute, "hessian": hessian, "batch_size_change": resize, "accumulation": accumulation,
            "other": wall - compute - hessian - resize - (accumulation or 0.0), "steps": step_total,
        }


def run_one(setting: str, row: dict, seed: int, data, config: dict) -> dict:
    """Train `row` with `seed`; accuracy, iterations, wall split, increases, HVPs per check, epoch logs."""
    (x, y), (xt, yt) = data
    model = build_model(setting, seed)
    model.compile(
        keras.optimizers.SGD(config["lr"], momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(seed)
    subset = rng.choice(len(x), config["hessian_examples"], replace=False)
    callbacks = _callbacks(row, config, (x[subset], y[subset]), seed)
    phases, log = _Phases(), []

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            log.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})

    start = time.perf_counter()
    model.fit(
        adaptive_dataset(x, y, seed=seed),
        epochs=config["epochs"],
        callbacks=[phases.first, *callbacks, EpochLog(), phases.last],
        verbose=0,
        shuffle=False,
    )
    wall = time.perf_counter() - start
    # Eager forward passes instead of model.evaluate: the same accuracy without tracing a test
    # function for every run (a second per run in the quick test).
    logits = np.concatenate([np.asarray(model(xt[i:i + 1024], training=False)) for i in range(0, len(xt), 1024)])
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == yt))
    controllers = [c for c in callbacks if isinstance(c, AdaptiveBatchSize)]
    hessian = float(sum(c.hessian_seconds for c in controllers))
    history = [h for c in controllers for h in c.history]
    triggers = [h["trigger"] for h in history if h["trigger"]]
    hvps = [int(h["hvp_count"]) for h in history if h["hvp_count"] is not None]
    check_seconds = [float(h["hessian_seconds"]) for h in history if h["hvp_count"] is not None]
    for h in history:  # the epochs where the eigenvalue was measured (logs repeat the last one)
        log[h["epoch"]]["measured_eigenvalue"] = h["eigenvalue"]
    return {
        "seed": seed,
        "accuracy": float(accuracy),
        "iterations": int(model.optimizer.iterations.numpy()),
        "wall_seconds": wall,
        "hessian_seconds": hessian,
        "wall_split": phases.split(wall, hessian, config["max_physical_batch"]),
        "epochs": log,
        "eigenvalue_increases": triggers.count("eigenvalue"),
        "patience_increases": triggers.count("patience"),
        "hvps": hvps,
        "hessian_check_seconds": check_seconds,  # per check; the first one includes the trace
        "hessian_build_seconds": hessian - sum(check_seconds),  # the operator, built in on_train_begin
    }


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarise(row: dict, runs: list[dict]) -> dict:
    """One table row over seeds: the original fields plus schedule, rules, increases, HVPs, wall split."""
    accuracies = np.array([r["accuracy"] for r in runs])
    iterations = np.array([r["iterations"] for r in runs], dtype=float)
    first, last = runs[0]["epochs"][0], runs[0]["epochs"][-1]
    hessian = row["schedule"] == "hessian"
    split_keys = ("compute", "hessian", "batch_size_change", "accumulation", "other")
    return {
        "method": row["method"],
        "row": row["key"],
        "label": row["label"],
        "schedule": row["schedule"],
        "every": row.get("every"),
        "patience": row["patience"],
        "drop_ratio": row["drop_ratio"],
        "check_every": row["check_every"],
        "batch_size_start": int(first["batch_size"]),
        "batch_size_end": int(last["batch_size"]),
        "test_accuracy_mean": float(accuracies.mean()),
        "test_accuracy_std": float(accuracies.std(ddof=1)) if len(runs) > 1 else 0.0,
        "iterations": float(iterations.mean()),
        "iterations_std": float(iterations.std(ddof=1)) if len(runs) > 1 else 0.0,
        "wall_seconds": float(np.mean([r["wall_seconds"] for r in runs])),
        "hessian_seconds": float(np.mean([r["hessian_seconds"] for r in runs])),
        "seeds": [r["seed"] for r in runs],
        "test_accuracy": [r["accuracy"] for r in runs],
        "iterations_per_seed": [r["iterations"] for r in runs],
        # Per seed; 0 for the rows without a Hessian controller (as in the original table's json).
        "eigenvalue_increases": [r["eigenvalue_increases"] for r in runs],
        "patience_increases": [r["patience_increases"] for r in runs],
        "hvps_per_check": {
            "mean": _mean([h for r in runs for h in r["hvps"]]),
            "first": _mean([r["hvps"][0] for r in runs if r["hvps"]]),
            "later": _mean([h for r in runs for h in r["hvps"][1:]]),
            "checks": _mean([len(r["hvps"]) for r in runs]),
        } if hessian else None,
        "hessian_seconds_per_check": {
            "build": _mean([r.get("hessian_build_seconds") for r in runs]),
            "first": _mean([r["hessian_check_seconds"][0] for r in runs if r.get("hessian_check_seconds")]),
            "later": _mean([t for r in runs for t in r.get("hessian_check_seconds", [])[1:]]),
        } if hessian else None,
        "wall_split": {k: _mean([r["wall_split"][k] for r in runs]) for k in split_keys},
        "wall_split_per_seed": [r["wall_split"] for r in runs],
    }
