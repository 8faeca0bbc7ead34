"""HAWQ against its ablations: does the Hessian decide the per-layer precision better than without it?

Per dataset (digits, MNIST-1D; `keras_hessian.models.compact_cnn`), seed and size budget (a
fraction of the float32 weight bytes), one trained float model is quantized by each plan, given
the same short quantization-aware fine-tune, and exported to TFLite (LiteRT accuracy, file bytes):

- `hawq`: HAWQ-V2 sensitivity (average Hessian trace per layer), the exact ILP;
- `hawq_v1`: HAWQ-V1 sensitivity (top Hessian eigenvalue per weight), the same ILP;
- `uniform`: every planned layer at the widest single candidate that fits the budget;
- `reversed`: the ILP with the sensitivities handed out in reverse rank (the most sensitive
  layer gets the smallest one), so the most sensitive layers get the fewest bits;
- `random`: the mean of 5 plans drawn uniformly from all plans within the budget;
- `perturbation_only`: the same ILP with every sensitivity 1: what the plan does without the Hessian.

Every Dense / Conv layer is planned (no layer pinned to float32), so the first and last layers,
usually the most sensitive, are decisions too. Writes
benchmarks/results/hawq_vs_uniform.{json,md,png}.

    python benchmarks/hawq_vs_uniform.py            # full run: 2 datasets x 3 seeds x 2 budgets
    python benchmarks/hawq_vs_uniform.py --quick    # smoke run (digits, 1 seed, 1 budget)
"""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras
import numpy as np

from benchmarks._common import RESULTS, fit, input_shape, load, parser, write_results
from keras_hessian.export import evaluate_tflite, to_tflite
from keras_hessian.hawq import assign_precision, get_candidate, layer_sensitivity, planned_layers
from keras_hessian.models import compact_cnn
from keras_hessian.quantize import quantize_model

CANDIDATES = ["int8", "int4", "ternary", "binary"]
PLANS = ("hawq", "hawq_v1", "uniform", "reversed", "random", "perturbation_only")


def accuracy(model, data) -> float:
    _, (x_test, y_test) = data
    return float(np.mean(np.argmax(model.predict(x_test, batch_size=512, verbose=0), axis=-1) == y_test))


def plan_for(model, budget, sensitivity):
    return assign_precision(model, candidates=CANDIDATES, budget=budget, sensitivity=sensitivity, pin=None)


def uniform_plan(model, budget, sensitivity):
    """The widest single candidate for every free layer that fits (as a plan over the same layers)."""
    for name in CANDIDATES:  # widest first
        try:
            return assign_precision(model, candidates=[name], budget=budget, sensitivity=sensitivity, pin=None)
        except ValueError:
            continue
    return None


def reversed_sensitivity(sensitivity: dict) -> dict:
    order = sorted(sensitivity, key=lambda p: sensitivity[p])
    values = sorted(sensitivity.values(), reverse=True)
    return dict(zip(order, values))


def random_plans(model, template, budget_bytes: float, count: int, rng) -> list[tuple[dict, int]]:
    """`count` (plan, bytes) drawn uniformly from every assignment of the free layers within the budget."""
    free = [row for row in template.layers.values() if row.sensitivity is not None]
    fixed = sum(row.bytes for row in template.layers.values() if row.sensitivity is None)
    sizes = {
        names: fixed + sum(row.options[n]["bytes"] for row, n in zip(free, names))
        for names in itertools.product(*[list(row.options) for row in free])
    }
    feasible = [names for names, size in sizes.items() if size <= budget_bytes]
    picks = rng.choice(len(feasible), size=min(count, len(feasible)), replace=False)
    plans = []
    for index in picks:
        plan = {row.name: row.spec for row in template.layers.values()}
        plan.update({row.name: get_candidate(n).spec_for(model.get_layer(row.name)) for row, n in zip(free, feasible[index])})
        plans.append((plan, sizes[feasible[index]]))
    return plans


def evaluate_plan(base, plan, data, config, scratch, tag) -> dict:
    quantized = fit(quantize_model(base, plan), data, config["fine_tune_epochs"], config["fine_tune_lr"], seed=0)
    (x_train, _), (x_test, y_test) = data
    path = os.path.join(scratch, f"{tag}.tflite")
    to_tflite(quantized, path, mode="auto", representative_data=x_train[:200])
    litert = evaluate_tflite(path, (x_test, y_test))
    return {"accuracy": accuracy(quantized, data), "litert_accuracy": litert["accuracy"], "tflite_bytes": litert["file_bytes"]}


def run_seed(dataset, seed, data, config, scratch, log) -> list[dict]:
    keras.utils.set_random_seed(seed)
    base = fit(compact_cnn(input_shape(dataset)), data, config["epochs"], 3e-3, seed=seed)
    (x_train, y_train), (x_test, y_test) = data
    float_path = os.path.join(scratch, f"{dataset}_{seed}_float.tflite")
    to_tflite(base, float_path, mode="float32")
    float_row = {"plan": "float32", "budget": 1.0, "size_bytes": None, "accuracy": accuracy(base, data),
                 "litert_accuracy": evaluate_tflite(float_path, (x_test, y_test))["accuracy"],
                 "tflite_bytes": os.path.getsize(float_path)}
    hessian_data = (x_train[: config["hessian_examples"]], y_train[: config["hessian_examples"]])
    started = time.perf_counter()
    free = [p for p, _ in planned_layers(base)]
    traces = layer_sensitivity(base, hessian_data, "trace", layers=free, seed=seed, max_iter=config["max_iter"])
    tops = layer_sensitivity(base, hessian_data, "top_eigenvalue", layers=free, seed=seed)
    hessian_seconds = time.perf_counter() - started
    trace_values = {p: s.sensitivity for p, s in traces.items()}
    rows = [{**float_row, "hessian_seconds": hessian_seconds, "sensitivity": trace_values}]
    rng = np.random.default_rng(seed)
    for budget in config["budgets"]:
        plans = {
            "hawq": plan_for(base, budget, trace_values),
            "hawq_v1": plan_for(base, budget, {p: s.sensitivity for p, s in tops.items()}),
            "uniform": uniform_plan(base, budget, trace_values),
            "reversed": plan_for(base, budget, reversed_sensitivity(trace_values)),
            "perturbation_only": plan_for(base, budget, "uniform"),
        }
        for name, plan in plans.items():
            if plan is None:
                log(f"{dataset} seed {seed} budget {budget}: no uniform candidate fits")
                continue
            result = evaluate_plan(base, plan, data, config, scratch, f"{dataset}_{seed}_{budget}_{name}")
            rows.append({"plan": name, "budget": budget, "size_bytes": plan.predicted_bytes,
                         "float32_bytes": plan.float32_bytes, "precisions": plan.precisions, **result})
            log(f"{dataset} seed {seed} budget {budget:.3f} {name:18s} acc {result['accuracy']:.4f} "
                f"litert {result['litert_accuracy']:.4f} bytes {plan.predicted_bytes} file {result['tflite_bytes']}")
        draws = random_plans(base, plans["hawq"], budget * plans["hawq"].float32_bytes, config["random_plans"], rng)
        results = [evaluate_plan(base, p, data, config, scratch, f"{dataset}_{seed}_{budget}_random{i}")
                   for i, (p, _) in enumerate(draws)]
        sizes = [size for _, size in draws]
        rows.append({"plan": "random", "budget": budget, "size_bytes": statistics.mean(sizes),
                     "float32_bytes": plans["hawq"].float32_bytes,
                     "accuracy": statistics.mean(r["accuracy"] for r in results),
                     "litert_accuracy": statistics.mean(r["litert_accuracy"] for r in results),
                     "tflite_bytes": statistics.mean(r["tflite_bytes"] for r in results), "draws": len(draws)})
        log(f"{dataset} seed {seed} budget {budget:.3f} random (mean of {len(draws)}) acc {rows[-1]['accuracy']:.4f}")
    return rows


def aggregate(records: list[dict], dataset: str) -> list[dict]:
    rows = []
    keys = sorted({(r["plan"], r["budget"]) for r in records}, key=lambda k: (-k[1], PLANS.index(k[0]) if k[0] in PLANS else -1))
    for plan, budget in keys:
        group = [r for r in records if (r["plan"], r["budget"]) == (plan, budget)]
        accuracies = [r["accuracy"] for r in group]
        rows.append({
            "plan": plan, "budget": budget, "dataset": dataset,
            "size_bytes": None if group[0]["size_bytes"] is None else statistics.mean(r["size_bytes"] for r in group),
            "float32_bytes": group[0].get("float32_bytes"),
            "tflite_bytes": statistics.mean(r["tflite_bytes"] for r in group),
            "accuracy_mean": statistics.mean(accuracies),
            "accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "litert_accuracy": statistics.mean(r["litert_accuracy"] for r in group),
            "seeds": len(group),
        })
    return rows


def markdown(rows: list[dict], config: dict) -> str:
    lines = [
        "# HAWQ vs its ablations (benchmarks/hawq_vs_uniform.py" + (" --quick)" if config["quick"] else ")"),
        "",
        (f"compact_cnn, {config['seeds']} seed(s), candidates {', '.join(CANDIDATES)} for every layer, "
        f"fine-tune {config['fine_tune_epochs']} epoch(s) at lr {config['fine_tune_lr']} for every plan. "
        "Accuracy: Keras, test split, mean +- std over seeds; LiteRT: the exported file."),
        "",
        "| dataset | budget (x float32 bytes) | plan | weight bytes | file bytes | accuracy | LiteRT acc | vs hawq |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        reference = next((r for r in rows if r["dataset"] == row["dataset"] and r["budget"] == row["budget"]
                          and r["plan"] == "hawq"), None)
        delta = "" if reference is None or row["plan"] in ("hawq", "float32") else \
            f"{100 * (row['accuracy_mean'] - reference['accuracy_mean']):+.2f}"
        size = "" if row["size_bytes"] is None else f"{row['size_bytes']:,.0f}"
        lines.append(
            f"| {row['dataset']} | {row['budget']:.3f} | {row['plan']} | {size} | {row['tflite_bytes']:,.0f} | "
            f"{100 * row['accuracy_mean']:.2f} +- {100 * row['accuracy_std']:.2f} | {100 * row['litert_accuracy']:.2f} "
            f"| {delta} |"
        )
    lines += ["", "Reading (computed from the rows above):", ""]
    for dataset in sorted({r["dataset"] for r in rows}):
        for budget in sorted({r["budget"] for r in rows if r["dataset"] == dataset and r["plan"] != "float32"}):
            group = {r["plan"]: r for r in rows if r["dataset"] == dataset and r["budget"] == budget}
            hawq = group["hawq"]
            same = [p for p in ("reversed", "perturbation_only") if p in group
                    and group[p]["size_bytes"] == hawq["size_bytes"] and group[p]["accuracy_mean"] == hawq["accuracy_mean"]]
            beaten = [p for p, r in group.items() if p != "hawq" and hawq["accuracy_mean"] - r["accuracy_mean"] > 0.005]
            verdict = (
                f"the Hessian did not change the plan: {' and '.join(same)} chose the same precisions"
                if same else "the Hessian changed the plan"
            )
            lines.append(
                f"- {dataset} at {budget:.3f}: {verdict}; HAWQ is more than 0.5 points above "
                f"{', '.join(beaten) if beaten else 'no other plan'}."
            )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path) -> None:
    from matplotlib.figure import Figure

    datasets = sorted({r["dataset"] for r in rows})
    fig = Figure(figsize=(6 * len(datasets), 4))
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    markers = dict(zip(("float32", *PLANS), "*osD^vx"))
    for ax, dataset in zip(axes, datasets):
        for plan in ("float32", *PLANS):
            group = sorted((r for r in rows if r["dataset"] == dataset and r["plan"] == plan), key=lambda r: r["tflite_bytes"])
            if group:
                ax.errorbar([r["tflite_bytes"] for r in group], [100 * r["accuracy_mean"] for r in group],
                            yerr=[100 * r["accuracy_std"] for r in group], marker=markers[plan], capsize=3,
                            linestyle="-" if plan == "hawq" else "none", label=plan)
        ax.set_xscale("log")
        ax.set_xlabel("TFLite file bytes")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset}: accuracy vs size")
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    args_parser = parser(__doc__)
    args_parser.add_argument("--seeds", type=int, default=3)
    args_parser.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    args = args_parser.parse_args(argv)
    config = {"quick": args.quick, "seeds": 1 if args.quick else args.seeds, "epochs": 2 if args.quick else 12,
              "fine_tune_epochs": 1 if args.quick else 2, "fine_tune_lr": 1e-3,
              "budgets": [0.15] if args.quick else [0.15, 0.11], "random_plans": 2 if args.quick else 5,
              "hessian_examples": 128 if args.quick else 512, "max_iter": 64 if args.quick else 400,
              "candidates": CANDIDATES}
    datasets = ["digits"] if args.quick else args.datasets
    started = time.time()
    rows, records_all = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for dataset in datasets:
            data = load(dataset, args.quick)
            records = []
            for seed in range(config["seeds"]):
                records.extend(run_seed(dataset, seed, data, config, scratch, lambda m: print(m, flush=True)))
            rows.extend(aggregate(records, dataset))
            records_all.extend({**r, "dataset": dataset} for r in records)
    config["seconds"] = round(time.time() - started, 1)
    table = markdown(rows, config)
    print(table)
    written = write_results("hawq_vs_uniform", {"rows": rows, "runs": records_all, "config": config},
                            args.out if args.out is not None else RESULTS, table)
    plot(rows, written.with_suffix(".png"))
    return {"rows": rows, "config": config}


if __name__ == "__main__":
    main()
