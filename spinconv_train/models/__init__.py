"""Models; importing this package registers them in ``spinconv_train.registry.MODELS``."""
from .spinconv import SpinConv

try:
    from . import baselines  # noqa: F401  (SchNet, DimeNet++; written by the training engineer)
except ModuleNotFoundError as err:
    if err.name != "spinconv_train.models.baselines":
        raise

__all__ = ["SpinConv"]
