"""Host thread pools: one thread for PyTorch/OpenCV when another engine runs the network."""

from __future__ import annotations

import cv2
import torch

from detectors import host_threads


def test_auto_leaves_a_pytorch_network_on_the_cpu_its_threads():
    assert host_threads.wanted("auto", "torch", "cpu") is None
    assert host_threads.wanted("auto", "ultralytics", "cpu") is None
    assert host_threads.wanted("auto", "openvino", "cpu") == 1
    assert host_threads.wanted("auto", "onnxruntime", "cpu") == 1
    assert host_threads.wanted("auto", "torch", "cuda:0") == 1  # the GPU runs the network
    assert host_threads.wanted(3, "openvino", "cpu") == 3


def test_apply_and_restore():
    before = host_threads.current()
    try:
        previous = host_threads.apply("auto", "openvino", "cpu")
        assert previous == before
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
    finally:
        host_threads.restore(before)
    assert host_threads.current() == before
