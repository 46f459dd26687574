"""The speed machinery sits apart from SpinConv's blocks: blocks reach it only through
``models/spinconv/speed/__init__.py``, and it never imports a block (docs/design.md)."""
from __future__ import annotations

import ast
import os

import spinconv_train.models.spinconv as spinconv
import spinconv_train.models.spinconv.speed as speed

BLOCKS = os.path.dirname(os.path.abspath(spinconv.__file__))
SPEED = os.path.join(BLOCKS, "speed")


def _relative_imports(path: str) -> list[tuple[int, str, list[str]]]:
    """(level, module, names) of every relative import in ``path``."""
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    return [(node.level, node.module or "", [alias.name for alias in node.names])
            for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level]


def test_blocks_use_only_the_speed_interface():
    exported = set(speed.__all__)
    users = []
    for name in sorted(os.listdir(BLOCKS)):
        if not name.endswith(".py"):
            continue
        for level, module, names in _relative_imports(os.path.join(BLOCKS, name)):
            if level == 1 and module.startswith("speed"):
                assert module == "speed", f"{name} imports speed's internals ({module}); use speed/__init__"
                assert set(names) <= exported, f"{name} imports {set(names) - exported} from speed"
                users.append(name)
    assert {"model.py", "spin_conv.py", "message.py", "projection.py"} <= set(users)


def test_speed_never_imports_a_block():
    # GraphedSpinConv reads the neighbour lists' type; nothing else of the blocks is allowed.
    allowed = {"edges"}
    for name in sorted(os.listdir(SPEED)):
        if not name.endswith(".py"):
            continue
        for level, module, _ in _relative_imports(os.path.join(SPEED, name)):
            if level >= 2:
                assert module.split(".")[0] in allowed, f"speed/{name} imports the block {module}"
