"""Register the quantized layers with Keras as soon as Keras is there, without importing it.

`import keras_hessian` is lazy (so the `keras-hessian` command's `--help` does not pay for
TensorFlow), yet `keras.models.load_model` of a model with quantized layers needs their classes
registered. So: if Keras is already imported, the layers are imported now; otherwise a finder on
`sys.meta_path` waits for `keras` to finish importing and then imports `keras_hessian.layers`
(a post-import hook in the manner of PEP 369). It removes itself once Keras is imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

_TARGET = "keras"


def _register() -> None:
    importlib.import_module("keras_hessian.layers")  # the decorators register every class


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of `keras` to register our layers afterwards.

    `find_spec` is also called without an import following (TensorFlow asks where `keras` lives
    while it starts), so the finder stays on `sys.meta_path` until a wrapped loader has run.
    """

    def __init__(self):
        self._searching = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET or self._searching:
            return None
        self._searching = True  # the search below must not find this finder again
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._searching = False
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module):
            original(module)
            uninstall()
            _register()

        loader.exec_module = exec_module
        return spec


_FINDER = _AfterKeras()


def uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def install() -> None:
    """Register now if Keras is loaded, else once it is."""
    if _TARGET in sys.modules:
        _register()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
