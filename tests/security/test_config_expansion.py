"""``${VAR}`` in the config: a secret lands verbatim in its value, whatever characters it holds,
and no error ever quotes it (errors name the key path instead)."""

from __future__ import annotations

import pytest

from pipeline.cli.cameras import load_camera_file
from pipeline.common.config import ConfigError
from pipeline.config import load_config

# Everything YAML would read as structure if it were pasted into the file's text.
SECRET = 's3cr: et #not-a-comment\' "q" {[x]} - y'


def write(tmp_path, text: str):
    p = tmp_path / "vigil.yaml"
    p.write_text(text)
    return p


def test_secret_with_yaml_syntax_lands_verbatim(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_TEST_KAFKA_PW", SECRET)
    cfg = load_config(
        write(
            tmp_path,
            "kafka:\n"
            "  security_protocol: SASL_SSL\n"
            "  sasl_mechanism: PLAIN\n"
            "  username: vigil\n"
            "  password: ${VIGIL_TEST_KAFKA_PW}\n"
            "  client_id: after-the-password\n",
        )
    )
    assert cfg.kafka.password is not None
    assert cfg.kafka.password.get_secret_value() == SECRET
    assert cfg.kafka.client_id == "after-the-password"  # the key after it is still read


def test_errors_name_the_key_never_the_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_TEST_KAFKA_PW", SECRET)
    monkeypatch.delenv("VIGIL_TEST_UNSET", raising=False)
    p = write(
        tmp_path,
        "kafka:\n"
        "  username: vigil\n"
        "  password: ${VIGIL_TEST_KAFKA_PW}\n"
        "  client_id: ${VIGIL_TEST_UNSET}\n",
    )
    with pytest.raises(ConfigError) as e:
        load_config(p)
    text = str(e.value)
    assert "kafka.client_id" in text and "VIGIL_TEST_UNSET" in text
    assert "s3cr" not in text

    # a secret in a value of the wrong type: the error names the key, not the value
    p = write(tmp_path, "kafka:\n  replication_factor: ${VIGIL_TEST_KAFKA_PW}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "kafka.replication_factor" in str(e.value) and "s3cr" not in str(e.value)

    # a YAML error elsewhere in the file never quotes the expanded secret
    p = write(tmp_path, "kafka:\n  password: ${VIGIL_TEST_KAFKA_PW}\n  topics: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "malformed YAML" in str(e.value) and "s3cr" not in str(e.value)


def test_keys_are_not_expanded_values_in_lists_are(monkeypatch):
    from pipeline.common.config import expand_env_values  # noqa: PLC0415 (new in the fix)

    monkeypatch.setenv("VIGIL_TEST_V", "value")
    got = expand_env_values({"${VIGIL_TEST_V}": ["a-${VIGIL_TEST_V}", 3, None, {"k": True}]})
    assert got == {"${VIGIL_TEST_V}": ["a-value", 3, None, {"k": True}]}


def test_camera_file_password_with_yaml_syntax(tmp_path, monkeypatch):
    # A camera URL holds no whitespace (tests/security/test_camera_urls.py), so the YAML syntax a
    # password can carry here is a quote: expanded as text, it would end the quoted scalar early.
    url = "rtsp://admin:p\"ss'%231@10.0.0.5:554/s"
    monkeypatch.setenv("VIGIL_TEST_CAM_URL", url)
    p = tmp_path / "cams.yaml"
    p.write_text('cameras:\n  - id: door\n    url: "${VIGIL_TEST_CAM_URL}"\n')
    (spec,) = load_camera_file(str(p))
    assert spec.url == url
