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
    assert {"model.py", "spin_conv.py", "message.py", "projection.py", "force_head.py"} <= set(users)


# The machinery moved out of the blocks (kernel cache, scratch helpers, chunked splat plan,
# kept device constants such as the force head's cyclic rows): exported by speed, and none
# of it, nor its former private names, may be written into a block again.
MOVED_PUBLIC = {
    "KernelCache", "frozen_weights", "Scratch", "scratch_empty", "scratch_matmul", "permuted_copy",
    "ChunkedSplatPlan", "SphereChunk", "sphere_chunks", "device_constant",
}
MOVED = MOVED_PUBLIC | {
    "_kernel_cache", "clear_kernel_cache", "_WEIGHTS_FROZEN", "_new", "_matmul", "_permuted_copy",
    "inference_scratch", "_rows", "_cyclic_rows", "_dft_matrices_cached",
}
# What only caches need: keys made of a tensor's version or address, copies kept per
# device (lru_cache), context variables.
KEYING_ATTRIBUTES = {"_version", "data_ptr", "lru_cache", "cache", "ContextVar"}


def _definitions(tree: ast.AST) -> set[str]:
    """Names ``tree`` defines: functions, classes, assigned names and attributes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names.add(leaf.id)
                    elif isinstance(leaf, ast.Attribute):
                        names.add(leaf.attr)
    return names


def test_blocks_do_not_redefine_the_speed_machinery():
    for name in sorted(os.listdir(BLOCKS)):
        if not name.endswith(".py"):
            continue
        path = os.path.join(BLOCKS, name)
        with open(path) as handle:
            tree = ast.parse(handle.read(), path)
        again = _definitions(tree) & MOVED
        assert not again, f"{name} defines {sorted(again)}, which belong in speed/"
        keying = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)} & KEYING_ATTRIBUTES
        assert not keying, f"{name} uses {sorted(keying)}: caches and their keys belong in speed/"


def test_the_moved_machinery_is_exported_by_speed():
    assert MOVED_PUBLIC <= set(speed.__all__)
    assert all(hasattr(speed, name) for name in speed.__all__)


def test_speed_never_imports_a_block():
    # GraphedSpinConv reads the neighbour lists' type; nothing else of the blocks is allowed.
    allowed = {"edges"}
    for name in sorted(os.listdir(SPEED)):
        if not name.endswith(".py"):
            continue
        for level, module, _ in _relative_imports(os.path.join(SPEED, name)):
            if level >= 2:
                assert module.split(".")[0] in allowed, f"speed/{name} imports the block {module}"
