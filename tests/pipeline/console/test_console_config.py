"""The console's settings are checked when the config is read: TLS needs both files, and the
hardening settings (docs/console.md) refuse what they cannot use. No services."""

from __future__ import annotations

import pytest

from pipeline.config import parse_config


def test_tls_config_needs_both_files(tmp_path):
    from pipeline.common.config import ConfigError

    with pytest.raises(ConfigError, match="tls_cert and tls_key"):
        parse_config({"console": {"tls_cert": str(tmp_path / "c.pem")}}, "vigil.yaml")
    with pytest.raises(ConfigError, match="not found"):
        parse_config(
            {"console": {"tls_cert": str(tmp_path / "c.pem"), "tls_key": str(tmp_path / "k.pem")}},
            "vigil.yaml",
        )


@pytest.mark.parametrize(
    ("console", "names"),
    [
        ({"public_url": "vigil.example.org"}, "public_url"),
        ({"trusted_proxies": ["proxy.internal"]}, "trusted_proxies"),
        ({"stream_recheck_s": 60}, "stream_recheck_s"),
        ({"max_body_bytes": "lots"}, "max_body_bytes"),
    ],
)
def test_hardening_settings_are_checked(console, names):
    from pipeline.common.config import ConfigError

    with pytest.raises(ConfigError, match=names):
        parse_config({"console": console}, "vigil.yaml")
