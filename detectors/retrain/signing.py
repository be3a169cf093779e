"""HMAC-SHA256 signatures on model registry entries, so a Redis write alone cannot pick a model.

Whoever can write to Redis can edit a version entry and the production pointer; only whoever can
read ``models.signing_key_file`` can sign. ``vigil models promote`` (and an admin's promotion in the
console, and ``vigil retrain``'s own) sign the entry they promote; ingest workers load only entries
whose signature matches their copy of the key. Promoting creates the key file on first use (mode
600); a worker never creates it, it refuses hot reload until the file is there.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from detectors.errors import WeightsError

#: Shortest key accepted (bytes of the file, surrounding whitespace stripped).
MIN_KEY_BYTES = 32
_DOMAIN = b"vigil-model-registry-entry/1\n"


class SigningKeyError(WeightsError):
    """No usable signing key; the message names the file and how to provide it."""


def load_key(path: str | None, *, create: bool = False) -> bytes:
    """The key in ``path``; with ``create``, a new random key is written there first if missing."""
    if not path:
        raise SigningKeyError(
            "models.signing_key_file is not set: model promotions cannot be signed or checked"
        )
    p = Path(path).expanduser()
    if create and not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another promoter created it meanwhile: use theirs
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
    try:
        key = p.read_bytes().strip()
    except FileNotFoundError:
        raise SigningKeyError(
            f"model signing key {p} (models.signing_key_file) does not exist: copy it from the "
            "host that runs `vigil models promote` (which creates it on first use)"
        ) from None
    except OSError as e:
        raise SigningKeyError(f"cannot read model signing key {p}: {e.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise SigningKeyError(
            f"model signing key {p} is too short ({len(key)} bytes, at least {MIN_KEY_BYTES}); "
            "delete it and promote again to create a new one"
        )
    return key


def _message(name: str, version: str, sha256: str) -> bytes:
    return _DOMAIN + json.dumps([name, version, sha256], separators=(",", ":")).encode()


def sign(key: bytes, name: str, version: str, sha256: str) -> str:
    """Hex HMAC-SHA256 over the registry name, version and the file's sha256."""
    return hmac.new(key, _message(name, version, sha256), hashlib.sha256).hexdigest()


def verify(key: bytes, name: str, version: str, sha256: str, signature: str) -> bool:
    """Whether ``signature`` was made with ``key`` for exactly these fields (constant time)."""
    if not isinstance(signature, str) or not signature:
        return False
    return hmac.compare_digest(sign(key, name, version, sha256), signature)
