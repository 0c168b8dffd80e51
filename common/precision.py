"""Mixed precision: which one a run uses (--precision), its autocast context and the fp16 loss scaler.

Weights, the optimizer, the loss and every softmax written to a file stay float32; autocast runs the
convolutions and matrix products in bf16 (or fp16 on GPUs without bf16).

`auto` on a GPU: bf16 where the GPU supports it, else fp16 with a GradScaler. On a CPU: bf16 only with
AMX-BF16 (Intel Xeon 4th generation on), whose tile units make oneDNN's bf16 kernels several times
faster; fp32 elsewhere. AVX512-BF16 alone is not enough to pay: on this project's Intel Xeon with
AVX512-BF16 and no AMX, a training step ran 0.8x as fast in bf16 for Q1 and 0.98x (EfficientNet-Lite0)
to 0.67x (ResNet18) for Q2, though another machine of the same kind measured 1.5x. Such CPUs may ask
for `--precision bf16` explicitly; `python bench/cpu_settings.py` measures which is faster. A choice
that timed itself at start-up was tried and dropped: under load the timing flipped, and with it the
numbers of two runs of the same command.
"""
import contextlib
from pathlib import Path

import torch

from common.runtime import UserError

CHOICES = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 flags, and the ARM "Features" name


def cpu_flags(cpuinfo=Path("/proc/cpuinfo")):
    """The CPU's feature flags (Linux: /proc/cpuinfo); empty where unknown."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def resolve_precision(requested, device, flags=None):
    """(precision, reason): the precision `requested` stands for on `device`, and why, in a phrase."""
    if device.type == "mps":  # a Mac's GPU: fp32 unless asked; PyTorch's autocast runs bf16 and fp16 there
        return ("fp32", "the default on an Apple GPU") if requested == "auto" else (requested, "--precision")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "auto":
            return ("bf16", "the GPU supports bf16") if bf16_ok else ("fp16", "the GPU has no bf16")
        if requested == "bf16" and not bf16_ok:
            raise UserError("--precision bf16: this GPU does not support bf16; use --precision fp16 or auto")
        return requested, "--precision"
    if requested == "fp16":
        raise UserError("--precision fp16 is for CUDA GPUs; on a CPU use --precision bf16 or fp32")
    flags = cpu_flags() if flags is None else flags
    if requested == "bf16" and not flags & CPU_BF16_FLAGS:
        raise UserError("--precision bf16: this CPU has no native bf16 (AVX512-BF16, AMX-BF16 or ARM BF16), so "
                        "bf16 would be emulated and slow; use --precision fp32 or auto")
    if requested != "auto":
        return requested, "--precision"
    if "amx_bf16" in flags:
        return "bf16", "the CPU has AMX-BF16"
    if flags & CPU_BF16_FLAGS:
        return "fp32", "the CPU has bf16 but no AMX, where bf16 has not paid; try --precision bf16"
    return "fp32", "the CPU has no native bf16"


def choose_precision(requested, saved, device):
    """The run's precision, printed with its reason. `requested`: --precision or None; `saved`: the precision
    the checkpoint was trained in (--resume, --eval-only), kept where this device runs it."""
    if requested is None and saved is not None:
        try:
            precision, reason = resolve_precision(saved, device)
            reason = "as the checkpoint was trained"
        except UserError:
            precision, reason = resolve_precision("auto", device)
            reason = f"the checkpoint's {saved} does not run here; {reason}"
    else:
        precision, reason = resolve_precision(requested or "auto", device)
    print(f"precision: {precision} ({reason})")
    return precision


def autocast(precision, device):
    """The forward pass's context: autocast to bf16/fp16, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def make_scaler(precision, device):
    """A loss scaler for fp16 (whose small range needs it); a disabled one, which does nothing, otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
