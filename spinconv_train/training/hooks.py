"""What happens around the loop's steps and validations besides training: the EMA update,
the plateau schedule, the best checkpoint and early stopping. The loop calls each hook of
its list in order; a run's list is :func:`default_hooks`."""
from __future__ import annotations

from collections.abc import Mapping

from spinconv_train import distributed as dist
from spinconv_train.training.session import Session


class Hook:
    """A part of the loop that is not the training step itself (every method a no-op here)."""

    def after_optimizer_step(self, session: Session) -> None:
        """After each optimiser step, before the step counter and the schedule advance."""

    def after_validation(self, session: Session, metrics: Mapping[str, float]) -> None:
        """After each validation of the ``val`` split (``metrics``: its results)."""


class EMAUpdate(Hook):
    """Fold the new weights into the EMA copy (``optim.ema_decay``)."""

    def after_optimizer_step(self, session: Session) -> None:
        if session.ema is not None:
            session.ema.update_parameters(session.model)


class PlateauSchedule(Hook):
    """Let the schedule see the validation metrics (``scheduler: ReduceLROnPlateau``)."""

    def after_validation(self, session: Session, metrics: Mapping[str, float]) -> None:
        session.scheduler.on_validation(dict(metrics), session.step)


class BestCheckpoint(Hook):
    """Write ``best_checkpoint.pt`` when the monitored metric improves; count the
    validations since it last did (early stopping's patience)."""

    def after_validation(self, session: Session, metrics: Mapping[str, float]) -> None:
        if session.is_better(metrics[session.metric]):
            session.best_metric = metrics[session.metric]
            session.evals_since_best = 0
            session.save(best=True, metrics=dict(metrics))
        else:
            session.evals_since_best += 1


class EarlyStopping(Hook):
    """Stop the run when ``optim.early_stopping_patience`` validations brought no improvement
    or the learning rate fell below ``optim.min_lr``."""

    def after_validation(self, session: Session, metrics: Mapping[str, float]) -> None:
        session.stop_reason = early_stop_reason(session)
        if session.stop_reason and dist.is_main():
            print(f"early stopping at step {session.step}: {session.stop_reason}", flush=True)


def early_stop_reason(session: Session) -> str | None:
    """Why the run should stop now (``optim.early_stopping_patience`` / ``optim.min_lr``), or None."""
    optim = session.config["optim"]
    patience = optim["early_stopping_patience"]
    if patience is not None and session.evals_since_best >= patience:
        return (f"{session.metric} has not improved on {session.best_metric:.6g} for {session.evals_since_best} "
                f"validations (optim.early_stopping_patience {patience})")
    lr = session.optimizer.param_groups[0]["lr"]
    if optim["min_lr"] is not None and lr < float(optim["min_lr"]):
        return f"the learning rate {lr:.3g} fell below optim.min_lr {float(optim['min_lr']):.3g}"
    return None


def default_hooks() -> list[Hook]:
    """A training run's hooks, in the order they run: EMA, plateau schedule (it sees the
    metrics first), best checkpoint (updates the patience count), early stopping (reads it)."""
    return [EMAUpdate(), PlateauSchedule(), BestCheckpoint(), EarlyStopping()]


__all__: list[str] = ["BestCheckpoint", "EMAUpdate", "EarlyStopping", "Hook", "PlateauSchedule",
                      "default_hooks", "early_stop_reason"]
