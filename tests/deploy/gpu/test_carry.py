"""deploy/gpu/carry.py reads requirements.lock for the GPU machine (CPython 3.12, Linux x86_64):
pinned versions with their hashes, the dependency graph of its ``# via`` lines, and what the
machine already has."""

from __future__ import annotations

import importlib.util
import sys

from pipeline.common.assets import REPO_ROOT

spec = importlib.util.spec_from_file_location("carry", REPO_ROOT / "deploy" / "gpu" / "carry.py")
carry = importlib.util.module_from_spec(spec)
sys.modules["carry"] = carry  # its dataclass looks its module up
spec.loader.exec_module(carry)

LOCK = """\
# header
pydantic==2.14.4 \\
    --hash=sha256:aa \\
    --hash=sha256:bb
    # via
    #   vigil (pyproject.toml)
    #   fastapi
pydantic-core==2.50.5 \\
    --hash=sha256:cc
    # via pydantic
scipy==1.17.1 ; python_full_version < '3.12' \\
    --hash=sha256:dd
    # via ultralytics
scipy==1.18.1 ; python_full_version >= '3.12' \\
    --hash=sha256:ee
    # via ultralytics
colorama==0.4.6 ; sys_platform == 'win32' \\
    --hash=sha256:ff
    # via tqdm
torch==2.15.0 \\
    --hash=sha256:11
    # via ultralytics
nvidia-cublas==13.4.1.3 ; sys_platform == 'linux' \\
    --hash=sha256:22
    # via torch
ultralytics==8.4.190 \\
    --hash=sha256:33
    # via vigil (pyproject.toml)
"""


def test_lock_for_the_gpu_machine(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(LOCK)
    pins = carry.read_lock(lock)
    assert pins["scipy"].version == "1.18.1" and pins["scipy"].hashes == ["sha256:ee"]
    assert "colorama" not in pins  # Windows only
    assert pins["pydantic"].hashes == ["sha256:aa", "sha256:bb"]
    assert pins["pydantic"].via == {"vigil", "fastapi"}
    assert carry.closure({"pydantic"}, pins) == {"pydantic", "pydantic-core"}
    assert carry.closure({"ultralytics"}, pins) >= {"torch", "nvidia-cublas", "scipy"}
    have = carry.machine_has(pins)
    assert {"torch", "nvidia-cublas", "scipy"} <= have and "pydantic" not in have


def test_the_real_lock_pins_what_the_machine_has():
    pins = carry.read_lock(REPO_ROOT / "requirements.lock")
    for name in ("torch", "ultralytics", "pydantic", "pydantic-core"):
        assert pins[name].version and pins[name].hashes
    assert "pydantic" not in carry.machine_has(pins)
