"""Run plumbing shared by every script: one-line errors, devices, seeding, atomic writes."""
import contextlib
import copy
import io
import json
import os
import random
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
    try:
        check_checkout()
        return main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except torch.OutOfMemoryError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "out of memory"
        print(f"error: the GPU ran out of memory ({first_line}); try a smaller --batch-size. The saved "
              "checkpoints are intact", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt as stop:
        code = getattr(stop, "code", 130)
        what = "terminated (SIGTERM)" if code == 143 else "interrupted"
        print(getattr(stop, "message", f"{what}; files already written are intact"), file=sys.stderr)
        raise SystemExit(code) from None


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
    """The torch device --device names. auto: CUDA, else the CPU (a Mac's GPU only when asked for: mps)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but PyTorch sees no CUDA GPU; use --device cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps was requested but PyTorch sees no Apple GPU (MPS needs a Mac with Apple "
                        "silicon or an AMD GPU and macOS 12.3 or later); use --device cpu")
    return torch.device(name)


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
