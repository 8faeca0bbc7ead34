"""`run_demo`: the stages in order, their settings (default and `--quick`), and the all-or-nothing write.

Everything is written to a staging directory beside (or inside) the output directory and moved
into place at the end, so a failed or interrupted run leaves no half-written report behind.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from keras_hessian._validation import check_choice, check_int

DATASETS = ("digits", "mnist1d")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The sizes of one demo run (`settings_for` gives the default and the `--quick` ones)."""

    data: str = "digits"
    quick: bool = False
    epochs: int = 12                 # ABSA and fixed-batch training epochs
    base_batch_size: int = 32        # the fixed batch, and ABSA's first one
    max_batch_size: int = 512        # ABSA's cap
    learning_rate: float = 0.02      # SGD (momentum 0.9) at the base batch
    hessian_examples: int = 256      # the fixed subset of every Hessian measurement
    density_vectors: int = 8         # SLQ start vectors
    density_steps: int = 40          # Lanczos steps per vector
    trace_tol: float = 1e-2          # relative standard error of the per-layer traces (HAWQ's default)
    budget: float = 0.1              # HAWQ: weight bytes as a fraction of float32 (mnist1d: 0.2)
    candidates: tuple = ("int8", "int4", "ternary", "binary")
    fine_tune_epochs: int = 2        # after quantization
    sparsity: float = 0.8            # OBD pruning target
    prune_epochs: int = 3            # fine-tune epochs while pruning
    prune_updates: int = 5           # OBD mask updates (each one a Hessian diagonal)
    prune_probes: int = 16           # Hutchinson probes per update
    latency_examples: int = 100      # batch-1 LiteRT calls per latency median
    mnist1d_samples: int = 4000


@dataclasses.dataclass(frozen=True)
class Run:
    """What every stage is handed besides the data and the models: sizes, seed, output, channels."""

    settings: Settings
    seed: int
    out: str                          # the staging directory the stage writes its files to
    log: Callable[[str], None]        # progress lines and tables
    verbose: Any                      # Keras' fit verbosity


def settings_for(
    quick: bool = False, data: str = "digits", epochs: int | None = None, fine_tune_epochs: int | None = None
) -> Settings:
    """The default settings, or the `--quick` ones (a smaller everything), with optional overrides."""
    check_choice("data", data, DATASETS)
    # MNIST-1D's CNN has its weights spread over more layers: with the first and last kept float32
    # it cannot go below 0.123 x float32.
    base = Settings(data=data, budget=0.1 if data == "digits" else 0.2)
    if quick:
        base = dataclasses.replace(
            base, quick=True, epochs=4, hessian_examples=64, density_vectors=3, density_steps=15, trace_tol=5e-2,
            fine_tune_epochs=1, prune_epochs=1, prune_updates=2, prune_probes=4, latency_examples=20, mnist1d_samples=1500,
        )
    if epochs is not None:
        base = dataclasses.replace(base, epochs=check_int("epochs", epochs, 1))
    if fine_tune_epochs is not None:
        base = dataclasses.replace(base, fine_tune_epochs=check_int("fine_tune_epochs", fine_tune_epochs, 0))
    return base


def load_demo_data(settings: Settings, seed: int) -> tuple[tuple, tuple]:
    """`((x, y), (x_test, y_test))` of the demo's dataset, float32 inputs."""
    from keras_hessian.data import load_digits, load_mnist1d

    if settings.data == "digits":
        (x, y), (xt, yt) = load_digits(seed=seed)
    else:
        (x, y), (xt, yt) = load_mnist1d(num_samples=settings.mnist1d_samples, seed=42)
    return (x.astype("float32"), y), (xt.astype("float32"), yt)


def run_demo(
    out: str | os.PathLike,
    settings: Settings | None = None,
    *,
    seed: int = 0,
    log: Callable[[str], None] = print,
    verbose: int | str = "auto",
) -> dict:
    """Run the five stages and write `out/{report.md, demo.json, *.png, *.tflite}`; return demo.json's content.

    Use it to see every part of the package work together on one model, or as the source to copy
    a stage from. It takes about 30 seconds on 2 CPU cores (`settings_for(quick=True)`: about 20).

    Example:

    ```python
    from keras_hessian.demo import run_demo, settings_for

    result = run_demo("demo-out", settings_for(quick=True, data="mnist1d"))
    result["table"]["hawq"]["litert_accuracy"], result["table"]["hawq"]["size_ratio"]
    ```

    Args:
        out: the output directory (created if needed; files of the same names are replaced).
        settings: `settings_for(...)`; default: the full run on digits.
        seed: seed of the weights, the batches and every Hessian estimate.
        log: where the progress lines and tables go (e.g. `print`, `logging.info`, `lambda line: None`).
        verbose: Keras' `fit` verbosity (`"auto"`: progress bars).
    """
    settings = settings or Settings()
    if not isinstance(settings, Settings):
        raise TypeError(f"settings must be a Settings (see settings_for). Received {type(settings).__name__}.")
    seed = check_int("seed", seed, 0)
    target = os.path.abspath(os.fspath(out))
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(f"out: {os.fspath(out)!r} exists and is not a directory.")
    import keras

    from keras_hessian.demo import compression, deploy, report, training

    # Staged in the output directory if it exists, else in its nearest existing ancestor, so that
    # a failure creates no directory at all.
    parent = target
    while not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    staging = tempfile.mkdtemp(prefix=".keras-hessian-demo-", dir=parent)
    try:
        result: dict[str, Any] = {"settings": dataclasses.asdict(settings), "seed": seed, "seconds": {}}
        result["settings"]["candidates"] = list(settings.candidates)
        start = time.perf_counter()
        keras.utils.set_random_seed(seed)
        data = load_demo_data(settings, seed)
        (x, _), (xt, _) = data
        result["data"] = {"name": settings.data, "train": len(x), "test": len(xt), "shape": list(x.shape[1:])}
        log(f"{settings.data}: {len(x)} training / {len(xt)} test examples of shape {x.shape[1:]}"
            f"{' (--quick: every stage smaller)' if settings.quick else ''}")
        models: dict[str, Any] = {}  # the Keras models (and sensitivities) of the stages, by name; not in the JSON
        run = Run(settings, seed, staging, log, verbose)

        def train_both():
            trained, numbers = training.train(data, run)
            models.update(trained)
            return numbers

        def measure_spectrum():
            numbers, models["absa_sensitivity"] = training.spectrum(models["absa"], data, run)
            return numbers

        stages = [  # (key, result entry, progress line, stage)
            ("a", "training", "ABSA training beside a fixed-batch run, spectrum logged each epoch", train_both),
            ("b", "spectrum", "final spectrum per layer and spectral density", measure_spectrum),
            ("c", "hawq", f"HAWQ plan at {settings.budget:g} x float32 bytes, quantize, fine-tune",
             lambda: compression.hawq(models, data, run)),
            ("d", "pruning", f"OBD pruning to {settings.sparsity:g} sparsity, then pruned + HAWQ-quantized",
             lambda: compression.prune(models, data, run)),
            ("e", "table", "TFLite export of every model, LiteRT evaluation",
             lambda: deploy.export_all(models, data, run, _iterations(result))),
        ]
        for n, (key, name, title, stage) in enumerate(stages, start=1):
            log(f"[{n}/{len(stages) + 1}] ({key}) {title} ...")
            began = time.perf_counter()
            result[name] = stage()
            result["seconds"][key] = time.perf_counter() - began
            log(f"      ({key}) done in {result['seconds'][key]:.1f} s")
        log(f"[{len(stages) + 1}/{len(stages) + 1}] report.md, demo.json and the figures ...")
        result["seconds"]["total"] = time.perf_counter() - start
        report.write_all(result, staging)
        written = sorted(os.listdir(staging))
        _move_into(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"wrote {', '.join(written)} to {target}")
    return result


def _iterations(result: dict) -> dict:
    """Optimizer steps behind each model: its training plus the fine-tuning on top."""
    base = result["training"]["absa"]["iterations"]
    return {
        "baseline": result["training"]["baseline"]["iterations"],
        "absa": base,
        "hawq": base + result["hawq"]["fine_tune_iterations"],
        "pruned": base + result["pruning"]["fine_tune_iterations"],
        "pruned_quantized": base + result["pruning"]["fine_tune_iterations"]
        + result["pruning"]["pruned_quantized"]["fine_tune_iterations"],
    }


def _move_into(staging: str, target: str) -> None:
    """Move every file of `staging` into `target` (created if missing), replacing files of the same name."""
    os.makedirs(target, exist_ok=True)
    for name in sorted(os.listdir(staging)):
        os.replace(os.path.join(staging, name), os.path.join(target, name))
