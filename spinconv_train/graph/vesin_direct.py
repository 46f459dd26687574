"""vesin's half neighbour list for one small structure, called through its C function.

``vesin.NeighborList.compute`` spends ~45 µs per call in Python (argument checks, dtype
copies, ctypes pointer objects, array views) around a ~70 µs C search for a 38-atom
OC20 slab; called once per record, that wrapper was a tenth of the data-loading time.
``HalfNeighborList`` calls the same C function, ``vesin_neighbors``, with the same
options, through the library handle and ``ctypes`` structures that vesin's own wrapper
uses, and copies the results into reused numpy buffers whose pointers are built once.

Those names (``vesin._c_lib.get_library``, ``vesin._c_api``) are vesin internals: the
layout is checked against vesin 0.6 when the list is built, and on any other version
``make_half_neighbor_list`` returns vesin's public ``NeighborList`` instead (with a
warning naming the version), so a vesin upgrade costs speed, never correctness.
tests/graph/test_batched_graph.py checks both give identical pairs, shifts and distances.
"""
from __future__ import annotations

import ctypes
import warnings
from typing import Any

import numpy as np

__all__ = ["HalfNeighborList", "PairSink", "make_half_neighbor_list"]

_SUPPORTED_VERSIONS = ("0.6.",)


class HalfNeighborList:
    """Half neighbour list (each pair once) of one structure via vesin's C function.

    ``compute(points, box, periodic)`` takes float64 (N,3) points, a (3,3) box (rows are
    lattice vectors; zeros when not periodic) and (3,) bool flags, and returns
    ``(pairs (P,2) uint64, shifts (P,3) int32, distances (P,))``: views of buffers reused
    by the next call, so copy what must outlive it. Not thread-safe: one per thread.
    """

    def __init__(self, cutoff: float, n_threads: int) -> None:
        from vesin._c_api import VesinAutoAlgorithm, VesinCPU, VesinDevice, VesinNeighborList, VesinOptions
        from vesin._c_lib import get_library

        self.cutoff = float(cutoff)
        self._lib = get_library()
        options = VesinOptions()
        options.cutoff = self.cutoff
        options.full = False
        options.sorted = False
        options.algorithm = VesinAutoAlgorithm
        options.skin = 0.0
        options.n_threads = int(n_threads)
        options.return_shifts = True
        options.return_distances = True
        options.return_vectors = False
        self._options = options
        self._device = VesinDevice(VesinCPU, 0)
        self._neighbors = VesinNeighborList()
        self._neighbors_ref = ctypes.byref(self._neighbors)
        self._error = ctypes.c_char_p()
        self._error_ref = ctypes.byref(self._error)
        self._box = np.zeros((3, 3), dtype=np.float64)
        self._periodic = np.zeros(3, dtype=np.bool_)
        self._box_ptr = self._box.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._periodic_ptr = self._periodic.ctypes.data_as(ctypes.POINTER(ctypes.c_bool))
        self._points = np.zeros((0, 3), dtype=np.float64)
        self._points_ptr = None
        self._pairs = np.zeros((0, 2), dtype=np.uint64)
        self._shifts = np.zeros((0, 3), dtype=np.int32)
        self._dist = np.zeros(0, dtype=np.float64)
        self._addresses = (0, 0, 0)

    def __del__(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is not None and hasattr(self, "_neighbors"):
            lib.vesin_free(self._neighbors)

    def _points_buffer(self, n: int) -> np.ndarray:
        if self._points.shape[0] < n or self._points_ptr is None:
            self._points = np.zeros((max(n, 2 * self._points.shape[0], 64), 3), dtype=np.float64)
            self._points_ptr = self._points.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        return self._points[:n]

    def _result_buffers(self, count: int) -> None:
        if self._dist.shape[0] < count:
            size = max(count, 2 * self._dist.shape[0], 1024)
            self._pairs = np.empty((size, 2), dtype=np.uint64)
            self._shifts = np.empty((size, 3), dtype=np.int32)
            self._dist = np.empty(size, dtype=np.float64)
            self._addresses = (self._pairs.ctypes.data, self._shifts.ctypes.data, self._dist.ctypes.data)

    def _search(self, points: np.ndarray, box: np.ndarray, periodic: np.ndarray) -> int:
        """Run vesin's search on the inputs; the pairs stay in vesin's buffers. Returns their count."""
        n = points.shape[0]
        np.copyto(self._points_buffer(n), points)
        np.copyto(self._box, box)
        np.copyto(self._periodic, periodic)
        status = self._lib.vesin_neighbors(
            self._points_ptr, n, self._box_ptr, self._periodic_ptr, self._device, self._options,
            self._neighbors_ref, self._error_ref,
        )
        if status != 0:
            raise RuntimeError(f"vesin: {self._error.value.decode('utf8')}")
        return int(self._neighbors.length)

    def _copy_out(self, addresses: tuple, count: int) -> None:
        """Copy the last search's ``count`` pairs, shifts and distances to three addresses."""
        nl = self._neighbors
        to_pairs, to_shifts, to_dist = addresses
        ctypes.memmove(to_pairs, nl.pairs, 16 * count)
        ctypes.memmove(to_shifts, nl.shifts, 12 * count)
        ctypes.memmove(to_dist, nl.distances, 8 * count)

    def compute(self, points: np.ndarray, box: np.ndarray, periodic: np.ndarray) -> tuple:
        """``(pairs, shifts, distances)`` of the half list; see the class docstring."""
        count = self._search(points, box, periodic)
        self._result_buffers(count)
        pairs, shifts, dist = self._pairs[:count], self._shifts[:count], self._dist[:count]
        if count:
            self._copy_out(self._addresses, count)
        return pairs, shifts, dist

    def compute_into(self, points: np.ndarray, box: np.ndarray, periodic: np.ndarray, sink: PairSink) -> int:
        """Search and append the pairs to ``sink`` (copied straight from vesin's
        buffers); returns the number of pairs."""
        count = self._search(points, box, periodic)
        if count:
            self._copy_out(sink.reserve(count), count)
        return count


class PairSink:
    """Growing arrays that collect the half lists of several structures:
    ``pairs`` (P,2) int64, ``shifts`` (P,3) int32, ``dist`` (P,) float64."""

    def __init__(self, capacity: int = 4096) -> None:
        self._allocate(max(int(capacity), 1), 0)

    def _allocate(self, capacity: int, keep: int) -> None:
        pairs = np.empty((capacity, 2), dtype=np.int64)
        shifts = np.empty((capacity, 3), dtype=np.int32)
        dist = np.empty(capacity, dtype=np.float64)
        if keep:
            pairs[:keep] = self._pairs[:keep]
            shifts[:keep] = self._shifts[:keep]
            dist[:keep] = self._dist[:keep]
        self._pairs, self._shifts, self._dist = pairs, shifts, dist
        self._addresses = (pairs.ctypes.data, shifts.ctypes.data, dist.ctypes.data)
        self.size = keep

    def reserve(self, count: int) -> tuple:
        """Addresses where the next ``count`` pairs go (their bytes must be written)."""
        start = self.size
        if start + count > self._dist.shape[0]:
            self._allocate(max(2 * self._dist.shape[0], start + count), start)
        self.size = start + count
        a, b, c = self._addresses
        return a + 16 * start, b + 12 * start, c + 8 * start

    def append(self, pairs: np.ndarray, shifts: np.ndarray, dist: np.ndarray) -> int:
        """Append arrays (for lists without ``compute_into``); returns their length."""
        count = dist.shape[0]
        start = self.size
        self.reserve(count)
        self._pairs[start : start + count] = pairs
        self._shifts[start : start + count] = shifts
        self._dist[start : start + count] = dist
        return count

    def arrays(self) -> tuple:
        """``(pairs, shifts, dist)`` collected so far (views)."""
        n = self.size
        return self._pairs[:n], self._shifts[:n], self._dist[:n]


class _PublicHalfNeighborList:
    """The same interface over vesin's public ``NeighborList`` (other vesin versions)."""

    def __init__(self, cutoff: float, n_threads: int) -> None:
        from vesin import NeighborList

        self.cutoff = float(cutoff)
        self._nl = NeighborList(cutoff=self.cutoff, full_list=False, n_threads=int(n_threads))

    def compute(self, points: np.ndarray, box: np.ndarray, periodic: np.ndarray) -> tuple:
        flags: Any = periodic if periodic.any() else False
        pairs, shifts, dist = self._nl.compute(points=points, box=box, periodic=flags, quantities="PSd", copy=False)
        return pairs.reshape(-1, 2), shifts.reshape(-1, 3), dist

    def compute_into(self, points: np.ndarray, box: np.ndarray, periodic: np.ndarray, sink: PairSink) -> int:
        """Search and append the pairs to ``sink``; returns the number of pairs."""
        return sink.append(*self.compute(points, box, periodic))


_WARNED: list = []


def make_half_neighbor_list(cutoff: float, n_threads: int, direct: bool = True):
    """A ``HalfNeighborList`` when the installed vesin is a version whose C interface it
    knows (``direct=True``), else vesin's public wrapper behind the same interface."""
    if direct:
        import vesin

        version = getattr(vesin, "__version__", "")
        if version.startswith(_SUPPORTED_VERSIONS):
            return HalfNeighborList(cutoff, n_threads)
        if not _WARNED:
            _WARNED.append(version)
            warnings.warn(
                f"vesin {version} is not a version spinconv_train.graph calls directly "
                f"({', '.join(v + 'x' for v in _SUPPORTED_VERSIONS)}); using vesin's Python wrapper "
                "(same results, ~45 µs more per structure)",
                RuntimeWarning,
                stacklevel=2,
            )
    return _PublicHalfNeighborList(cutoff, n_threads)
