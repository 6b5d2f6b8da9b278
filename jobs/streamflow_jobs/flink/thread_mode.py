"""Workarounds for PyFlink 2.2.1's thread mode, each in one small, tested place.

**numba deadlocks in a pemja thread.** In thread mode, Python runs in Java threads whose thread
states pemja creates itself, without registering them with CPython's ``PyGILState`` API. numba's
runtime releases a NumPy array that came from Python through a destructor that calls
``PyGILState_Ensure()``; on such a thread that call does not see the thread's own state, makes
a second one and waits for the GIL this very thread holds: the task hangs for ever (seen with
gdb: ``pyobject_dtor`` -> ``PyGILState_Ensure`` -> ``take_gil``). It hits every numba call with
array arguments on any thread but the one that first started Python in the TaskManager, so
every job restart in the same TaskManager, and any job with two Python operators.

The fix calls the *same* ``treewalk.walk`` source, compiled by numba as a C callback
(``numba.cfunc``) over raw pointers: no Python object crosses into numba, so no destructor
runs, and ctypes releases and retakes the GIL with the thread's own state. The sums are the same
machine code's, so scores stay bit-identical to ``streamflow replay`` (a test checks it on the
shipped models). The scorers' own arithmetic around the walk is untouched: this replaces only the
cached compiled walk (``treewalk._WALK``), the scorers' private seam.
"""

from __future__ import annotations

import ctypes
import importlib
import threading
from typing import Any

import numpy as np

from streamflow_jobs.model import treewalk

_INSTALLED: dict[str, Any] = {}


def _build(feature_dtype: np.dtype[Any], threshold_dtype: np.dtype[Any]) -> Any:
    # numba's type hints are partial: it is used as an untyped module here.
    numba: Any = importlib.import_module("numba")
    carray, types = numba.carray, numba.types
    inner = numba.njit(treewalk.walk)
    f32, f64, intp = types.float32, types.float64, types.intp
    ptr = types.CPointer
    signature = types.void(
        ptr(f32), intp, intp,  # rows (x), row count, feature count
        ptr(numba.from_dtype(feature_dtype)), intp,  # feature index per node
        ptr(numba.from_dtype(threshold_dtype)), intp,  # thresholds
        ptr(f64), intp,  # leaf values
        intp, intp,  # trees, depth
        f64,  # the start value of each row's sum (the boosted trees' initial log-odds)
        ptr(f64),  # out: one sum per row
    )  # fmt: skip

    @numba.cfunc(signature, cache=True)
    def walk_c(xp, rows, cols, fp, nf, tp, nt, lp, nl, n_trees, depth, start, outp):  # type: ignore[no-untyped-def]
        out = carray(outp, (rows,))
        sums = inner(carray(xp, (rows, cols)), carray(fp, (nf,)), carray(tp, (nt,)),
                     carray(lp, (nl,)), n_trees, depth, start)  # fmt: skip
        for i in range(rows):
            out[i] = sums[i]

    vp, size, double = ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_double
    prototype = ctypes.CFUNCTYPE(
        None, vp, size, size, vp, size, vp, size, vp, size, size, size, double, vp
    )
    # Keep the compiled callback alive as long as the function pointer is used.
    return walk_c, prototype(int(walk_c.address))


def _address(array: np.ndarray[Any, Any]) -> int:
    address: int = array.__array_interface__["data"][0]
    return address


def gil_safe_walk(feature_dtype: np.dtype[Any], threshold_dtype: np.dtype[Any]) -> Any:
    """A drop-in for ``treewalk.compiled_walk()``'s result, for model arrays of these node
    dtypes, that never hands numba a Python object."""
    key = f"{np.dtype(feature_dtype).str}:{np.dtype(threshold_dtype).str}"
    if key not in _INSTALLED:
        _INSTALLED[key] = _build(np.dtype(feature_dtype), np.dtype(threshold_dtype))
    _, call = _INSTALLED[key]
    model: dict[int, tuple[tuple[int, ...], tuple[Any, ...]]] = {}
    # One row at a time is the streaming case: copy it into a buffer whose address is known
    # (reading an array's address costs more than the copy). One set of buffers per thread:
    # two subtasks in one TaskManager share this interpreter, and ctypes lets go of the GIL
    # during the walk, so a shared buffer would hand one subtask's row or score to the other.
    per_thread = threading.local()

    def walk(
        x: Any, feature: Any, threshold: Any, leaves: Any, n_trees: int, depth: int,
        start: float,
    ) -> Any:  # fmt: skip
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        if x32.ndim != 2:
            raise ValueError(f"expected a 2-d array of rows, got {x32.shape}")
        entry = model.get(id(leaves))
        if entry is None:
            for array in (feature, threshold, leaves):
                if not array.flags.c_contiguous:
                    raise ValueError("model arrays must be contiguous")
            if len(model) >= 8:
                model.clear()
            # The entry holds the arrays: while it exists their memory (and id) stays theirs.
            entry = model[id(leaves)] = (
                (_address(feature), feature.size, _address(threshold), threshold.size,
                 _address(leaves), leaves.size),
                (feature, threshold, leaves),
            )  # fmt: skip
        pointers = entry[0]
        rows, cols = x32.shape
        if rows == 1:
            single = per_thread.__dict__.setdefault("single", {})
            buffers = single.get(cols)
            if buffers is None:
                x_buf, out_buf = np.empty((1, cols), np.float32), np.empty(1, np.float64)
                buffers = single[cols] = (x_buf, _address(x_buf), out_buf, _address(out_buf))
            x_buf, x_at, out_buf, out_at = buffers
            x_buf[0] = x32[0]
            call(x_at, 1, cols, *pointers, n_trees, depth, start, out_at)
            return out_buf.copy()
        out = np.empty(rows, dtype=np.float64)
        call(_address(x32), rows, cols, *pointers, n_trees, depth, start, _address(out))
        return out

    return walk


def install_gil_safe_walk() -> None:
    """Make both scorers (forest and boosted trees) use :func:`gil_safe_walk` in this process
    (idempotent)."""
    current = treewalk._WALK[0] if treewalk._WALK else None
    if getattr(current, "gil_safe", False):
        return
    by_dtype: dict[tuple[str, str], Any] = {}  # compiled on first use per pair of node dtypes

    def walk(x: Any, feature: Any, threshold: Any, *rest: Any) -> Any:
        key = (feature.dtype.str, threshold.dtype.str)
        typed = by_dtype.get(key)
        if typed is None:
            typed = by_dtype[key] = gil_safe_walk(feature.dtype, threshold.dtype)
        return typed(x, feature, threshold, *rest)

    walk.gil_safe = True  # type: ignore[attr-defined]
    treewalk._WALK[:] = [walk]
