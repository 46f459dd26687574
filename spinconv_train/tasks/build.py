"""From a config to its task: the class named by ``trainer``, the task object, the monitored metric."""
from __future__ import annotations

from spinconv_train.config import Config
from spinconv_train.registry import TRAINERS
from spinconv_train.tasks.protocol import Task
from spinconv_train.tasks.targets import TargetState


def task_class(config: Config) -> type[Task]:
    """The trainer (task) class named by ``trainer``; an unknown name lists the known ones."""
    try:
        return TRAINERS.get(config["trainer"])
    except KeyError as err:
        raise config.fail("trainer", str(err)) from None


def build_task(config: Config, targets: TargetState) -> Task:
    """The task of ``trainer`` with the config's ``task`` and ``optim`` sections and ``targets``."""
    return task_class(config)(config["task"], config["optim"], targets)


def monitored_metric(config: Config, task: Task) -> str:
    """``task.metric`` when set (it must be one the task computes), else the task's default."""
    metric = config["task"]["metric"] or task.default_metric
    if metric == "mae":  # the reference's configs say `metric: mae`
        metric = task.default_metric
    if metric not in task.metric_names():
        raise config.fail("task.metric", f"{metric!r} is not computed by trainer {config['trainer']!r}; "
                          f"choose one of {', '.join(task.metric_names())}")
    return metric
