"""The shipped relaxation config: loads, uses the S2EF demo model, documented settings."""
from __future__ import annotations

import os

from spinconv_train.checkpoints.store import model_differences
from spinconv_train.config import load_config
from spinconv_train.relaxation.settings import relax_settings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_shipped_config_fits_the_s2ef_demo_checkpoint():
    relax = load_config(os.path.join(ROOT, "configs", "is2rs", "oc20_mini", "relax_spinconv.yml"))
    train = load_config(os.path.join(ROOT, "configs", "s2ef", "oc20_mini", "spinconv_force.yml"))
    # run-relaxations checks the config's model against the checkpoint's: they must agree.
    assert model_differences(train["model"], relax["model"]) == []
    assert relax["trainer"] == "forces"
    settings = relax_settings(relax)
    assert settings.dataset == {"src": "data/oc20_mini/is2re/val_id"}
    assert os.path.isdir(os.path.join(ROOT, settings.dataset["src"]))
    options = settings.options
    assert (options.name, options.fmax, options.steps, options.maxstep) == ("lbfgs", 0.05, 200, 0.04)
    assert options.extra == {"memory": 50, "damping": 1.0, "alpha": 70.0}
    assert settings.write_trajectories is False
