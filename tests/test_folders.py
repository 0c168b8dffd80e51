"""The folders a run owns (common/folders.py): the lock against another process, which run a folder holds,
and that nothing is deleted before every check that can fail has passed. None of these tests trains."""
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from common.command import UserError, check_checkout
from common.device import pick_device
from common.folders import claim, locked, open_folders
from common.training import start_or_resume
from q1_fashion import train as q1_train
from q2_segmentation import train as q2_train
from tests.helpers import REPO, checkpoint_of, settings, train_epochs

TRY_LOCK = """
import sys
from common.folders import locked
from common.command import UserError
try:
    with locked(sys.argv[1]):
        print("got it")
except UserError as error:
    print("refused:", error)
"""


def another_process_tries(folder):
    done = subprocess.run([sys.executable, "-c", TRY_LOCK, str(folder)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    return done.stdout.strip()


def test_a_folder_this_process_holds_is_refused_to_another_process_until_released(tmp_path):
    """The lock is held for as long as the run is open, and released when it ends (another process, the oracle)."""
    with locked(tmp_path):
        assert another_process_tries(tmp_path) == (f"refused: {tmp_path} is in use by another run (process "
                                                   f"{__import__('os').getpid()}); wait for it to finish, or give "
                                                   "this run another folder")
    assert another_process_tries(tmp_path) == "got it"


def test_a_lock_file_that_cannot_be_opened_is_one_line(tmp_path):
    (tmp_path / ".lock").mkdir()  # a .lock that open() cannot write, whoever runs the test (root included)
    with pytest.raises(UserError, match=r"cannot lock .*: .*\.lock cannot be opened for writing"), locked(tmp_path):
        pass
    with locked(tmp_path, optional=True):  # a folder only read (--eval-only's checkpoints) goes on unlocked
        pass


def test_a_17_epoch_run_validating_every_7_validates_7_14_and_17(tmp_path):
    """Q2's default: validation every 7 epochs and at the last, so best.pt can come from epoch 17."""
    model = torch.nn.Linear(2, 2)
    run = SimpleNamespace(recipe={"schedule": "constant", "epochs": 17}, precision="fp32", device=torch.device("cpu"),
                          checkpoint_dir=tmp_path, out_dir=tmp_path, mode="train", record={}, run_id="t",
                          question=SimpleNamespace(name="t"), data=None, final=False)
    training = start_or_resume(run, model, torch.optim.SGD(model.parameters(), lr=0.1), 1, score="score",
                               val_every=7)
    seen = []
    history = train_epochs(training, lambda epoch: 1.0, lambda: seen.append(len(seen)) or {"score": len(seen)})
    assert [record["epoch"] for record in history if "score" in record] == [7, 14, 17]
    assert torch.load(tmp_path / "best.pt", weights_only=False)["epoch"] == 17


def write_checkpoint(folder, run, epoch=1, names=("last.pt", "best.pt")):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        torch.save(checkpoint_of(run.question.name, run.record, epoch, run_id=run.run_id), folder / name)


def finished_run(tmp_path, ckpt="C", out="O"):
    """A finished Q1 run's files: checkpoints, results and both markers."""
    run = settings(q1_train, "--model", "basenet", "--checkpoint-dir", str(tmp_path / ckpt), "--out-dir",
                   str(tmp_path / out))
    with open_folders(run):
        claim(run)
    write_checkpoint(tmp_path / ckpt, run)
    for name in ("metrics.json", q1_train.PREDICTIONS):
        (tmp_path / out / name).write_text(json.dumps({"run_id": run.run_id}))
    return run


def contents(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.name != ".lock"}


def test_overwrite_deletes_nothing_when_a_later_check_fails(tmp_path, capsys):
    """--overwrite --data-dir /missing deleted best.pt and last.pt, then stopped on the missing data."""
    finished_run(tmp_path)
    before = contents(tmp_path / "C"), contents(tmp_path / "O")
    with pytest.raises(UserError, match="fashion_secret_test_data.npy not found"):
        q1_train.main(["--model", "basenet", "--overwrite", "--data-dir", str(tmp_path / "missing"),
                       "--checkpoint-dir", str(tmp_path / "C"), "--out-dir", str(tmp_path / "O")])
    assert (contents(tmp_path / "C"), contents(tmp_path / "O")) == before


def test_overwrite_clears_the_replaced_runs_outputs_from_both_folders(tmp_path):
    """An --overwrite stopped after its first epoch must not leave the old run's predictions beside its own."""
    old = finished_run(tmp_path)
    (tmp_path / "O" / "notes.txt").write_text("mine")  # not a file a run writes: never touched
    new = settings(q1_train, "--model", "basenet", "--overwrite", "--checkpoint-dir", str(tmp_path / "C"),
                   "--out-dir", str(tmp_path / "O"))
    with open_folders(new):
        claim(new)
    assert sorted(contents(tmp_path / "C")) == ["run.json"] and sorted(contents(tmp_path / "O")) == ["notes.txt",
                                                                                                     "run.json"]
    for folder in ("C", "O"):
        assert json.loads((tmp_path / folder / "run.json").read_text())["run_id"] == new.run_id != old.run_id


def test_a_fresh_run_refuses_a_results_folder_holding_another_run(tmp_path):
    finished_run(tmp_path)
    before = contents(tmp_path / "O")
    fresh = settings(q1_train, "--model", "basenet", "--checkpoint-dir", str(tmp_path / "C2"), "--out-dir",
                     str(tmp_path / "O"))
    with pytest.raises(UserError) as error, open_folders(fresh):
        pass
    assert str(error.value).startswith(f"{tmp_path / 'O'} holds another run's results (metrics.json of run ")
    assert str(error.value).endswith("give this run another --out-dir, or replace them with --overwrite")
    assert contents(tmp_path / "O") == before


def test_eval_only_writes_into_its_own_runs_results_folder_and_never_into_another_runs(tmp_path, monkeypatch):
    monkeypatch.setattr("common.settings.RESULTS_DIR", tmp_path / "results")
    mine = finished_run(tmp_path, ckpt="elsewhere/ck", out="mine")
    evaluated = settings(q1_train, "--eval-only", "--checkpoint-dir", str(tmp_path / "elsewhere" / "ck"))
    assert evaluated.out_dir == tmp_path / "mine" and evaluated.run_id == mine.run_id  # its marker says where
    # the default results folder holds a different run: refused, not rewritten
    other = finished_run(tmp_path, ckpt="other", out="results/q1_fashion/basenet")
    (tmp_path / "mine" / "run.json").unlink()  # the run's own folder no longer says it is its own
    (tmp_path / "mine" / "metrics.json").unlink()
    (tmp_path / "mine" / q1_train.PREDICTIONS).unlink()
    evaluated = settings(q1_train, "--eval-only", "--checkpoint-dir", str(tmp_path / "elsewhere" / "ck"))
    assert evaluated.out_dir == tmp_path / "results" / "q1_fashion" / "basenet"
    with pytest.raises(UserError, match=f"holds another run's results .*run {other.run_id}.*give --out-dir a folder "
                                        "of its own"), open_folders(evaluated):
        pass


def test_a_folder_with_only_best_pt_or_only_last_pt_can_be_resumed_or_evaluated(tmp_path, capsys):
    """After a full disk (best.pt written, last.pt not) or a stop before the first validation (last.pt only), a
    fresh run is refused, so --resume and --eval-only must work rather than say 'train first'."""
    run = settings(q1_train, "--model", "basenet", "--checkpoint-dir", str(tmp_path / "C"))
    write_checkpoint(tmp_path / "C", run, names=("best.pt",))
    resumed = settings(q1_train, "--resume", "--checkpoint-dir", str(tmp_path / "C"))
    assert resumed.saved["epoch"] == 1 and f"{tmp_path / 'C' / 'last.pt'} is missing; continuing from best.pt" in \
        capsys.readouterr().out
    (tmp_path / "C" / "best.pt").rename(tmp_path / "C" / "last.pt")
    assert settings(q1_train, "--eval-only", "--checkpoint-dir", str(tmp_path / "C")).saved["epoch"] == 1


def test_a_checkpoint_of_the_other_question_is_one_line(tmp_path):
    q1 = settings(q1_train, "--model", "basenet", "--checkpoint-dir", str(tmp_path / "Q1"))
    write_checkpoint(tmp_path / "Q1", q1)
    with pytest.raises(UserError, match=r"last.pt is a checkpoint of q1_fashion, not q2_segmentation: use python "
                                        r"q1_fashion/train.py"):
        settings(q2_train, "--eval-only", "--checkpoint-dir", str(tmp_path / "Q1"))
    q2 = settings(q2_train, "--backbone", "efficientnet_lite0", "--checkpoint-dir", str(tmp_path / "Q2"))
    (tmp_path / "Q2").mkdir()
    torch.save(checkpoint_of("q2_segmentation", q2.record), tmp_path / "Q2" / "last.pt")
    with pytest.raises(UserError, match="is a checkpoint of q2_segmentation, not q1_fashion"):
        settings(q1_train, "--resume", "--checkpoint-dir", str(tmp_path / "Q2"))


def test_resume_without_final_names_the_final_run_beside_it(tmp_path, monkeypatch):
    monkeypatch.setattr("common.settings.CHECKPOINTS_DIR", tmp_path / "checkpoints")
    final = settings(q1_train, "--final")
    write_checkpoint(final.checkpoint_dir, final)
    for flag in ("--resume", "--eval-only"):
        with pytest.raises(UserError) as error:
            settings(q1_train, flag)
        assert str(error.value) == (f"no checkpoint in {tmp_path / 'checkpoints' / 'q1_fashion' / 'improved'} (a "
                                    f"--final run of this model is in {final.checkpoint_dir}: add --final); train "
                                    "first: python q1_fashion/train.py --model improved")


def test_device_mps_without_an_apple_gpu_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match="--device mps was requested but PyTorch sees no Apple GPU"):
        pick_device("mps")


def test_a_script_of_one_checkout_importing_another_is_refused(tmp_path):
    other = tmp_path / "other-checkout"
    (other / "common").mkdir(parents=True)
    (other / "common" / "files.py").write_text("")
    (other / "pyproject.toml").write_text("")
    with pytest.raises(UserError) as error:
        check_checkout(str(other / "q1_fashion" / "train.py"))
    assert str(error.value).startswith(f"{other / 'q1_fashion' / 'train.py'} is in the checkout {other}, but Python "
                                       f"imports this project from {REPO}")
    check_checkout(str(REPO / "q1_fashion" / "train.py"))  # its own checkout: fine
    check_checkout(str(tmp_path / "bin" / "cs543-check"))  # a console script: no checkout to compare


def test_the_checkout_check_runs_before_a_script_does_anything(tmp_path):
    """The real case: a copy of the scripts whose `common` comes from this checkout (as after pip install -e)."""
    other = tmp_path / "copy"
    for part in ("common", "q1_fashion"):
        (other / part).mkdir(parents=True)
    (other / "common" / "files.py").write_text("")
    (other / "pyproject.toml").write_text("")
    (other / "q1_fashion" / "train.py").write_text((REPO / "q1_fashion" / "train.py").read_text())
    done = subprocess.run([sys.executable, str(other / "q1_fashion" / "train.py"), "--help"], capture_output=True,
                          text=True, cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: {other / 'q1_fashion' / 'train.py'} is in the checkout {other}")


def test_a_run_id_is_the_start_time_and_random_hex():
    import re
    import time

    from common.folders import new_run_id
    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50  # two runs started in one second differ
    for run_id in ids:
        assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", run_id), run_id
        assert abs(time.mktime(time.strptime(run_id[:15], "%Y%m%d-%H%M%S")) - time.time()) < 60


def test_the_markers_name_the_run_and_each_other_and_a_damaged_marker_names_nothing(tmp_path):
    from common.folders import read_marker, recorded_run_id
    run = finished_run(tmp_path)
    ckpt, out = (json.loads((tmp_path / f / "run.json").read_text()) for f in ("C", "O"))
    common = {"run_id": run.run_id, "question": "q1_fashion", "name": "basenet"}
    assert ckpt == {**common, "results": str(tmp_path / "O")}
    assert out == {**common, "checkpoints": str(tmp_path / "C")}
    (tmp_path / "O" / "run.json").write_text("[1, 2]")  # valid JSON, not a marker
    assert read_marker(tmp_path / "O") == {}
    assert recorded_run_id(tmp_path / "O") == run.run_id  # then metrics.json says whose results they are


def test_without_overwrite_claiming_deletes_nothing(tmp_path):
    """A fresh run into a results folder where a run that saved nothing left its printouts: nothing is deleted
    (the run rewrites them as it goes); only --overwrite deletes."""
    (tmp_path / "O").mkdir()
    (tmp_path / "O" / "summary.txt").write_text("an earlier run's table")
    fresh = settings(q1_train, "--model", "basenet", "--checkpoint-dir", str(tmp_path / "C"), "--out-dir",
                     str(tmp_path / "O"))
    with open_folders(fresh):
        claim(fresh)
    assert (tmp_path / "O" / "summary.txt").read_text() == "an earlier run's table"


def test_a_results_folder_whose_run_can_still_be_resumed_elsewhere_is_refused(tmp_path):
    """Its results are not written yet (stopped after epoch 1), but its checkpoints elsewhere can continue it."""
    run = finished_run(tmp_path, ckpt="A", out="shared")
    for name in ("metrics.json", q1_train.PREDICTIONS):
        (tmp_path / "shared" / name).unlink()
    fresh = settings(q1_train, "--model", "basenet", "--checkpoint-dir", str(tmp_path / "B"), "--out-dir",
                     str(tmp_path / "shared"))
    with pytest.raises(UserError) as error, open_folders(fresh):
        pass
    assert str(error.value) == (f"{tmp_path / 'shared'} holds another run's results (the results folder of the run "
                                f"in {tmp_path / 'A'}); give this run another --out-dir, or replace them with "
                                "--overwrite")
    (tmp_path / "A" / "last.pt").unlink()
    (tmp_path / "A" / "best.pt").unlink()  # that run can no longer continue: its folder may be taken
    with open_folders(fresh):
        pass
    assert run.run_id


def test_eval_only_into_another_runs_results_is_refused_in_these_words(tmp_path):
    finished_run(tmp_path, ckpt="A", out="O")
    other = finished_run(tmp_path, ckpt="B", out="P")
    evaluated = settings(q1_train, "--eval-only", "--checkpoint-dir", str(tmp_path / "A"), "--out-dir",
                         str(tmp_path / "P"))
    with pytest.raises(UserError) as error, open_folders(evaluated):
        pass
    assert str(error.value) == (f"{tmp_path / 'P'} holds another run's results (metrics.json of run {other.run_id}); "
                                "give --out-dir a folder of its own")


def test_what_an_interruption_says_for_each_mode(tmp_path):
    from common.command import Terminated
    from common.folders import interruption
    fresh = settings(q1_train, "--model", "basenet", "--checkpoint-dir", str(tmp_path / "C"))
    assert str(interruption(Terminated(), fresh)) == ("terminated (SIGTERM) before the first epoch ended; nothing "
                                                      "was saved")
    assert interruption(Terminated(), fresh).code == 143 and interruption(KeyboardInterrupt(), fresh).code == 130
    write_checkpoint(tmp_path / "C", fresh)
    evaluated = settings(q1_train, "--eval-only", "--checkpoint-dir", str(tmp_path / "C"))
    assert str(interruption(KeyboardInterrupt(), evaluated)) == (f"interrupted; the checkpoints in {tmp_path / 'C'} "
                                                                 "are untouched")


def test_the_hint_names_every_flag_that_makes_the_missing_run():
    from common.settings import hint
    settings_ = {**q1_train.RECIPES["improved"], "model": "improved", "width": 48, "final": True, "holdout": None}
    assert hint(q1_train.QUESTION, settings_) == "train first: python q1_fashion/train.py --model improved " \
                                                 "--width 48 --final"
    settings_.update(final=False, holdout=5000, dropout=0.0)
    assert hint(q1_train.QUESTION, settings_, "ck") == ("train first: python q1_fashion/train.py --model improved "
                                                        "--width 48 --dropout 0.0 --holdout 5000 --checkpoint-dir ck")


def test_resume_without_holdout_names_the_holdout_run_beside_it(tmp_path, monkeypatch):
    monkeypatch.setattr("common.settings.CHECKPOINTS_DIR", tmp_path / "checkpoints")
    tuned = settings(q1_train, "--holdout", "5000")
    write_checkpoint(tuned.checkpoint_dir, tuned)
    (tmp_path / "checkpoints" / "q1_fashion" / "improved-width48").mkdir()  # a variant, not this run: not named
    with pytest.raises(UserError) as error:
        settings(q1_train, "--eval-only")
    assert str(error.value).startswith(f"no checkpoint in {tmp_path / 'checkpoints' / 'q1_fashion' / 'improved'} "
                                       f"(a --holdout 5000 run of this model is in {tuned.checkpoint_dir}: add "
                                       "--holdout 5000); train first")


def test_two_trunks_holding_runs_of_the_model_asked_for_are_named_both(tmp_path, monkeypatch):
    monkeypatch.setattr("common.settings.CHECKPOINTS_DIR", tmp_path)
    for backbone in ("efficientnet_lite0", "efficientnet_lite1"):
        run = settings(q2_train, "--backbone", backbone, "--no-pretrained")
        write_checkpoint(run.checkpoint_dir, run)
    with pytest.raises(UserError) as error:
        settings(q2_train, "--resume")
    q2 = tmp_path / "q2_segmentation"
    assert str(error.value) == (f"runs of this model are in {q2 / 'efficientnet_lite0_improved'} and "
                                f"{q2 / 'efficientnet_lite1_improved'}; say which with --backbone or --checkpoint-dir")


def test_a_checkpoint_that_says_its_question_is_taken_at_its_word(tmp_path):
    q1 = settings(q1_train, "--model", "basenet", "--checkpoint-dir", str(tmp_path))
    torch.save(checkpoint_of("q2_segmentation", q1.record), tmp_path / "last.pt")
    with pytest.raises(UserError, match="is a checkpoint of q2_segmentation, not q1_fashion"):
        settings(q1_train, "--eval-only", "--checkpoint-dir", str(tmp_path))


def test_a_resumed_run_keeps_the_precision_it_was_trained_in(tmp_path, monkeypatch, capsys):
    """On a CPU with bf16 but no AMX, auto is fp32; a run trained in bf16 there resumes in bf16, and says why."""
    monkeypatch.setattr("common.device.cpu_flags", lambda: {"avx512_bf16"})
    trained = settings(q1_train, "--model", "basenet", "--precision", "bf16", "--checkpoint-dir", str(tmp_path))
    write_checkpoint(tmp_path, trained)
    capsys.readouterr()
    assert settings(q1_train, "--resume", "--checkpoint-dir", str(tmp_path)).precision == "bf16"
    assert "precision: bf16 (as the checkpoint was trained)" in capsys.readouterr().out
    assert settings(q1_train, "--model", "basenet").precision == "fp32"


def test_evaluating_from_best_pt_says_so(tmp_path, capsys):
    run = settings(q1_train, "--model", "basenet", "--checkpoint-dir", str(tmp_path))
    write_checkpoint(tmp_path, run, names=("best.pt",))
    settings(q1_train, "--eval-only", "--checkpoint-dir", str(tmp_path))
    assert f"NOTE: {tmp_path / 'last.pt'} is missing; evaluating from best.pt" in capsys.readouterr().out


def test_eval_only_needs_nothing_written_in_the_checkpoint_folder(tmp_path, monkeypatch):
    """A run in a read-only folder (a shared course drive) is evaluated: the checkpoint folder is not created,
    write-tested or locked where its lock file cannot be opened; only the results folder is written."""
    from common import folders
    run = settings(q1_train, "--model", "basenet", "--checkpoint-dir", str(tmp_path / "C"))
    write_checkpoint(tmp_path / "C", run)
    (tmp_path / "C" / ".lock").mkdir()  # as in a read-only folder: the lock file cannot be opened for writing
    checked = []
    real = folders.prepare_dir
    monkeypatch.setattr(folders, "prepare_dir", lambda path, flag: checked.append(flag) or real(path, flag))
    evaluated = settings(q1_train, "--eval-only", "--checkpoint-dir", str(tmp_path / "C"), "--out-dir",
                         str(tmp_path / "O"))
    with open_folders(evaluated):
        claim(evaluated)
    assert checked == ["--out-dir"]
    assert sorted(p.name for p in (tmp_path / "C").iterdir()) == [".lock", "best.pt", "last.pt"]  # nothing added


def test_device_mps_where_there_is_none_exits_2_with_one_line(monkeypatch, capsys):
    from common.command import run_cli
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(q1_train.main, ["--device", "mps"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["error: --device mps was requested but PyTorch sees no Apple GPU "
                                                    "(MPS needs a Mac with Apple silicon or an AMD GPU and macOS 12.3 "
                                                    "or later); use --device cpu"]
