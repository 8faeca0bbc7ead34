"""The torch side of `benchmarks/vs_pyhessian.py`: PyHessian on the PyTorch twin of the Keras CNN.

Runs under the torch venv's python (see vs_pyhessian.py's docstring), in its own process:
`python benchmarks/_vs_pyhessian_torch.py TWIN.npz` reads the weights and data, prints one JSON
line when ready, then answers one JSON task per stdin line with one JSON line on stdout. It
imports nothing of keras-hessian.
"""

from __future__ import annotations

import json
import os
import sys
import time


def torch_worker(npz_path: str) -> None:  # pragma: no cover - runs under the torch venv only
    """Build the twin, then answer one JSON task per stdin line with one JSON line on stdout."""
    import numpy as np
    import torch
    from torch import nn

    torch.set_num_threads(int(os.environ["BENCHMARK_THREADS"]))
    torch.set_num_interop_threads(1)

    # PyHessian 0.1's density calls torch.eig, a stub that raises since torch 2: the same values
    # from eigh (the Lanczos tridiagonal is symmetric), in torch.eig's (real, imaginary) layout.
    def eig(matrix, eigenvectors=False):
        values, vectors = torch.linalg.eigh(matrix)
        return torch.stack([values, torch.zeros_like(values)], 1), vectors

    torch.eig = eig
    import pyhessian  # noqa: F401 (its package __init__ hides the module behind the class of the same name)

    ph = sys.modules["pyhessian.hessian"]

    count = [0]
    original = ph.hessian_vector_product

    def counted(grads, params, v):
        count[0] += 1
        return original(grads, params, v)

    ph.hessian_vector_product = counted
    data = np.load(npz_path)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(1024, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.from_numpy(data[f"p{i}"]))
    x = torch.from_numpy(data["x"])
    y = torch.from_numpy(data["y"]).long()
    criterion = nn.CrossEntropyLoss()
    print(
        json.dumps(
            {
                "ready": True,
                "loss": float(criterion(model(x), y)),
                "parameters": sum(p.numel() for p in model.parameters()),
            }
        ),
        flush=True,
    )
    for line in sys.stdin:
        task = json.loads(line)
        torch.manual_seed(task.get("seed", 0))
        count[0] = 0
        model.zero_grad()
        start = time.perf_counter()
        h = ph.hessian(model, criterion, data=(x, y), cuda=False)
        setup = time.perf_counter() - start
        out: dict = {}
        if task["name"] in ("top1", "top3"):
            values, _ = h.eigenvalues(maxIter=100, tol=1e-3, top_n=1 if task["name"] == "top1" else 3)
            out["values"] = sorted(values, key=abs, reverse=True)
        elif task["name"] == "trace":
            samples = h.trace(maxIter=task.get("max_iter", 100), tol=task.get("tol", 1e-3))
            out["value"], out["samples"] = float(np.mean(samples)), [float(s) for s in samples]
            out["probe_std"] = float(np.std(samples, ddof=1)) if len(samples) > 1 else 0.0
        elif task["name"] == "density":
            nodes, weights = h.density(iter=100, n_v=1)
            out["nodes"], out["weights"] = [float(v) for v in nodes[0]], [float(v) for v in weights[0]]
        out.update(seconds=time.perf_counter() - start, setup_seconds=setup, products=count[0])
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    torch_worker(sys.argv[1])
