"""ABSA (AdaptiveBatchSize + AdversarialAugmentation) in `model.fit` on N worker processes.

Each worker is one process holding one replica of a `tf.distribute.MultiWorkerMirroredStrategy`;
the workers find each other through `TF_CONFIG`. Run as is, this script is the launcher: it picks
free ports on 127.0.0.1, starts N workers (default 2) of itself with their `TF_CONFIG`, waits for
them, kills them all if one fails or the time runs out, and prints the batch-size schedule, the
learning rates and the measured top Hessian eigenvalues every worker logged (they must agree).

    python examples/multiworker_absa.py                 # 2 workers on loopback, digits, 8 epochs
    python examples/multiworker_absa.py --workers 3
    python examples/multiworker_absa.py --quick          # 512 examples, 3 epochs (what the test runs)

On several machines, start ONE worker per machine yourself, the same command everywhere, each
with its own `TF_CONFIG` (same cluster list, its own index; index 0 is the chief):

    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},
                "task": {"type": "worker", "index": 0}}' python examples/multiworker_absa.py --worker

`--single` runs the same training on this process's devices without a strategy: the reference
a distributed run must reproduce (same seeds: same schedule, same eigenvalues up to float sums).

The data are scikit-learn's digits (embedded, no download); the batch size is the GLOBAL batch,
split across the replicas by tf.distribute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT = "RESULT "  # prefix of the one stdout line a worker prints its result on


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes to start on 127.0.0.1")
    parser.add_argument("--quick", action="store_true", help="512 examples, 3 epochs")
    parser.add_argument("--epochs", type=int, default=None, help="default 8 (3 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=None, help="seconds before the workers are killed")
    parser.add_argument("--json", default=None, help="also write the workers' results to this file")
    parser.add_argument("--worker", action="store_true", help="be one worker (TF_CONFIG set)")
    parser.add_argument("--single", action="store_true", help="train on this process only, no strategy")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1. Received --workers={args.workers}.")
    if args.epochs is None:
        args.epochs = 3 if args.quick else 8
    if args.timeout is None:
        args.timeout = 240.0 if args.quick else 900.0
    return args


def train(args: argparse.Namespace, strategy=None) -> dict:
    """Fit a small MLP on digits with ABSA (and HessianSpectrum on held-out digits); the logged schedule."""
    import keras

    from keras_hessian.callbacks import (
        AdaptiveBatchSize,
        AdversarialAugmentation,
        HessianSpectrum,
        prepare_multi_worker,
    )
    from keras_hessian.data import adaptive_dataset, load_digits
    from keras_hessian.models import small_mlp

    (x, y), (x_test, y_test) = load_digits(image=False)
    if args.quick:
        x, y = x[:512], y[:512]
    keras.utils.set_random_seed(args.seed)  # every worker builds the same initial weights
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = small_mlp(hidden=16)
        model.compile(
            keras.optimizers.SGD(0.05, momentum=0.9),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        # Keras 3.15's fit fails under several workers without it (a no-op otherwise).
        prepare_multi_worker(model)
    abs_callback = AdaptiveBatchSize(
        (x[:256], y[:256]), initial_batch_size=32, max_batch_size=512,
        patience=None,  # the eigenvalue alone grows the batch
        drop_ratio=1.05, max_physical_batch_size=16, method="lanczos", max_iter=20, tol=1e-4, seed=args.seed,
    )
    absa = AdversarialAugmentation(epsilon=0.05, ratio=0.25)
    spectrum = HessianSpectrum((x_test[:256], y_test[:256]), max_iter=20, tol=1e-4, seed=args.seed)
    history = model.fit(
        adaptive_dataset(x, y, seed=args.seed),  # same seed on every worker: same global batches
        epochs=args.epochs, verbose=0, shuffle=False, callbacks=[abs_callback, absa, spectrum],
    )
    return {
        "shard": first_share(strategy, adaptive_dataset(x, y, batch_size=32, shuffle=False)),
        "replicas": 1 if strategy is None else int(strategy.num_replicas_in_sync),
        "batch_size": [int(b) for b in history.history["batch_size"]],
        "learning_rate": [float(v) for v in history.history["learning_rate"]],
        "eigenvalue": [row["eigenvalue"] for row in abs_callback.history],
        "trigger": [row["trigger"] for row in abs_callback.history],
        "adversarial_ratio": [float(v) for v in history.history["adversarial/ratio"]],
        "test_eigenvalue": [float(v) for v in spectrum.history["hessian/top_eigenvalue"]],
        "loss": [float(v) for v in history.history["loss"]],
        "accuracy": [float(v) for v in history.history["accuracy"]],
    }


def first_share(strategy, dataset) -> dict:
    """This worker's part of the first global batch as tf.distribute hands it out: sizes per replica, sum."""
    import numpy as np

    if strategy is None:
        parts = [next(iter(dataset))[0]]
    else:
        parts = [p[0] for p in strategy.experimental_local_results(next(iter(strategy.experimental_distribute_dataset(dataset))))]
    return {
        "replica_examples": [int(np.shape(p)[0]) for p in parts],
        "x_sum": float(sum(np.sum(np.asarray(p, np.float64)) for p in parts)),
    }


def worker(args: argparse.Namespace) -> None:
    """One worker: MultiWorkerMirroredStrategy from TF_CONFIG, ABSA, the result on one stdout line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if args.single:
        strategy = None
    else:
        if "TF_CONFIG" not in os.environ:
            sys.exit("--worker needs TF_CONFIG (the cluster and this worker's index); see the module docstring.")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    result = train(args, strategy)
    result["task"] = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0)
    print(RESULT + json.dumps(result), flush=True)


def free_ports(count: int) -> list[int]:
    """`count` distinct ports the OS reports free on 127.0.0.1 (held open together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def launch(args: argparse.Namespace, command=None, started: list | None = None) -> list[dict]:
    """Start `args.workers` workers on loopback, wait, and return their results (task order).

    Every worker runs in its own process group, killed in `finally` whatever happened (a worker
    that failed leaves the others waiting for it in a collective forever otherwise); the first
    failure or `args.timeout` ends the wait. `command(index)`: a worker's argv (default: this
    script with `--worker`); `started` collects `(pid, port)` of each worker.
    """
    ports = free_ports(args.workers)
    cluster = [f"127.0.0.1:{port}" for port in ports]
    passed = ["--epochs", str(args.epochs), "--seed", str(args.seed)] + (["--quick"] if args.quick else [])
    if command is None:
        def command(index):
            return [sys.executable, os.path.abspath(__file__), "--worker", *passed]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [ROOT, os.environ.get("PYTHONPATH")] if p))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    processes, logs, outputs = [], [], []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as files:
        try:
            for index in range(args.workers):
                config = {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
                log = files.enter_context(open(os.path.join(tmp, f"worker{index}.log"), "w+"))  # no pipe to fill
                logs.append(log)
                processes.append(
                    subprocess.Popen(
                        command(index),
                        env=dict(env, TF_CONFIG=json.dumps(config)), stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
                if started is not None:
                    started.append((processes[-1].pid, ports[index]))
            deadline = time.monotonic() + args.timeout
            while any(p.poll() is None for p in processes):
                failed = [i for i, p in enumerate(processes) if p.returncode not in (None, 0)]
                if failed or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            outputs = []
            for log in logs:
                log.seek(0)
                outputs.append(log.read())
        finally:
            for p in processes:  # the whole group, also what a finished worker may have left
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    results = []
    for index, (p, output) in enumerate(zip(processes, outputs)):
        lines = [line for line in output.splitlines() if line.startswith(RESULT)]
        if p.returncode != 0 or not lines:
            tails = "\n".join(f"--- worker {i} (exit {q.returncode}) ---\n{o[-3000:]}" for i, (q, o) in
                              enumerate(zip(processes, outputs)))
            raise RuntimeError(f"worker {index} failed (exit code {p.returncode}, timeout {args.timeout} s):\n{tails}")
        results.append(json.loads(lines[-1][len(RESULT):]))
    return results


def report(results: list[dict]) -> str:
    """The schedule as a table: one row per epoch, the chief's values, and whether all workers agree."""
    chief = results[0]
    lines = [
        f"{len(results)} worker(s), {chief['replicas']} replica(s) in sync",
        "epoch  batch  learning_rate  eigenvalue  trigger     adv_ratio  held-out eigenvalue  loss",
    ]
    for epoch, batch in enumerate(chief["batch_size"]):
        eigenvalue = chief["eigenvalue"][epoch]
        lines.append(
            f"{epoch:5d}  {batch:5d}  {chief['learning_rate'][epoch]:13.5g}  "
            f"{'-' if eigenvalue is None else f'{eigenvalue:.6g}':>10}  {chief['trigger'][epoch] or '-':10}  "
            f"{chief['adversarial_ratio'][epoch]:9.4g}  {chief['test_eigenvalue'][epoch]:19.6g}  "
            f"{chief['loss'][epoch]:.4f}"
        )
    same = all(r["batch_size"] == chief["batch_size"] and r["eigenvalue"] == chief["eigenvalue"] for r in results)
    lines.append("all workers logged the same schedule and eigenvalues" if same else "WORKERS DISAGREE")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker or args.single:
        sys.path.insert(0, ROOT)
        worker(args)
        return 0
    results = launch(args)
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
