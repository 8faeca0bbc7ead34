"""Register the quantized layers with Keras as soon as it is safe, without importing Keras ourselves.

`import keras_hessian` is lazy (so the `keras-hessian` command's `--help` does not pay for
TensorFlow), yet `keras.models.load_model` of a model with quantized layers needs their classes
registered. So a finder on `sys.meta_path` watches two kinds of imports, wrapping their loaders
(a post-import hook in the manner of PEP 369):

- `keras`: once it has finished importing, the layers can be registered;
- `keras_hessian.*`: while one of our own modules is still initialising (it may be the very
  module that imported Keras, `quantizers/base.py` say), importing `keras_hessian.layers` would
  meet it half-built, so registration waits until the outermost of our imports is done.

Registration is `import keras_hessian.layers` (each class's decorator registers it); the finder
then removes itself. If Keras is already imported when `install()` runs, that happens at once.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

_KERAS = "keras"
_OURS = "keras_hessian."


class _Watcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loaders of `keras` and of our modules.

    `find_spec` is also called without an import following (TensorFlow asks where `keras`
    lives while it starts), so the watcher stays on `sys.meta_path` until registration.
    """

    def __init__(self):
        self.searching = False
        self.depth = 0  # how many keras_hessian modules are initialising right now
        self.keras_ready = False
        self.pending = True

    def find_spec(self, fullname, path=None, target=None):
        if not self.pending or self.searching or not (fullname == _KERAS or fullname.startswith(_OURS)):
            return None
        self.searching = True  # the search below must not find this finder again
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.searching = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        original = spec.loader.exec_module
        ours = fullname != _KERAS

        def exec_module(module):
            if ours:
                self.depth += 1
            try:
                original(module)
            finally:
                if ours:
                    self.depth -= 1
            if not ours:
                self.keras_ready = True
            self.maybe_register()

        spec.loader.exec_module = exec_module
        return spec

    def maybe_register(self) -> None:
        if self.pending and self.keras_ready and self.depth == 0:
            self.pending = False
            uninstall()
            importlib.import_module("keras_hessian.layers")  # the decorators register every class


_WATCHER = _Watcher()


def uninstall() -> None:
    if _WATCHER in sys.meta_path:
        sys.meta_path.remove(_WATCHER)


def install() -> None:
    """Register now if Keras is loaded, else as soon as Keras is and none of our imports is half done."""
    if _KERAS in sys.modules:
        _WATCHER.keras_ready = True
        _WATCHER.pending = False
        importlib.import_module("keras_hessian.layers")
    elif _WATCHER not in sys.meta_path and _WATCHER.pending:
        sys.meta_path.insert(0, _WATCHER)
