"""Learning-rate schedules, plateau mode per metric, EMA and optimisers."""
from __future__ import annotations

import math

import pytest
import torch

from spinconv_train.checkpoints.ema import build_ema
from spinconv_train.config import SCHEMA
from spinconv_train.training.optim import build_optimizer
from spinconv_train.training.scheduler import LRScheduler


def optim_cfg(**kw):
    cfg = {k: v[1] for k, v in SCHEMA["optim"].items()}
    cfg.update(kw)
    return cfg


def make(total=100, metric="forces_mae", **kw):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=1.0)
    return opt, LRScheduler(opt, optim_cfg(lr_initial=1.0, **kw), total, metric)


def lr(opt):
    return opt.param_groups[0]["lr"]


def test_warmup_then_step():
    opt, sched = make(scheduler="step", warmup_steps=10, warmup_factor=0.2, lr_milestones=[20, 30], lr_gamma=0.5)
    assert lr(opt) == pytest.approx(0.2)
    assert sched.step(5) == pytest.approx(0.2 + 0.8 * 0.5)
    assert sched.step(10) == pytest.approx(1.0)
    assert sched.step(19) == pytest.approx(1.0)
    assert sched.step(20) == pytest.approx(0.5)
    assert sched.step(35) == pytest.approx(0.25)


def test_cosine_endpoints():
    opt, sched = make(total=100, scheduler="cosine", lr_min_factor=0.1)
    assert sched.step(0) == pytest.approx(1.0)
    assert sched.step(50) == pytest.approx(0.1 + 0.9 * 0.5)
    assert sched.step(100) == pytest.approx(0.1)
    assert sched.step(150) == pytest.approx(0.1)
    assert sched.factor_at(25) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))


@pytest.mark.parametrize("metric,values", [
    ("forces_mae", [1.0, 0.9, 0.95, 0.96, 0.97]),                 # lower is better
    ("energy_force_within_threshold", [0.1, 0.2, 0.15, 0.14, 0.13]),  # higher is better
])
def test_plateau_mode_follows_metric(metric, values):
    opt, sched = make(metric=metric, scheduler="ReduceLROnPlateau", factor=0.5, patience=2)
    assert sched.mode == ("max" if "threshold" in metric else "min")
    for k, v in enumerate(values[:4]):
        sched.on_validation({metric: v}, k)
    assert lr(opt) == pytest.approx(1.0)  # two bad evaluations: still within patience
    sched.on_validation({metric: values[4]}, 4)
    assert lr(opt) == pytest.approx(0.5)  # third bad one: reduced
    state = sched.state_dict()
    opt2, sched2 = make(metric=metric, scheduler="ReduceLROnPlateau", factor=0.5, patience=2)
    sched2.load_state_dict(state)
    assert sched2.step(7) == pytest.approx(0.5)


def test_plateau_rejects_wrong_mode():
    with pytest.raises(ValueError, match="higher-is-better"):
        make(metric="energy_force_within_threshold", scheduler="ReduceLROnPlateau", mode="min")


def test_ema_matches_formula():
    model = torch.nn.Linear(2, 1)
    ema = build_ema(model, 0.9)
    ema.update_parameters(model)  # first update copies the weights
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update_parameters(model)
    torch.testing.assert_close(ema.module.weight, 0.9 * w0 + 0.1 * (w0 + 1.0))


def test_optimizers():
    params = [torch.nn.Parameter(torch.zeros(2))]
    adam = build_optimizer(params, optim_cfg(optimizer="Adam", optimizer_params={"amsgrad": True}, lr_initial=0.1))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["amsgrad"] is True
    adamw = build_optimizer(params, optim_cfg(optimizer="AdamW", weight_decay=0.01, lr_initial=0.1))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.01
    with pytest.raises(ValueError, match="optimizer_params"):
        build_optimizer(params, optim_cfg(optimizer_params={"momentum": 0.9}))
