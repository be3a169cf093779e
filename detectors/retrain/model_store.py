"""The model registry's file store: a local folder or an fsspec URL (s3://, gs://, memory://...).

Files are copied in and out through a temporary name and an atomic rename, so a reader never
sees half a file; a store that cannot be written or read is a :class:`RegistryError` naming it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from detectors.retrain.model_version import RegistryError


def is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def local_path(location: str) -> Path:
    return Path(location.removeprefix("file://")).expanduser()


def store_put(src: Path, uri: str) -> None:
    """Copy ``src`` to the store; :class:`RegistryError` naming the store when it cannot."""
    try:
        _store_put(src, uri)
    except OSError as e:  # a read-only or full store, a path that is a file...
        raise RegistryError(f"cannot copy {src} to the model store ({uri}): {e}") from None


def _store_put(src: Path, uri: str) -> None:
    if is_url(uri):
        try:
            import fsspec  # noqa: PLC0415 (fsspec: optional, only for remote stores)
        except ImportError:
            raise RegistryError(
                f"model store {uri} needs fsspec (pip install fsspec and the filesystem's "
                "package, e.g. s3fs)"
            ) from None
        with open(src, "rb") as f, fsspec.open(uri, "wb") as out:
            shutil.copyfileobj(f, out, 1 << 20)
        return
    dest = local_path(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def store_get(uri: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        if is_url(uri):
            try:
                import fsspec  # noqa: PLC0415 (fsspec: optional, only for remote stores)
            except ImportError:
                raise RegistryError(f"model store {uri} needs fsspec") from None
            with fsspec.open(uri, "rb") as f, open(tmp, "wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
        else:
            src = local_path(uri)
            if not src.is_file():
                raise RegistryError(f"model file {src} is missing from the store")
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except FileNotFoundError:
        raise RegistryError(f"model file {uri} is missing from the store") from None
    finally:
        tmp.unlink(missing_ok=True)


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])
