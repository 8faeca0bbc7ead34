"""Demo stages (c) and (d): a HAWQ plan applied and fine-tuned; OBD pruning, then pruned + int8.

(c) `hawq.assign_precision` takes stage (b)'s per-layer average Hessian trace per weight (HAWQ-V2)
and solves the exact allocation program for the size budget; `quantize_model` applies the plan
to a new model, which is fine-tuned for a few epochs. (d) A copy of the float ABSA model is
pruned by Optimal Brain Damage (Hessian-diagonal saliency) on an iterative TFMOT schedule while
it fine-tunes (`PruneDuringTraining`), then stripped to a plain Keras model; the pruned model
then gets its own HAWQ plan among candidates that keep a zero weight zero (int8, int4, ternary;
binary has no zero) and is fine-tuned with its zeros held at zero after every step (`KeepZeros`:
`PruneDuringTraining` prunes float layers only).

Why not the converter's sparse full-integer file (`to_tflite(mode="int8", sparse=True)`): LiteRT's
XNNPACK delegate fails to prepare its sparse int8 FULLY_CONNECTED nodes, so it cannot be
evaluated with the interpreter's default set-up.
"""

from __future__ import annotations

import math
import os
from typing import Any

FINE_TUNE_BATCH = 64
FINE_TUNE_LR = 1e-3


def accuracy(model: Any, x: Any, y: Any) -> float:
    """Top-1 accuracy of a logits model on `(x, y)`."""
    import numpy as np

    return float(np.mean(np.argmax(model.predict(x, batch_size=512, verbose=0), axis=-1) == np.asarray(y)))


def _compile(model: Any) -> Any:
    import keras

    model.compile(
        keras.optimizers.Adam(FINE_TUNE_LR), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _subset(data: tuple, settings: Any, seed: int) -> tuple:
    import numpy as np

    (x, y), _ = data
    chosen = np.random.default_rng(seed + 2).choice(len(x), min(settings.hessian_examples, len(x)), replace=False)
    return x[chosen], y[chosen]


def hawq(models: dict, data: tuple, run: Any) -> dict:
    """Stage (c): plan, sensitivity.png, the quantized model (into `models["hawq"]`) and its numbers."""
    settings = run.settings
    from keras_hessian import plots
    from keras_hessian.hawq import assign_precision
    from keras_hessian.quantize import quantization_summary, quantize_model

    (x, y), (xt, yt) = data
    model = models["absa"]
    # Stage (b)'s sensitivities of this model: the spectrum decides the plan.
    plan = assign_precision(model, candidates=list(settings.candidates), budget=settings.budget,
                            sensitivity=models["absa_sensitivity"])
    run.log(plan.table())
    plots.plot_sensitivity(plan, os.path.join(run.out, "sensitivity.png"),
                           title=f"HAWQ-V2: average Hessian trace per weight, plan at {settings.budget:g} x float32")
    quantized = _compile(quantize_model(model, plan))
    post_training = accuracy(quantized, xt, yt)
    if settings.fine_tune_epochs:
        quantized.fit(x, y, batch_size=FINE_TUNE_BATCH, epochs=settings.fine_tune_epochs, verbose=run.verbose)
    models["hawq"] = quantized
    totals = quantization_summary(quantized, print_fn=None)["total"]
    float_totals = quantization_summary(model, print_fn=None)["total"]
    return {
        "plan": plan.to_json(),
        "precisions": dict(plan.precisions),
        "predicted_bytes": int(plan.predicted_bytes),
        "float32_bytes": int(plan.float32_bytes),
        "size_ratio": float(plan.size_ratio),
        "post_training_accuracy": post_training,
        "fine_tuned_accuracy": accuracy(quantized, xt, yt),
        "fine_tune_epochs": settings.fine_tune_epochs,
        "fine_tune_iterations": int(quantized.optimizer.iterations.numpy()) if settings.fine_tune_epochs else 0,
        "weight_bytes": int(totals["weight_bytes"]),
        "float32_weight_bytes": int(float_totals["weight_bytes"]),
        "multiplications": int(totals["multiplications"]),
        "float32_multiplications": int(float_totals["multiplications"]),
    }


def prune(models: dict, data: tuple, run: Any) -> dict:
    """Stage (d): an OBD-pruned copy of the ABSA model (into `models["pruned"]`), then pruned + HAWQ
    (into `models["pruned_quantized"]`), and their numbers."""
    settings, seed = run.settings, run.seed
    import keras

    from keras_hessian.callbacks import PruneDuringTraining, pruning_schedule
    from keras_hessian.pruning import sparsity_summary, strip_pruning

    (x, y), (xt, yt) = data
    source = models["absa"]
    copy = keras.models.clone_model(source)
    copy.set_weights(source.get_weights())
    _compile(copy)
    steps = settings.prune_epochs * math.ceil(len(x) / FINE_TUNE_BATCH)
    # Few mask updates with few probes each: OBD's Hessian diagonal is the cost of every update.
    schedule = pruning_schedule("polynomial", settings.sparsity, steps, updates=settings.prune_updates)
    callback = PruneDuringTraining(schedule, criterion="obd", data=_subset(data, settings, seed), seed=seed,
                                   num_probes=settings.prune_probes)
    copy.fit(x, y, batch_size=FINE_TUNE_BATCH, epochs=settings.prune_epochs, callbacks=[callback], verbose=run.verbose)
    fine_tune_iterations = int(copy.optimizer.iterations.numpy())  # measured: the steps the pruning fit took
    pruned = _compile(strip_pruning(copy))
    models["pruned"] = pruned
    summary = sparsity_summary(pruned)
    run.log(repr(summary))
    both = _pruned_and_quantized(pruned, data, run)
    models["pruned_quantized"] = both.pop("model")
    return {
        "pruned_quantized": both,
        "criterion": "obd",
        "schedule": "polynomial",
        "target_sparsity": settings.sparsity,
        "sparsity": float(summary["total"]["sparsity"]),
        "layers": {row["layer"]: float(row["sparsity"]) for row in summary["layers"]},
        "fine_tune_epochs": settings.prune_epochs,
        "fine_tune_iterations": fine_tune_iterations,
        "accuracy": accuracy(pruned, xt, yt),
    }


def keep_zeros(model: Any) -> Any:
    """A callback that sets the kernel entries that are zero now back to zero after every training step."""
    import keras

    kernels = [layer.kernel for layer in model.layers if getattr(layer, "kernel", None) is not None]
    masks = [keras.ops.cast(keras.ops.not_equal(kernel, 0), kernel.dtype) for kernel in kernels]

    class KeepZeros(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for kernel, mask in zip(kernels, masks):
                kernel.assign(kernel * mask)

    return KeepZeros()


def _pruned_and_quantized(pruned: Any, data: tuple, run: Any) -> dict:
    from keras_hessian.export import inference_copy
    from keras_hessian.hawq import assign_precision
    from keras_hessian.pruning import sparsity_summary
    from keras_hessian.quantize import quantize_model

    settings, seed = run.settings, run.seed
    _, (xt, yt) = data
    candidates = [c for c in settings.candidates if c != "binary"]  # sign weights have no zero
    plan = assign_precision(pruned, _subset(data, settings, seed), candidates, budget=settings.budget,
                            tol=settings.trace_tol, seed=seed)
    run.log(plan.table())
    model = _compile(quantize_model(pruned, plan))
    post_training = accuracy(model, xt, yt)
    if settings.fine_tune_epochs:
        (x, y), _ = data
        model.fit(x, y, batch_size=FINE_TUNE_BATCH, epochs=settings.fine_tune_epochs, callbacks=[keep_zeros(model)],
                  verbose=run.verbose)
    return {
        "model": model,
        "candidates": candidates,
        "precisions": dict(plan.precisions),
        "size_ratio": float(plan.size_ratio),
        "post_training_accuracy": post_training,
        "accuracy": accuracy(model, xt, yt),
        "fine_tune_epochs": settings.fine_tune_epochs,
        "fine_tune_iterations": int(model.optimizer.iterations.numpy()) if settings.fine_tune_epochs else 0,
        "sparsity": float(sparsity_summary(inference_copy(model))["total"]["sparsity"]),
    }
