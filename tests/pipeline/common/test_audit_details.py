"""What the audit log keeps of an action's details (pipeline/common/audit.py): never a secret.
No services; the audit log itself, on Redis, is tests/security/test_audit.py."""

from __future__ import annotations

CAM_PASSWORD = "Cam-S3cret-pw"


def test_audit_details_never_keep_secrets():
    from pipeline.common.audit import safe_details  # noqa: PLC0415 (new in the fix)

    got = safe_details(
        {
            "url": f"rtsp://admin:{CAM_PASSWORD}@cam/1",
            "password": CAM_PASSWORD,
            "nested": [{"secret": "x" * 20, "api_token": "vgl_abc", "fps": 4}],
        }
    )
    assert got == {"url": "rtsp://admin:***@cam/1", "nested": [{"fps": 4}]}
