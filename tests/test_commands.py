"""The console scripts of setup.py: each resolves to a command's main(), answers --help,
and scripts/<name>.py in a checkout runs the same function."""
from __future__ import annotations

import ast
import importlib
import os

import pytest
from trainers.trainer_testing import ROOT, load_script


def _declared_entry_points():
    """``name -> "module:function"`` as written in setup.py (not the installed metadata,
    which an editable install only refreshes on reinstall)."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value)["console_scripts"]
            return dict(item.split("=", 1) for item in scripts)
    raise AssertionError("setup.py declares no entry_points")


ENTRY_POINTS = _declared_entry_points()


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_answers_help(name, capsys):
    module_name, function = ENTRY_POINTS[name].split(":")
    main = getattr(importlib.import_module(module_name), function)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(n for n in ENTRY_POINTS if n != "spinconv-train"))
def test_checkout_script_runs_the_same_command(name):
    module_name, function = ENTRY_POINTS[name].split(":")
    module = importlib.import_module(module_name)
    script = load_script(module_name.rsplit(".", 1)[1])
    assert script.main is getattr(module, function)


def test_preprocess_bad_input_is_an_error_message_not_a_traceback(tmp_path, capsys):
    from spinconv_train.commands import preprocess_ef, preprocess_relaxed

    missing = str(tmp_path / "missing.extxyz")
    assert preprocess_ef.main([missing, "--out", str(tmp_path / "out")]) == 2
    assert missing in capsys.readouterr().err
    assert preprocess_relaxed.main(["--out", str(tmp_path / "out2"), "--initial", missing]) == 2
    assert "give both initial and relaxed files" in capsys.readouterr().err


def test_inspect_writes_valid_json_with_nan_metrics(tmp_path, monkeypatch, capsys):
    import json

    import torch

    from spinconv_train.checkpoints import store
    from spinconv_train.commands import inspect_checkpoint

    payload = {"config": {"trainer": "forces", "model": {"name": "schnet"}, "task": {"metric": "forces_mae"},
                          "dataset": {"train": {"src": "train.extxyz"}}},
               "model": {"w": torch.zeros(3)}, "step": 10, "epoch": 1.0, "best_metric": float("inf"),
               "metrics": {"forces_mae": float("nan"), "energy_mae": 0.5}}
    monkeypatch.setattr(store, "read", lambda path: payload)
    assert inspect_checkpoint.main([str(tmp_path / "c.pt")]) == 0
    line = capsys.readouterr().out.strip()
    summary = json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert summary["last_validation"] == {"forces_mae": None, "energy_mae": 0.5}
    assert summary["best_metric"] is None
    reasons = summary["non_finite"]
    assert set(reasons) == {"last_validation.forces_mae", "best_metric"}
    assert "nan" in reasons["last_validation.forces_mae"] and "no finite value" in reasons["last_validation.forces_mae"]
    assert "inf" in reasons["best_metric"]


def test_json_line_replaces_any_non_finite_number():
    import json

    from spinconv_train.commands import json_line

    line = json_line({"a": [1.0, float("-inf")], "b": {"c": float("nan")}, "d": 2})
    assert json.loads(line) == {"a": [1.0, None], "b": {"c": None}, "d": 2,
                                "non_finite": {"a[1]": "-inf (not a JSON number)", "b.c": "nan (not a JSON number)"}}
    assert json.loads(json_line({"x": 1.5})) == {"x": 1.5}
