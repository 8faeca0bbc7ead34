"""Accuracy, weight memory and multiplications of float32, bfloat16, DFP-16, ternary-residual
and binary versions of the same small CNNs on sklearn digits and MNIST-1D.

Per dataset and seed, one float32 model is built (its initial weights fixed by the seed):

- float32, bfloat16 and DFP-16 are trained from those same initial weights (bfloat16 and
  DFP-16 via `quantize_model(initial, scheme, skip_first_last=False)`, stage "trained");
- ternary-residual: the trained float32 model is quantized (first and last layers kept in
  float32) with r = 0..3 residual terms, evaluated as is ("post_training", one r = 3 model
  with its `active_residuals` lowered) and after a short fine-tune at each r ("fine_tuned");
- binary (per-channel scaled, first and last layers float32): post-training and fine-tuned.

Writes benchmarks/results/quantized_accuracy.{json,md} and prints the table.

    python benchmarks/quantized_accuracy.py            # full run (3 seeds, both datasets)
    python benchmarks/quantized_accuracy.py --quick    # smoke run, seconds
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import numpy as np

from benchmarks._common import fit as _fit
from benchmarks._common import input_shape, load, write_results
from benchmarks._common import parser as _parser
from keras_hessian.models import compact_cnn
from keras_hessian.quantize import quantization_summary, quantize_model

BLOCK_SIZE = 64


def build_model(dataset: str, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return compact_cnn(input_shape(dataset), output_activation="softmax")


def fit(model, data, seed, epochs, learning_rate):
    return _fit(model, data, epochs, learning_rate, seed=seed)


def accuracy(model, data) -> float:
    _, (x_test, y_test) = data
    probabilities = model.predict(x_test, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(probabilities, axis=-1) == y_test))


def costs(model) -> tuple[int, int]:
    total = quantization_summary(model, print_fn=None)["total"]
    return total["weight_bytes"], total["multiplications"]


SCHEMES = ("float32", "bfloat16", "dfp16", "ternary_residual", "binary")


def run_one(dataset: str, seed: int, quick: bool, log, schemes=SCHEMES) -> list[dict]:
    data = load(dataset, quick)
    epochs = 2 if quick else (30 if dataset == "digits" else 40)
    fine_tune_epochs = 1 if quick else 5
    records = []

    def record(scheme, stage, model, residuals=None):
        weight_bytes, multiplications = costs(model)
        records.append(
            {
                "dataset": dataset,
                "scheme": scheme,
                "residuals": residuals,
                "stage": stage,
                "accuracy": accuracy(model, data),
                "weight_bytes": weight_bytes,
                "multiplications": multiplications,
            }
        )
        log(f"  {dataset} seed={seed} {scheme} r={residuals} {stage}: {records[-1]['accuracy']:.4f}")

    initial = build_model(dataset, seed)
    float_model = fit(quantize_model(initial, "float32"), data, seed, epochs, 1e-3)
    record("float32", "trained", float_model)
    for scheme in ("bfloat16", "dfp16"):
        if scheme in schemes:
            model = fit(quantize_model(initial, scheme, skip_first_last=False), data, seed, epochs, 1e-3)
            record(scheme, "trained", model)
    if "ternary_residual" in schemes:
        ternary_rows(float_model, data, seed, fine_tune_epochs, record)
    if "binary" in schemes:
        binary = quantize_model(float_model, "binary")
        record("binary", "post_training", binary)
        record("binary", "fine_tuned", fit(binary, data, seed, fine_tune_epochs, 3e-4))
    return records


def ternary_rows(float_model, data, seed, fine_tune_epochs, record) -> None:
    """Ternary-residual at r = 0..3: post-training (one r = 3 model, `active_residuals`
    lowered) and fine-tuned (one model per r)."""
    spec = {"scheme": "ternary_residual", "block_size": BLOCK_SIZE, "residuals": 3}
    ternary = quantize_model(float_model, spec)
    for residuals in range(4):
        for layer in ternary.layers:
            if hasattr(layer, "active_residuals"):
                layer.active_residuals = residuals
        record("ternary_residual", "post_training", ternary, residuals)
    for residuals in range(4):
        spec = {"scheme": "ternary_residual", "block_size": BLOCK_SIZE, "residuals": residuals}
        model = fit(quantize_model(float_model, spec), data, seed, fine_tune_epochs, 3e-4)
        record("ternary_residual", "fine_tuned", model, residuals)


def aggregate(records: list[dict]) -> list[dict]:
    keys = []
    for r in records:
        key = (r["dataset"], r["scheme"], r["residuals"], r["stage"])
        if key not in keys:
            keys.append(key)
    rows = []
    for key in keys:
        group = [r for r in records if (r["dataset"], r["scheme"], r["residuals"], r["stage"]) == key]
        values = np.array([r["accuracy"] for r in group])
        rows.append(
            {
                "dataset": key[0],
                "scheme": key[1],
                "residuals": key[2],
                "stage": key[3],
                "accuracy_mean": float(values.mean()),
                "accuracy_std": float(values.std()),
                "weight_bytes": group[0]["weight_bytes"],
                "multiplications": group[0]["multiplications"],
                "seeds": len(group),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| dataset | scheme | r | stage | accuracy % (mean ± std) | Δ vs float32 "
            "| weight bytes | mults / example | mult reduction |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    reference = {r["dataset"]: r for r in rows if r["scheme"] == "float32"}
    for r in rows:
        base = reference[r["dataset"]]
        delta = 100 * (r["accuracy_mean"] - base["accuracy_mean"])
        reduction = base["multiplications"] / max(r["multiplications"], 1)
        lines.append(
            f"| {r['dataset']} | {r['scheme']} | {'' if r['residuals'] is None else r['residuals']} "
            f"| {r['stage']} | {100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f} "
            f"| {delta:+.2f} | {r['weight_bytes']:,} | {r['multiplications']:,} | {reduction:.1f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = _parser(__doc__, "1 seed, tiny training: a smoke run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    parser.add_argument(
        "--schemes", nargs="+", choices=SCHEMES, default=list(SCHEMES),
        help="schemes to run (float32, the reference, always runs)",
    )
    parser.add_argument("--output", default=None, help="results directory (same as --out)")
    args = parser.parse_args(argv)
    seeds = 1 if args.quick else args.seeds
    start = time.time()
    records = []
    for dataset in args.datasets:
        for seed in range(seeds):
            records.extend(run_one(dataset, seed, args.quick, lambda m: print(m, flush=True), args.schemes))
    rows = aggregate(records)
    result = {
        "rows": rows,
        "config": {
            "quick": args.quick,
            "seeds": seeds,
            "block_size": BLOCK_SIZE,
            "accuracy_unit": "fraction of the test set",
            "multiplications": "per example, Dense/Conv layers (see quantization_summary)",
            "seconds": round(time.time() - start, 1),
        },
    }
    markdown = table(rows)
    header = (
        "# Quantized accuracy\n\n"
        f"`{shlex.join(['python', 'benchmarks/quantized_accuracy.py', *(sys.argv[1:] if argv is None else argv)])}`, "
        f"{seeds} seed(s), block size N={BLOCK_SIZE}, {result['config']['seconds']} s.\n"
        "Ternary-residual and binary keep the first and last layers in float32; bfloat16 and "
        "DFP-16 quantize every layer and train from the float32 model's initial weights.\n\n"
    )
    write_results("quantized_accuracy", result, args.output or args.out, header + markdown)
    print(markdown)
    return result


if __name__ == "__main__":
    main()
