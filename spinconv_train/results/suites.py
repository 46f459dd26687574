"""The named suites of ``scripts/reproduce.py``, as data: which configs, overrides, seeds,
training sizes and CPU budgets, and which splits to report.

A run is one ``main.py --mode train`` command, followed by ``--mode validate`` commands on
its best checkpoint (``validate``: extra arguments of each). Paths are relative to the
repository root, where the suite runs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunSpec:
    """One training run of a suite."""

    name: str  # run folder name, unique in the suite
    group: str  # the model (a table row, a line in the plots)
    config: str
    overrides: tuple[str, ...] = ()
    seed: int = 0
    train_size: int | None = None  # training frames, for learning curves
    budget_cpu_s: float = 600.0  # the run is stopped (best checkpoint kept) after this much CPU time
    validate: tuple[tuple[str, ...], ...] = ()  # extra arguments of each --mode validate on the best checkpoint


@dataclass(frozen=True)
class Suite:
    """A named set of runs and how to report them."""

    name: str
    description: str
    runs: tuple[RunSpec, ...]
    metric: str = "forces_mae"  # reported metric (lower is better)
    unit: str = "eV/Å"
    splits: tuple[str, ...] = ("val",)  # evaluated splits, as named in validate_metrics*.json
    setup: tuple[str, ...] = ()  # commands that make the data (run once, before the suite)
    data_check: tuple[str, ...] = ()  # paths that must exist before running
    requires: tuple[str, ...] = ()  # Python modules the data needs
    runnable: bool = True  # False: documented only (needs data or hardware this machine lacks)
    notes: tuple[str, ...] = field(default_factory=tuple)


OC20_MINI = "configs/s2ef/oc20_mini"
EMT_DATA = "data/oc20_emt"
EMT_SPLITS = ("val_ood_ads", "val_ood_cat", "val_ood_both")
LEARNING_CURVE_MODELS = (
    ("SpinConv energy-centric", "spinconv_energy"),
    ("SpinConv sphere head", "spinconv_force"),
    ("SpinConv edge head", "spinconv_force_edge"),
    ("SchNet", "schnet"),
    ("DimeNet++", "dimenetplusplus"),
)
# training frames: (CPU seconds per run, seeds): 9,900 CPU s of training for the whole suite,
# plus the validations; larger budgets: --budget-cpu-s (the report states the budgets used).
LEARNING_CURVE_SIZES = {300: (150.0, (0, 1)), 1000: (240.0, (0, 1)), 3000: (360.0, (0, 1)), 10000: (480.0, (0,))}
VAL_EVERY_IN_TRAINING = 12  # val_id frames seen by early stopping: one in 12 (~150 frames)
VAL_EVERY_FINAL = 4  # the final validation of each best checkpoint: one in 4 of val_id (~445)
OOD_EVERY_FINAL = 8  # and one in 8 of each out-of-distribution split (~1200 frames in all)


def _smoke() -> Suite:
    """Two SchNet seeds, a few steps on the shipped OC20-mini: the suite machinery's own test."""
    validate = (("--dataset.val_ood.src=data/oc20_mini/s2ef/val_ood",),)
    runs = tuple(RunSpec(
        name=f"schnet-seed{seed}", group="SchNet", config=f"{OC20_MINI}/schnet.yml", seed=seed, budget_cpu_s=120.0,
        overrides=("--optim.max_epochs=null", "--optim.max_steps=3", "--optim.eval_every=3",
                   "--model.hidden_channels=16", "--model.num_filters=16", "--model.num_interactions=1",
                   "--logger.backends=[]", "--logger.print_every=1"),
        validate=validate) for seed in (0, 1))
    return Suite("smoke", "Two 3-step SchNet runs on the shipped OC20-mini: checks the suite machinery.", runs,
                 splits=("val", "val_ood"), data_check=("data/oc20_mini/s2ef/train",))


def _emt_run(name: str, group: str, config: str, seed: int, size: int, budget: float,
             extra: tuple[str, ...] = ()) -> RunSpec:
    """A run on ``size`` generated EMT training frames: plateau LR schedule, early stopping
    on strided val_id, then a final validation on val_id and the OOD splits."""
    final = (f"--dataset.val.every={VAL_EVERY_FINAL}",
             *(f"--dataset.{split}.src={EMT_DATA}/s2ef/{split}" for split in EMT_SPLITS),
             *(f"--dataset.{split}.every={OOD_EVERY_FINAL}" for split in EMT_SPLITS))
    steps_per_epoch = -(-size // 4)  # batch size 4
    return RunSpec(
        name=name, group=group, config=f"{OC20_MINI}/{config}.yml", seed=seed, train_size=size, budget_cpu_s=budget,
        overrides=(f"--dataset.train.src={EMT_DATA}/s2ef/train_{size}",
                   f"--dataset.val.src={EMT_DATA}/s2ef/val_id",
                   f"--dataset.val.every={VAL_EVERY_IN_TRAINING}",
                   f"--dataset.test.src={EMT_DATA}/s2ef/val_id",
                   "--optim.max_epochs=1000", "--optim.scheduler=ReduceLROnPlateau",
                   "--optim.factor=0.5", "--optim.patience=3", "--optim.early_stopping_patience=8",
                   f"--optim.eval_every={min(steps_per_epoch, 250)}", "--logger.backends=[]", *extra),
        validate=(final,))


def _oc20_learning_curve() -> Suite:
    runs = []
    for seed in (0, 1):  # every model and size of seed 0 first: a partial suite is still a curve
        for size, (budget, seeds) in LEARNING_CURVE_SIZES.items():
            if seed not in seeds:
                continue
            for group, config in LEARNING_CURVE_MODELS:
                runs.append(_emt_run(f"{config}-n{size}-seed{seed}", group, config, seed, size, budget))
    budgets = ", ".join(f"{n} frames: {int(b)} s ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})"
                        for n, (b, seeds) in LEARNING_CURVE_SIZES.items())
    return Suite(
        "oc20_small_learning_curve",
        "Five models on 300 / 1k / 3k / 10k frames of generated OC20-style EMT relaxations, each trained "
        "until validation stops improving (early stopping on val_id, plateau LR schedule) or its CPU budget "
        "is spent; force MAE on the in-distribution and the three out-of-distribution splits.",
        tuple(runs), splits=("val", *EMT_SPLITS),
        setup=(f"python scripts/make_oc20_emt.py --size 500 --out {EMT_DATA} --workers 2 "
               "--train-subsets 300,1000,3000,10000",),
        data_check=tuple(f"{EMT_DATA}/s2ef/train_{size}" for size in LEARNING_CURVE_SIZES),
        notes=(f"`val` is val_id (unseen systems of the training metals, facets and adsorbates). Early stopping "
               f"watches one val_id frame in {VAL_EVERY_IN_TRAINING}; the table's numbers are the best "
               f"checkpoint's on one frame in {VAL_EVERY_FINAL} of val_id and one in {OOD_EVERY_FINAL} of each "
               "out-of-distribution split (`dataset.<split>.every`).",
               f"CPU budgets per run (1 thread): {budgets}."))


# One change at a time to the small-data SpinConv configs (name, overrides).
TUNING_VARIANTS = (
    ("as shipped", ()),
    ("lr 1e-3", ("--optim.lr_initial=0.001",)),
    ("hidden 32, mid 32", ("--model.hidden_channels=32", "--model.mid_hidden_channels=32")),
    ("3 interactions", ("--model.num_interactions=3",)),
    ("sphere 8x8", ("--model.sphere_size_lat=8", "--model.sphere_size_long=8")),
    ("force weight 30", ("--optim.force_coefficient=30",)),
    ("cutoff 5 A", ("--model.cutoff=5.0",)),
)
TUNING_SIZE, TUNING_BUDGET = 1000, 240.0


def _oc20_small_tuning() -> Suite:
    runs = tuple(
        _emt_run(f"{config}-{'-'.join(variant.lower().replace(',', '').split())}", f"{group}: {variant}", config,
                 0, TUNING_SIZE, TUNING_BUDGET, overrides)
        for group, config in LEARNING_CURVE_MODELS if config.startswith("spinconv")
        for variant, overrides in TUNING_VARIANTS)
    return Suite(
        "oc20_small_tuning",
        f"One change at a time to the three small-data SpinConv configs, on {TUNING_SIZE} frames of the generated "
        f"OC20-style data with the learning curve's schedule and {TUNING_BUDGET:g} CPU s each (seed 0); choose on "
        "val (val_id) only: the out-of-distribution splits are reported, not used to choose.",
        runs, splits=("val", *EMT_SPLITS),
        setup=(f"python scripts/make_oc20_emt.py --size 500 --out {EMT_DATA} --workers 2 "
               "--train-subsets 300,1000,3000,10000",),
        data_check=(f"{EMT_DATA}/s2ef/train_{TUNING_SIZE}",),
        notes=("A change is worth adopting when it beats 'as shipped' by more than the spread two seeds give "
               "on the learning curve at the same size; confirm it with seed 1 before changing a config.",))


def _md17_ethanol() -> Suite:
    runs = tuple(RunSpec(
        name=f"{key}-seed{seed}", group=group, config=config, seed=seed, train_size=1000, budget_cpu_s=600.0,
        overrides=("--optim.early_stopping_patience=10", "--logger.backends=[]"),
        validate=(("--split", "test"),))
        for group, key, config in (("SpinConv energy-centric", "spinconv", "configs/md17/ethanol.yml"),
                                   ("SchNet", "schnet", "configs/suites/md17_ethanol_schnet.yml"))
        for seed in (0, 1))
    return Suite("md17_ethanol",
                 "Energy-centric SpinConv against SchNet on the shipped GFN2-xTB ethanol (MD17 layout), 1000 "
                 "training frames, an equal CPU budget of 600 s each, early stopping on val.",
                 runs, splits=("val", "test"), data_check=("data/md17/ethanol_xtb.npz",))


def _qm9() -> Suite:
    runs = []
    for target in ("U0", "homo"):
        data = tuple(f"--dataset.{split}.{key}={value}" for split in ("train", "val", "test")
                     for key, value in (("src", "qm9pack"), ("target", target), ("train_size", 10000),
                                        ("val_size", 1000), ("test_size", 2000)))
        for group, config in (("SpinConv", f"configs/qm9/{target}.yml"), ("SchNet", "configs/suites/qm9_schnet.yml")):
            runs.append(RunSpec(
                name=f"{group.lower()}-{target}", group=f"{group} {target}", config=config, train_size=10000,
                budget_cpu_s=3600.0, overrides=(*data, f"--task.labels=[{target}]",
                                                "--optim.early_stopping_patience=10", "--logger.backends=[]"),
                validate=(("--split", "test"),)))
    return Suite("qm9", "SpinConv against SchNet on 10k molecules of the real QM9 (qm9pack tables) for U0 and "
                 "HOMO, 3600 CPU s each.", tuple(runs), metric="energy_mae", unit="eV", splits=("val", "test"),
                 requires=("qm9pack",), setup=("pip install -e '.[qm9]'",),
                 notes=("Compare the ordering (not the values: 10k molecules, CPU budget) with the paper's QM9 "
                        "table."))


def _paper() -> Suite:
    runs = (
        RunSpec("spinconv-s2ef-2M", "SpinConv S2EF 2M", "configs/s2ef/2M/spinconv.yml", budget_cpu_s=float("inf"),
                validate=(("--split", "val"),)),
        RunSpec("spinconv-s2ef-all", "SpinConv S2EF All", "configs/s2ef/all/spinconv.yml",
                budget_cpu_s=float("inf"), validate=(("--split", "val"),)),
    )
    return Suite("paper", "The paper's OC20 configs on the real OC20 data: for users with GPUs and the OC20 "
                 "LMDBs (see `python scripts/paper_tables.py --list` for the rows and how to produce each).",
                 runs, runnable=False,
                 notes=("Train with `--submit --num-gpus 8` (or torchrun); then `python scripts/paper_tables.py "
                        "--run s2ef-2m-val-id=<validate run> ...` puts our numbers next to the paper's.",))


SUITES: dict[str, Callable[[], Suite]] = {
    "smoke": _smoke,
    "oc20_small_learning_curve": _oc20_learning_curve,
    "oc20_small_tuning": _oc20_small_tuning,
    "md17_ethanol": _md17_ethanol,
    "qm9": _qm9,
    "paper": _paper,
}


def get_suite(name: str) -> Suite:
    """The suite called ``name``; a clear error listing the known names otherwise."""
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    return SUITES[name]()
