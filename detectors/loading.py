"""Finding, checking and loading detector weights, with errors that say how to fix them.

Anything ultralytics can load (``yolo11n.pt``, ``best.pt``, ``.onnx``, an OpenVINO folder...) is
passed to ``ultralytics.YOLO``. Legacy YOLOv5 checkpoints are converted first (see
:mod:`detectors.yolov5_legacy`) and the result cached under
``${VIGIL_CACHE:-~/.cache/vigil}/models/<sha256[:16]>.pt`` so later starts skip the conversion.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from detectors import yolov5_legacy
from detectors.errors import WeightsError
from pipeline.common.config import ConfigError, expand_env

if TYPE_CHECKING:
    from ultralytics import YOLO

log = logging.getLogger(__name__)

#: Tasks whose results carry ``boxes`` (all Vigil needs).
BOX_TASKS = ("detect", "segment", "pose")


def cache_dir() -> Path:
    """Where converted models are kept (``$VIGIL_CACHE/models``, default ``~/.cache/vigil``)."""
    return Path(os.environ.get("VIGIL_CACHE") or "~/.cache/vigil").expanduser() / "models"


def _is_bare_name(spec: str) -> bool:
    """``yolo11n.pt``: no folder part, so ultralytics may know it (and try to download it)."""
    return os.sep not in spec and "/" not in spec and not spec.startswith(("~", "."))


def resolve_weights(spec: str) -> Path | str:
    """An existing local path (as ``Path``), or a bare name / URL left for ultralytics (``str``)."""
    try:
        text = expand_env(str(spec).strip())
    except ConfigError as e:
        raise WeightsError(f"weights {spec!r}: {e}") from None
    if not text:
        raise WeightsError("no weights given: set detector.weights in the config or pass --weights")
    if "://" in text:
        return text  # URL or hub name: ultralytics downloads it
    path = Path(text).expanduser()
    if path.exists():
        return path.resolve()
    if _is_bare_name(text):
        return text
    hint = ""
    if "VIGIL_ASSETS" in str(spec) or "shared/assets" in text:
        hint = " (set VIGIL_ASSETS to the folder that holds models/ and footage/)"
    raise WeightsError(
        f"weights file {path} not found; check the path in detector.weights or --weights{hint}"
    )


def select_device(device: str = "auto") -> str:
    """``auto`` → ``cuda:0`` when CUDA works here, else ``cpu``; explicit choices are checked."""
    import torch  # noqa: PLC0415 (heavy: only to pick a device)

    spec = (device or "auto").strip().lower()
    if spec == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise WeightsError("device 'mps' requested but not available; use device: auto or cpu")
        return "mps"
    index = spec.removeprefix("cuda").lstrip(":") or "0"
    if not index.isdigit():
        raise WeightsError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    if not torch.cuda.is_available():
        raise WeightsError(
            f"device {device!r} requested but CUDA is not available; use device: auto or cpu"
        )
    if int(index) >= torch.cuda.device_count():
        raise WeightsError(
            f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return f"cuda:{index}"


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    return yolov5_legacy.file_sha256(path)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, memoised on (path, mtime, size) so repeated loads hash once."""
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def _corrupt(path: Path, detail: object) -> WeightsError:
    return WeightsError(
        f"weights file {path} is truncated or corrupt ({detail}); download or export it again"
    )


def _check_legacy(path: Path) -> bool:
    """Whether ``path`` is a legacy YOLOv5 checkpoint; damaged torch zips fail here, clearly."""
    if path.is_dir():
        return False
    if path.stat().st_size == 0:
        raise _corrupt(path, "empty file")
    try:
        return yolov5_legacy.is_legacy_yolov5(path)
    except (RuntimeError, OSError, EOFError) as e:  # zip reader: truncated archive, bad CRC...
        raise _corrupt(path, str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def _convert_cached(path: Path) -> Path:
    """The converted ultralytics checkpoint for a legacy file, converting once per file content."""
    target = cache_dir() / f"{file_sha256(path)[:16]}.pt"
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # read-only home: convert to a temporary file instead
        log.warning("cannot create cache %s (%s); converting to a temporary file", target.parent, e)
        target = Path(tempfile.mkdtemp(prefix="vigil-")) / target.name
    log.info("converting legacy YOLOv5 checkpoint %s -> %s", path, target)
    import_yolov5(path, target)
    return target


def import_yolov5(src: str | Path, out: str | Path) -> Path:
    """Convert a legacy YOLOv5 checkpoint to an ultralytics one, with :class:`WeightsError` on failure."""
    src = Path(src).expanduser()
    if not src.is_file():
        raise WeightsError(
            f"weights file {src} not found; give the path of a YOLOv5 .pt checkpoint"
        )
    if not _check_legacy(src):
        raise WeightsError(
            f"{src} is not a legacy YOLOv5 checkpoint (it does not reference the YOLOv5 repository's "
            "models.* classes); load it directly with --weights instead of importing it"
        )
    try:
        return yolov5_legacy.import_yolov5(src, Path(out).expanduser())
    except yolov5_legacy.UnsafePickleError as e:
        raise WeightsError(f"{src} was not loaded: {e}") from None
    except yolov5_legacy.LegacyCheckpointError as e:
        raise WeightsError(f"cannot convert {src}: {e}") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise _corrupt(src, f"{type(e).__name__}: {e}") from None
    except OSError as e:  # mostly the output: a read-only folder, a full disk...
        raise WeightsError(f"cannot convert {src} to {out}: {e}") from None


def precision_kwargs(half: bool) -> dict:
    """FP16 request in the spelling this ultralytics understands (8.4 renamed ``half`` to ``quantize``)."""
    if not half:
        return {}
    from ultralytics.cfg import DEFAULT_CFG_DICT  # noqa: PLC0415 (heavy: ultralytics)

    return {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}


_safe_lock = threading.Lock()
_safe_depth = 0  # nested or concurrent safe loads
_safe_saved: list[bool] = []  # the flag as it was before the outermost one


@contextlib.contextmanager
def safe_loading() -> Iterator[None]:
    """Within: ultralytics loads ``.pt`` files with ``torch.load(weights_only=True)``.

    For weights that come from the model registry or from outside: a pickle that names anything
    but tensors and known layer classes is refused instead of run. ultralytics reads its
    ``SAFE_LOAD`` flag (``ULTRALYTICS_SAFE_LOAD=1``) on each load, so it is raised here for the
    process while any such load runs (other loads meanwhile are only stricter).
    """
    global _safe_depth
    from ultralytics.nn import tasks  # noqa: PLC0415 (heavy: ultralytics)

    if not hasattr(tasks, "SAFE_LOAD") or not getattr(
        getattr(tasks, "_SafeLoad", None), "SUPPORTED", False
    ):
        raise WeightsError(
            "this ultralytics cannot load weights with torch.load(weights_only=True); "
            "upgrade it (pyproject.toml's range) to load registry or imported models"
        )
    yolov5_legacy.register_safe_globals()
    with _safe_lock:
        if _safe_depth == 0:
            _safe_saved.append(tasks.SAFE_LOAD)
            tasks.SAFE_LOAD = True
        _safe_depth += 1
    try:
        yield
    finally:
        with _safe_lock:
            _safe_depth -= 1
            if _safe_depth == 0:
                tasks.SAFE_LOAD = _safe_saved.pop()


def _is_stale(model: YOLO) -> bool:
    info = (getattr(model, "ckpt", None) or {}).get("vigil") or {}
    return info.get("converter") != f"{yolov5_legacy.__name__}/{yolov5_legacy.CONVERTER_VERSION}"


def _open(source: Path | str, shown: str) -> YOLO:
    from ultralytics import YOLO  # noqa: PLC0415 (heavy: ultralytics)

    yolov5_legacy.register_safe_globals()
    try:
        model = YOLO(str(source))
        # exported formats (.onnx...) open their runtime only now: fail here, clearly
        _ = model.names
        return model
    except WeightsError:
        raise
    except (FileNotFoundError, ConnectionError) as e:
        raise WeightsError(
            f"weights {shown!r} not found locally and could not be downloaded ({e}); "
            "give the path of a local weights file (e.g. ${VIGIL_ASSETS}/models/yolov5n.pt)"
        ) from None
    except Exception as e:  # ultralytics raises TypeError/RuntimeError/... for unusable files
        msg = str(e).strip().splitlines()[0].rstrip(".") if str(e).strip() else type(e).__name__
        if isinstance(source, str) and not Path(source).exists():
            raise WeightsError(
                f"weights {shown!r} not found locally and could not be loaded or downloaded ({msg}); "
                "give the path of a local weights file"
            ) from None
        raise WeightsError(
            f"cannot load weights {shown}: {msg}. Use an ultralytics model file (.pt, .onnx, ...) "
            "or a YOLOv5 v6 checkpoint; download or export it again if it is damaged"
        ) from None


def load_model(weights: str, device: str = "auto") -> YOLO:
    """An ``ultralytics.YOLO`` for ``weights`` (path, bare name or URL), legacy YOLOv5 included.

    ``device`` is only validated here (``select_device``); pass the result to ``predict``.
    """
    select_device(device)
    source = resolve_weights(weights)
    shown = str(source)
    if isinstance(source, Path) and _check_legacy(source):
        converted = _convert_cached(source)
        try:
            model = _open(converted, shown)
            stale = _is_stale(model)  # cached by an older converter
        except WeightsError:  # damaged cache file
            stale = True
        if stale:
            converted.unlink(missing_ok=True)
            model = _open(_convert_cached(source), shown)
    else:
        model = _open(source, shown)
    task = getattr(model, "task", "detect")
    if task not in BOX_TASKS:
        raise WeightsError(
            f"{shown} is a {task} model, not a detection model; use detection weights "
            "(e.g. yolov5n.pt, yolo11n.pt or your own trained detector)"
        )
    return model
