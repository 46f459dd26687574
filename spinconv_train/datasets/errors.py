"""The error raised for unreadable or invalid dataset input."""
from __future__ import annotations


class DatasetError(ValueError):
    """Bad dataset input; the message names the file, the record index and the field."""

    def __init__(
        self,
        message: str,
        path: str | None = None,
        index: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.index = index
        self.field = field
        where = []
        if path is not None:
            where.append(f"file {self.path}")
        if index is not None:
            where.append(f"record {index}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


def check_config_keys(config: dict, allowed: set, owner: str) -> None:
    """Raise a ``DatasetError`` naming any key of ``config`` that ``owner`` does not know."""
    if not isinstance(config, dict):
        raise DatasetError(f"{owner} config must be a mapping, got {type(config).__name__}")
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise DatasetError(
            f"{owner}: unknown config key(s) {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(sorted(allowed))}"
        )
