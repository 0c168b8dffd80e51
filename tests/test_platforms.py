"""What differs by platform, exercised here on Linux: Windows simulated in a child Python that has no `fcntl`
and no `os.getloadavg` and whose `msvcrt.locking` is a stand-in with Windows' contract (lock N bytes from the
current position; a held range is OSError EACCES) built on POSIX record locks. The real msvcrt runs only in
the published repository's workflow on windows-latest (.github/workflows/tests.yml)."""
import json
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="simulates Windows on Unix (it needs fcntl to)")

WINDOWS_STAND_IN = '''
import errno, os, sys, types
import fcntl as _fcntl
import subprocess  # it takes msvcrt as a sign of Windows: imported before the stand-in exists
sys.modules["fcntl"] = None  # `import fcntl` now fails, as on Windows
if hasattr(os, "getloadavg"):
    del os.getloadavg
msvcrt = types.ModuleType("msvcrt")
msvcrt.LK_NBLCK, msvcrt.LK_UNLCK = 2, 0
def locking(fd, mode, nbytes):
    operation = _fcntl.LOCK_EX | _fcntl.LOCK_NB if mode == msvcrt.LK_NBLCK else _fcntl.LOCK_UN
    try:
        _fcntl.lockf(fd, operation, nbytes, 0, os.SEEK_CUR)
    except OSError:
        raise OSError(errno.EACCES, "Permission denied") from None
msvcrt.locking = locking
sys.modules["msvcrt"] = msvcrt
'''


@pytest.fixture
def windows(tmp_path):
    """A function that runs `python ARGS` as on Windows (see the module's docstring); returns the result."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(WINDOWS_STAND_IN)
    env = {**__import__("os").environ, "PYTHONPATH": f"{site}{__import__('os').pathsep}{REPO}"}

    def run(*args, check=True, **kwargs):
        done = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600, **kwargs)
        if check:
            assert done.returncode == 0, done.stderr[-2000:]
        return done

    return run


def test_the_stand_in_is_windows_as_the_project_sees_it(windows):
    done = windows("-c", "import common.folders as f, os; print(f.fcntl is None, f.msvcrt is not None, "
                         "hasattr(os, 'getloadavg'))")
    assert done.stdout.split() == ["True", "True", "False"]


def test_the_lock_refuses_a_second_process_without_fcntl(windows, tmp_path):
    hold = ("import sys, time\nfrom common.folders import locked\nwith locked(sys.argv[1]):\n"
            "    print('held', flush=True)\n    time.sleep(60)\n")
    site = tmp_path / "site"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**__import__("os").environ,
                                   "PYTHONPATH": f"{site}{__import__('os').pathsep}{REPO}"})
    try:
        assert holder.stdout.readline().strip() == "held"
        tried = windows("-c", "import sys\nfrom common.folders import locked\nfrom common.command import UserError\n"
                              "try:\n    with locked(sys.argv[1]):\n        print('got it')\n"
                              "except UserError as e:\n    print(e)\n", tmp_path)
        assert tried.stdout.strip() == (f"{tmp_path} is in use by another run (process {holder.pid}); wait for it "
                                        "to finish, or give this run another folder")
    finally:
        holder.kill()
        holder.wait()
    assert windows("-c", "import sys\nfrom common.folders import locked\nwith locked(sys.argv[1]):\n"
                         "    print('got it')\n", tmp_path).stdout.strip() == "got it"  # died with its process


def test_the_bench_load_check_works_without_os_getloadavg(windows):
    done = windows("-c", "from bench.timing import load_average, other_training_processes\n"
                         "print(load_average() >= 0, isinstance(other_training_processes(), list))")
    assert done.stdout.split() == ["True", "True"]


@pytest.mark.slow
def test_a_q1_run_its_resume_eval_check_and_report_without_unix_modules(windows, tmp_path, course_data):
    """No user command needs fcntl or os.getloadavg: train, resume, evaluate, check and report."""
    results = tmp_path / "results"
    folders = ["--data-dir", course_data, "--checkpoint-dir", tmp_path / "ck",
               "--out-dir", results / "q1_fashion" / "basenet"]
    windows("q1_fashion/train.py", "--model", "basenet", "--epochs", "1", "--limit", "1000", *folders)
    resumed = windows("q1_fashion/train.py", "--model", "basenet", "--epochs", "2", "--limit", "1000", "--resume",
                      *folders)
    assert "epoch   2/2" in resumed.stdout
    windows("q1_fashion/train.py", "--eval-only", *folders)
    metrics = json.loads((results / "q1_fashion" / "basenet" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and [s["last_epoch"] for s in metrics["training"]] == [1, 2]
    checked = windows("-m", "tools.check_submission", results / "q1_fashion" / "basenet" / "Q1_label_predictions.npy")
    assert checked.stdout.startswith("OK ")
    windows("-m", "tools.report", "--results-dir", results)
    assert (results / "report.pdf").read_bytes().startswith(b"%PDF")
