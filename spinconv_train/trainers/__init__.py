"""Trainers: a shared loop plus thin task layers (``forces``, ``energy``)."""
from spinconv_train.trainers import energy, forces  # noqa: F401  (registers the tasks)
