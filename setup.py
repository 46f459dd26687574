"""Packaging for spinconv_train.

The package accepts the range of torch versions that users' CUDA builds satisfy;
CI pins the local CPU wheel (see `.ci/run` and the README).
"""
from setuptools import find_packages, setup

setup(
    name="spinconv_train",
    version="0.1.0",
    description="Training framework for SpinConv and other atomistic graph neural networks",
    python_requires=">=3.10",
    packages=find_packages(include=["spinconv_train", "spinconv_train.*"]),
    install_requires=[
        "torch>=2.3,<2.15",
        "torch-geometric>=2.5",
        "numpy>=1.24",
        "ase>=3.22",
        "lmdb>=1.4",
        "pyyaml>=6",
        "tqdm>=4.60",
        "submitit>=1.5",
        "tensorboard>=2.12",
        "vesin>=0.3",
        "vesin-torch>=0.3",
        "e3nn>=0.5",
        "matplotlib>=3.7",
    ],
    extras_require={
        "dev": ["pytest>=7", "wandb>=0.15", "tblite>=0.4", "scipy>=1.10"],
        "wandb": ["wandb>=0.15"],
        "qm9": ["qm9pack>=1.0.3"],
        "xtb": ["tblite>=0.4"],
    },
    entry_points={"console_scripts": [
        "spinconv-train=spinconv_train.launch.entry:main",
        "spinconv-preprocess-ef=spinconv_train.commands.preprocess_ef:main",
        "spinconv-preprocess-relaxed=spinconv_train.commands.preprocess_relaxed:main",
        "spinconv-lmdb-metadata=spinconv_train.commands.write_lmdb_metadata:main",
        "spinconv-evaluate=spinconv_train.commands.evaluate_structures:main",
        "spinconv-md=spinconv_train.commands.run_md:main",
        "spinconv-export=spinconv_train.commands.export_model:main",
        "spinconv-inspect=spinconv_train.commands.inspect_checkpoint:main",
        "spinconv-import-ocp=spinconv_train.commands.import_ocp:main",
        "spinconv-plot=spinconv_train.commands.plot:main",
    ]},
)
