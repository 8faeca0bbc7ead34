"""Demo stages (a) and (b): ABSA beside a fixed batch, then the trained model's spectrum.

(a) Two runs of the same CNN from the same initial weights, SGD with momentum on
`adaptive_dataset`: `training_callbacks("baseline")` keeps the batch fixed, with
`HessianSpectrum` logging the top eigenvalue each epoch; `training_callbacks("absa")` grows the
batch when the top eigenvalue has fallen (it logs the eigenvalue itself) and mixes FGSM examples
into each batch. (b) The ABSA model's per-layer top eigenvalue (`layer_table`), its per-layer
average trace per kernel weight (`hawq.layer_sensitivity`, HAWQ-V2's sensitivity, which stage (c)
plans with) and the spectral density of the whole model (`spectral_density`, drawn by
`plots.plot_density`).
"""

from __future__ import annotations

import os
from typing import Any

METHODS = ("baseline", "absa")  # the fixed-batch run, then ABSA
HISTORY_KEYS = ("batch_size", "learning_rate", "hessian/top_eigenvalue", "loss", "accuracy", "val_accuracy")


def build_model(input_shape: tuple, settings: Any, seed: int) -> Any:
    """The demo's CNN (`keras_hessian.models.compact_cnn`), compiled with SGD + momentum, from `seed`'s weights."""
    import keras

    from keras_hessian.models import compact_cnn

    keras.utils.set_random_seed(seed)
    model = compact_cnn(tuple(input_shape))
    model.compile(
        keras.optimizers.SGD(settings.learning_rate, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def train(data: tuple, run: Any) -> tuple[dict, dict]:
    """Stage (a): `({"baseline": model, "absa": model}, {method: {"history", "iterations", ...}})`."""
    settings, seed = run.settings, run.seed
    import numpy as np

    from keras_hessian.callbacks import HessianSpectrum, training_callbacks
    from keras_hessian.data import adaptive_dataset

    (x, y), (xt, yt) = data
    subset = np.random.default_rng(seed).choice(len(x), min(settings.hessian_examples, len(x)), replace=False)
    hessian_data = (x[subset], y[subset])
    models, report = {}, {}
    for method in METHODS:
        model = build_model(x.shape[1:], settings, seed)
        callbacks = training_callbacks(
            method, hessian_data=hessian_data, base_batch_size=settings.base_batch_size,
            large_batch_size=settings.max_batch_size, epsilon=0.02, adversarial_ratio=0.2,
            **({"lr_scaling": "sqrt", "patience": 4, "seed": seed} if method == "absa" else {}),
        )
        if method == "baseline":  # ABSA measures the eigenvalue itself, the fixed batch needs a callback
            callbacks.append(HessianSpectrum(hessian_data, top_k=1, max_iter=30, tol=1e-2, seed=seed))
        run.log(f"  {method}: {_describe(method, settings)}")
        history = model.fit(
            adaptive_dataset(x, y, batch_size=settings.base_batch_size, seed=seed),
            epochs=settings.epochs, validation_data=(xt, yt), validation_batch_size=512,
            callbacks=callbacks, shuffle=False, verbose=run.verbose,
        )
        models[method] = model
        report[method] = {
            "history": {k: [float(v) for v in history.history[k]] for k in HISTORY_KEYS if k in history.history},
            "iterations": int(model.optimizer.iterations.numpy()),
            "test_accuracy": float(history.history["val_accuracy"][-1]),
        }
    return models, report


def _describe(method: str, settings: Any) -> str:
    if method == "baseline":
        return f"fixed batch {settings.base_batch_size}, SGD lr {settings.learning_rate:g}, momentum 0.9"
    return (f"batch {settings.base_batch_size} doubling up to {settings.max_batch_size} when the top eigenvalue "
            f"halves (lr x sqrt of the growth), 20% FGSM examples (epsilon 0.02)")


def spectrum(model: Any, data: tuple, run: Any) -> tuple[dict, dict]:
    """Stage (b): per-layer top eigenvalue and trace per weight of `model`, and its spectral density (density.png).

    Returns `(the numbers, {layer: LayerSensitivity})`: the sensitivities are HAWQ-V2's (average
    trace of each kernel's Hessian block), which stage (c) plans with.
    """
    settings, seed = run.settings, run.seed
    import numpy as np

    from keras_hessian import plots
    from keras_hessian.hawq import layer_sensitivity
    from keras_hessian.hessian import HessianOperator, layer_table, spectral_density, top_eigenvalues

    (x, y), _ = data
    subset = np.random.default_rng(seed + 1).choice(len(x), min(settings.hessian_examples, len(x)), replace=False)
    hessian_data = (x[subset], y[subset])
    operator = HessianOperator(model, hessian_data)
    top = top_eigenvalues(operator, k=2, seed=seed)
    table = layer_table(HessianOperator(model, hessian_data, blocks="layer"), top_k=1, trace=False, seed=seed)
    sensitivity = layer_sensitivity(model, hessian_data, "trace", tol=settings.trace_tol, seed=seed)
    rows = [{"block": row["block"], "parameters": row["parameters"], "top_eigenvalue": row["eigenvalues"][0],
             "kernel_parameters": sensitivity[row["block"]].parameters,
             "trace_per_weight": sensitivity[row["block"]].sensitivity,
             "trace_per_weight_standard_error": sensitivity[row["block"]].standard_error}
            for row in table.rows]
    run.log("| layer | parameters | top eigenvalue | kernel trace / weight |\n|---|---:|---:|---:|")
    for row in rows:
        run.log(f"| {row['block']} | {row['parameters']:,} | {row['top_eigenvalue']:.4g} | "
                f"{row['trace_per_weight']:.4g} +- {row['trace_per_weight_standard_error']:.2g} |")
    density = spectral_density(
        operator, n_vectors=settings.density_vectors, lanczos_steps=settings.density_steps,
        deflation=min(4, settings.density_steps), seed=seed,
    )
    plots.plot_density(density, os.path.join(run.out, "density.png"),
                       title=f"Hessian spectral density of the ABSA model ({len(subset)} training examples)")
    return {
        "examples": len(subset),
        "parameters": int(operator.num_parameters),
        "top_eigenvalues": [float(v) for v in top.eigenvalues],
        "layers": rows,
        "density": {"trace": float(density.trace), "sigma": float(density.sigma), "hvp_count": int(density.hvp_count),
                    "smallest_node": float(np.min(density.nodes)), "largest_node": float(np.max(density.nodes))},
    }, sensitivity
