"""An OCP-style working folder for the tests: OCP's configs under configs/ and data/ links
to the committed OC20-format LMDBs (data/oc20_mini) at the paths OCP's configs name."""
from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURE_CONFIGS = REPO / "tests" / "fixtures" / "ocp" / "configs"
MINI = REPO / "data" / "oc20_mini"

# OCP's data path -> committed OC20-format folder standing in for it.
DATA_LINKS = {
    **{f"s2ef/{size}/train": "s2ef/train" for size in ("200k", "2M", "20M", "all")},
    "s2ef/all/val_id": "s2ef/val_id",
    "s2ef/all/test_id": "s2ef/val_ood",
    **{f"is2re/{size}/train": "is2re/train" for size in ("10k", "100k", "all")},
    "is2re/all/val_id": "is2re/val_id",
    "is2re/all/test_id": "is2re/val_ood",
}


def make_ocp_workdir(root: Path) -> Path:
    """Lay out ``root`` as an OCP checkout's working folder; returns ``root``."""
    shutil.copytree(FIXTURE_CONFIGS, root / "configs")
    for link, target in DATA_LINKS.items():
        path = root / "data" / link
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(MINI / target, target_is_directory=True)
    return root


def ocp_config_paths() -> list[str]:
    """Every model config of the fixture (relative to configs/), base files excluded."""
    return sorted(str(p.relative_to(FIXTURE_CONFIGS)) for p in FIXTURE_CONFIGS.rglob("*.yml")
                  if p.name != "base.yml")
