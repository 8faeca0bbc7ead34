"""`python -m keras_hessian ...`: the `keras-hessian` command."""

import sys

from keras_hessian.cli import main

if __name__ == "__main__":
    sys.exit(main())
