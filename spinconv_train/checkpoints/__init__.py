"""Checkpoints: saving and reading them (``store``), exporting them (``export``), and the one
builder of a model and its task from a config or a checkpoint (:func:`load`, :func:`build`)."""
from spinconv_train.checkpoints.builder import ModelAndTask, build, build_model, load, model_dtype
from spinconv_train.checkpoints.store import CheckpointError, read, save_atomic

__all__ = ["CheckpointError", "ModelAndTask", "build", "build_model", "load", "model_dtype", "read", "save_atomic"]
