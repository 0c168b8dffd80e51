"""The project's files: the default folders, and writes that leave the old file or the new one, never half.

The defaults are resolved against the repository root so the scripts run from any directory; a path the user
types on the command line keeps its usual meaning (relative to where they stand).
"""
import io
import json
import os
import tempfile
from pathlib import Path

from common.command import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"
RESULTS_DIR = REPO_ROOT / "results"
CHECKPOINTS_DIR = REPO_ROOT / "checkpoints"

_UMASK = os.umask(0)
os.umask(_UMASK)


def shown(path):
    """`path` relative to the current directory when it lies below it (shorter messages), else as is."""
    try:
        return Path(path).resolve().relative_to(Path.cwd())
    except ValueError:
        return Path(path)


def repo_relative(path):
    """`path` relative to the repository when it lies inside it, else as is: what a hand-in document shows
    (it carries no machine's absolute paths)."""
    try:
        return Path(path).resolve().relative_to(REPO_ROOT)
    except ValueError:
        return Path(path)


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
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array)
    write_atomically(path, buffer.getbuffer())


def save_torch(path, obj):
    """torch.save, atomically. Serialised in memory first: torch's own file writer turns a full disk into an
    unrelated RuntimeError, while a plain write reports ENOSPC as such."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomically(path, buffer.getbuffer())
