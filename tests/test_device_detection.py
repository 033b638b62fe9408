"""`measure.device: auto` finds a GPU without torch: /proc, /dev nodes, nvidia-smi -L, CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import os

import pytest

from medusa_roofline.core import nvidia
from medusa_roofline.repro import settings


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A host with no /proc driver tree, an empty /dev and no nvidia-smi on PATH; tests add what they need."""
    proc = tmp_path / "proc" / "driver" / "nvidia" / "gpus"
    dev = tmp_path / "dev"
    dev.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setattr(nvidia, "PROC_GPUS", proc)
    monkeypatch.setattr(nvidia, "DEV_DIR", dev)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return {"proc": proc, "dev": dev, "bin": bin_dir}


def fake_smi(bin_dir, stdout: str, rc: int = 0):
    exe = bin_dir / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\nprintf '%s' '{stdout}'\nexit {rc}\n")
    exe.chmod(0o755)


def test_nothing_there_is_no_gpu(host):
    assert not host["proc"].exists()  # the /proc path the old check needed is missing
    assert nvidia.nvidia_gpu_visible() is False
    assert settings.torch_device({"device": "auto"}) == "cpu"


def test_proc_driver_tree(host):
    (host["proc"] / "0000:17:00.0").mkdir(parents=True)
    assert nvidia.nvidia_gpu_visible() is True


def test_device_nodes_without_proc(host):
    """A container or sandboxed GPU host: /dev/nvidia0 exists, /proc/driver/nvidia does not."""
    for name in ("nvidiactl", "nvidia-uvm", "nvidia-modeset"):
        (host["dev"] / name).touch()
    assert nvidia.nvidia_gpu_visible() is False  # control nodes alone are not a GPU
    (host["dev"] / "nvidia0").touch()
    assert nvidia.nvidia_gpu_visible() is True
    assert settings.torch_device({"device": "auto"}) == "cuda"


@pytest.mark.parametrize("stdout, rc, visible", [
    ("GPU 0: NVIDIA H200 (UUID: GPU-0f1e2d3c)\n", 0, True),
    ("No devices were found\n", 6, False),
    ("NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.\n", 9, False),
])
def test_nvidia_smi_listing(host, stdout, rc, visible):
    fake_smi(host["bin"], stdout, rc)
    assert nvidia.nvidia_gpu_visible() is visible


@pytest.mark.parametrize("value, hidden", [
    (None, False), ("0", False), ("1,0", False), ("GPU-0f1e2d3c-aaaa", False), ("MIG-1234-5678", False),
    ("", True), (" ", True), ("-1", True), ("-1,0", True), ("NoDevFiles", True),
])
def test_cuda_visible_devices_semantics(value, hidden):
    assert nvidia.cuda_visible_devices_hide_all(value) is hidden


def test_cuda_visible_devices_hides_an_installed_gpu(host, monkeypatch):
    (host["dev"] / "nvidia0").touch()
    fake_smi(host["bin"], "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\n")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert nvidia.nvidia_gpu_visible() is False
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert nvidia.nvidia_gpu_visible() is True


def test_empty_or_unreadable_proc_falls_through(host, monkeypatch):
    host["proc"].mkdir(parents=True)
    os.chmod(host["proc"], 0)
    try:
        (host["dev"] / "nvidia3").touch()
        assert nvidia.nvidia_gpu_visible() is True
    finally:
        os.chmod(host["proc"], 0o755)
