"""The demo's outputs: report.md (one table and a text generated from the numbers), PNGs, demo.json.

Every number of report.md is read from the result dict that demo.json also holds, so the two
cannot disagree (a test reads both). The training-history and accuracy-vs-size figures overlay
several runs, which `keras_hessian.plots` (one series per panel) does not draw; they are drawn
here with the same object-oriented matplotlib (no pyplot state, no display needed).
"""

from __future__ import annotations

import itertools
import json
import math
import os

from keras_hessian.plots import _figure  # matplotlib's Figure, never pyplot

TABLE_HEADER = ("model", "accuracy Keras", "accuracy LiteRT", "SGD iterations", "file bytes", "ratio to float",
                "LiteRT latency (ms)")
FIGURES = ("history.png", "density.png", "sensitivity.png", "accuracy_vs_size.png")


def table_cells(row: dict) -> list[str]:
    """One table row of report.md, formatted from one `result["table"]` entry."""
    return [row["label"], f"{row['keras_accuracy']:.4f}", f"{row['litert_accuracy']:.4f}", f"{row['iterations']:,}",
            f"{row['file_bytes']:,}", f"{row['size_ratio']:.3f}", f"{row['latency_ms']:.3f}"]


def write_all(result: dict, out: str) -> None:
    """history.png, accuracy_vs_size.png, report.md and demo.json into `out` (density and sensitivity are there)."""
    plot_training(result["training"], os.path.join(out, "history.png"))
    plot_accuracy_vs_size(result["table"], os.path.join(out, "accuracy_vs_size.png"))
    # The keys of the first demo (ABSA's history, the quantized model and its file), kept for its users.
    hawq_row = result["table"]["hawq"]
    result["history"] = result["training"]["absa"]["history"]
    result["quantized"] = {k: result["hawq"][k] for k in
                           ("weight_bytes", "float32_weight_bytes", "multiplications", "float32_multiplications")}
    result["tflite"] = {"file": hawq_row["file"], "litert_accuracy": hawq_row["litert_accuracy"],
                        "keras_accuracy": hawq_row["keras_accuracy"], "top1_agreement": hawq_row["top1_agreement"],
                        "file_bytes": hawq_row["file_bytes"], "latency_ms": hawq_row["latency_ms"]}
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(markdown(result))
    with open(os.path.join(out, "demo.json"), "w") as f:
        json.dump(result, f, indent=1)


def markdown(result: dict) -> str:
    """report.md's text."""
    lines = [f"# keras-hessian demo on {result['data']['name']}", ""]
    settings = result["settings"]
    lines.append(f"{result['data']['train']} training / {result['data']['test']} test examples, "
                 f"`compact_cnn`, seed {result['seed']}{', --quick' if settings['quick'] else ''}; "
                 f"run time {result['seconds']['total']:.0f} s. Accuracies are on the test split.")
    lines += ["", "| " + " | ".join(TABLE_HEADER) + " |", "|---|" + "---:|" * (len(TABLE_HEADER) - 1)]
    lines += ["| " + " | ".join(table_cells(row)) + " |" for row in result["table"].values()]
    lines += ["", ("SGD iterations: optimizer steps behind the model (training, plus any fine-tuning on top); "
                   "ratio: file bytes over the float32 ABSA file."), "", "## What happened", ""]
    lines += [f"- {sentence}" for sentence in story(result)]
    lines += ["", "## Figures", ""]
    lines += [f"![{name[:-4]}]({name})" for name in FIGURES]
    return "\n".join(lines) + "\n"


def story(result: dict) -> list[str]:
    """The report's sentences, each generated from the run's numbers."""
    training, spectrum, hawq, pruning, table = (result[k] for k in ("training", "spectrum", "hawq", "pruning", "table"))
    settings = result["settings"]
    fixed, absa = training["baseline"], training["absa"]
    sizes = absa["history"]["batch_size"]
    eigen = [v for v in absa["history"]["hessian/top_eigenvalue"] if math.isfinite(v)]
    fewer = fixed["iterations"] / max(absa["iterations"], 1)
    sentences = [
        f"Training, {settings['epochs']} epochs each: the fixed batch of {settings['base_batch_size']} took "
        f"{fixed['iterations']:,} SGD iterations to {fixed['test_accuracy']:.4f} test accuracy; ABSA took "
        f"{absa['iterations']:,} ({fewer:.2f}x fewer) to {absa['test_accuracy']:.4f}. ABSA's batch "
        f"{_path(sizes)} while its top Hessian eigenvalue went from {eigen[0]:.4g} to {eigen[-1]:.4g}."
        if eigen else "ABSA measured no eigenvalue",
    ]
    layers = [r for r in spectrum["layers"] if r["trace_per_weight"] is not None]
    steep = max(layers, key=lambda r: r["trace_per_weight"])
    flat = min(layers, key=lambda r: r["trace_per_weight"])
    sentences.append(
        f"Spectrum of the ABSA model on {spectrum['examples']} training examples: top eigenvalues "
        f"{', '.join(f'{v:.4g}' for v in spectrum['top_eigenvalues'])}; per kernel weight, layer {steep['block']} is "
        f"the most curved (average trace {steep['trace_per_weight']:.3g}) and {flat['block']} the flattest "
        f"({flat['trace_per_weight']:.3g}); the density's Ritz values span {spectrum['density']['smallest_node']:.3g} "
        f"to {spectrum['density']['largest_node']:.4g}, its trace is {spectrum['density']['trace']:.4g}.")
    chosen = ", ".join(f"{layer} {precision}" for layer, precision in hawq["precisions"].items())
    sentences.append(
        f"HAWQ at {settings['budget']:g} x float32 weight bytes: {chosen} ({hawq['size_ratio']:.3f} x planned); "
        f"accuracy {hawq['post_training_accuracy']:.4f} right after quantization, {hawq['fine_tuned_accuracy']:.4f} "
        f"after {hawq['fine_tune_epochs']} fine-tune epoch(s); its file is {table['hawq']['size_ratio']:.3f} x the "
        f"float one.")
    both = pruning["pruned_quantized"]
    sentences.append(
        f"OBD pruning to {pruning['target_sparsity']:g} sparsity ({pruning['fine_tune_iterations']:,} fine-tune "
        f"steps) reached {pruning['sparsity']:.3f} at {pruning['accuracy']:.4f} accuracy; stored sparse its file is "
        f"{table['pruned']['size_ratio']:.3f} x the float one. Its own HAWQ plan "
        f"({', '.join(f'{k} {v}' for k, v in both['precisions'].items())}) keeps {both['sparsity']:.3f} of the "
        f"weights zero; accuracy {both['post_training_accuracy']:.4f} right after quantization, "
        f"{both['accuracy']:.4f} after {both['fine_tune_epochs']} fine-tune epoch(s) with the zeros held, in a file "
        f"{table['pruned_quantized']['size_ratio']:.3f} x the float one (dense storage: the planned widths "
        f"and sparse storage do not combine).")
    agreement = [row["top1_agreement"] for row in table.values()]
    smallest = min(table.values(), key=lambda row: row["file_bytes"])
    fastest = min(table.values(), key=lambda row: row["latency_ms"])
    sentences.append(
        f"LiteRT agrees with Keras on the top-1 class of {100 * min(agreement):.1f}-{100 * max(agreement):.1f}% of "
        f"the test examples; the smallest file is {smallest['label']} ({smallest['file_bytes']:,} bytes), the "
        f"fastest {fastest['label']} ({fastest['latency_ms']:.3f} ms per example).")
    return sentences


def _path(sizes: list) -> str:
    steps = [int(sizes[0])] + [int(b) for a, b in itertools.pairwise(sizes) if b != a]
    return f"stayed at {steps[0]}" if len(steps) == 1 else "went " + " -> ".join(str(s) for s in steps)


def plot_training(training: dict, path: str) -> str:
    """Top eigenvalue, batch size, learning rate and test accuracy per epoch, fixed batch vs ABSA."""
    import numpy as np

    panels = (("hessian/top_eigenvalue", "top eigenvalue"), ("batch_size", "batch size"),
              ("learning_rate", "learning rate"), ("val_accuracy", "test accuracy"))
    fig = _figure(figsize=(6, 8))
    axes = fig.subplots(len(panels), 1, sharex=True)
    for ax, (key, label) in zip(axes, panels):
        for method, name in (("baseline", "fixed batch"), ("absa", "ABSA")):
            values = np.asarray(training[method]["history"].get(key, []), dtype=float)
            epochs = np.arange(1, len(values) + 1)
            keep = np.isfinite(values)
            ax.plot(epochs[keep], values[keep], marker="o", label=name)
        ax.set_ylabel(label, fontsize="small")
    axes[0].set_yscale("log")
    axes[1].set_yscale("log", base=2)
    axes[0].legend(fontsize="small")
    axes[-1].set_xlabel("epoch")
    axes[0].set_title("ABSA beside a fixed batch")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_accuracy_vs_size(table: dict, path: str) -> str:
    """LiteRT test accuracy against file bytes, one labelled point per exported model."""
    fig = _figure(figsize=(6, 4))
    ax = fig.subplots()
    for n, row in enumerate(table.values()):
        ax.scatter(row["file_bytes"], row["litert_accuracy"], color=f"C{n}", label=row["label"])
    ax.set_xscale("log")
    ax.set_xlabel("TFLite file bytes")
    ax.set_ylabel("LiteRT test accuracy")
    ax.legend(fontsize="small")
    ax.set_title("Accuracy vs file size")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
