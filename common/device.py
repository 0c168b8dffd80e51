"""The device a run computes on (--device) and the precision it computes in (--precision).

--device auto: a CUDA GPU this PyTorch can run, else the CPU; a Mac's GPU (mps) only when asked for by name.

Mixed precision: weights, the optimizer, the loss and every softmax written to a file stay float32;
autocast runs the convolutions and matrix products in bf16 or fp16.

`auto` on a CUDA GPU: bf16 where the GPU computes it natively (compute capability 8.0 on: A100, L4, RTX 30xx
and later), else fp16 with a GradScaler (Colab's T4, capability 7.5, has fp16 tensor cores and no bf16).
torch.cuda.is_bf16_supported() alone is not the test: its default `including_emulation=True` answers True on
a T4, where cuDNN has no bf16 convolutions and bf16 would be emulated. On an Apple GPU (MPS): fp32 unless
asked; bf16 and fp16 are accepted where that macOS and PyTorch run them (a probe: a convolution under
autocast must come out in that dtype). On a CPU: bf16 only with AMX-BF16 (Intel Xeon 4th generation on),
whose tile units make oneDNN's bf16 kernels several times faster; fp32 elsewhere. AVX512-BF16 alone is not
enough to pay: on this project's Intel Xeon with AVX512-BF16 and no AMX, a training step ran 0.8x as fast
in bf16 for Q1 and 0.98x (EfficientNet-Lite0) to 0.67x (ResNet18) for Q2, though another machine of the
same kind measured 1.5x. Such CPUs may ask for `--precision bf16` explicitly; `python bench/cpu_settings.py`
measures which is faster. A choice that timed itself at start-up was tried and dropped: under load the
timing flipped, and with it the numbers of two runs of the same command. `--precision fp16` runs on a CPU
with native fp16 arithmetic (AVX512-FP16, AMX-FP16), with the same loss scaler as on a GPU.
"""
import contextlib
import shutil
from pathlib import Path

import torch

from common.command import UserError

CHOICES = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 flags, and the ARM "Features" name
CPU_FP16_FLAGS = {"avx512_fp16", "amx_fp16", "asimdhp"}  # x86 flags, and ARM's half-precision arithmetic


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


def gpu_words(device):
    """The CUDA GPU in words, for messages: 'Tesla T4, compute capability 7.5'."""
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)}, compute capability {major}.{minor}"


def cuda_has_bf16(device):
    """Native bf16 on this CUDA GPU: compute capability 8.0 or later, and PyTorch agreeing without emulation
    (its `including_emulation` argument exists from PyTorch 2.4 on)."""
    if torch.cuda.get_device_capability(device)[0] < 8:
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # an older PyTorch, whose is_bf16_supported() does not emulate
        return bool(torch.cuda.is_bf16_supported())


def autocast_runs(device, precision):
    """Whether this PyTorch (and, on a Mac, this macOS) runs `precision` under autocast on `device`: a small
    convolution must come out in that dtype (where autocast does not support one, PyTorch warns and computes
    in float32), and for fp16 the loss scaler must exist for the device."""
    import warnings
    dtype = DTYPES[precision]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inputs, weight = torch.ones(1, 1, 4, 4, device=device), torch.ones(1, 1, 3, 3, device=device)
            with torch.autocast(torch.device(device).type, dtype=dtype):
                out = torch.nn.functional.conv2d(inputs, weight)
            torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")
        return out.dtype == dtype
    except (RuntimeError, TypeError, ValueError):
        return False


def resolve_precision(requested, device, flags=None):
    """(precision, reason): the precision `requested` stands for on `device`, and why, in a phrase."""
    if device.type == "mps":  # a Mac's GPU: fp32 unless asked
        if requested == "auto":
            return "fp32", "the default on an Apple GPU"
        if requested != "fp32" and not autocast_runs(device, requested):
            raise UserError(f"--precision {requested}: this Mac's PyTorch {torch.__version__} does not run {requested} "
                            "on the Apple GPU (bf16 needs macOS 14 or later); use --precision fp32")
        return requested, "--precision"
    if device.type == "cuda":
        bf16_ok = cuda_has_bf16(device)
        if requested == "auto":
            return ("bf16", "the GPU computes bf16 natively") if bf16_ok else \
                ("fp16", f"the GPU ({gpu_words(device)}) has no native bf16: fp16 with a loss scaler")
        if requested == "bf16" and not bf16_ok:
            raise UserError(f"--precision bf16: this GPU ({gpu_words(device)}) has no native bf16 (it needs compute "
                            "capability 8.0 or later); use --precision fp16 or auto")
        return requested, "--precision"
    flags = cpu_flags() if flags is None else flags
    if requested == "fp16" and not flags & CPU_FP16_FLAGS:
        raise UserError("--precision fp16: this CPU has no native fp16 (AVX512-FP16 or AMX-FP16), so fp16 would be "
                        "emulated and slow; use --precision fp32 or auto (fp16 is for GPUs)")
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


def optimizer_kernels(device):
    """An AdamW's keyword for how it steps on `device`: fused kernels on a CUDA GPU, which take the fp16 loss
    scaler's overflow flag on the GPU (with the default kernels GradScaler reads it on the host, a synchronisation
    every step); PyTorch's default elsewhere, so a CPU's numbers are what they were. (Not for SGD with momentum:
    see q1_fashion/train.py's make_optimizer.)"""
    return {"fused": True} if device.type == "cuda" else {}


def make_scaler(precision, device):
    """A loss scaler for fp16 (whose small range needs it); a disabled one, which does nothing, otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def pick_device(name):
    """The torch device --device names. auto: a CUDA GPU this PyTorch can run, else the CPU (a Mac's GPU only when
    asked for: mps). On CUDA, cuDNN picks its fastest algorithms for the run's fixed shapes (cudnn.benchmark)."""
    if name == "auto":
        unsupported = cuda_unsupported() if torch.cuda.is_available() else None
        usable = torch.cuda.is_available() and unsupported is None
        if unsupported:
            print(f"NOTE: {unsupported}; training on the CPU")
        elif cpu_only_build() and shutil.which("nvidia-smi"):  # a Windows laptop's NVIDIA card, PyPI's CPU build
            print(f"NOTE: this machine has an NVIDIA driver (nvidia-smi), but this PyTorch ({torch.__version__}) is a "
                  "CPU-only build: training on the CPU. For the GPU, install a CUDA build (pytorch.org's install "
                  "selector gives the command)")
        name = "cuda" if usable else "cpu"
    elif name == "cuda":
        if cpu_only_build():
            raise UserError(f"--device cuda: this PyTorch ({torch.__version__}) is a CPU-only build; install a CUDA "
                            "build (pytorch.org's install selector gives the command) or use --device cpu")
        if not torch.cuda.is_available():
            raise UserError("--device cuda was requested but PyTorch sees no CUDA GPU (is the NVIDIA driver "
                            "installed? `nvidia-smi` lists what it sees); use --device cpu")
        unsupported = cuda_unsupported()
        if unsupported:
            raise UserError(f"--device cuda: {unsupported}; install a PyTorch build for it (pytorch.org "
                            "lists which CUDA builds support which GPUs) or use --device cpu")
    elif name == "mps" and not mps_available():
        raise UserError("--device mps was requested but PyTorch sees no Apple GPU (MPS needs a Mac with Apple "
                        "silicon or an AMD GPU and macOS 12.3 or later); use --device cpu")
    if name == "cuda":
        torch.backends.cudnn.benchmark = True  # the shapes are fixed: cuDNN's fastest algorithm, timed once each
    return torch.device(name)


def mps_available():
    """Whether PyTorch sees an Apple GPU (older builds have no torch.backends.mps)."""
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def cpu_only_build():
    """Whether the installed PyTorch was built without CUDA (and without ROCm): what PyPI installs on Windows."""
    return torch.version.cuda is None and not getattr(torch.version, "hip", None)


def cuda_unsupported(index=0):
    """Why this PyTorch cannot run CUDA GPU `index` (its architecture is not among those it was built for), as
    a phrase; None when it can. A cubin runs on the GPUs of its major version with the same or a higher minor
    one; PTX (compute_XY) is compiled for any later GPU by the driver."""
    arches = torch.cuda.get_arch_list()
    if not arches:  # a build that does not say: let it try
        return None
    major, minor = torch.cuda.get_device_capability(index)
    for arch in arches:
        kind, _, code = arch.partition("_")
        digits = code.rstrip("af")
        if not digits.isdigit():
            continue
        code_major, code_minor = divmod(int(digits), 10)
        if kind == "sm" and code_major == major and code_minor <= minor:
            return None
        if kind == "compute" and (code_major, code_minor) <= (major, minor):
            return None
    return (f"the GPU ({torch.cuda.get_device_name(index)}, compute capability {major}.{minor}) is not one this "
            f"PyTorch {torch.__version__} was built for ({' '.join(arches)})")
