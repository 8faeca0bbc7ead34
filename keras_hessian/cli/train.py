"""`keras-hessian train`: one column of the ABSA table (a batch-size method inside one fit), printed per epoch."""

from __future__ import annotations

import argparse
import time
from typing import Any

from keras_hessian._validation import check_float, check_int
from keras_hessian.cli._common import (
    DATA_HELP,
    CommandError,
    add_verbose,
    check_output_directory,
    check_output_file,
    load_data,
    quiet_tensorflow,
)
from keras_hessian.cli._model import check_keras_file, refuse_same_outputs, save_model_atomically, write_json

# keras_hessian.callbacks' METHODS and LR_SCALING_RULES, spelled out so that `--help` needs no
# TensorFlow (a test keeps them equal).
METHODS = ("baseline", "large", "fb", "gg", "abs", "absa")
LR_SCALING_RULES = ("linear", "sqrt", "none")
DATASETS = ("mnist1d", "digits")  # embedded; `tfds:NAME` and FILE.npz go through the shared loader


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a small model inside one fit with a batch-size method (ABS, ABSA, baselines)",
        description="Train a small CNN on embedded data with one column of the ABSA table "
        "(Yao et al., arXiv 1810.01021) and print batch size, learning rate, top Hessian "
        "eigenvalue and accuracy every epoch.",
    )
    parser.add_argument("--method", choices=METHODS, default="absa", help="default: absa")
    parser.add_argument("--data", default="mnist1d", help=f"{DATA_HELP} (default: mnist1d)")
    parser.add_argument("--samples", type=int, default=5000, help="MNIST-1D examples, train + test (default: 5000)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128, help="base / initial batch size (default: 128)")
    parser.add_argument("--max-batch-size", type=int, default=4096, help="large batch / cap (default: 4096)")
    parser.add_argument("--max-physical-batch-size", type=int, default=None,
                        help="accumulate gradients above this batch size (default: never)")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD (momentum 0.9) rate at the base batch")
    parser.add_argument("--lr-scaling", choices=LR_SCALING_RULES, default="linear", help="ABS/ABSA rule")
    parser.add_argument("--lr-milestones", type=int, nargs="*", default=[], help="epochs of the step decay")
    parser.add_argument("--lr-decay", type=float, default=0.2)
    parser.add_argument("--warmup-epochs", type=int, default=5, help="FB warm-up (default: 5)")
    parser.add_argument("--patience", type=int, default=10, help="ABS: grow anyway after this many epochs")
    parser.add_argument("--check-every", type=int, default=1, help="ABS: measure every this many epochs")
    parser.add_argument("--hessian-examples", type=int, default=256, help="ABS: size of the fixed subset")
    parser.add_argument("--epsilon", type=float, default=0.005, help="ABSA: FGSM step")
    parser.add_argument("--adversarial-ratio", type=float, default=0.2, help="ABSA: share of each batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backup-dir", default=None, help="resume a killed run (keras BackupAndRestore)")
    parser.add_argument("--json", default=None, help="also write the per-epoch rows to this file")
    parser.add_argument("--save", default=None, metavar="MODEL.keras",
                        help="save the trained model here (for spectrum, quantize, export)")
    add_verbose(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_int("--epochs", args.epochs, 1)
    check_int("--samples", args.samples, 10)
    check_int("--hessian-examples", args.hessian_examples, 1)
    check_float("--lr", args.lr, minimum=0.0, exclusive_minimum=True)
    check_float("--lr-decay", args.lr_decay, minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True)
    check_int("--seed", args.seed, 0)
    check_output_directory("--backup-dir", args.backup_dir)
    check_output_file("--json", args.json)
    check_keras_file("--save", args.save)
    check_output_file("--save", args.save)
    refuse_same_outputs({"--save": args.save, "--json": args.json})
    if args.data not in DATASETS and not args.data.startswith("tfds:") and not args.data.endswith(".npz"):
        raise CommandError(f"--data must be digits, mnist1d, tfds:NAME or a FILE.npz. Received {args.data!r}.")
    quiet_tensorflow(args.verbose)

    import keras
    import numpy as np

    from keras_hessian.callbacks import training_callbacks
    from keras_hessian.data import adaptive_dataset, load_digits, load_mnist1d
    from keras_hessian.models import strided_cnn

    if args.data == "mnist1d":
        (x, y), (xt, yt) = load_mnist1d(num_samples=args.samples, seed=42)
    elif args.data == "digits":
        (x, y), (xt, yt) = load_digits(seed=args.seed)
    else:
        (x, y), (xt, yt) = load_data(args.data, "train"), load_data(args.data, "test")
    rng = np.random.default_rng(args.seed)
    subset = rng.choice(len(x), min(args.hessian_examples, len(x)), replace=False)
    callbacks = training_callbacks(
        args.method,
        hessian_data=(x[subset], y[subset]),
        base_batch_size=args.batch_size,
        large_batch_size=args.max_batch_size,
        max_physical_batch_size=args.max_physical_batch_size,
        lr_milestones=args.lr_milestones,
        lr_decay=args.lr_decay,
        warmup_epochs=args.warmup_epochs,
        epsilon=args.epsilon,
        adversarial_ratio=args.adversarial_ratio,
        backup_dir=args.backup_dir,
        **(
            {"patience": args.patience, "check_every": args.check_every,
             "lr_scaling": args.lr_scaling, "seed": args.seed}
            if args.method in ("abs", "absa") else {}
        ),
    )
    keras.utils.set_random_seed(args.seed)
    labels = np.concatenate([np.asarray(y).reshape(-1), np.asarray(yt).reshape(-1)])
    if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise CommandError(f"--data {args.data!r}: labels must be class indices 0, 1, 2, ... (integers).")
    model = strided_cnn(x.shape[1:], classes=max(int(labels.max()) + 1, 2))  # as many classes as the labels
    model.compile(
        keras.optimizers.SGD(args.lr, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    report = _epoch_report(f"{args.method} on {args.data}: {len(x)} train / {len(xt)} test examples")
    extra = [keras.callbacks.BackupAndRestore(args.backup_dir)] if args.backup_dir else []
    model.fit(
        adaptive_dataset(x, y, seed=args.seed),
        epochs=args.epochs,
        validation_data=(xt, yt),
        validation_batch_size=1024,
        callbacks=[*extra, *callbacks, report],
        shuffle=False,
        verbose=0,
    )
    print(f"SGD iterations: {int(model.optimizer.iterations.numpy())}")
    if args.save:
        save_model_atomically(model, args.save)
        print(f"saved {args.save}")
    if args.json:
        write_json(args.json, {"method": args.method, "data": args.data, "epochs": report.rows}, indent=1)
    return 0


def _epoch_report(title: str) -> Any:
    """A Keras callback that prints `title`, then one row per epoch, and keeps the rows in `.rows`.

    Epochs are counted from 1, as Keras' own progress lines ("Epoch 1/10") and `--epochs` do.

    Defined here, not at module level, so that building the parser imports no Keras.
    """
    import keras

    header = ("epoch", "batch", "lr", "eigenvalue", "train_acc", "test_acc", "seconds")

    class EpochReport(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows: list[dict] = []

        def on_train_begin(self, logs=None):
            print(title)
            print("  ".join(header), flush=True)
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {
                "epoch": epoch + 1,
                "batch_size": int(logs.get("batch_size", 0)),
                "learning_rate": float(logs.get("learning_rate", float("nan"))),
                "top_eigenvalue": float(logs.get("hessian/top_eigenvalue", float("nan"))),
                "train_accuracy": float(logs.get("accuracy", float("nan"))),
                "test_accuracy": float(logs.get("val_accuracy", float("nan"))),
                "seconds": time.perf_counter() - self.start,
            }
            self.rows.append(row)
            print(
                f"{epoch + 1:5d}  {row['batch_size']:5d}  {row['learning_rate']:.4g}  "
                f"{row['top_eigenvalue']:10.4g}  {row['train_accuracy']:9.4f}  "
                f"{row['test_accuracy']:8.4f}  {row['seconds']:7.1f}",
                flush=True,
            )

    return EpochReport()
