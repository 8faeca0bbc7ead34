"""The markdown of `benchmarks/real_models.py`: engine, streaming, embedding, fit and quantization tables."""

from __future__ import annotations

from keras_hessian.hessian.algorithms.layer_table import LayerTable

# BERT-base's vocabulary, the wide case of the embedding table.
WIDE_VOCABULARY = 30522


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.2f}"


def _f(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def markdown(payload: dict) -> str:
    lines = [
        "# Real architectures: engine cost and quantized exports",
        "",
        f"One batch of {payload['batch']} examples; memory is the TensorFlow CPU (BFC) allocator's peak during",
        "one call above what was live before it (`tf.config.experimental.get_memory_info`), host arrays not counted.",
        "",
        (
            "| architecture | parameters | train ms f32 | train ms bf16 | bf16 speed-up | gradient ms | HVP ms "
            "| HVP/grad | grad peak MB | HVP peak MB | top-1 s (HVPs) | layer blocks |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in payload["engine"].items():
        if "error" in row:
            lines.append(f"| {name} | error: {row['error']} |" + " |" * 10)
            continue
        lines.append(
            f"| {name} | {row['parameters']:,} | {row['train_step_ms_float32']:.1f} | "
            f"{row['train_step_ms_mixed_bfloat16']:.1f} | {row['bfloat16_speedup']:.2f}x | {row['gradient_ms']:.1f} | "
            f"{row['hvp_ms']:.1f} | {row['hvp_over_gradient']:.2f} | {_mb(row['gradient_peak_bytes'])} | "
            f"{_mb(row['hvp_peak_bytes'])} | {row['top1_seconds']:.1f} ({row['top1_hvps']}) | {row['layer_blocks']} |"
        )
    lines += [
        "",
        (
            "`cache=False` streaming over 2 and 8 batches: MB the operator holds once built, and its HVP's peak"
            " (`cache=True` beside it):"
        ),
        "",
        (
            "| architecture | batch MB | streamed held 2 / 8 | streamed HVP peak 2 / 8 | cached held 2 / 8 "
            "| cached HVP peak 2 / 8 |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for name, row in payload["engine"].items():
        s = row.get("streaming")
        if s:
            cells = [
                f"{_mb(s[f'{kind}_2_batches'][measure])} / {_mb(s[f'{kind}_8_batches'][measure])}"
                for kind in ("streamed", "cached")
                for measure in ("held_bytes", "hvp_peak_bytes")
            ]
            lines.append(f"| {name} | {_mb(s['batch_bytes'])} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Embedding gradients (`IndexedSlices`): HVP kept sparse vs scattered to dense:",
        "",
        "| architecture | vocabulary | sparse ms | dense ms | dense/sparse | sparse peak MB | dense peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in payload["engine"].items():
        for key, vocabulary in (("indexed_slices", "17"), ("indexed_slices_wide_vocabulary", f"{WIDE_VOCABULARY:,}")):
            s = row.get(key)
            if s:
                lines.append(
                    f"| {name} | {vocabulary} | {s['sparse']['hvp_ms']:.1f} | {s['dense']['hvp_ms']:.1f} | "
                    f"{s['dense_over_sparse_ms']:.2f} | {_mb(s['sparse']['hvp_peak_bytes'])} | "
                    f"{_mb(s['dense']['hvp_peak_bytes'])} |"
                )
    lines += [
        "",
        "`model.fit` (one epoch) with `HessianSpectrum(top_k=1)`:",
        "",
        "| architecture | examples | fit s | spectrum s | logged top eigenvalue |",
        "|---|---|---|---|---|",
    ]
    for name, row in payload["engine"].items():
        f = row.get("fit_with_spectrum")
        if f:
            lines.append(
                f"| {name} | {f['examples']} | {f['seconds']:.1f} | {f['spectrum_seconds']:.1f} | {f['top_eigenvalue']:.4g} |"
            )
    for name, row in payload["engine"].items():
        if row.get("per_block"):
            lines += ["", f'Per-block spectrum of {name} (`blocks="layer"`, {row["per_block_seconds"]:.0f} s):', ""]
            lines.append(LayerTable(row["per_block"]).markdown())
    if payload.get("quantization"):
        lines += [
            "",
            (
                "Quantization schemes (BatchNorm folded, then a short fine-tune; `to_tflite` mode auto; LiteRT "
                "top-1 agreement with Keras and batch-1 latency; layers quantized / kept float from the QuantizeReport):"
            ),
            "",
            (
                "| architecture | scheme | layers quantized / float | Keras acc | TFLite / float | LiteRT acc | "
                "LiteRT agreement | LiteRT ms | error |"
            ),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, schemes in payload["quantization"].items():
            for scheme, row in schemes.items():
                error = row.get("error", "").replace("|", "/").replace("\n", " ")
                counts = f"{row['quantized_layers']} / {row['float_layers']}" if "quantized_layers" in row else "-"
                lines.append(
                    f"| {name} | {scheme} | {counts} | {_f(row.get('keras_accuracy'))} | {_f(row.get('size_ratio'))} | "
                    f"{_f(row.get('litert_accuracy'))} | {_f(row.get('litert_agreement'))} | "
                    f"{_f(row.get('litert_latency_ms'))} | {error[:160]} |"
                )
    return "\n".join(lines) + "\n"
