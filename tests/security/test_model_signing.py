"""The signing key and the checks on registry fields, without services: what an operator or an
attacker can hand them (a missing or short key, a version that is a path or a ``${VAR}``)."""

from __future__ import annotations

import json

import pytest

from detectors.retrain import signing
from detectors.retrain.config import ModelsConfig
from detectors.retrain.model_registry import ModelRefused, ModelVersion, check_version

SHA = "ab" * 32


def test_first_promotion_creates_a_private_key_and_later_ones_reuse_it(tmp_path):
    path = tmp_path / "state" / "model-signing.key"
    key = signing.load_key(str(path), create=True)
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(key) >= signing.MIN_KEY_BYTES
    assert signing.load_key(str(path), create=True) == key
    assert signing.load_key(str(path)) == key


def test_a_worker_never_creates_the_key_and_says_which_file_it_expects(tmp_path):
    path = tmp_path / "model-signing.key"
    with pytest.raises(signing.SigningKeyError, match=f"{path}.*does not exist"):
        signing.load_key(str(path))
    assert not path.exists()
    with pytest.raises(signing.SigningKeyError, match="signing_key_file is not set"):
        signing.load_key(None)


def test_a_short_key_is_refused(tmp_path):
    path = tmp_path / "k"
    path.write_text("secret\n")
    with pytest.raises(signing.SigningKeyError, match="too short"):
        signing.load_key(str(path))


def test_signature_covers_name_version_and_sha256():
    key = b"k" * 32
    sig = signing.sign(key, "detector", "0123456789ab", SHA)
    assert signing.verify(key, "detector", "0123456789ab", SHA, sig)
    assert not signing.verify(key, "detector", "0123456789ab", "cd" * 32, sig)
    assert not signing.verify(key, "detector", "0123456789ac", SHA, sig)
    assert not signing.verify(key, "other", "0123456789ab", SHA, sig)
    assert not signing.verify(b"x" * 32, "detector", "0123456789ab", SHA, sig)
    assert not signing.verify(key, "detector", "0123456789ab", SHA, "")


@pytest.mark.parametrize(
    "version", ["../../etc/x", "a/b", "..", "a..b", "${KAFKA_PASSWORD}", "", "-x", "a" * 65, 7]
)
def test_versions_that_are_paths_or_variables_are_refused(version):
    with pytest.raises(ModelRefused, match="invalid model version") as e:
        check_version(version)
    assert e.value.reason == "bad_version"


def test_registry_entries_are_checked_and_never_expanded(monkeypatch):
    monkeypatch.setenv("KAFKA_PASSWORD", "s3cr3t")
    entry = {"version": "${KAFKA_PASSWORD}", "number": 1, "name": "detector", "uri": "x"}
    with pytest.raises(ModelRefused) as e:
        ModelVersion.from_json(json.dumps({**entry, "sha256": SHA, "created_at": 0}))
    assert "s3cr3t" not in str(e.value) and "${KAFKA_PASSWORD}" in str(e.value)
    ok = {**entry, "version": "0123456789ab", "created_at": 0}
    with pytest.raises(ModelRefused, match="sha256"):
        ModelVersion.from_json(json.dumps({**ok, "sha256": "../x"}))
    assert ModelVersion.from_json(json.dumps({**ok, "sha256": SHA})).version == "0123456789ab"


def test_signing_key_file_setting_expands_the_state_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VIGIL_STATE", str(tmp_path))
    assert ModelsConfig().signing_key_file == f"{tmp_path}/model-signing.key"
    assert ModelsConfig(signing_key_file=None).signing_key_file is None
