"""What every inference backend is: :class:`Backend` (the interface the detector drives and the
capabilities each backend declares), :class:`BackendError`, and the registry they join.

A backend module only has to define a :class:`Backend` subclass with a ``key``: defining it
registers it (``__init_subclass__``), so ``detector.backend: <key>`` validates, ``auto`` can pick
it and :func:`detectors.backends.create_backend` builds it, with no list to edit elsewhere.
Backend modules stay cheap to import (no torch, no runtime library at module level): the config
lists the backends without loading them, also those whose library is not installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from detectors.errors import WeightsError

if TYPE_CHECKING:
    import torch

    from detectors.preprocess import Allocator, Letterboxer

#: ``detector.precision``: ``auto`` lets the backend choose (see :meth:`Backend.runs`).
Precision = Literal["f32", "f16", "bf16", "int8", "auto"]
#: ``detector.backend`` values that are not a :class:`Backend`: ``auto`` (the chooser) and
#: ``ultralytics`` (already exported weights, run through ultralytics' ``predict``).
SPECIAL = ("auto", "ultralytics")
#: How a device kind is named in messages.
DEVICE_NAMES = {
    "cpu": "the CPU (device: cpu)",
    "cuda": "an NVIDIA GPU (device: cuda)",
    "mps": "an Apple GPU (device: mps)",
}

_REGISTRY: dict[str, type[Backend]] = {}


class BackendError(WeightsError):
    """A backend that cannot be used here; the message says why and how to get it."""


def device_kind(device: str) -> str:
    """``cuda:1`` -> ``cuda``; ``cpu`` and ``mps`` as they are."""
    return (device or "cpu").split(":", 1)[0].lower()


def as_output(y: Any) -> torch.Tensor:
    """The ``(B, 4 + nc, N)`` prediction out of whatever a model returns."""
    while isinstance(y, (list, tuple)):
        y = y[0]
    if isinstance(y, dict):
        y = next(iter(y.values()))
    if isinstance(y, np.ndarray):
        import torch  # noqa: PLC0415 (loaded by then; kept out of this module's import)

        return torch.from_numpy(y)
    return y


def describe_precisions(precisions: Mapping[str, tuple[str, ...]]) -> str:
    """``f16, f32 on cuda; f32 on cpu``."""
    return "; ".join(f"{', '.join(p)} on {k}" for k, p in precisions.items()) or "nothing"


def check_precision(
    key: str, precisions: Mapping[str, tuple[str, ...]], requested: str | None, device: str
) -> str:
    """The precision backend ``key`` runs on ``device`` for ``detector.precision`` ``requested``:
    unset or ``auto`` -> the first it lists for that device kind, an explicit one it supports
    there -> itself; otherwise :class:`BackendError` naming the backend, the precision and what
    it supports."""
    kind = device_kind(device)
    there = precisions.get(kind, ())
    if requested in (None, "auto") and there:
        return there[0]
    if requested in there:
        return str(requested)
    raise BackendError(
        f"backend {key!r} cannot run precision {requested!r} on {kind}: it runs "
        f"{describe_precisions(precisions)} "
        "(set detector.precision to one of those, or auto, or choose another detector.backend)"
    )


class Backend:
    """Runs the network on letterboxed uint8 batches; see :mod:`detectors.backends`.

    A subclass declares what it is in class attributes, next to its code; one with a ``key`` is
    registered when it is defined.
    """

    #: The ``detector.backend`` value; empty: not registered (a base class or a test double).
    key: ClassVar[str] = ""
    #: Device kinds it runs on (``cpu``, ``cuda``, ``mps``) -> the precisions it runs there; the
    #: first is what it runs when ``detector.precision`` is unset or ``auto``.
    precisions: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: The ultralytics export format it runs (exported and cached by
    #: :mod:`detectors.backends.export`); None: it runs the PyTorch model itself.
    export_format: ClassVar[str | None] = None
    #: Its place in ``backend: auto`` (lower first, among the available ones that run the device
    #: and precision); None: auto never picks it.
    auto_rank: ClassVar[int | None] = None
    #: The Python module it needs: looked up (never imported) to say whether it is installed.
    requires: ClassVar[str | None] = None
    #: How to install ``requires``.
    install_hint: ClassVar[str] = ""

    name = "?"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        key = cls.__dict__.get("key")
        if not key:
            return
        if key in SPECIAL or key != key.lower():
            raise TypeError(
                f"{cls.__qualname__}: backend key {key!r} is reserved or not lower case"
            )
        if "name" not in cls.__dict__:
            cls.name = key
        old = _REGISTRY.get(key)
        if old is not None and (old.__module__, old.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise TypeError(
                f"backend key {key!r} of {cls.__module__}.{cls.__qualname__} is already "
                f"{old.__module__}.{old.__qualname__}'s"
            )
        _REGISTRY[key] = cls

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        return tuple(cls.precisions)

    @classmethod
    def supports(cls, precision: str | None, device: str | None = None) -> bool:
        """Whether it runs ``precision`` (unset and ``auto`` always) on ``device`` (any device
        kind it runs on when None)."""
        if precision in (None, "auto"):
            return True
        kinds = [device_kind(device)] if device else list(cls.precisions)
        return any(precision in cls.precisions.get(k, ()) for k in kinds)

    @classmethod
    def runs(cls, requested: str | None, device: str) -> str:
        """The precision it runs on ``device`` for ``detector.precision`` ``requested`` (see
        :func:`check_precision`). A backend that decides ``auto`` when it loads (OpenVINO, from
        the accuracy gate's record) overrides this to keep ``auto``."""
        return check_precision(cls.key, cls.precisions, requested, device)

    @classmethod
    def load(cls, source: Any, config: Any, device: str, precision: str) -> Backend:
        """This backend for ``config`` (a :class:`~detectors.config.DetectorConfig`) at
        ``precision`` (from :meth:`runs`). ``source``: the exported model's path when
        ``export_format`` is set, else the ultralytics model loaded from the .pt."""
        raise NotImplementedError

    def __init__(self, device: str, half: bool = False) -> None:
        self.device = device
        self.half = half
        self.source = ""  # what was loaded (for logs and the bench)

    def allocator(self) -> Allocator | None:
        """How the letterbox canvas is allocated (pinned memory for a CUDA upload)."""
        return None

    def prepare(self, canvas: np.ndarray, boxer: Letterboxer) -> Any:
        return boxer.to_input(canvas)

    def run(self, x: Any) -> torch.Tensor:
        raise NotImplementedError

    def start(self, x: Any) -> Any:
        """Begin running a prepared batch; :meth:`finish` returns its output. The worker starts
        the next batch before it post-processes the previous one, so backends that can run in
        the background (OpenVINO) keep the cores busy meanwhile. ``x`` must stay untouched
        until then. Default: run now."""
        return self.run(x)

    def wait(self, handle: Any, timeout_s: float) -> bool:
        """Block until the backend has room for another batch next to ``handle`` (one of its
        streams has nothing left of it); False on timeout. Default: at once (synchronous)."""
        return True

    def finish(self, handle: Any) -> torch.Tensor:
        return as_output(handle)
