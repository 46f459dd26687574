"""The README's first lines are the two commands users run; CI must run the second one."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None, "README.md must open with a ```bash block"
    assert text.index("```bash") < 300, "the command block must come first in README.md"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_train_and_test_commands() -> None:
    commands = _readme_commands()
    assert len(commands) == 2
    train, test = commands
    assert "main.py --mode train" in train and "--config-yml" in train
    config = re.search(r"--config-yml (\S+)", train).group(1)
    assert (ROOT / config).is_file(), f"the README's demo config {config} does not exist"
    assert "pytest" in test


def test_ci_runs_exactly_the_readme_test_command() -> None:
    _, test = _readme_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines, ".ci/run must run the README's test command verbatim"
