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


def run_cli(main, argv=None):
    """Run a script's main(), turning UserError into `error: ...` on stderr and exit code 2."""
    try:
        return main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted; the last saved checkpoint is intact (continue with --resume)", file=sys.stderr)
        raise SystemExit(130) from None


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but PyTorch sees no CUDA GPU; use --device cpu")
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


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the same directory; it replaces `path` only if the block succeeds.

    os.replace within one directory is atomic, so a crash or kill -9 leaves either the old file or
    the new one, never a half-written file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def save_npy(path, array):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


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
        (Path(out_dir) / "model.txt").write_text(str(model) + "\n")
        (Path(out_dir) / "summary.txt").write_text(table)
    return table


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def start_run(args, seed):
    """What every training run does first: pick the device, prove both output folders writable, seed."""
    device = pick_device(args.device)
    out_dir = prepare_dir(args.out_dir, "--out-dir")
    checkpoint_dir = prepare_dir(args.checkpoint_dir, "--checkpoint-dir")
    seed_everything(seed)
    return device, out_dir, checkpoint_dir
