"""Faults and bad input: one clear line and exit code 2, nothing saved lost, checkpoints always loadable."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from common import training as training_loop
from common.command import UserError, run_cli
from q1_fashion import train as q1_train
from tests.helpers import REPO


def cli(main, argv, capsys):
    """Run a script's main as its command line would; return (exit code, stderr lines)."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv)
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def q1_args(tmp_path, course_data, *extra):
    return ["--data-dir", str(course_data), "--out-dir", str(tmp_path / "out"),
            "--checkpoint-dir", str(tmp_path / "ckpt"), *extra]


def test_bad_flag_values_are_argparse_errors(capsys):
    for argv in (["--epochs", "abc"], ["--epochs", "0"], ["--lr", "-1"], ["--dropout", "1.5"], ["--model", "vgg"],
                 ["--device", "tpu"], ["--seed", "-1"], ["--seed", str(2**32)]):
        with pytest.raises(SystemExit) as exit_info:
            q1_train.parse_args(argv)
        assert exit_info.value.code == 2
        assert "error: argument" in capsys.readouterr().err


def test_resume_or_eval_only_without_checkpoint(tmp_path, course_data, capsys):
    for flag in ("--resume", "--eval-only"):
        code, err = cli(q1_train.main, q1_args(tmp_path, course_data, "--model", "basenet", flag), capsys)
        assert code == 2 and len(err) == 1
        assert err[0] == (f"error: no checkpoint in {tmp_path / 'ckpt'}; train first: python q1_fashion/train.py "
                          f"--model basenet --checkpoint-dir {tmp_path / 'ckpt'}")  # the user's folder kept


@pytest.mark.slow
def test_checkpoint_of_another_model_is_refused(tmp_path, course_data, capsys):
    q1_train.main(q1_args(tmp_path, course_data, "--model", "basenet", "--epochs", "1", "--limit", "500"))
    capsys.readouterr()
    code, err = cli(q1_train.main, q1_args(tmp_path, course_data, "--model", "report_best", "--eval-only"), capsys)
    assert code == 2 and len(err) == 1
    assert "was trained with --model basenet, not --model report_best" in err[0]


def test_damaged_checkpoint_is_reported(tmp_path, course_data, capsys):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "last.pt").write_bytes(b"\x00garbage")
    code, err = cli(q1_train.main, q1_args(tmp_path, course_data, "--model", "basenet", "--resume"), capsys)
    assert code == 2 and len(err) == 1 and "last.pt is not a readable checkpoint" in err[0]


def test_unwritable_out_dir(tmp_path, course_data, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = ["--data-dir", str(course_data), "--out-dir", str(blocker / "out"), "--checkpoint-dir", str(tmp_path)]
    code, err = cli(q1_train.main, argv, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: cannot write to --out-dir {blocker / 'out'}")


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, course_data, monkeypatch):
    real = training_loop.train_one_epoch

    def poisoned(training, batches, loss_fn, epoch):
        if epoch == 2:
            def loss_fn(outputs, targets):
                return torch.nn.functional.cross_entropy(outputs, targets) * float("nan")
        return real(training, batches, loss_fn, epoch)

    monkeypatch.setattr(q1_train, "train_one_epoch", poisoned)
    with pytest.raises(UserError, match="training loss became nan at epoch 2, batch 1; lower --lr. .*last.pt holds "
                                        "the last finished epoch"):
        q1_train.main(q1_args(tmp_path, course_data, "--model", "basenet", "--epochs", "3", "--limit", "500"))
    for name in ("last.pt", "best.pt"):
        state = torch.load(tmp_path / "ckpt" / name, weights_only=False)
        assert state["epoch"] == 1
        assert all(torch.isfinite(value).all() for value in state["model"].values())


@pytest.mark.slow
def test_kill_9_leaves_checkpoints_loadable(tmp_path, course_data):
    argv = [sys.executable, "q1_fashion/train.py", *q1_args(tmp_path, course_data, "--model", "basenet",
                                                            "--epochs", "200", "--limit", "3000")]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "ckpt" / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        for delay in (0.13, 0.29, 0.41):  # let several more atomic saves start, then kill mid-run
            time.sleep(delay)
            for name in ("last.pt", "best.pt"):
                assert torch.load(tmp_path / "ckpt" / name, weights_only=False)["epoch"] >= 1
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    for name in ("last.pt", "best.pt"):
        state = torch.load(tmp_path / "ckpt" / name, weights_only=False)
        assert state["epoch"] >= 1 and "rng" in state


def test_a_torch_file_that_is_not_a_checkpoint_is_reported(tmp_path, course_data, capsys):
    (tmp_path / "ckpt").mkdir()
    torch.save({"weights": torch.zeros(3)}, tmp_path / "ckpt" / "last.pt")
    code, err = cli(q1_train.main, q1_args(tmp_path, course_data, "--model", "basenet", "--resume"), capsys)
    assert code == 2 and len(err) == 1
    assert "last.pt is not one of this project's checkpoints (no model, optimizer" in err[0]
