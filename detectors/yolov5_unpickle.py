"""Reading untrusted legacy YOLOv5 pickles without running them.

The official ``yolov5*.pt`` files are pickles of classes from the YOLOv5 repository
(``models.yolo.Detect``, ``models.common.C3``...). Loading them normally needs that code on
``sys.path`` and lets the pickle call anything it names. Instead :class:`RestrictedUnpickler` maps
those classes (and ``torch.nn`` modules) to inert :class:`Placeholder` s, lets through only what
torch needs to rebuild tensors, and refuses everything else. :mod:`detectors.yolov5_legacy` turns
what it recovers into an ultralytics model.
"""

from __future__ import annotations

import collections
import io
import pickle
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import _utils as tu
from torch import nn

# Module prefixes of the YOLOv5 repository (cloned, or the ``yolov5`` pip package).
_YOLOV5_PREFIXES = ("models.", "yolov5.models.")
_TORCH_MODULE_PREFIX = "torch.nn.modules."


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for something outside the allow-list; nothing it named was executed."""


class Placeholder:
    """Inert stand-in for a pickled class: keeps the pickled state as attributes, runs no code."""

    _qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # called only via NEWOBJ_EX/REDUCE
        self.__dict__["_init_args"] = (args, kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict, slots) form
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<placeholder {self._qualname}>"


_PLACEHOLDERS: dict[str, type[Placeholder]] = {}


def _placeholder(module: str, name: str) -> type[Placeholder]:
    qualname = f"{module}.{name}"
    if qualname not in _PLACEHOLDERS:
        _PLACEHOLDERS[qualname] = type(name, (Placeholder,), {"_qualname": qualname})
    return _PLACEHOLDERS[qualname]


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Everything a weights pickle legitimately needs besides placeholders: tensors and plain data."""
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): tu._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): tu._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): tu._rebuild_parameter,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
    }
    if hasattr(tu, "_rebuild_parameter_with_state"):
        allowed[("torch._utils", "_rebuild_parameter_with_state")] = (
            tu._rebuild_parameter_with_state
        )
    for mod in ("builtins", "__builtin__"):  # protocol-2 pickles name builtins the Python 2 way
        for typ in (
            set,
            frozenset,
            dict,
            list,
            tuple,
            int,
            float,
            complex,
            bool,
            str,
            bytes,
            slice,
        ):
            allowed[(mod, typ.__name__)] = typ
    for name in dir(torch):
        obj = getattr(torch, name, None)
        if isinstance(obj, torch.dtype):
            allowed[("torch", name)] = obj
    # numpy scalars and arrays (e.g. ``best_fitness`` in unstripped training checkpoints)
    scalar = np.float64(0).__reduce__()[0]
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(core, "scalar")] = scalar
        allowed[(core, "_reconstruct")] = reconstruct
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    for dt in (np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_):
        allowed[("numpy.dtypes", type(np.dtype(dt)).__name__)] = type(np.dtype(dt))
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for untrusted weights: tensors and plain data only, YOLOv5/nn classes as placeholders.

    Pass it to ``torch.load`` through :data:`restricted_pickle` (torch adds tensor-storage
    handling on top); any other global, such as ``os.system``, raises :class:`UnsafePickleError`
    before it can be called.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(_YOLOV5_PREFIXES) or module == "models":
            return _placeholder(module, name)
        if module.startswith(_TORCH_MODULE_PREFIX):
            target = getattr(nn, name, None)
            if isinstance(target, type) and issubclass(target, nn.Module):
                return _placeholder(module, name)
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to load '{module}.{name}': the file references code that is not part of "
                "a weights checkpoint (only tensors, plain data and YOLOv5/torch.nn layer classes "
                "are allowed). Do not use files from untrusted sources."
            ) from None


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    kwargs.pop("encoding", None)
    return RestrictedUnpickler(file, encoding="latin1", **kwargs).load()


#: A stand-in for the ``pickle`` module that ``torch.load(pickle_module=...)`` accepts.
restricted_pickle = types.ModuleType("vigil_restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]
restricted_pickle.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


def restricted_loads(data: bytes) -> Any:
    """Unpickle bytes with :class:`RestrictedUnpickler` (no torch storages)."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def checkpoint_globals(path: str | Path) -> list[str] | None:
    """Globals a ``torch.save`` zip references beyond torch's own allow-list; None if not such a zip.

    Read statically from the pickle (nothing is executed). Raises ``RuntimeError`` on a damaged zip.
    """
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except ValueError:  # not a torch.save zip (ONNX, TorchScript, old pickle format...)
        return None


def is_legacy_yolov5(path: str | Path) -> bool:
    """True when the checkpoint pickles classes of the YOLOv5 repository (``models.yolo...``)."""
    names = checkpoint_globals(path) or []
    return any(n.startswith(_YOLOV5_PREFIXES) for n in names)
