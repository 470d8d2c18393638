"""What hardware is here, and what training setup follows from it.

`detect()` looks (torch for the CUDA devices this process sees, and for MPS); `plan()` is a pure
function of what was detected plus the config, so every rule is testable without a GPU.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from dataclasses import asdict, dataclass, field

# Cards with at least this much memory are treated as datacenter cards: full use, no cap.
DATACENTER_VRAM_GB = 40.0
# Headroom kept free on consumer cards (22 GB usable on a 24 GB card) for the desktop and
# allocator fragmentation.
CONSUMER_HEADROOM_GB = 2.0


@dataclass(frozen=True)
class Gpu:
    name: str
    vram_gb: float
    compute_capability: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Hardware:
    cpu_cores: int
    cpu_bf16: bool = False
    gpus: tuple[Gpu, ...] = ()
    mps: bool = False
    torch_version: str | None = None
    cuda_version: str | None = None
    unsloth_installed: bool = False
    machine: str = field(default_factory=platform.machine)


@dataclass(frozen=True)
class TrainingPlan:
    backend: str  # "unsloth" | "hf"
    device: str  # "cuda" | "mps" | "cpu"
    precision: str  # "bf16" | "fp16" | "fp32"
    load_in_4bit: bool
    gradient_checkpointing: bool
    vram_cap_gb: float | None
    threads: int
    reasons: tuple[str, ...]

    def as_dict(self) -> dict:
        return asdict(self)


def _cpu_has_bf16() -> bool:
    """True when this CPU runs bf16 matmuls natively (oneDNN's own check: AVX512-BF16/AMX).

    Without native support torch emulates bf16 and it is ~100x slower than fp32 (measured on
    an AVX2-only VM), so /proc/cpuinfo flags or a guess by vendor are not enough.
    """
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def detect() -> Hardware:
    import torch

    gpus: list[Gpu] = []
    if torch.cuda.is_available():
        # torch's view, not NVML's: it is the devices this process can use, in the order it numbers
        # them (CUDA_VISIBLE_DEVICES applied), and a MIG slice reports the slice's memory. NVML
        # lists every GPU of the machine in PCI order at full size, so a plan made from it could
        # describe a card the trainer never sees (or a whole H100 for a 10 GB slice).
        gpus = [
            Gpu(
                torch.cuda.get_device_name(i),
                round(torch.cuda.get_device_properties(i).total_memory / 1024**3, 1),
                tuple(torch.cuda.get_device_capability(i)),
            )
            for i in range(torch.cuda.device_count())
        ]
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Hardware(
        cpu_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        cpu_bf16=_cpu_has_bf16(),
        gpus=tuple(gpus),
        mps=mps,
        torch_version=torch.__version__,
        cuda_version=torch.version.cuda,
        unsloth_installed=importlib.util.find_spec("unsloth") is not None,
    )


def plan(hw: Hardware, training, processes: int = 1) -> TrainingPlan:
    """Decide backend, precision, 4-bit, checkpointing and VRAM cap from hardware + config.

    `training` is the TrainingConfig; its explicit choices always win over these defaults.
    `processes`: the launcher's world size (torchrun --nproc_per_node x --nnodes); above 1 the
    run is data-parallel, which the hf backend does and Unsloth's open-source release does not.
    """
    from opensem.errors import OpenSEMError

    reasons: list[str] = []
    if processes > 1:
        if training.backend == "unsloth":
            raise OpenSEMError(f"training.backend=unsloth trains on one GPU, and this run has {processes} processes "
                               "(torchrun): use training.backend=auto or hf, or launch one process")
        sharded = training.fsdp and hw.gpus
        reasons.append(f"{processes} processes (torchrun): data-parallel ({'FSDP2: the weights sharded across the GPUs' if sharded else 'DDP'}) "
                       f"with the hf backend, each process on {'its own GPU' if hw.gpus else 'its share of the CPU cores (gloo)'}")
        if training.fsdp and not hw.gpus:
            reasons.append("training.fsdp: FSDP is for GPUs; accelerate trains CPU processes with DDP")
    if hw.gpus:
        gpu = hw.gpus[0]
        datacenter = gpu.vram_gb >= DATACENTER_VRAM_GB
        if processes > 1:
            backend = "hf"
        elif training.backend == "auto":
            backend = "unsloth" if hw.unsloth_installed else "hf"
            reasons.append(
                f"CUDA GPU {gpu.name} and Unsloth installed: unsloth"
                if backend == "unsloth"
                else f"CUDA GPU {gpu.name} but Unsloth not installed (pip install -e '.[gpu]'): hf"
            )
        else:
            backend = training.backend
            if backend == "unsloth" and not hw.unsloth_installed:
                raise OpenSEMError("training.backend=unsloth but Unsloth is not installed: pip install -e '.[gpu]' on the GPU machine")
        bf16_ok = gpu.compute_capability >= (8, 0)
        precision = training.precision if training.precision != "auto" else ("bf16" if bf16_ok else "fp16")
        if datacenter:
            cap = training.vram_cap_gb
            load_4bit = bool(training.load_in_4bit) if training.load_in_4bit is not None else False
            reasons.append(f"{gpu.vram_gb:.0f} GB datacenter card: full use, 16-bit LoRA")
        else:
            cap = training.vram_cap_gb or max(gpu.vram_gb - CONSUMER_HEADROOM_GB, 1.0)
            cap = min(cap, gpu.vram_gb)
            load_4bit = training.load_in_4bit if training.load_in_4bit is not None else True
            reasons.append(f"{gpu.vram_gb:.0f} GB consumer card: VRAM capped at {cap:.0f} GB, 4-bit QLoRA by default")
        checkpointing = training.gradient_checkpointing if training.gradient_checkpointing is not None else True
        if training.gradient_checkpointing is None:
            # Measured on an H100 (README, GPUs and the cloud): a 135M base's step is launch-bound,
            # and checkpointing's recomputation made it 1.5x slower with memory to spare.
            reasons.append("gradient checkpointing on (the GPU default, for big bases); "
                           "a small base trains faster with training.gradient_checkpointing=false")
        return TrainingPlan(backend, "cuda", precision, load_4bit, checkpointing, cap, hw.cpu_cores, tuple(reasons))

    if training.backend == "unsloth":
        raise OpenSEMError("training.backend=unsloth needs a CUDA GPU and none was found; use training.backend=auto or hf")
    if training.load_in_4bit:
        raise OpenSEMError("training.load_in_4bit=true needs a CUDA GPU (bitsandbytes); set it to null or false here")
    checkpointing = bool(training.gradient_checkpointing)
    if hw.mps:
        precision = training.precision if training.precision != "auto" else "fp32"
        reasons.append("Apple MPS: hf backend, fp32 (the safe choice for training on MPS)")
        return TrainingPlan("hf", "mps", precision, False, checkpointing, None, hw.cpu_cores, tuple(reasons))
    if training.precision == "fp16":
        raise OpenSEMError("training.precision=fp16 is not supported on CPU; use auto, bf16 or fp32")
    precision = training.precision if training.precision != "auto" else ("bf16" if hw.cpu_bf16 else "fp32")
    reasons.append(
        f"CPU only ({hw.cpu_cores} cores): hf backend, {precision}"
        + (" autocast (native bf16 matmuls)" if precision == "bf16" else "")
        + ", no gradient checkpointing" * (not checkpointing)
    )
    return TrainingPlan("hf", "cpu", precision, False, checkpointing, None, hw.cpu_cores, tuple(reasons))


def import_unsloth_first(plan: TrainingPlan) -> None:
    """Import Unsloth now when the plan trains with it. It patches transformers, trl and peft as it
    is imported, so it must come before anything loads them (forge's tokenizer, the baseline's
    model); the train stage and the pipeline call this before any of that (a test keeps it so)."""
    if plan.backend == "unsloth":
        import unsloth  # noqa: F401


def return_freed_memory() -> None:
    """Collect what is no longer referenced and hand glibc's freed heap back to the system.

    glibc keeps memory that tensors freed (a training step's activations are gigabytes) for
    later allocations, so a process's resident size stays at its training peak while it goes on
    to load and run another model. malloc_trim(0) returns it; written with ctypes since no
    library wraps it. A no-op where the C library is not glibc (macOS, musl)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
