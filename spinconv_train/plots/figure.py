"""A headless matplotlib figure and an atomic PNG writer."""
from __future__ import annotations

from typing import Any

from spinconv_train.atomic_files import atomic_path


def new_figure(rows: int, cols: int, width: float = 4.5, height: float = 3.4) -> Any:
    """A ``Figure`` of ``rows`` x ``cols`` axes (``fig.axes`` row by row), drawn with Agg.

    Built without pyplot, so no global figure state and no display is involved."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    fig.subplots(rows, cols, squeeze=False)
    return fig


def save_png(fig: Any, path: str, dpi: int = 120) -> str:
    """Write ``fig`` as a PNG at ``path`` (temporary file, then rename); return ``path``."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path
