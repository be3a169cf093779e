"""The backend registry (detectors/backends/base.py): a backend class declares its key, devices,
precisions, export format and rank for ``auto``, and is then a valid ``detector.backend`` with
no other file edited; ``detector.precision`` is checked against what the backend runs; the old
precision keys ``half`` and ``cpu_precision`` still load, with one warning each.

No weights are loaded here: the test backends are built from a stand-in model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import yaml
from pydantic import ValidationError

from detectors.backends import (
    Backend,
    BackendError,
    backend_choices,
    backend_classes,
    base,
    choose_backend,
    create_backend,
)
from detectors.config import DetectorConfig
from pipeline.common.assets import REPO_ROOT


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch):
    """Backends defined by a test leave the registry with it."""
    backend_classes()  # the real ones, found before the copy
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))


def _echo_backend(**declared) -> type[Backend]:
    """A backend class as a plug-in would define it; its ``load`` keeps what it was given."""

    class EchoBackend(Backend):
        key = declared.pop("key", "echo")
        precisions = declared.pop("precisions", {"cpu": ("f32", "int8")})
        auto_rank = declared.pop("auto_rank", None)
        requires = declared.pop("requires", None)
        install_hint = declared.pop("install_hint", "")

        @classmethod
        def load(cls, source, config, device, precision):
            backend = cls(device)
            backend.loaded = (source, device, precision)
            return backend

    assert not declared, declared
    return EchoBackend


# -- registering -----------------------------------------------------------------------------


def test_a_new_backend_class_is_a_valid_detector_backend():
    with pytest.raises(ValidationError, match="unknown backend 'echo'"):
        DetectorConfig(backend="echo")
    echo = _echo_backend()
    assert backend_classes()["echo"] is echo and echo.name == "echo"
    assert "echo" in backend_choices()
    cfg = DetectorConfig(backend="Echo", device="cpu", precision="int8")
    assert cfg.backend == "echo"
    assert choose_backend(cfg.backend, "cpu", True, cfg.precision) == "echo"
    model = object()
    built = create_backend("echo", model, cfg, "cpu")
    assert isinstance(built, echo) and built.loaded == (model, "cpu", "int8")
    # unset precision: the first the backend lists for the device
    built = create_backend("echo", model, DetectorConfig(backend="echo"), "cpu")
    assert built.loaded[2] == "f32"


def test_unknown_backend_error_lists_the_registered_ones():
    _echo_backend()
    with pytest.raises(ValidationError) as e:
        DetectorConfig(backend="tflite")
    listed = str(e.value).split("use one of ", 1)[1].split(" [", 1)[0].split(", ")
    assert listed == ["auto", *backend_classes(), "ultralytics"]
    assert {"torch", "onnxruntime", "openvino", "tensorrt", "echo"} <= set(listed)
    with pytest.raises(BackendError, match="unknown backend 'tflite'.*echo"):
        choose_backend("tflite", "cpu", True)


def test_auto_takes_the_best_ranked_backend_that_runs_device_and_precision():
    _echo_backend(auto_rank=1, precisions={"cpu": ("int8",)})
    assert choose_backend("auto", "cpu", True) == "echo"  # ranked before openvino (20)
    assert choose_backend("auto", "cpu", True, "int8") == "echo"
    assert choose_backend("auto", "cpu", True, "f32") != "echo"  # echo runs int8 only
    assert choose_backend("auto", "cuda:0", True, "f32") == "torch"  # echo runs on CPU only


def test_a_backend_whose_library_is_missing_is_listed_but_never_chosen():
    _echo_backend(auto_rank=0, requires="vigil_no_such_runtime", install_hint="pip install it")
    assert DetectorConfig(backend="echo").backend == "echo"
    assert choose_backend("auto", "cpu", True) != "echo"
    with pytest.raises(BackendError, match=r"echo is not installed \(pip install it\)"):
        choose_backend("echo", "cpu", True)


def test_two_classes_cannot_claim_one_key():
    _echo_backend(key="echo2")
    with pytest.raises(TypeError, match="already"):

        class Other(Backend):
            key = "echo2"

    for reserved in ("auto", "ultralytics"):
        with pytest.raises(TypeError, match="reserved"):
            _echo_backend(key=reserved)


def test_listing_the_backends_imports_no_runtime_library():
    """The config validates against the registry: loading it must not pull torch, OpenCV or a
    backend's runtime into processes that only read the config (alerts, notifier, console)."""
    code = textwrap.dedent(
        """
        import json, sys
        from detectors.config import DetectorConfig
        from detectors.backends import backend_classes
        DetectorConfig(backend="openvino", precision="bf16")
        heavy = ("torch", "cv2", "ultralytics", "openvino", "onnxruntime", "tensorrt")
        print(json.dumps([sorted(backend_classes()), [m for m in heavy if m in sys.modules]]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    keys, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"torch", "onnxruntime", "openvino", "tensorrt"} <= set(keys)
    assert loaded == []


# -- precision -------------------------------------------------------------------------------


def test_a_precision_the_backend_does_not_run_is_a_clear_error():
    with pytest.raises(ValidationError, match=r"backend 'onnxruntime' cannot run precision 'int8'"):
        DetectorConfig(backend="onnxruntime", precision="int8")
    with pytest.raises(ValidationError, match=r"'torch' cannot run precision 'f16' on cpu"):
        DetectorConfig(backend="torch", device="cpu", precision="f16")
    assert DetectorConfig(backend="torch", precision="f16").precision == "f16"  # device: auto
    # at run time, with the device known (auto chose it, or the config did not say)
    with pytest.raises(BackendError) as e:
        choose_backend("torch", "cpu", True, "f16")
    assert str(e.value).startswith(
        "backend 'torch' cannot run precision 'f16' on cpu: it runs f16, f32 on cuda; f32 on cpu"
    )
    with pytest.raises(BackendError, match="'tensorrt' cannot run precision 'bf16' on cuda"):
        backend_classes()["tensorrt"].runs("bf16", "cuda:0")
    with pytest.raises(
        BackendError, match=r"no backend available here runs precision 'f16' on cpu"
    ):
        choose_backend("auto", "cpu", True, "f16")
    with pytest.raises(BackendError, match=r"'ultralytics' cannot run precision 'int8'"):
        choose_backend("auto", "cpu", False, "int8")  # exported weights: ultralytics' predict
    _echo_backend(precisions={"cpu": ("f32",)})
    with pytest.raises(ValidationError, match=r"'echo' cannot run precision 'bf16'.*f32 on cpu"):
        DetectorConfig(backend="echo", precision="bf16")


@pytest.mark.parametrize(
    ("old", "precision", "warned"),
    [
        ({"cpu_precision": "bf16"}, "bf16", ["cpu_precision"]),
        ({"half": False}, "f32", ["half"]),
        ({"half": True}, None, ["half"]),
        # a dumped old config: half true next to precision f32 ran f16 on CUDA, f32 on CPU
        ({"half": True, "precision": "f32"}, None, ["half"]),
        ({"half": True, "cpu_precision": "int8"}, "int8", ["cpu_precision", "half"]),
        ({"half": False, "precision": "auto"}, "auto", ["half"]),
    ],
)
def test_old_precision_keys_map_onto_precision_with_one_warning_each(old, precision, warned):
    with pytest.warns(FutureWarning) as caught:
        cfg = DetectorConfig.model_validate(old)
    assert cfg.precision == precision
    said = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert [m.split(" is deprecated", 1)[0] for m in said] == [f"detector.{k}" for k in warned]
    assert "half" not in cfg.model_dump() and "cpu_precision" not in cfg.model_dump()


def test_an_old_yaml_section_still_loads():
    section = yaml.safe_load(
        """
        backend: openvino
        half: true           # fp16 on CUDA (ignored on CPU)
        cpu_precision: bf16
        """
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = DetectorConfig.model_validate(section)
    assert (cfg.backend, cfg.precision) == ("openvino", "bf16")
    assert len(caught) == 2
    with pytest.raises(ValidationError, match="disagree"), pytest.warns(FutureWarning):
        DetectorConfig.model_validate({"precision": "int8", "cpu_precision": "bf16"})
