"""keras-hessian against PyHessian (torch, CPU) on the same weights and data, side by side in one run.

A Keras CNN of 85,066 parameters (Conv 32 -> Conv 64 -> MaxPool -> Dense 64 -> logits), trained
briefly on sklearn digits, and its PyTorch twin holding the same weights (kernels transposed,
the flatten order mapped from NHWC to NCHW); the Hessian of the mean cross-entropy over 1,024
digits, one batch on both sides (PyHessian's `data=` mode, which keeps the first-order graph
and reuses it for every product). The torch side (`_vs_pyhessian_torch.py`) runs in its own
process (the torch venv's python, weights and data handed over in an .npz, one JSON line per
task each way); the engine runs here. Rounds alternate: each task runs on one side, then on
the other. The first round is "cold" (the engine builds a new operator and traces its
functions; torch runs its first call), later rounds are "warm" (the engine reuses the operator,
as a training loop does; PyHessian builds its `hessian` object each time, one forward and
backward pass, as it must for new weights) and their median is reported.

Rows: top eigenvalue (tol 1e-3), top-3 (tol 1e-3), trace at each side's defaults (PyHessian:
Hutchinson, at most 100 probes, stop when the running mean moves by under 1e-3; engine: Hutch++
to a 0.5% standard error, at most 400 products), at PyHessian's budget (the engine given the
products PyHessian's default run took in the same round, compared with that run) and at matched
accuracy (each side asked for a 1% standard error;
PyHessian's Hutchinson then takes the probes its own per-probe spread needs, its time projected
past 40 probes), and the density at PyHessian's default budget (100 Lanczos
steps from one vector; the engine: the same, and 4 lockstep runs of 25 steps). Three rounds give
three errors per side, too few to compare two trace estimators: after the rounds, PyHessian's
default trace and the engine's Hutch++ at 8 to 32 products (fixed budgets) run over 16 seeds
each (`_vs_pyhessian_trace.py`: RMS error with a bootstrap interval of its ratio, median,
90th-percentile error, bias, mean cost). Errors are
against references computed here: ARPACK (`eigsh`, tol 1e-8) for eigenvalues, the exact trace
(`exact_trace`: for a ReLU / max-pool network diag H = diag of the Gauss-Newton matrix, so
per-example Jacobians give tr H exactly), and for the density a 2-vector, 100-step SLQ with the
top 10 eigenpairs deflated; a density's error is the Wasserstein-1 distance of its quadrature
measure to the reference's, relative to the reference's spectral range (the trace its mean
implies is in the json too).

PyHessian 0.1 (the PyPI release) calls `torch.eig`, removed from torch 2: the worker replaces
it at run time with `torch.linalg.eigh` (the tridiagonal is symmetric), the fix PyHessian's own
repository made. Nothing of PyHessian is vendored.

Make the torch venv outside the repository (torch is no dependency of keras-hessian, nor of CI):

    python3 -m venv /work/torchvenv
    /work/torchvenv/bin/pip install torch==2.13.0 numpy pyhessian   # 2.13.0: the CPU build (results: 2.13)

    nice -n 10 python benchmarks/vs_pyhessian.py [--rounds 4] [--torch-python /work/torchvenv/bin/python]

Writes benchmarks/results/vs_pyhessian.{json,md}.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

TORCH_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vs_pyhessian_torch.py")
DEFAULT_TORCH_PYTHON = os.environ.get("KERAS_HESSIAN_TORCH_PYTHON", "/work/torchvenv/bin/python")
NUM_EXAMPLES = 1024
TRACE_SEEDS = 16  # seeds of the trace's accuracy comparison (benchmarks/_vs_pyhessian_trace.py)


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tempfile

import keras
import numpy as np

from benchmarks._common import parser, write_results
from benchmarks._vs_pyhessian_report import MATCHED_PROBES_RUN, markdown, summary
from benchmarks._vs_pyhessian_trace import trace_spread
from keras_hessian.data import load_digits
from keras_hessian.hessian import (
    HessianOperator,
    hutchinson_trace,
    spectral_density,
    top_eigenvalues,
)


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def torch_parameters(model: keras.Model) -> list[np.ndarray]:
    """The Keras weights in the torch twin's layout and order."""
    (k1, b1), (k2, b2), (k3, b3), (k4, b4) = [layer.get_weights() for layer in model.layers if layer.weights]
    conv = lambda k: np.ascontiguousarray(k.transpose(3, 2, 0, 1))  # (h, w, in, out) -> (out, in, h, w)
    # Keras flattens (h, w, c), torch (c, h, w): reorder the rows of the first dense kernel.
    dense = k3.reshape(4, 4, 64, 64).transpose(2, 0, 1, 3).reshape(1024, 64)
    return [conv(k1), b1, conv(k2), b2, np.ascontiguousarray(dense.T), b3, np.ascontiguousarray(k4.T), b4]


class TorchSide:
    def __init__(self, python: str, npz: str, threads: int):
        env = dict(os.environ, PYTHONPATH="", BENCHMARK_THREADS=str(threads))
        self.process = subprocess.Popen(
            ["nice", "-n", "10", python, TORCH_WORKER, npz],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the torch worker ended early (is pyhessian installed in its venv?)")
        return json.loads(line)

    def run(self, task: dict) -> dict:
        self.process.stdin.write(json.dumps(task) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def wasserstein(nodes_a, weights_a, nodes_b, weights_b) -> float:
    """W1 distance of two discrete measures on the real line (integral of |F_a - F_b|)."""
    a, wa = np.ravel(nodes_a), np.ravel(weights_a) / np.sum(weights_a)
    b, wb = np.ravel(nodes_b), np.ravel(weights_b) / np.sum(weights_b)
    points = np.concatenate([a, b])
    order = np.argsort(points)
    masses = np.concatenate([wa, -wb])[order]
    cdf_gap = np.cumsum(masses)[:-1]
    return float(np.sum(np.abs(cdf_gap) * np.diff(points[order])))


def engine_task(op, name: str, seed: int, density_budget: int, budget: int | None = None) -> dict:
    start = time.perf_counter()
    count0 = op.hvp_count
    out: dict = {}
    if name in ("top1", "top3"):
        result = top_eigenvalues(op, k=1 if name == "top1" else 3, tol=1e-3, seed=seed)
        out["values"] = [float(v) for v in result.eigenvalues]
    elif name == "trace":
        result = hutchinson_trace(op, seed=seed)
        out["value"], out["standard_error"] = float(result.trace), float(result.standard_error)
    elif name == "trace_matched":
        result = hutchinson_trace(op, tol=1e-2, seed=seed)
        out["value"], out["standard_error"] = float(result.trace), float(result.standard_error)
    elif name == "trace_budget":  # PyHessian's products, no early stop (tiny tol)
        result = hutchinson_trace(op, max_iter=budget, tol=1e-9, seed=seed)
        out["value"], out["standard_error"] = float(result.trace), float(result.standard_error)
    elif name == "density":
        # PyHessian's budget of products: deflate the top few exactly, Lanczos on the rest.
        # PyHessian's algorithm and budget: one vector, 100 Lanczos steps (full reorthogonalization).
        result = spectral_density(op, n_vectors=1, lanczos_steps=density_budget, deflation=0, seed=seed)
        out["nodes"], out["weights"] = result.nodes.ravel().tolist(), result.weights.ravel().tolist()
    elif name == "density_batched":
        # The same budget as 4 runs of 25 steps in lockstep: each step one hvp_many over 4 vectors.
        result = spectral_density(op, n_vectors=4, lanczos_steps=density_budget // 4, deflation=0, seed=seed)
        out["nodes"], out["weights"] = result.nodes.ravel().tolist(), (result.weights.ravel() / 4).tolist()
    out.update(seconds=time.perf_counter() - start, products=op.hvp_count - count0)
    return out


def run(
    rounds: int = 3,
    torch_python: str = DEFAULT_TORCH_PYTHON,
    out: str | None = None,
    quick: bool = False,
    threads: int = 1,
) -> dict:
    import tensorflow as tf

    # The same number of threads on both sides (the machine's two cores by default); the sides
    # take turns, so they never compete with each other.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    (x_all, y_all), _ = load_digits(image=True)
    examples = 256 if quick else NUM_EXAMPLES  # quick: a smoke run of the plumbing, not a measurement
    x, y = x_all[:examples].astype(np.float32), y_all[:examples].astype(np.int64)
    model = build_model()
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=3, verbose=0)
    data = (x, y)
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, "twin.npz")
        arrays = {f"p{i}": p.astype(np.float32) for i, p in enumerate(torch_parameters(model))}
        np.savez(npz, x=np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y=y, **arrays)
        torch_side = TorchSide(torch_python, npz, threads)
        try:
            report = compare(model, data, torch_side, rounds, quick)
        finally:
            torch_side.close()
    write_results("vs_pyhessian", report, out, markdown(report))
    print(markdown(report))
    return report


def exact_trace(model, data, chunk: int = 32) -> float:
    """tr(H) exactly, as the trace of the Gauss-Newton matrix.

    The model (ReLU, max-pool, affine layers) is, on each activation region, linear in every
    single weight (each weight enters each path of the network once), so d^2 f / d w_i^2 = 0 and
    the Hessian's diagonal is the Gauss-Newton's: tr(H) = 1/N sum_i tr(H_out,i J_i J_i^T), with
    J_i the (10 x parameters) Jacobian of example i's logits and H_out,i = diag(p_i) - p_i p_i^T
    the softmax cross-entropy's Hessian in the logits. Per-example Jacobians, 32 examples at a time.
    """
    import tensorflow as tf

    x = data[0]
    variables = [v.value for v in model.trainable_variables]
    total = 0.0
    for start in range(0, len(x), chunk):
        xb = tf.constant(x[start : start + chunk])
        with tf.GradientTape() as tape:
            logits = model(xb, training=False)
        jacobians = tape.jacobian(logits, variables)  # each (b, 10, *shape)
        gram = tf.add_n(
            [tf.einsum("bcx,bdx->bcd", *(2 * [tf.reshape(j, [j.shape[0], j.shape[1], -1])])) for j in jacobians]
        )
        p = tf.nn.softmax(logits)
        h_out = tf.linalg.diag(p) - p[:, :, None] * p[:, None, :]
        total += float(tf.reduce_sum(h_out * gram))
    return total / len(x)


def references(model, data) -> dict:
    """Converged values: ARPACK's top 3, the exact trace, a 2-vector SLQ of 100 steps with the top 10 deflated."""
    op = HessianOperator(model, data)
    start = time.perf_counter()
    arpack = top_eigenvalues(op, k=3, method="arpack", tol=1e-8, max_iter=1000, seed=0)
    trace = exact_trace(model, data)
    slq = spectral_density(op, n_vectors=2, lanczos_steps=100, deflation=10, seed=7)
    return {
        "top3": [float(v) for v in arpack.eigenvalues],
        "trace": trace,
        "density_nodes": slq.nodes.tolist(),
        "density_weights": slq.weights.tolist(),
        "products": op.hvp_count,
        "seconds": time.perf_counter() - start,
    }


def errors(name: str, result: dict, ref: dict) -> float:
    if name == "top1":
        return abs(result["values"][0] - ref["top3"][0]) / abs(ref["top3"][0])
    if name == "top3":
        return max(abs(a - b) / abs(b) for a, b in zip(result["values"], ref["top3"]))
    if name.startswith("trace"):
        return abs(result["value"] - ref["trace"]) / abs(ref["trace"])
    nodes, weights = np.asarray(ref["density_nodes"]), np.asarray(ref["density_weights"])
    span = float(nodes.max() - nodes.min())
    return wasserstein(result["nodes"], result["weights"], nodes, weights) / span


def compare(model, data, torch_side: TorchSide, rounds: int, quick: bool) -> dict:
    engine_loss = float(HessianOperator(model, data).mean_loss())
    report: dict = {
        "threads_per_side": int(os.environ.get("BENCHMARK_THREADS_USED", "2")),
        "parameters": int(model.count_params()),
        "examples": len(data[0]),
        "rounds": rounds,
        "loss": {"engine": engine_loss, "torch": torch_side.hello["loss"]},
        "torch_parameters": torch_side.hello["parameters"],
    }
    print(f"loss: keras {engine_loss:.6f}, torch {torch_side.hello['loss']:.6f}", flush=True)
    ref = references(model, data)
    report["reference"] = {k: v for k, v in ref.items() if not k.startswith("density")}
    print(f"references: {report['reference']}", flush=True)
    tasks = ["top1", "top3", "trace", "trace_budget", "trace_matched", "density", "density_batched"]
    runs: dict = {side: {t: [] for t in tasks} for side in ("engine", "pyhessian")}
    operators: dict = {}  # round 0 builds one per task (cold: construction and tracing timed); later rounds reuse it
    last_density: dict = {}
    for r in range(rounds):
        for name in tasks:
            seed = 1000 * r + tasks.index(name)
            start = time.perf_counter()
            if name not in operators:
                operators[name] = HessianOperator(model, data)
            built = time.perf_counter() - start
            # trace_budget: the engine given the products PyHessian's default run took this round.
            budget = runs["pyhessian"]["trace"][-1]["products"] if name == "trace_budget" else None
            engine = engine_task(operators[name], name, seed, 100, budget=budget)
            engine["seconds"] += built
            needed = None
            if name == "density_batched":  # against the same PyHessian density run
                peer = dict(last_density)
            elif name == "trace_budget":  # against this round's PyHessian default trace run
                peer = dict(runs["pyhessian"]["trace"][-1])
            elif name == "trace_matched":
                torch_task, needed = matched_trace_task(runs["pyhessian"]["trace"], seed)
            else:
                torch_task = {"name": name, "seed": seed}
            if name not in ("density_batched", "trace_budget"):
                peer = torch_side.run(torch_task)
            if name == "density":
                last_density = dict(peer)
            if needed is not None and needed > peer["products"]:
                per_probe = (peer["seconds"] - peer["setup_seconds"]) / peer["products"]
                peer.update(measured_seconds=peer["seconds"], measured_products=peer["products"], projected=True)
                peer["seconds"] = peer["setup_seconds"] + needed * per_probe
                peer["products"] = needed
            for side, result in (("engine", engine), ("pyhessian", peer)):
                result["error"] = errors(name, result, ref)
                if name.startswith("density"):  # the trace its mean implies, against the reference trace
                    implied = report["parameters"] * float(np.dot(result["nodes"], result["weights"]))
                    result["implied_trace_error"] = abs(implied - ref["trace"]) / abs(ref["trace"])
                if result.get("projected"):
                    # The capped run's own error; all n probes give a 1% standard error by construction.
                    result["measured_error"], result["error"] = result["error"], 1e-2
                runs[side][name].append({k: v for k, v in result.items() if k not in ("nodes", "weights", "samples")})
            print(
                f"round {r} {name:14s} engine {engine['seconds']:7.2f}s {engine['products']:4d} HVPs err "
                f"{engine['error']:.2e} | pyhessian {peer['seconds']:7.2f}s {peer['products']:4d} HVPs err "
                f"{peer['error']:.2e}",
                flush=True,
            )
    report["runs"] = runs
    report["rows"] = summary(runs)
    # Three rounds give three errors per side: the trace's estimators are compared over many seeds,
    # the engine at fixed budgets (8 to 32, and the median of PyHessian's products in the rounds).
    peer_budget = int(statistics.median(e["products"] for e in runs["pyhessian"]["trace"]))
    budgets = sorted({8, 12, 16, 24, 32, peer_budget})
    print(f"trace over seeds: PyHessian's defaults against the engine at {budgets} products", flush=True)
    seeds = 2 if quick else TRACE_SEEDS
    report["trace_spread"] = trace_spread(operators["trace_budget"], torch_side, ref["trace"], seeds, budgets)
    return report


def matched_trace_task(default_runs: list, seed: int) -> tuple[dict, int]:
    """PyHessian's Hutchinson run for a 1% standard error, and the probes that takes.

    It needs n = (std of z^T H z / (0.01 * trace))^2 probes, from the spread of its default runs'
    samples; at most MATCHED_PROBES_RUN of them are run (tol=0: no early stop), and the time of
    all n is projected from their per-probe time (reported as projected)."""
    spread = [r["probe_std"] / abs(r["value"]) for r in default_runs if r.get("probe_std")]
    needed = int(np.ceil((np.mean(spread) / 1e-2) ** 2)) if spread else MATCHED_PROBES_RUN
    return {"name": "trace", "seed": seed, "max_iter": max(2, min(needed, MATCHED_PROBES_RUN)), "tol": 0.0}, needed


if __name__ == "__main__":
    arguments = parser(__doc__)
    arguments.add_argument("--rounds", type=int, default=3, help="alternated rounds (the first is cold)")
    arguments.add_argument("--threads", type=int, default=2, help="CPU threads for each side")
    arguments.add_argument("--torch-python", default=DEFAULT_TORCH_PYTHON, help="python of the torch venv")
    args = arguments.parse_args()
    os.environ["BENCHMARK_THREADS_USED"] = str(args.threads)
    run(2 if args.quick else args.rounds, args.torch_python, args.out, args.quick, args.threads)
