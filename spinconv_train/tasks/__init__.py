"""Tasks: what a model is trained on (``forces``: S2EF/MD17; ``energy``: IS2RE/QM9), their
losses, metrics and target state (normaliser, element references)."""
from spinconv_train.tasks import energy, forces  # noqa: F401  (registers the tasks)
