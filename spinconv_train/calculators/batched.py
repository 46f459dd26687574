"""Relax several structures at once: one batched model call per optimiser step.

Each structure keeps its own unmodified ASE optimiser (own history, own convergence, any
optimiser or cell filter), running in its own thread. Their calculators do not call the
model: they hand the structure to a shared :class:`BatchEvaluator` and wait. Once every
running optimiser is waiting, the last one to arrive evaluates all waiting structures in
one batched model call (sorted by task position, so the batch is the same whatever the
thread timing) and wakes the others. A structure's trajectory is therefore the one it
would have alone, up to the rounding of batched against single evaluation, and the model
sees ``batch_size`` structures per call instead of one: on a GPU, where a small structure
costs about as much as a batch of them, that is most of the relaxation time.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from spinconv_train.calculators.predict import calculator_properties

# (structures, with stress?) -> one {"energy", "forces"[, "stress"]} per structure
Predictor = Callable[[list[Atoms], bool], list[dict[str, Any]]]


class BatchEvaluator:
    """Gathers the requests of the running optimisers into batched model calls."""

    def __init__(self, predict: Predictor, supports_stress: bool = False) -> None:
        self.predict = predict
        self.supports_stress = supports_stress
        self._cond = threading.Condition()
        self._running = 0
        self._pending: dict[int, Atoms] = {}  # key (task position) -> structure waiting for results
        self._done: dict[int, Any] = {}  # key -> results or the exception of its batch
        self.batch_sizes: list[int] = []

    def start(self) -> None:
        """A thread begins relaxing (its requests will be waited for)."""
        with self._cond:
            self._running += 1

    def stop(self) -> None:
        """A thread has no more structures; the others no longer wait for it."""
        with self._cond:
            self._running -= 1
            if self._pending and len(self._pending) == self._running:
                self._evaluate_locked()

    def request(self, key: int, atoms: Atoms) -> dict[str, Any]:
        """Results for ``atoms`` (blocks until its batch is evaluated)."""
        with self._cond:
            self._pending[key] = atoms.copy()
            if len(self._pending) == self._running:
                self._evaluate_locked()
            while key not in self._done:
                self._cond.wait()
            result = self._done.pop(key)
        if isinstance(result, BaseException):
            raise result
        return result

    def _evaluate_locked(self) -> None:
        keys = sorted(self._pending)
        frames = [self._pending[k] for k in keys]
        self._pending.clear()
        with_stress = self.supports_stress and all(a.pbc.all() and a.cell.volume > 1e-6 for a in frames)
        try:
            results: Sequence[Any] = self.predict(frames, with_stress)
            if len(results) != len(keys):  # a waiting thread would never be answered
                raise RuntimeError(f"the batched prediction returned {len(results)} results for {len(keys)} "
                                   "structures")
        except Exception as err:  # noqa: BLE001 - every waiting thread re-raises it
            results = [err] * len(keys)
        self.batch_sizes.append(len(keys))
        self._done.update(zip(keys, results))
        self._cond.notify_all()


class BatchMemberCalculator(Calculator):
    """The calculator of one structure in a batched relaxation (see the module docstring)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, evaluator: BatchEvaluator, key: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.evaluator = evaluator
        self.key = key
        self.implemented_properties = calculator_properties(evaluator.supports_stress, atom_energies=False)

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        result = self.evaluator.request(self.key, self.atoms)
        energy = float(result["energy"])
        self.results = {"energy": energy, "free_energy": energy, "forces": result["forces"]}
        if "stress" in result:
            self.results["stress"] = result["stress"]


def run_batched(tasks: Sequence[Any], relax_one: Callable[[Any, Calculator], Any], evaluator: BatchEvaluator,
                batch_size: int) -> list[Any]:
    """``[relax_one(task, calculator) for task in tasks]``, ``batch_size`` tasks at a time in
    threads whose model calls are batched by ``evaluator`` (re-raises the first error).
    Requests are keyed by a task's position, so a batch is ordered the same way every run."""
    queue = list(range(len(tasks)))[::-1]
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            while True:
                with lock:
                    if not queue or errors:
                        return
                    key = queue.pop()
                results[key] = relax_one(tasks[key], BatchMemberCalculator(evaluator, key))
        except BaseException as err:  # noqa: BLE001 - handed to the caller below
            with lock:
                errors.append(err)
        finally:
            evaluator.stop()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(batch_size, len(queue))))]
    for _ in threads:
        evaluator.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [results[k] for k in range(len(tasks))]
