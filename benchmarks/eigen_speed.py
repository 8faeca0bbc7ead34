"""Products (HVPs) and wall time to reach tol 1e-3 for the top eigenvalue, per solver, against the
exact eigenvalue; Hutchinson and Hutch++ trace error against the number of probes.

Models: the test suite's small MLP (1,810 parameters) and CNN (754 parameters) trained on
sklearn digits; Hessian over 300 training images; exact values from the full Hessian.
Writes benchmarks/results/eigen_speed.json.

    python benchmarks/eigen_speed.py [--quick]
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras
import numpy as np
import tensorflow as tf

from benchmarks._common import parser, write_results
from keras_hessian.data import load_digits
from keras_hessian.hessian import HessianOperator, hutchinson_trace, top_eigenvalues


def trained(kind: str, seed: int = 0):
    keras.utils.set_random_seed(seed)
    (x, y), _ = load_digits(image=(kind == "cnn"))
    if kind == "mlp":
        layers = [keras.Input((64,)), keras.layers.Dense(24, activation="tanh"), keras.layers.Dense(10)]
    else:
        layers = [keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
                  keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.Flatten(), keras.layers.Dense(10)]
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=8, verbose=0)
    return model, x[:300], y[:300]


def exact_hessian(model, x, y) -> np.ndarray:
    variables = [v.value for v in model.trainable_variables]
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True))
        flat = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(loss, variables)], 0)
    jac = outer.jacobian(flat, variables)
    h = tf.concat([tf.reshape(j, [flat.shape[0], -1]) for j in jac], 1).numpy().astype(np.float64)
    return (h + h.T) / 2


def run(quick: bool = False, out: str | None = None) -> dict:
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    probe_counts = [16, 64] if quick else [16, 32, 64, 128, 256]
    report: dict = {"tol": 1e-3, "seeds": seeds, "models": {}}
    print(f"{'model':5s} {'solver':8s} {'HVPs (mean)':>11s} {'wall s':>7s} {'max rel. error':>15s} {'converged':>9s}")
    for kind in ("mlp", "cnn"):
        model, x, y = trained(kind)
        hessian = exact_hessian(model, x, y)
        eigenvalues = np.linalg.eigvalsh(hessian)
        top = eigenvalues[np.argmax(np.abs(eigenvalues))]
        exact_trace = float(np.trace(hessian))
        op = HessianOperator(model, (x, y))
        op.hvp(op.variables)  # compile once outside the timings
        entry: dict = {"parameters": op.num_parameters, "exact_top_eigenvalue": float(top), "exact_trace": exact_trace, "solvers": {}, "trace": {}}
        for solver in ("lanczos", "power", "arpack"):
            counts, times, errors, converged = [], [], [], []
            for seed in seeds:
                start = time.perf_counter()
                result = top_eigenvalues(op, k=1, tol=1e-3, seed=seed, method=solver)
                times.append(time.perf_counter() - start)
                counts.append(result.hvp_count)
                errors.append(abs(result.eigenvalues[0] - top) / abs(top))
                converged.append(result.converged)
            entry["solvers"][solver] = {
                "hvps_mean": float(np.mean(counts)), "hvps": counts, "wall_seconds_mean": float(np.mean(times)),
                "relative_error_max": float(np.max(errors)), "converged": all(converged),
            }
            print(f"{kind:5s} {solver:8s} {np.mean(counts):11.1f} {np.mean(times):7.2f} {np.max(errors):15.2e} {all(converged)!s:>9s}")
        for deflation, name in ((0, "hutchinson"), (16, "hutch++")):
            rows = []
            for probes in probe_counts:
                errs = []
                for seed in seeds:
                    # tol tiny: spend exactly `probes` products.
                    result = hutchinson_trace(op, max_iter=probes, tol=1e-12, seed=seed, deflation=deflation)
                    errs.append(abs(result.trace - exact_trace) / abs(exact_trace))
                rows.append({"hvps": probes, "relative_error_mean": float(np.mean(errs)), "relative_error_max": float(np.max(errs))})
            entry["trace"][name] = rows
        report["models"][kind] = entry
    print(f"\ntrace: mean (max) relative error over {len(seeds)} seeds vs products")
    print(f"{'model':5s} {'estimator':10s} " + " ".join(f"{p:>15d}" for p in probe_counts))
    for kind, entry in report["models"].items():
        for name, rows in entry["trace"].items():
            cells = " ".join(f"{r['relative_error_mean']:7.2%} ({r['relative_error_max']:5.1%})" for r in rows)
            print(f"{kind:5s} {name:10s} {cells}")
    if out is not None or not quick:  # a quick run writes only where it is told to
        write_results("eigen_speed", report, out)
    return report


if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    run(args.quick, args.out)
