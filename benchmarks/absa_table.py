"""Reproduce the ABSA table (Yao et al., arXiv 1810.01021) at small scale on MNIST-1D.

Rows: fixed base batch, fixed large batch, FB (Goyal et al.), GG (Smith et al.), ABS, ABSA, each
trained inside ONE model.fit with the callbacks of `keras_hessian.callbacks.training_callbacks`
on an adaptive dataset. Columns: test accuracy (mean, std over seeds), SGD iterations, wall time,
share of wall time spent on Hessian work. Writes benchmarks/results/absa_table.{md,json,png}.

    python benchmarks/absa_table.py            # full run (about 25 min on 2 shared CPU cores)
    python benchmarks/absa_table.py --quick    # smoke run (seconds), used by the test suite
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras
import numpy as np

from benchmarks._common import parser as _parser
from benchmarks._common import write_results
from keras_hessian.callbacks import AdaptiveBatchSize, training_callbacks
from keras_hessian.data import adaptive_dataset, load_mnist1d
from keras_hessian.models import strided_cnn

LABELS = {
    "baseline": "BL (base batch)",
    "large": "BL (large batch)",
    "fb": "FB (Goyal et al.)",
    "gg": "GG (Smith et al.)",
    "abs": "ABS",
    "absa": "ABSA",
}


def build_model(seed: int, length: int = 40) -> keras.Model:
    """`keras_hessian.models.strided_cnn` for MNIST-1D (15,914 parameters), seeded."""
    keras.utils.set_random_seed(seed)
    return strided_cnn((length, 1))


class _EpochLog(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})


def run_one(method: str, seed: int, data, config: dict) -> dict:
    (x, y), (xt, yt) = data
    model = build_model(seed)
    model.compile(
        keras.optimizers.SGD(config["lr"], momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(seed)
    subset = rng.choice(len(x), config["hessian_examples"], replace=False)
    callbacks = training_callbacks(
        method,
        hessian_data=(x[subset], y[subset]),
        base_batch_size=config["base_batch"],
        large_batch_size=config["large_batch"],
        max_physical_batch_size=config["max_physical_batch"],
        lr_milestones=config["lr_milestones"],
        lr_decay=config["lr_decay"],
        warmup_epochs=config["warmup_epochs"],
        epsilon=config["epsilon"],
        adversarial_ratio=config["adversarial_ratio"],
        patience=config["patience"],
        check_every=config["check_every"],
        lr_scaling=config["lr_scaling"],
        hvp_method=config["hvp_method"],
        max_iter=config["hessian_iterations"],
        tol=config["hessian_tol"],
        seed=seed,
    )
    log = _EpochLog()
    start = time.perf_counter()
    model.fit(
        adaptive_dataset(x, y, seed=seed),
        epochs=config["epochs"],
        callbacks=[*callbacks, log],
        verbose=0,
        shuffle=False,
    )
    wall = time.perf_counter() - start
    _, accuracy = model.evaluate(xt, yt, batch_size=1024, verbose=0)
    controllers = [c for c in callbacks if isinstance(c, AdaptiveBatchSize)]
    hessian = sum(c.hessian_seconds for c in controllers)
    triggers = [h["trigger"] for c in controllers for h in c.history if h["trigger"]]
    for c in controllers:  # the epochs where the eigenvalue was measured (logs repeat the last one)
        for h in c.history:
            log.rows[h["epoch"]]["measured_eigenvalue"] = h["eigenvalue"]
    return {
        "accuracy": float(accuracy),
        "iterations": int(model.optimizer.iterations.numpy()),
        "wall_seconds": wall,
        "hessian_seconds": hessian,
        "epochs": log.rows,
        "eigenvalue_increases": triggers.count("eigenvalue"),
        "patience_increases": triggers.count("patience"),
    }


def summarise(method: str, runs: list[dict], seeds: list[int]) -> dict:
    accuracies = np.array([r["accuracy"] for r in runs])
    first, last = runs[0]["epochs"][0], runs[0]["epochs"][-1]
    return {
        "method": method,
        "batch_size_start": int(first["batch_size"]),
        "batch_size_end": int(last["batch_size"]),
        "test_accuracy_mean": float(accuracies.mean()),
        "test_accuracy_std": float(accuracies.std(ddof=1)) if len(runs) > 1 else 0.0,
        "iterations": float(np.mean([r["iterations"] for r in runs])),
        "wall_seconds": float(np.mean([r["wall_seconds"] for r in runs])),
        "hessian_seconds": float(np.mean([r["hessian_seconds"] for r in runs])),
        "seeds": seeds,
        "eigenvalue_increases": [r["eigenvalue_increases"] for r in runs],
        "patience_increases": [r["patience_increases"] for r in runs],
    }


def markdown(rows: list[dict], config: dict) -> str:
    base = next((r for r in rows if r["method"] == "baseline"), rows[0])
    lines = [
        "# ABSA reproduction on MNIST-1D (keras-hessian)",
        "",
        (f"MNIST-1D generated locally: {config['train']} train / {config['test']} test examples; "
        f"1D CNN (3 conv + dense), SGD momentum 0.9, lr {config['lr']} at batch {config['base_batch']}, "
        f"{config['epochs']} epochs, step decay x{config['lr_decay']} at epochs {config['lr_milestones']} "
        f"(GG: batch x{1 / config['lr_decay']:g} there instead). Large batch / cap {config['large_batch']}, "
        f"physical batch <= {config['max_physical_batch']} (gradient accumulation above). "
        f"ABS: top eigenvalue on {config['hessian_examples']} fixed examples, power iteration "
        f"<= {config['hessian_iterations']} HVPs, tol {config['hessian_tol']}, drop ratio 2, factor 2, "
        f"{config['lr_scaling']} LR scaling, patience {config['patience']}, measured every {config['check_every']} epochs. ABSA: + FGSM eps {config['epsilon']}, "
        f"ratio {config['adversarial_ratio']} (halving per doubling, off at the cap / after half the epochs). "
        f"Seeds {config['seeds']}."),
        "",
        "| method | batch (start -> end) | test acc. % (mean ± std) | SGD iterations | iter. vs base | wall s | Hessian s | Hessian share | increases by eigenvalue / by patience (per seed) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = r["hessian_seconds"] / r["wall_seconds"] if r["wall_seconds"] else 0.0
        lines.append(
            f"| {LABELS[r['method']]} | {r['batch_size_start']} -> {r['batch_size_end']} | "
            f"{100 * r['test_accuracy_mean']:.2f} ± {100 * r['test_accuracy_std']:.2f} | "
            f"{r['iterations']:.0f} | {base['iterations'] / r['iterations']:.1f}x fewer | "
            f"{r['wall_seconds']:.1f} | {r['hessian_seconds']:.2f} | {100 * share:.1f}% | "
            + (
                " ".join(f"{e}/{p}" for e, p in zip(r["eigenvalue_increases"], r["patience_increases"]))
                if r["method"] in ("abs", "absa") else "-"
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(histories: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for method, epochs in histories.items():
        e = [row["epoch"] for row in epochs]
        axes[0].plot(e, [row["batch_size"] for row in epochs], marker="o", label=LABELS[method])
        axes[1].plot(e, [row["learning_rate"] for row in epochs], marker="o", label=LABELS[method])
        measured = [(row["epoch"], row["measured_eigenvalue"]) for row in epochs if row.get("measured_eigenvalue")]
        if measured:
            axes[2].plot(*zip(*measured), marker="o", label=LABELS[method])
    for ax, title in zip(axes, ["batch size", "learning rate", "top Hessian eigenvalue (measured)"]):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.legend()
    fig.suptitle("ABS / ABSA schedules on MNIST-1D (first seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = _parser(__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--samples", type=int, default=None, help="MNIST-1D examples, train + test")
    parser.add_argument("--methods", default=",".join(LABELS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set lr=0.05 --set patience=2")
    args = parser.parse_args(argv)

    config = {
        "samples": 50000, "epochs": 24, "lr": 0.05, "base_batch": 128, "large_batch": 4096,
        "max_physical_batch": 1024, "lr_milestones": [12, 18], "lr_decay": 0.2, "warmup_epochs": 5,
        "epsilon": 0.02, "adversarial_ratio": 0.2, "patience": 2, "check_every": 2, "lr_scaling": "sqrt", "hvp_method": None, "hessian_examples": 256,
        "hessian_iterations": 10, "hessian_tol": 1e-2,
    }
    if args.quick:
        config.update(samples=1000, epochs=2, large_batch=256, max_physical_batch=128,
                      lr_milestones=[1], warmup_epochs=1, patience=1, check_every=1, hessian_examples=64)
        args.seeds = 1
    for item in args.set:
        key, value = item.split("=", 1)
        if key not in config:
            raise SystemExit(f"--set: unknown setting {key!r}; known: {sorted(config)}")
        config[key] = json.loads(value)
    if args.epochs is not None:
        config["epochs"] = args.epochs
    if args.samples is not None:
        config["samples"] = args.samples
    seeds = list(range(args.seeds))
    config["seeds"] = seeds
    data = load_mnist1d(num_samples=config["samples"], seed=42)
    config["train"], config["test"] = len(data[0][0]), len(data[1][0])

    rows, histories = [], {}
    for method in args.methods.split(","):
        runs = []
        for seed in seeds:
            run = run_one(method, seed, data, config)
            runs.append(run)
            print(
                f"{method:8s} seed {seed}: acc {100 * run['accuracy']:.2f}%  iterations {run['iterations']}  "
                f"wall {run['wall_seconds']:.1f}s  hessian {run['hessian_seconds']:.2f}s",
                flush=True,
            )
        rows.append(summarise(method, runs, seeds))
        if method in ("abs", "absa"):
            histories[method] = runs[0]["epochs"]

    table = markdown(rows, config)
    print(table)
    written = write_results("absa_table", {"rows": rows, "config": config, "histories": histories}, args.out, table)
    if histories:
        plot(histories, str(written.with_suffix(".png")))
    return {"rows": rows, "config": config}


if __name__ == "__main__":
    main()
