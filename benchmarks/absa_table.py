"""The ABSA table (Yao et al., arXiv 1810.01021) at small scale on MNIST-1D, with the timer-only frontier.

Rows (`benchmarks/_absa_rows.py`): fixed base batch, fixed large batch, FB (Goyal et al.), GG
(Smith et al.), ABS, ABSA (the original six); `TimerBatchSize(every=k)` for k = 1, 2, 3, 4, 6 (the
batch doubles on a timer, no Hessian); ABS and ABSA with the duration rule off at drop ratios 2 and
1.5 and with patience 4 and 8. Each trains inside ONE model.fit on an adaptive dataset. Two
settings: `easy` (the strided CNN of the original table) and `hard` (more examples, a ResNet-style
1-D net). Columns: test accuracy and SGD iterations (mean, std over seeds), wall time and its split
(compute, Hessian, batch-size change, accumulation), increases by eigenvalue / by patience, HVPs
per check (first vs later checks: random vs warm start), the place against the timer frontier.

Writes benchmarks/results/absa_table.{md,json,png} and absa_frontier.png. The json keeps the
original layout (`rows`, `config`, `histories`: the original six rows of the first setting run) and
adds `settings: {name: {config, rows, histories}}` with all rows. Finished runs go to a resumable
cache (`--cache`, default /tmp/absa_table_cache.jsonl, keyed by setting, row, seed and config),
so a rerun skips them; `--report-only` writes the results from the cache without training.

    nice -n 10 python benchmarks/absa_table.py --setting both   # full run (about 45 min on 2 shared cores)
    python benchmarks/absa_table.py --quick                      # smoke run, used by the test suite
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._absa_report import HEADLINE, plot_frontier, plot_schedules, setting_markdown
from benchmarks._absa_rows import BASELINE_LABELS, make_rows, run_one, summarise
from benchmarks._common import parser as _parser
from benchmarks._common import write_results
from keras_hessian.data import load_mnist1d

COMMON = {
    "lr": 0.05, "base_batch": 128, "large_batch": 4096, "max_physical_batch": 1024, "lr_decay": 0.2,
    "epsilon": 0.02, "adversarial_ratio": 0.2, "patience": 2, "check_every": 2, "lr_scaling": "sqrt",
    "hvp_method": None, "hessian_examples": 256, "hessian_iterations": 10, "hessian_tol": 1e-2,
}
SETTINGS = {
    "easy": {"model": "strided_cnn (15,914 parameters)", "samples": 20000, "epochs": 16,
             "lr_milestones": [8, 12], "warmup_epochs": 3},
    "hard": {"model": "resnet1d (2 residual blocks, 46,826 parameters)", "samples": 30000, "epochs": 12,
             "lr_milestones": [6, 9], "warmup_epochs": 3},
}
QUICK = {"samples": 1000, "epochs": 2, "large_batch": 256, "max_physical_batch": 128, "lr_milestones": [1],
         "warmup_epochs": 1, "patience": 1, "check_every": 1, "hessian_examples": 64}


def setting_config(name: str, args) -> dict:
    config = {**COMMON, **SETTINGS[name]}
    if args.quick:
        config.update(QUICK)
    for item in args.set:
        key, value = item.split("=", 1)
        if key not in config:
            raise SystemExit(f"--set: unknown setting {key!r}; known: {sorted(config)}")
        config[key] = json.loads(value)
    if args.epochs is not None:
        config["epochs"] = args.epochs
    if args.samples is not None:
        config["samples"] = args.samples
    config["seeds"] = list(range(args.seeds))
    return config


def _run_key(setting: str, row: str, seed: int, config: dict) -> str:
    fixed = {k: v for k, v in config.items() if k not in ("seeds", "train", "test")}
    digest = hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:12]
    return f"{setting}|{row}|{seed}|{digest}"


def _load_cache(path: str | None) -> dict:
    if not path or not os.path.exists(path):
        return {}
    cache = {}
    with open(path) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: that run is redone
                continue
            cache[entry["key"]] = entry["run"]
    return cache


def main(argv=None) -> dict:
    parser = _parser(__doc__)
    parser.add_argument("--setting", choices=("easy", "hard", "both"), default="easy")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--samples", type=int, default=None, help="MNIST-1D examples, train + test")
    parser.add_argument("--rows", "--methods", dest="rows", default=None,
                        help="comma-separated row keys (default: all 19; the original six: " + ",".join(BASELINE_LABELS) + ")")
    parser.add_argument("--cache", default=None, help="resumable json-lines cache of finished runs "
                        "(default /tmp/absa_table_cache.jsonl; none with --quick)")
    parser.add_argument("--report-only", action="store_true", help="write the results from the cache, train nothing")
    parser.add_argument("--note", default="", help="a sentence for the markdown (e.g. the machine and its load)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set lr=0.05 --set patience=2")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = 1
    cache_path = args.cache if args.cache is not None else (None if args.quick else "/tmp/absa_table_cache.jsonl")
    cache = _load_cache(cache_path)

    names = ["easy", "hard"] if args.setting == "both" else [args.setting]
    configs, data, rows_of = {}, {}, {}
    for name in names:
        configs[name] = config = setting_config(name, args)
        rows = make_rows(config)
        if args.rows:
            wanted = args.rows.split(",")
            unknown = sorted(set(wanted) - {r["key"] for r in rows})
            if unknown:
                raise SystemExit(f"--rows: unknown rows {unknown}; known: {[r['key'] for r in rows]}")
            rows = [r for r in rows if r["key"] in wanted]
        rows_of[name] = rows
        if args.report_only:  # nothing to train: the generator's split without generating
            config["train"] = int(config["samples"] * 0.8)
            config["test"] = config["samples"] - config["train"]
            continue
        # The generator's own 80 / 20 split; seed 42 as the published MNIST-1D set.
        train, test = data[name] = load_mnist1d(num_samples=config["samples"], seed=42)
        config["train"], config["test"] = len(train[0]), len(test[0])

    start = time.perf_counter()
    runs = {name: {r["key"]: [] for r in rows_of[name]} for name in names}
    # Seeds outermost: a run cut short still has whole seeds of every row and setting.
    for seed in configs[names[0]]["seeds"]:
        for name in names:
            for row in rows_of[name]:
                key = _run_key(name, row["key"], seed, configs[name])
                if key not in cache:
                    if args.report_only:
                        continue
                    cache[key] = run_one(name, row, seed, data[name], configs[name])
                    if cache_path:
                        with open(cache_path, "a") as f:
                            f.write(json.dumps({"key": key, "run": cache[key]}) + "\n")
                run = cache[key]
                runs[name][row["key"]].append(run)
                print(f"{name:4s} {row['key']:12s} seed {seed}: acc {100 * run['accuracy']:.2f}%  "
                      f"iterations {run['iterations']}  wall {run['wall_seconds']:.1f}s  "
                      f"hessian {run['hessian_seconds']:.2f}s  [{time.perf_counter() - start:.0f}s]", flush=True)

    settings, sections = {}, []
    for name in names:
        config = configs[name]
        rows = [summarise(row, runs[name][row["key"]]) for row in rows_of[name] if runs[name][row["key"]]]
        histories = {r["key"]: runs[name][r["key"]][0]["epochs"] for r in rows_of[name]
                     if r["schedule"] == "hessian" and runs[name][r["key"]]}
        done = {"runs": sum(len(v) for v in runs[name].values()), "expected": len(rows_of[name]) * len(config["seeds"])}
        settings[name] = {"config": config, "rows": rows, "histories": histories, "runs_done": done}
        if rows:
            sections.append(setting_markdown(name, rows, config, done))
    first = names[0]
    run_wall = sum(r["wall_seconds"] for name in names for v in runs[name].values() for r in v)
    command = " ".join(part for part in [
        "python benchmarks/absa_table.py", "--quick" * args.quick, f"--setting {args.setting}",
        f"--seeds {args.seeds}" * (args.seeds != 3), *(f"--set {item}" for item in args.set),
        f"--rows {args.rows}" * bool(args.rows),
    ] if part)
    rebuilt = " (the tables rebuilt from its run cache with `--report-only`)" if args.report_only else ""
    table = "\n".join([
        "# ABSA reproduction on MNIST-1D with the timer-only frontier (keras-hessian)",
        "",
        f"Command: `nice -n 10 {command}`{rebuilt}; the runs' fits took {run_wall / 60:.1f} min of wall time in all. {args.note}",
        "",
        ("How the wall time is split (`benchmarks/_absa_rows.py`): two timing callbacks, one first and one last "
        "in the fit's callback list, time each training step (without the callbacks' batch hooks) and each "
        "epoch start. Hessian = the controller's `hessian_seconds` (operator build and eigen-solves); batch-size "
        "change = the controller's epoch start plus the first step's excess over the epoch's median step in "
        "epochs whose batch changed (less the first-step excess of unchanged epochs); accumulation = the steps' "
        "time beyond `batch / physical` physical steps in accumulating epochs (per-example time of the largest "
        "unaccumulated epoch; `-` when the run had none); compute = step time less those two (it includes the "
        "first step's trace of the train function); other = the rest (Keras' and the callbacks' per-batch work "
        "between steps, epoch ends, iterator starts). The batch-size-change and accumulation figures rest on "
        "single steps, so they are noisy on a loaded machine. HVPs per check: first check (random start) -> later checks "
        "(started from the last eigenvector). The frontier joins the timer rows in log(iterations); a point is "
        "above / below it when it beats / trails the line by more than the spread over seeds "
        "(sqrt of the two std squared)."),
        "",
        *sections,
    ])
    print(table)
    original = [r for r in settings[first]["rows"] if r["row"] in BASELINE_LABELS]
    payload = {
        "rows": original,
        "config": configs[first],
        "histories": {k: v for k, v in settings[first]["histories"].items() if k in ("abs", "absa")},
        "settings": settings,
        "wall_seconds_this_invocation": time.perf_counter() - start,
    }
    written = write_results("absa_table", payload, args.out, table)
    shown = {k: v for k, v in settings[first]["histories"].items() if k in ("abs", "absa", HEADLINE)}
    if shown:
        labels = {r["key"]: r["label"] for r in rows_of[first]}
        plot_schedules(shown, labels, str(written.with_suffix(".png")))
    frontier = {name: s["rows"] for name, s in settings.items() if s["rows"]}
    if frontier:
        plot_frontier(frontier, str(written.with_name("absa_frontier.png")))
    return {"rows": original, "config": configs[first], "settings": settings}


if __name__ == "__main__":
    main()
