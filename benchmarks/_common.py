"""What the benchmark scripts share: paths, the argument parser, data, training, the results writer.

Each script runs as `python benchmarks/NAME.py [--quick] [--out DIR]`, prints its table and
writes `benchmarks/results/NAME.{json,md}`; the test suite runs each `--quick`. The models they
train are in `keras_hessian.models` (the CLI and the examples use the same ones).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the checkout's package
    sys.path.insert(0, str(ROOT))


def parser(doc: str, quick_help: str = "tiny smoke run (seconds), used by the test suite") -> argparse.ArgumentParser:
    """An ArgumentParser described by the script's docstring, with `--quick` and `--out`."""
    result = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    result.add_argument("--quick", action="store_true", help=quick_help)
    result.add_argument("--out", default=None, help=f"results directory (default: {RESULTS})")
    return result


def write_results(name: str, payload: dict, out: str | os.PathLike | None = None, markdown: str | None = None) -> pathlib.Path:
    """Write `NAME.json` (and `NAME.md`) into `out` (default `benchmarks/results/`); return the json path."""
    directory = pathlib.Path(out) if out is not None else RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    if markdown is not None:
        (directory / f"{name}.md").write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    return path


def load(dataset: str, quick: bool):
    """`((x, y), (x_test, y_test))` of `digits` or `mnist1d` (1,000 examples when quick, else 5,000)."""
    from keras_hessian.data import load_digits, load_mnist1d

    if dataset == "digits":
        return load_digits(seed=0)
    if dataset == "mnist1d":
        return load_mnist1d(num_samples=1000 if quick else 5000)
    raise ValueError(f"dataset must be 'digits' or 'mnist1d'. Received dataset={dataset!r}.")


def input_shape(dataset: str) -> tuple[int, ...]:
    return (8, 8, 1) if dataset == "digits" else (40, 1)


def fit(model, data, epochs: int, learning_rate: float, seed: int = 0, loss=None):
    """Compile with Adam (sparse cross-entropy; from logits unless the output is a softmax) and fit."""
    import keras

    (x_train, y_train), _ = data
    if loss is None:
        last = model.layers[-1]
        from_logits = getattr(last, "activation", None) is not keras.activations.softmax
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    model.compile(keras.optimizers.Adam(learning_rate), loss, metrics=["accuracy"])
    keras.utils.set_random_seed(seed)
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    return model
