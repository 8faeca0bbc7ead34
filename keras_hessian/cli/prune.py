"""`keras-hessian prune MODEL.keras --data mnist1d --sparsity 0.9 --out pruned.keras`: prune while fine-tuning.

Fine-tunes the model for `--epochs` with `keras_hessian.callbacks.PruneDuringTraining` on a
TFMOT schedule (`--schedule polynomial`: iterative, `constant`: one-shot from step 0; the same
number of steps either way, see `pruning_schedule`), strips the pruning state
(`strip_pruning`), removes the pruned filters of a Sequential model for `--granularity filter`
(`shrink_filters`, so the saving is real FLOPs), prints `sparsity_summary` and the test accuracy
before and after, and with `--tflite` exports the result (sparse float32 storage for element
pruning) with the LiteRT parity report. `--epochs 0` prunes once, without fine-tuning.

`--out` (and `--tflite`) are replaced only once everything succeeded: the model is saved to a
temporary file next to `--out`, the TFLite file is written and checked, then both are moved.
"""

from __future__ import annotations

import argparse
import math
import os
import uuid
from typing import Any

from keras_hessian._validation import check_float, check_int
from keras_hessian.cli._common import (
    DATA_HELP,
    CommandError,
    add_fine_tune_options,
    add_verbose,
    check_input_file,
    check_output_file,
    fit_inputs,
    load_data,
    progress,
    quiet_tensorflow,
    warn,
)
from keras_hessian.cli._model import check_examples, load_model, model_loss, refuse_overwriting

# keras_hessian.pruning / callbacks names, spelled out so that `--help` needs no TensorFlow (a test keeps them equal).
CRITERIA = ("magnitude", "obd", "random")
GRANULARITIES = ("element", "filter")
ALLOCATIONS = ("uniform", "global", "hessian")
SCHEDULES = ("polynomial", "constant")
BATCH_SIZE = 64


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "prune",
        help="prune a model while fine-tuning (magnitude, Optimal Brain Damage, random), save it, export to TFLite",
        description="Fine-tune MODEL while pruning it to --sparsity on a TFMOT schedule (iterative or one-shot), "
        "strip the pruning state, remove pruned filters of a Sequential model, print the sparsity per layer "
        "and the test accuracy, save the result and optionally export it to TFLite with a parity report.",
    )
    parser.add_argument("model", help="a model saved with model.save('MODEL.keras')")
    parser.add_argument("--data", required=True, help=f"{DATA_HELP}: train split to fine-tune on, test to evaluate")
    parser.add_argument("--sparsity", type=float, required=True, help="fraction of kernel weights removed, in [0, 1)")
    parser.add_argument("--criterion", default="obd", choices=CRITERIA,
                        help="obd (1/2 H_ii w_i^2, default), magnitude (|w|) or random (the baseline)")
    parser.add_argument("--granularity", default="element", choices=GRANULARITIES,
                        help="single weights (default) or whole filters / output channels")
    parser.add_argument("--allocation", default="uniform", choices=ALLOCATIONS,
                        help="the same sparsity per layer (default), one global ranking, or per layer from the Hessian")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tune epochs while pruning (default: 3; 0: prune once)")
    parser.add_argument("--schedule", default="polynomial", choices=SCHEDULES,
                        help="polynomial: iterative, 0 -> sparsity over the first 2/3 of the steps (default); "
                        "constant: one-shot at step 0")
    parser.add_argument("--hessian-examples", type=int, default=512,
                        help="training examples of the Hessian for obd and hessian allocation (512)")
    parser.add_argument("--out", required=True, help="the pruned .keras model to write")
    parser.add_argument("--tflite", default=None, help="also export the pruned model to this .tflite file")
    add_fine_tune_options(parser)
    add_verbose(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    sparsity = check_float("--sparsity", args.sparsity, minimum=0.0, maximum=1.0, exclusive_maximum=True)
    epochs = check_int("--epochs", args.epochs, 0)
    examples = check_int("--hessian-examples", args.hessian_examples, 1)
    learning_rate = check_float("--learning-rate", args.learning_rate, minimum=0.0, exclusive_minimum=True)
    seed = check_int("--seed", args.seed, 0)
    check_input_file("MODEL", args.model)
    if not args.out.endswith(".keras"):
        raise CommandError(f"--out {args.out!r} must end in .keras (Keras saves models only under that name).")
    refuse_overwriting(args.model, {"--out": args.out, "--tflite": args.tflite})
    check_output_file("--out", args.out)
    check_output_file("--tflite", args.tflite)
    quiet_tensorflow(args.verbose)

    import keras

    from keras_hessian import pruning

    model = load_model(args.model, command="prune", unsafe=args.unsafe)
    loss, loss_name = model_loss(model, args.loss)
    with progress(f"loading --data {args.data}"):
        x, y = load_data(args.data, "train")
        x_test, y_test = load_data(args.data, "test")
    x, x_test = fit_inputs(x, model), fit_inputs(x_test, model)
    check_examples(model, x, y, loss, loss_name)
    names = [row["layer"] for row in pruning.sparsity_summary(model)["layers"]]
    # Filter pruning keeps the last layer's outputs: they are the model's (the classes).
    layers = names[:-1] if args.granularity == "filter" and len(names) > 1 else names
    hessian_data = (x[:examples], y[:examples])
    loss = loss if loss is not None else model.loss
    keras.utils.set_random_seed(seed)
    model.compile(keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    dense_accuracy = _accuracy(model, x_test, y_test)
    what = f"{args.criterion} {args.granularity} pruning to sparsity {sparsity:g} ({args.allocation} allocation)"
    if epochs:
        steps = epochs * math.ceil(len(x) / BATCH_SIZE)
        _fine_tune(model, args, sparsity, layers, hessian_data, x, y, epochs, steps, what)
    else:
        with progress(f"{what}, once, without fine-tuning"):
            masks = pruning.compute_masks(
                model, sparsity, criterion=args.criterion, allocation=args.allocation,
                granularity=args.granularity, data=hessian_data, layers=layers, seed=seed,
            )
            pruning.apply_masks(model, masks)
    pruned = pruning.strip_pruning(model)
    if args.granularity == "filter":
        pruned = _shrink(pruned)
    pruned.compile(keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    # A built optimizer is saved with its slots, so loading the file does not warn about missing ones.
    pruned.optimizer.build(pruned.trainable_variables)
    print()
    print(pruning.sparsity_summary(pruned))
    print(f"\ntest accuracy ({len(x_test)} examples): dense {dense_accuracy:.4f} -> pruned "
          f"{_accuracy(pruned, x_test, y_test):.4f}")
    print(f"parameters: {model.count_params():,} -> {pruned.count_params():,}")
    _write(pruned, args, x, (x_test.astype("float32"), y_test))
    return 0


def _fine_tune(model: Any, args: argparse.Namespace, sparsity: float, layers: list, data: Any, x: Any, y: Any,
               epochs: int, steps: int, what: str) -> None:
    from keras_hessian.callbacks import PruneDuringTraining, pruning_schedule

    schedule = pruning_schedule(args.schedule, sparsity, steps)
    callback = PruneDuringTraining(
        schedule, criterion=args.criterion, allocation=args.allocation, granularity=args.granularity,
        data=data, layers=layers, seed=args.seed,
    )
    with progress(f"{what}, {args.schedule} schedule, {epochs} epoch(s) = {steps} steps of fine-tuning"):
        history = model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, callbacks=[callback], verbose=0)
    reached = history.history.get("pruning/sparsity", [0.0])[-1]
    print(f"training accuracy {history.history['accuracy'][-1]:.4f} at sparsity {reached:.4f}")


def _shrink(model: Any) -> Any:
    import keras

    from keras_hessian import pruning

    if not isinstance(model, keras.Sequential):
        warn("prune", "--granularity filter: the model is not Sequential, so its pruned filters stay as zeros "
             "(shrink_filters rebuilds Sequential models only).")
        return model
    try:
        with progress("removing the pruned filters (shrink_filters)"):
            return pruning.shrink_filters(model)
    except ValueError as error:
        warn("prune", f"the pruned filters stay as zeros: {error}")
        return model


def _accuracy(model: Any, x: Any, y: Any) -> float:
    import numpy as np

    predictions = model.predict(x, batch_size=256, verbose=0)
    labels = np.asarray(y).reshape(len(y), -1)
    labels = labels.argmax(-1) if labels.shape[1] > 1 else labels[:, 0]
    return float(np.mean(predictions.argmax(-1) == labels))


def _write(model: Any, args: argparse.Namespace, x: Any, evaluation: Any) -> None:
    """Save to a temporary file beside `--out`, write and check `--tflite`, then move the model in place."""
    target = os.path.abspath(os.path.expanduser(args.out))
    directory, name = os.path.split(target)
    temporary = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.keras")
    try:
        with progress(f"saving {args.out}"):
            model.save(temporary)
        if args.tflite is not None:
            from keras_hessian import export
            from keras_hessian.cli._tflite import write_checked

            # Element pruning leaves zeros worth storing sparse; a shrunk model is dense again.
            sparse = args.granularity == "element"
            tflite, report = write_checked(model, args.tflite, "float32", x[:200], evaluation, sparse=sparse)
            print(f"{'storage':<20} float32{', sparse (EXPERIMENTAL_SPARSITY)' if sparse else ''}")
            print(export.format_parity_report(report, tflite))
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    print(f"pruned model saved to {args.out}")
