"""A run's settings, resolved once (recipe < checkpoint < flags), and the folders it owns.

The first five tests check that a run's settings and folders describe the run that happens (a resume, an
evaluation, a fresh run beside an old one). They resolve settings against a checkpoint file written here, so none
of them trains.
"""
import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from common import folders
from common import settings as run_module
from common.command import UserError, run_cli
from common.folders import claim, interruption, open_folders
from q1_fashion import train as q1_train
from q2_segmentation import train as q2_train
from tests.helpers import REPO, checkpoint_of, settings


@contextlib.contextmanager
def owned(run):
    """The folders as main() takes them: checked and locked, then claimed (every check passed)."""
    with open_folders(run):
        claim(run)
        yield run


def write_checkpoint(folder, record, epoch=1):
    """A checkpoint holding a run's recorded settings (the rest is never read by settings resolution)."""
    folder.mkdir(parents=True, exist_ok=True)
    question = "q2_segmentation" if "backbone" in record else "q1_fashion"
    torch.save(checkpoint_of(question, record, epoch), folder / "last.pt")


def test_a_resumed_final_run_stays_final_and_writes_into_its_own_folder(tmp_path):
    """A resumed --final run stays final and writes into its own results folder, not the held-out run's."""
    ckpt = tmp_path / "C"
    fresh = settings(q1_train, "--final", "--epochs", "1", "--limit", "2000", "--checkpoint-dir", str(ckpt))
    write_checkpoint(ckpt, fresh.record)
    resumed = settings(q1_train, "--resume", "--epochs", "2", "--limit", "2000", "--checkpoint-dir", str(ckpt))
    assert resumed.final and resumed.record["final"] is True and resumed.recipe["epochs"] == 2
    assert resumed.out_dir.name == "improved-final" and resumed.name == "improved-final"
    with pytest.raises(UserError, match=r"was trained with --final, not --no-final"):
        settings(q1_train, "--resume", "--no-final", "--checkpoint-dir", str(ckpt))


def test_a_trunk_trained_from_scratch_stays_so_on_resume(tmp_path):
    """A --no-pretrained run resumed without the flag is recorded as trained from scratch (pretrained: false)."""
    ckpt = tmp_path / "C"
    fresh = settings(q2_train, "--backbone", "efficientnet_lite0", "--no-pretrained", "--epochs", "1",
                     "--checkpoint-dir", str(ckpt))
    assert fresh.recipe["pretrained"] is False
    write_checkpoint(ckpt, fresh.record)
    resumed = settings(q2_train, "--resume", "--epochs", "2", "--checkpoint-dir", str(ckpt))
    assert resumed.record["pretrained"] is False and resumed.recipe["backbone"] == "efficientnet_lite0"
    with pytest.raises(UserError, match="was trained with --no-pretrained, not --pretrained"):
        settings(q2_train, "--resume", "--pretrained", "--checkpoint-dir", str(ckpt))


def test_eval_only_records_the_epochs_the_run_trained_and_refuses_others(tmp_path):
    """--eval-only records the epochs the run trained (3), and refuses another --epochs in one line."""
    ckpt = tmp_path / "C"
    write_checkpoint(ckpt, settings(q1_train, "--epochs", "3", "--checkpoint-dir", str(ckpt)).record, epoch=3)
    assert settings(q1_train, "--eval-only", "--checkpoint-dir", str(ckpt)).recipe["epochs"] == 3
    with pytest.raises(UserError) as error:
        settings(q1_train, "--eval-only", "--epochs", "30", "--checkpoint-dir", str(ckpt))
    assert "was trained with --epochs 3, not --epochs 30; --eval-only takes the run as" in str(error.value)
    # --resume may add epochs, never take them away
    assert settings(q1_train, "--resume", "--epochs", "5", "--checkpoint-dir", str(ckpt)).recipe["epochs"] == 5
    with pytest.raises(UserError, match="--resume may add epochs, not take them away"):
        settings(q1_train, "--resume", "--epochs", "2", "--checkpoint-dir", str(ckpt))


def test_auto_on_resume_and_eval_only_takes_the_checkpoints_trunk(tmp_path, monkeypatch, capsys):
    """--backbone auto on --eval-only and --resume is the checkpoint's trunk (a ResNet18 run made with --weights),
    not a fresh choice."""
    monkeypatch.setattr(run_module, "CHECKPOINTS_DIR", tmp_path / "checkpoints")
    monkeypatch.setattr(run_module, "RESULTS_DIR", tmp_path / "results")
    fresh = settings(q2_train, "--weights", str(tmp_path / "r18.pth"))
    assert "backbone auto: resnet18 (--weights given)" in capsys.readouterr().out
    assert fresh.checkpoint_dir == tmp_path / "checkpoints" / "q2_segmentation" / "resnet18_improved"
    write_checkpoint(fresh.checkpoint_dir, fresh.record)
    for mode in ("--eval-only", "--resume"):
        again = settings(q2_train, mode)
        assert again.recipe["backbone"] == "resnet18" and again.checkpoint_dir == fresh.checkpoint_dir
        assert again.recipe["weights"] == str(tmp_path / "r18.pth")
        assert again.out_dir == tmp_path / "results" / "q2_segmentation" / "resnet18_improved"
    with pytest.raises(UserError, match="was trained with --backbone resnet18, not --backbone efficientnet_lite0"):
        settings(q2_train, "--eval-only", "--backbone", "efficientnet_lite0", "--checkpoint-dir",
                 str(fresh.checkpoint_dir))
    # a Lite0 run beside it: auto no longer says which, and the user is asked to
    lite0 = settings(q2_train, "--backbone", "efficientnet_lite0")
    write_checkpoint(lite0.checkpoint_dir, lite0.record)
    with pytest.raises(UserError, match="say which with --backbone or --checkpoint-dir"):
        settings(q2_train, "--eval-only")
    assert settings(q2_train, "--eval-only", "--backbone", "efficientnet_lite0").recipe["backbone"] == \
        "efficientnet_lite0"


def test_a_fresh_run_into_a_folder_that_holds_a_run_is_refused(tmp_path):
    """A fresh run refuses a folder holding another run's checkpoints; --overwrite replaces them."""
    ckpt = tmp_path / "C"
    fresh = settings(q1_train, "--epochs", "2", "--checkpoint-dir", str(ckpt), "--out-dir", str(tmp_path / "O"))
    write_checkpoint(ckpt, fresh.record)
    (ckpt / "best.pt").write_bytes((ckpt / "last.pt").read_bytes())
    again = settings(q1_train, "--epochs", "1", "--lr", "0.05", "--checkpoint-dir", str(ckpt),
                     "--out-dir", str(tmp_path / "O"))
    with pytest.raises(UserError) as error, owned(again):
        pass
    assert str(error.value) == (f"{ckpt} already holds a run (last.pt); continue it with --resume --checkpoint-dir "
                                f"{ckpt} --out-dir {tmp_path / 'O'}, evaluate it with --eval-only --checkpoint-dir "
                                f"{ckpt} --out-dir {tmp_path / 'O'}, or train afresh over it with --overwrite")
    assert (ckpt / "last.pt").is_file() and (ckpt / "best.pt").is_file()  # untouched
    overwrite = settings(q1_train, "--epochs", "1", "--checkpoint-dir", str(ckpt), "--out-dir", str(tmp_path / "O"),
                         "--overwrite")
    with owned(overwrite):  # the earlier run's checkpoints go, so its best.pt cannot stand in for this run's
        assert not (ckpt / "last.pt").exists() and not (ckpt / "best.pt").exists()


def test_settings_precedence_recipe_then_checkpoint_then_flags(tmp_path):
    ckpt = tmp_path / "C"
    trained = settings(q1_train, "--lr", "0.3", "--width", "8", "--no-tta", "--seed", "4", "--limit", "600",
                       "--checkpoint-dir", str(ckpt))
    assert trained.recipe["lr"] == 0.3 and trained.recipe["momentum"] == 0.9  # flag, then the recipe
    write_checkpoint(ckpt, trained.record)
    resumed = settings(q1_train, "--resume", "--checkpoint-dir", str(ckpt))
    assert resumed.recipe["lr"] == 0.3 and resumed.recipe["width"] == 8  # the checkpoint's, not the recipe's
    assert resumed.options == {"seed": 4, "limit": 600, "final": False, "holdout": None}
    assert resumed.evaluation == {"tta": False, "tta_shift": 0}  # without --tta no shifted views are used
    with pytest.raises(UserError) as error:
        settings(q1_train, "--resume", "--lr", "0.1", "--seed", "0", "--checkpoint-dir", str(ckpt))
    assert f"{ckpt / 'last.pt'} was trained with --lr 0.3 --seed 4, not --lr 0.1 --seed 0; --resume" in str(error.value)
    # evaluation settings may differ, on --resume as on --eval-only, and are recorded as used
    evaluated = settings(q1_train, "--eval-only", "--tta", "--tta-shift", "0", "--checkpoint-dir", str(ckpt))
    assert evaluated.evaluation == {"tta": True, "tta_shift": 0}
    assert evaluated.record["tta"] is True and evaluated.record["lr"] == 0.3
    assert settings(q1_train, "--resume", "--tta", "--checkpoint-dir", str(ckpt)).evaluation["tta"] is True
    # a checkpoint of another model is the checkpoint's model when --model is not given, refused when it is
    assert settings(q1_train, "--eval-only", "--checkpoint-dir", str(ckpt)).recipe["model"] == "improved"
    with pytest.raises(UserError, match="was trained with --model improved, not --model basenet"):
        settings(q1_train, "--eval-only", "--model", "basenet", "--checkpoint-dir", str(ckpt))


@pytest.mark.parametrize("made_by, extra", [("3.2.0", {"data": {}}), ("3.1.0 or earlier", {})])
def test_a_checkpoint_of_an_older_major_version_is_refused_in_one_line(tmp_path, capsys, made_by, extra):
    """Version 4 reads checkpoints of version 4 only: an older one (which recorded no version; 3.2.0 recorded its
    data) is refused, naming the version that made it, for --resume and --eval-only alike, and no folder is made."""
    ckpt = tmp_path / "C"
    ckpt.mkdir()
    trained = settings(q1_train, "--model", "basenet", "--checkpoint-dir", str(ckpt))
    older = {key: value for key, value in checkpoint_of("q1_fashion", trained.record).items() if key != "version"}
    for name in ("last.pt", "best.pt"):
        torch.save({**older, **extra}, ckpt / name)
    for mode in ("--resume", "--eval-only"):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(q1_train.main, [mode, "--checkpoint-dir", str(ckpt), "--out-dir", str(tmp_path / "O")])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and err == [
            f"error: {ckpt / 'last.pt'} was made by version {made_by} of this project, and version 4.0.0 reads "
            f"checkpoints of version 4.x only; train afresh over it with --overwrite, or evaluate it with version "
            f"{made_by}"]
    assert not (tmp_path / "O").exists()


HOLD = ("import sys, time\nfrom common.folders import locked\nwith locked(sys.argv[1]):\n"
        "    print('held', flush=True)\n    time.sleep(60)\n")


def test_a_folder_in_use_is_refused_and_a_killed_runs_lock_is_not(tmp_path):
    ckpt = tmp_path / "C"
    ckpt.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(ckpt)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        run = settings(q1_train, "--checkpoint-dir", str(ckpt), "--out-dir", str(tmp_path / "O"))
        with pytest.raises(UserError) as error, owned(run):
            pass
        assert str(error.value).startswith(f"{ckpt} is in use by another run (process {holder.pid})")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (ckpt / ".lock").read_text().strip() == str(holder.pid)  # the dead process's pid is still written
    with owned(run):  # but its lock died with it
        assert (ckpt / ".lock").read_text().strip() == str(os.getpid())


def test_an_interruption_names_resume_only_when_there_is_a_checkpoint(tmp_path, capsys):
    run = settings(q1_train, "--checkpoint-dir", str(tmp_path / "C"))
    assert str(interruption(KeyboardInterrupt(), run)) == "interrupted before the first epoch ended; nothing was saved"
    write_checkpoint(tmp_path / "C", run.record)
    assert str(interruption(KeyboardInterrupt(), run)) == (f"interrupted; {tmp_path / 'C' / 'last.pt'} holds the "
                                                           "last finished epoch (continue with --resume "
                                                           f"--checkpoint-dir {tmp_path / 'C'})")

    def main(argv):
        with owned(run):
            raise KeyboardInterrupt

    (tmp_path / "C" / "last.pt").unlink()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted before the first epoch ended; nothing was "
                                                            "saved"]


@pytest.mark.slow
def test_sigterm_ends_a_run_with_one_line_and_its_checkpoints_intact(tmp_path, course_data):
    ckpt = tmp_path / "C"
    process = subprocess.Popen([sys.executable, "q1_fashion/train.py", "--model", "basenet", "--epochs", "200",
                                "--limit", "3000", "--data-dir", str(course_data), "--checkpoint-dir", str(ckpt),
                                "--out-dir", str(tmp_path / "O")], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (ckpt / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143
    assert err.strip().splitlines()[-1] == (f"terminated (SIGTERM); {ckpt / 'last.pt'} holds the last finished "
                                            f"epoch (continue with --resume --checkpoint-dir {ckpt} --out-dir "
                                            f"{tmp_path / 'O'})")
    assert torch.load(ckpt / "last.pt", weights_only=False)["epoch"] >= 1


def test_a_holdout_run_has_its_own_folder_and_excludes_final():
    """README (Development): tuning runs validate on the last training images, never on val."""
    run = settings(q1_train, "--holdout", "5000")
    assert run.options["holdout"] == 5000 and run.name == "improved-holdout5000"
    with pytest.raises(UserError, match="--final trains on every labelled image and --holdout keeps some out"):
        settings(q1_train, "--final", "--holdout", "5000")


def test_a_file_system_without_locks_warns_and_runs(tmp_path, monkeypatch, capsys):
    """Some network and cloud-drive mounts refuse flock itself: that is no other run, so the run goes on."""
    import errno

    def unsupported(handle):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(folders, "_try_lock", unsupported)
    run = settings(q1_train, "--checkpoint-dir", str(tmp_path / "C"), "--out-dir", str(tmp_path / "C"))
    with owned(run):
        pass
    assert capsys.readouterr().err.strip() == (f"warning: {tmp_path / 'C'} cannot be locked (No locks available); "
                                               "make sure no other run uses it")
