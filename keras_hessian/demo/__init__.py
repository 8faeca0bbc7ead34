"""The demo of the whole package, as a library: `run_demo(out)` is what `keras-hessian demo` runs.

Five stages on one small CNN (sklearn digits or MNIST-1D, both embedded):

- `training.py`: (a) ABSA training (adaptive batch size from the Hessian, adversarial
  augmentation) beside a fixed-batch run, the spectrum logged every epoch; (b) the trained
  model's per-layer spectrum and its spectral density;
- `compression.py`: (c) a HAWQ precision plan at a size budget, applied and fine-tuned; (d) OBD
  pruning of the float model, and the pruned model quantized by its own plan;
- `deploy.py`: (e) every model exported to TFLite and evaluated with LiteRT;
- `report.py`: `report.md` (the table and a text generated from the numbers), the PNGs and
  `demo.json`.

It uses the package's public API only (callbacks, hessian, hawq, pruning, quantize, export,
plots), so it is also a worked example of each.
"""

from keras_hessian.demo.run import DATASETS, Run, Settings, run_demo, settings_for

__all__ = ["DATASETS", "Run", "Settings", "run_demo", "settings_for"]
