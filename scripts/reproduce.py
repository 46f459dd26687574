#!/usr/bin/env python
"""Run a named suite of trainings and write ``results/<suite>.md`` with tables and plots.

    python scripts/reproduce.py --list
    python scripts/reproduce.py --suite md17_ethanol --dry-run        # the commands, nothing run
    python scripts/reproduce.py --suite md17_ethanol --jobs 2         # run locally, then report
    python scripts/reproduce.py --suite oc20_small_learning_curve --submit   # one SLURM job per run
    python scripts/reproduce.py --suite oc20_small_learning_curve --collect  # after the jobs: validate, report

Locally each run is ``python main.py --mode train ...`` (1 thread unless OMP_NUM_THREADS is
set), stopped once it has used its CPU budget (``--budget-cpu-s`` overrides every run's),
then ``--mode validate`` on its best checkpoint. Run folders go to ``runs/suites/<suite>/``
(``--run-root``). Each finished run's metrics, config and status are copied to
``results/<suite>/runs/``, and the report is built from there: commit that folder with the
report. Finished runs (in either place) are not run again unless their config changed, so
rerunning the command resumes a suite, also on another machine from a clone; delete a run's
archived folders to rerun it.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from spinconv_train.results.suites import SUITES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), help="the suite to run")
    p.add_argument("--list", action="store_true", help="list the suites and their runs")
    p.add_argument("--dry-run", action="store_true", help="print the commands; run nothing, write nothing")
    p.add_argument("--submit", action="store_true", help="submit each training run as a SLURM job (main.py --submit)")
    p.add_argument("--collect", action="store_true",
                   help="train nothing: validate finished runs that lack it and write the report")
    p.add_argument("--budget-cpu-s", type=float, help="CPU seconds per run, instead of each run's own budget")
    p.add_argument("--jobs", type=int, default=1, help="local runs at a time (each single-threaded)")
    p.add_argument("--runs", default="*", help="only the runs whose names match this pattern (fnmatch)")
    p.add_argument("--run-root", help="folder of the suite's runs (default runs/suites/<suite>)")
    p.add_argument("--results-dir", default=os.path.join(ROOT, "results"), help="where <suite>.md goes")
    p.add_argument("--slurm-arg", action="append", default=[],
                   help="with --submit: an extra main.py submission flag, e.g. --slurm-arg=--slurm-partition=cpu")
    args = p.parse_args(argv)
    if not args.list and not args.suite:
        p.error("give --suite NAME (or --list)")
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: give at least 1")
    if args.budget_cpu_s is not None and not args.budget_cpu_s > 0:
        p.error(f"--budget-cpu-s {args.budget_cpu_s}: give a positive number of seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spinconv_train.results import execute
    from spinconv_train.results.archive import archive_dir, archive_run, expected_config, is_archived
    from spinconv_train.results.collect import collect_suite
    from spinconv_train.results.report import write_report
    from spinconv_train.results.suites import SUITES, get_suite

    if args.list:
        for name in SUITES:
            suite = get_suite(name)
            budget = f"budget {sum(r.budget_cpu_s for r in suite.runs):.0f} CPU s in all" if suite.runnable \
                else "documented, not run here"
            print(f"{name}: {len(suite.runs)} runs, {budget}\n  {suite.description}")
        return 0
    suite = get_suite(args.suite)
    specs = [spec for spec in suite.runs if fnmatch.fnmatch(spec.name, args.runs)]
    if not specs:
        print(f"error: --runs {args.runs!r} matches none of the {len(suite.runs)} runs of {suite.name}",
              file=sys.stderr)
        return 2
    root = os.path.abspath(args.run_root or os.path.join(ROOT, "runs", "suites", suite.name))
    budget_of = {spec.name: spec.budget_cpu_s if args.budget_cpu_s is None else args.budget_cpu_s for spec in specs}
    commands = [*suite.setup, f"python scripts/reproduce.py --suite {suite.name}"
                + (f" --budget-cpu-s {args.budget_cpu_s:g}" if args.budget_cpu_s else "")]
    for spec in specs:
        commands.append(f"# {spec.name}: budget {budget_of[spec.name]:g} CPU s")
        commands += [shlex.join(["python", *c[1:]]).replace(root, "$RUNS")
                     for c in (execute.train_command(spec, root), *execute.validate_commands(spec, root))]
    if args.dry_run or not suite.runnable:
        print("\n".join(commands))
        if not suite.runnable:
            print(f"note: suite {suite.name} is documented, not run here: {suite.description}", file=sys.stderr)
        return 0
    import importlib.util

    missing = [path for path in suite.data_check if not os.path.exists(os.path.join(ROOT, path))]
    missing += [f"the Python module {name!r}" for name in suite.requires if importlib.util.find_spec(name) is None]
    if missing:
        print(f"error: suite {suite.name} needs {', '.join(missing)}; make the data first:\n  "
              + "\n  ".join(suite.setup or ("(see the suite's notes)",)), file=sys.stderr)
        return 2
    if args.submit:
        outcomes = execute.submit_suite(specs, root, ROOT, args.slurm_arg)
        failed = [o for o in outcomes if o.returncode != 0]
        where = "".join(f" {flag} {shlex.quote(value)}" for flag, value in
                        (("--run-root", args.run_root), ("--runs", None if args.runs == "*" else args.runs),
                         ("--results-dir", None if args.results_dir == os.path.join(ROOT, "results")
                          else args.results_dir)) if value)
        print(f"submitted {len(outcomes) - len(failed)} of {len(outcomes)} runs; after they finish: "
              f"python scripts/reproduce.py --suite {suite.name} --collect{where}", flush=True)
        return 1 if failed else 0
    archive = archive_dir(args.results_dir, suite.name)
    configs = {spec.name: expected_config(spec, ROOT) for spec in specs}
    done = [spec for spec in specs if is_archived(spec, archive, budget_of[spec.name], configs[spec.name])]
    todo = [spec for spec in specs if spec not in done]
    if done:
        print(f"{len(done)} of {len(specs)} runs are already finished in {archive}: not run again", flush=True)
    stale = [spec.name for spec in todo if is_archived(spec, archive, budget_of[spec.name])]
    if stale:
        print(f"{len(stale)} archived run(s) trained with another config than their config file now gives "
              f"run again, replacing their numbers: {', '.join(stale)}", flush=True)
        for spec in todo:  # their old run folders would be resumed: set them aside, status too
            if spec.name in stale:
                execute.set_aside(spec, root, ".superseded")
                status_file = execute.status_path(spec, root)
                if os.path.exists(status_file):
                    os.replace(status_file, f"{status_file}.superseded")
    if args.collect:
        for spec in todo:
            status = execute.read_status(spec, root)
            if status is None and execute.best_checkpoint(spec, root) is not None:  # a submitted job's run
                status = {"train": {"returncode": 0, "stopped_by_budget": False, "cpu_s": float("nan"),
                                    "submitted": True}, "validate": []}
            if status is not None:
                execute.validate_run(spec, root, ROOT, status)
                archive_run(spec, root, archive)
    else:
        os.makedirs(root, exist_ok=True)
        execute.execute_suite(todo, root, ROOT, jobs=args.jobs, budget_cpu_s=args.budget_cpu_s,
                              after=lambda spec: archive_run(spec, root, archive))
    results = collect_suite(suite, specs, archive)
    note = ("Budgets: " + ", ".join(sorted({f'{b:g} CPU s' for b in budget_of.values()}))
            + " per run (training only; the final validation is not counted), one thread per run.")
    path = write_report(suite, results, archive, args.results_dir, commands, ROOT, note)
    print(path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
