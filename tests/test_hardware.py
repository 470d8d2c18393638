"""Backend, precision, 4-bit and VRAM-cap rules, from detection results supplied to plan()."""

from __future__ import annotations

import pytest

from opensem.config import TrainingConfig
from opensem.errors import OpenSEMError
from opensem.hardware import Gpu, Hardware, detect, plan

CPU = Hardware(cpu_cores=2)
RTX4090 = Hardware(cpu_cores=16, gpus=(Gpu("NVIDIA GeForce RTX 4090", 24.0, (8, 9)),), unsloth_installed=True)
T4 = Hardware(cpu_cores=4, gpus=(Gpu("Tesla T4", 15.0, (7, 5)),), unsloth_installed=False)
H100 = Hardware(cpu_cores=32, gpus=(Gpu("NVIDIA H100 80GB HBM3", 80.0, (9, 0)),), unsloth_installed=True)


def test_this_machine_is_cpu_only():
    hw = detect()
    assert hw.gpus == () and hw.cpu_cores >= 1
    assert plan(hw, TrainingConfig()).backend == "hf"


def test_cpu_plan():
    p = plan(CPU, TrainingConfig())
    assert (p.backend, p.device, p.precision, p.load_in_4bit, p.gradient_checkpointing, p.vram_cap_gb) == (
        "hf", "cpu", "fp32", False, False, None,
    )
    assert plan(Hardware(cpu_cores=2, cpu_bf16=True), TrainingConfig()).precision == "bf16"


def test_several_processes_train_data_parallel_with_the_hf_backend():
    """Unsloth's open-source release trains on one GPU: under torchrun the hf backend does DDP,
    each process on its GPU with the card's usual precision and memory rules."""
    p = plan(H100, TrainingConfig(), processes=8)
    assert (p.backend, p.device, p.precision, p.load_in_4bit) == ("hf", "cuda", "bf16", False)
    assert any("8 processes (torchrun): data-parallel (DDP)" in r for r in p.reasons)
    assert plan(RTX4090, TrainingConfig(), processes=2).load_in_4bit is True  # QLoRA on each consumer card
    assert plan(CPU, TrainingConfig(), processes=2).backend == "hf"
    with pytest.raises(OpenSEMError, match="trains on one GPU"):
        plan(H100, TrainingConfig(backend="unsloth"), processes=2)
    assert plan(H100, TrainingConfig(), processes=1).backend == "unsloth"
    assert any("FSDP2" in r for r in plan(H100, TrainingConfig(fsdp=True), processes=8).reasons)
    assert any("FSDP is for GPUs" in r for r in plan(CPU, TrainingConfig(fsdp=True), processes=2).reasons)


def test_fsdp_settings_reach_the_trainer_only_under_torchrun(monkeypatch):
    from opensem.train.hf_backend import fsdp_settings

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert fsdp_settings(TrainingConfig(fsdp=True)) == {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert fsdp_settings(TrainingConfig(fsdp=False)) == {}
    assert fsdp_settings(TrainingConfig(fsdp=True)) == {"fsdp": True, "fsdp_config": {"version": 2, "state_dict_type": "FULL_STATE_DICT"}}


def test_consumer_card_gets_cap_and_qlora():
    p = plan(RTX4090, TrainingConfig())
    assert (p.backend, p.precision, p.load_in_4bit, p.vram_cap_gb) == ("unsloth", "bf16", True, 22.0)
    assert plan(RTX4090, TrainingConfig(vram_cap_gb=20)).vram_cap_gb == 20
    assert plan(RTX4090, TrainingConfig(vram_cap_gb=40)).vram_cap_gb == 24.0  # never above the card
    assert plan(RTX4090, TrainingConfig(load_in_4bit=False)).load_in_4bit is False


def test_older_card_without_unsloth_uses_hf_fp16():
    p = plan(T4, TrainingConfig())
    assert (p.backend, p.precision, p.vram_cap_gb) == ("hf", "fp16", 13.0)


def test_datacenter_card_gets_full_use():
    p = plan(H100, TrainingConfig())
    assert (p.backend, p.precision, p.load_in_4bit, p.vram_cap_gb) == ("unsloth", "bf16", False, None)


def test_gpu_checkpointing_defaults_on_and_says_how_to_turn_it_off():
    p = plan(H100, TrainingConfig())
    assert p.gradient_checkpointing and any("training.gradient_checkpointing=false" in r for r in p.reasons)
    p = plan(H100, TrainingConfig(gradient_checkpointing=False))
    assert not p.gradient_checkpointing and not any("gradient checkpointing" in r for r in p.reasons)


@pytest.mark.parametrize(
    "hw, training, message",
    [
        (CPU, TrainingConfig(backend="unsloth"), "needs a CUDA GPU"),
        (CPU, TrainingConfig(load_in_4bit=True), "needs a CUDA GPU"),
        (CPU, TrainingConfig(precision="fp16"), "not supported on CPU"),
        (T4, TrainingConfig(backend="unsloth"), "Unsloth is not installed"),
    ],
)
def test_impossible_requests_are_refused(hw, training, message):
    with pytest.raises(OpenSEMError, match=message):
        plan(hw, training)


class _FakeNvml:
    """NVML as on a machine with two GPUs in PCI order: it ignores CUDA_VISIBLE_DEVICES and MIG."""

    cards = [("NVIDIA H100 80GB HBM3", 80 * 1024**3, (9, 0)), ("NVIDIA GeForce RTX 4090", 24 * 1024**3, (8, 9))]

    def nvmlInit(self): pass
    def nvmlShutdown(self): pass
    def nvmlDeviceGetCount(self): return len(self.cards)
    def nvmlDeviceGetHandleByIndex(self, i): return i
    def nvmlDeviceGetName(self, i): return self.cards[i][0]
    def nvmlDeviceGetMemoryInfo(self, i): return type("Mem", (), {"total": self.cards[i][1]})()
    def nvmlDeviceGetCudaComputeCapability(self, i): return self.cards[i][2]


@pytest.mark.parametrize("visible, expected", [
    # CUDA_VISIBLE_DEVICES=1: the process sees only the 4090, as its device 0
    ([("NVIDIA GeForce RTX 4090", 24.0, (8, 9))], ("NVIDIA GeForce RTX 4090", "24 GB consumer card")),
    # a 1g.10gb MIG slice of the H100 reports the slice's memory, not 80 GB
    ([("NVIDIA H100 80GB HBM3 MIG 1g.10gb", 9.5, (9, 0))], ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "10 GB consumer card")),
])
def test_the_plan_describes_the_devices_this_process_sees(monkeypatch, visible, expected):
    import sys

    import torch

    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())  # what the machine has; not what torch will use
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(visible))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: visible[i][0])
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: type("P", (), {"total_memory": visible[i][1] * 1024**3})())
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: visible[i][2])
    hw = detect()
    assert [g.name for g in hw.gpus] == [v[0] for v in visible]
    p = plan(hw, TrainingConfig())
    assert p.device == "cuda" and any(expected[1] in r for r in p.reasons), p.reasons


def test_unsloth_refuses_fp32_instead_of_silently_training_in_fp16():
    import torch

    from opensem.train.unsloth_backend import unsloth_dtype  # importable without a GPU: unsloth itself is not imported

    assert unsloth_dtype("bf16") is torch.bfloat16 and unsloth_dtype("fp16") is torch.float16
    with pytest.raises(OpenSEMError, match="training.precision=fp32 is not supported by the Unsloth backend"):
        unsloth_dtype("fp32")


def test_unsloth_is_imported_before_transformers(tmp_path):
    # Unsloth patches transformers/trl/peft when imported, so it must come first. A stand-in
    # `unsloth` package (the real one needs a CUDA GPU) records what was already loaded when the
    # train stage's and the pipeline's first step imports it.
    import subprocess
    import sys

    fake = tmp_path / "unsloth"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import sys\nLOADED_BEFORE = sorted(m for m in ('transformers', 'trl', 'peft') if m in sys.modules)\n"
    )
    script = (
        "import dataclasses, sys\n"
        "import opensem.cli, opensem.pipeline, opensem.train.stage, opensem.forge.stage, opensem.judge.evaluate\n"
        "from opensem.config import TrainingConfig\n"
        "from opensem.hardware import detect, import_unsloth_first, plan\n"
        "p = plan(detect(), TrainingConfig())\n"
        "import_unsloth_first(p)\n"
        "assert 'unsloth' not in sys.modules  # the hf plan of this CPU machine does not import it\n"
        "import_unsloth_first(dataclasses.replace(p, backend='unsloth'))\n"
        "import unsloth\n"
        "print(unsloth.LOADED_BEFORE)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
