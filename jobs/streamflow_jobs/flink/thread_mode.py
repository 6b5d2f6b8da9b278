"""Workarounds for PyFlink 2.2.1's thread mode, each in one small, tested place.

**numba deadlocks in a pemja thread.** In thread mode, Python runs in Java threads whose thread
states pemja creates itself, without registering them with CPython's ``PyGILState`` API. numba's
runtime releases a NumPy array that came from Python through a destructor that calls
``PyGILState_Ensure()``; on such a thread that call does not see the thread's own state, makes
a second one and waits for the GIL this very thread holds: the task hangs for ever (seen with
gdb: ``pyobject_dtor`` -> ``PyGILState_Ensure`` -> ``take_gil``). It hits every numba call with
array arguments on any thread but the one that first started Python in the TaskManager, so
every job restart in the same TaskManager, and any job with two Python operators.

The fix calls the *same* ``forest._walk`` source, compiled by numba as a C callback
(``numba.cfunc``) over raw pointers: no Python object crosses into numba, so no destructor
runs, and ctypes releases and retakes the GIL with the thread's own state. The sums are the same
machine code's, so scores stay bit-identical to ``streamflow replay`` (a test checks it on the
shipped model). The scorer's own arithmetic around the walk is untouched: this replaces only the
module's cached compiled walk (``forest._WALK``), the scorer's private seam.
"""

from __future__ import annotations

import ctypes
import importlib
import threading
from typing import Any

import numpy as np

_INSTALLED: dict[str, Any] = {}


# The scorers whose compiled walk is replaced: module, and the threshold type of its nodes.
_WALKS = {
    "forest": ("streamflow_jobs.model.forest", "float32"),
    "boosting": ("streamflow_jobs.model.boosting", "float64"),
}


def _build(feature_dtype: np.dtype[Any], kind: str = "forest") -> Any:
    # numba's type hints are partial: it is used as an untyped module here.
    numba: Any = importlib.import_module("numba")
    carray, types = numba.carray, numba.types
    module_name, threshold_type = _WALKS[kind]
    inner = numba.njit(importlib.import_module(module_name)._walk)
    f32, f64, intp = types.float32, types.float64, types.intp
    ptr = types.CPointer
    signature = types.void(
        ptr(f32), intp, intp,  # rows (x), row count, feature count
        ptr(numba.from_dtype(feature_dtype)), intp,  # feature index per node
        ptr(getattr(types, threshold_type)), intp,  # thresholds
        ptr(f64), intp,  # leaf values
        intp, intp,  # trees, depth
        f64,  # the boosted trees' initial log-odds (the forest has none)
        ptr(f64),  # out: one sum per row
    )  # fmt: skip

    if kind == "forest":

        @numba.cfunc(signature, cache=True)
        def walk_c(xp, rows, cols, fp, nf, tp, nt, lp, nl, n_trees, depth, init, outp):  # type: ignore[no-untyped-def]
            out = carray(outp, (rows,))
            sums = inner(carray(xp, (rows, cols)), carray(fp, (nf,)), carray(tp, (nt,)),
                         carray(lp, (nl,)), n_trees, depth)  # fmt: skip
            for i in range(rows):
                out[i] = sums[i]
    else:

        @numba.cfunc(signature, cache=True)
        def walk_c(xp, rows, cols, fp, nf, tp, nt, lp, nl, n_trees, depth, init, outp):  # type: ignore[no-untyped-def]
            out = carray(outp, (rows,))
            sums = inner(carray(xp, (rows, cols)), carray(fp, (nf,)), carray(tp, (nt,)),
                         carray(lp, (nl,)), n_trees, depth, init)  # fmt: skip
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


def gil_safe_walk(feature_dtype: np.dtype[Any], kind: str = "forest") -> Any:
    """A drop-in for ``forest._compiled_walk()``'s result (or, with ``kind="boosting"``,
    ``boosting._compiled_walk()``'s) that never hands numba a Python object."""
    key = f"{kind}:{np.dtype(feature_dtype).str}"
    if key not in _INSTALLED:
        _INSTALLED[key] = _build(np.dtype(feature_dtype), kind)
    _, call = _INSTALLED[key]
    model: dict[int, tuple[tuple[int, ...], tuple[Any, ...]]] = {}
    # One row at a time is the streaming case: copy it into a buffer whose address is known
    # (reading an array's address costs more than the copy). One set of buffers per thread:
    # two subtasks in one TaskManager share this interpreter, and ctypes lets go of the GIL
    # during the walk, so a shared buffer would hand one subtask's row or score to the other.
    per_thread = threading.local()

    def walk(
        x: Any, feature: Any, threshold: Any, leaves: Any, n_trees: int, depth: int,
        init: float = 0.0,
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
            call(x_at, 1, cols, *pointers, n_trees, depth, init, out_at)
            return out_buf.copy()
        out = np.empty(rows, dtype=np.float64)
        call(_address(x32), rows, cols, *pointers, n_trees, depth, init, _address(out))
        return out

    return walk


def install_gil_safe_walk() -> None:
    """Make both scorers (forest and boosted trees) use :func:`gil_safe_walk` in this process
    (idempotent)."""
    from streamflow_jobs.model import boosting, forest  # noqa: PLC0415

    for kind, module in (("forest", forest), ("boosting", boosting)):
        current = module._WALK[0] if module._WALK else None
        if getattr(current, "gil_safe", False):
            continue
        module._WALK[:] = [_dispatch(kind)]


def _dispatch(kind: str) -> Any:
    by_dtype: dict[str, Any] = {}  # compiled on first use per node-feature dtype

    def walk(x: Any, feature: Any, *rest: Any) -> Any:
        typed = by_dtype.get(feature.dtype.str)
        if typed is None:
            typed = by_dtype[feature.dtype.str] = gil_safe_walk(feature.dtype, kind)
        return typed(x, feature, *rest)

    walk.gil_safe = True  # type: ignore[attr-defined]
    return walk
