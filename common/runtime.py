"""Run plumbing shared by every script: one-line errors, devices, seeding, atomic writes."""
import contextlib
import copy
import io
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what a cluster's scheduler or a closing notebook sends), handled as Ctrl-C is."""
    code = 143


def _terminate(signum, frame):
    raise Terminated()


def run_cli(main, argv=None):
    """Run a script's main(), turning UserError into `error: ...` on stderr and exit code 2.

    A GPU running out of memory is the user's to fix too (a smaller batch), so it gets the same one line.
    Ctrl-C and SIGTERM end with one line saying what was saved (the run's own, where it has one) and exit
    codes 130 and 143, as a shell reports them.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as KeyboardInterrupt (common.startup)
    try:
        check_checkout()
        with memory_remedy("a smaller --batch-size"):  # outside training and prediction, which name their own
            return main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt as stop:
        code = getattr(stop, "code", 130)
        what = "terminated (SIGTERM)" if code == 143 else "interrupted"
        print(getattr(stop, "message", f"{what}; files already written are intact"), file=sys.stderr)
        raise SystemExit(code) from None


# What an exhausted GPU raises: CUDA's own error, an Apple GPU's, and cuDNN's or cuBLAS's failed allocations
OUT_OF_MEMORY = ("out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED",
                 "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE")


def is_out_of_memory(error):
    """Whether `error` says the GPU (CUDA or MPS) ran out of memory."""
    return isinstance(error, torch.OutOfMemoryError) or any(text in str(error) for text in OUT_OF_MEMORY)


def out_of_memory_line(error, remedy):
    """One line for a GPU out of memory: PyTorch's first line, then what to lower (`remedy`)."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else "out of memory"
    return f"the GPU ran out of memory ({first_line}); try {remedy}. The saved checkpoints are intact"


@contextlib.contextmanager
def memory_remedy(remedy):
    """Inside: a GPU out of memory becomes one line naming `remedy` ("a smaller --batch-size", or the
    prediction batch's flag), so the user lowers the batch that ran out."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        raise UserError(out_of_memory_line(error, remedy)) from None


def check_checkout(script=None):
    """Refuse a script of one checkout that imports this project from another.

    `python q1_fashion/train.py` puts q1_fashion/ on the import path, not the repository, so `common` comes
    from wherever `pip install -e` was last run: a second checkout's modules, which would also write into that
    checkout's results/. `script`: the running script's path (default: __main__'s).
    """
    from common.paths import REPO_ROOT

    script = script or getattr(sys.modules.get("__main__"), "__file__", None)
    if not script:
        return
    root = Path(script).resolve().parents[1]
    if (root / "common" / "paths.py").is_file() and (root / "pyproject.toml").is_file() and root != REPO_ROOT:
        raise UserError(f"{Path(script).resolve()} is in the checkout {root}, but Python imports this project from "
                        f"{REPO_ROOT} (pip install -e was run there); run `pip install -e .` in {root}, or run "
                        f"{REPO_ROOT}'s own script")


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


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_dir(path, flag):
    """Create `path` and prove it is writable now, before hours of training depend on it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise UserError(f"cannot write to {flag} {path}: {error.strerror or error}") from None
    return path


def write_atomically(path, data):
    """Write the bytes `data` to `path` through a temporary file in the same folder and os.replace.

    os.replace within one folder is atomic, so a crash or kill -9 leaves the old file or the new one,
    never half of one. If the write fails (a full disk: ENOSPC, EIO), the previous file is untouched,
    the temporary file is removed and the run stops with one line naming the file and the cause.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # a full disk may only say so when the data reaches it
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except OSError as error:
        kept = "the previous file is intact" if path.exists() else "nothing was written"
        raise UserError(f"cannot write {path}: {error.strerror or error} ({kept})") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    write_atomically(path, text.encode())


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2) + "\n")


def save_npy(path, array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_atomically(path, buffer.getbuffer())


def save_torch(path, obj):
    """torch.save, atomically. Serialised in memory first: torch's own file writer turns a full disk into an
    unrelated RuntimeError, while a plain write reports ENOSPC as such."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomically(path, buffer.getbuffer())


def describe_model(model, input_size, out_dir=None):
    """Print `print(net)` and the torchsummary table; keep both as text for the report.

    torchsummary feeds a random batch through the model, so it runs on an eval-mode copy with the
    RNG forked: the model's BatchNorm statistics and the run's random stream stay untouched.
    """
    from torchsummary import summary

    print(model)
    probe = copy.deepcopy(model).cpu().eval()
    buffer = io.StringIO()
    with torch.random.fork_rng(devices=[]), torch.no_grad(), contextlib.redirect_stdout(buffer):
        summary(probe, input_size, device="cpu")
    table = buffer.getvalue()
    print(table, end="")
    if out_dir is not None:
        write_text(Path(out_dir) / "model.txt", str(model) + "\n")
        write_text(Path(out_dir) / "summary.txt", table)
    return table


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())
