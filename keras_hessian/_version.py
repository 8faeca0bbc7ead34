"""The package version, in a module that imports nothing (read by `--version` without TensorFlow)."""

__version__ = "0.1.0"
