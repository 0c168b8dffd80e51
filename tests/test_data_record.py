"""What a figure was measured on, and the messages that must not send a student the wrong way: the data record in
metrics.json, an evaluation on other data kept apart (by the run, by the report), a report that survives any one
bad run, damaged checkpoints, classes.txt from Notepad, one-line flag errors and Ctrl-C, refused runs that leave
nothing behind."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from common.command import UserError, run_cli
from common.record import data_record, fingerprint, other_data
from q1_fashion import train as q1_train
from q2_segmentation import train as q2_train
from q2_segmentation.data import read_classes
from tests.helpers import REPO, settings, write_segmentation_item
from tools import report

Q2_FLAGS = ["--backbone", "efficientnet_lite0", "--no-pretrained", "--epochs", "1", "--tta-scales", "1"]


def q2(data, out, ckpt, *extra):
    q2_train.main([*Q2_FLAGS, "--data-dir", str(data), "--out-dir", str(out), "--checkpoint-dir", str(ckpt), *extra])


def folder_bytes(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_the_fingerprint_depends_on_the_contents_only():
    images = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 2, 2)
    labels = torch.zeros(2, 2, 2, dtype=torch.uint8)
    assert fingerprint(images, labels) == fingerprint(images.clone(), labels.clone())  # stored anywhere
    changed = images.clone()
    changed[1, 0, 0, 0] += 1
    assert fingerprint(changed, labels) != fingerprint(images, labels)
    assert len(fingerprint(images, labels)) == 16
    record = data_record(".", {"train": 3, "val": 2, "test": 2}, "val", images, labels)
    assert not other_data(record, dict(record)) and other_data(dict(record, val_fingerprint="0" * 16), record)
    assert not other_data(None, record)  # a checkpoint older than the record: nothing to compare with


@pytest.mark.slow
def test_an_evaluation_on_other_data_is_recorded_kept_apart_and_never_replaces_the_runs_own(tmp_path,
                                                                                            tiny_course_data, capsys):
    results = tmp_path / "results" / "q2_segmentation"
    own, ckpt = results / "run", tmp_path / "ckpt"
    q2(tiny_course_data, own, ckpt)
    metrics = json.loads((own / "metrics.json").read_text())
    assert metrics["data"]["folder"] == str(tiny_course_data.resolve())
    assert metrics["data"]["images"] == {"train": 3, "val": 2, "test": 2} and metrics["data"]["val_split"] == "val"
    assert metrics["other_data"] is False and metrics["trained_on"] is None
    assert torch.load(ckpt / "last.pt", weights_only=False)["data"] == metrics["data"]

    copy = tmp_path / "copy"  # the same images in another folder: the same figures, not other data
    shutil.copytree(tiny_course_data, copy)
    q2(copy, own, ckpt, "--eval-only")
    assert json.loads((own / "metrics.json").read_text())["other_data"] is False

    other = tmp_path / "other"  # other val images: a set of two where the run's had its own two
    shutil.copytree(tiny_course_data, other)
    Image.fromarray(np.full((224, 224, 3), 77, np.uint8)).save(other / "val" / "0.jpg")
    before = folder_bytes(own)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # without --out-dir: the run's own folder, as its marker says
        run_cli(q2_train.main, [*Q2_FLAGS, "--data-dir", str(other), "--checkpoint-dir", str(ckpt), "--eval-only"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: --eval-only --data-dir: its 2 val images from {other.resolve()} are not the 2 val images "
                   f"from {tiny_course_data.resolve()} the run was validated on, and their figures would replace the "
                   f"run's own in {own}; give them a folder of their own with --out-dir"]
    assert folder_bytes(own) == before  # the run's results are untouched

    elsewhere = results / "on-other-data"
    q2(other, elsewhere, ckpt, "--eval-only")
    out = capsys.readouterr().out
    assert (f"NOTE: evaluated on other data: 2 val images from {other.resolve()}, not the 2 val images from "
            f"{tiny_course_data.resolve()} the run was validated on") in out
    evaluated = json.loads((elsewhere / "metrics.json").read_text())
    assert evaluated["other_data"] is True and evaluated["data"]["folder"] == str(other.resolve())
    assert evaluated["trained_on"]["val_fingerprint"] == metrics["data"]["val_fingerprint"]
    assert evaluated["data"]["val_fingerprint"] != metrics["data"]["val_fingerprint"]

    # the report: the run's own figures are the best model's; the other-data evaluation is labelled and set aside
    for run in (metrics, evaluated):  # whichever scored higher, only the run's own may be the best model
        run["val_mIoU"] = 0.9 if run is evaluated else 0.4
    (own / "metrics.json").write_text(json.dumps(metrics))
    (elsewhere / "metrics.json").write_text(json.dumps(evaluated))
    text = report.build_report(tmp_path / "results")
    best_row = next(line for line in text.splitlines() if line.startswith("| Q2 best model, val"))
    assert f"{metrics['val_mAP']:.3f} / 0.400" in best_row and "0.900" not in best_row
    assert (f"`on-other-data`: evaluated on other data: 2 val images from {other.resolve()}") in text


def test_a_wrong_typed_config_field_leaves_the_run_out_and_the_report_is_written(tmp_path, capsys):
    """config.epochs as the string "15": one warning naming the file and the field; REPORT.md and the PDF exist."""
    folder = tmp_path / "results" / "q1_fashion" / "improved"
    folder.mkdir(parents=True)
    run = settings(q1_train, "--width", "4", "--precision", "fp32")
    from tests.test_report import recorded
    metrics = {**recorded("data", 5000), "views": "1 test-time view (the image)", "model": "improved", "params": 1000,
               "epochs": 15, "best_epoch": 15, "train_seconds": 1.0, "val_accuracy": 90.0,
               "val_per_class": {"a": 90.0}, "config": dict(run.record, epochs="15")}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    assert report.main(["--results-dir", str(tmp_path / "results")]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"warning: {folder / 'metrics.json'}: config.epochs is str; left out"]
    assert (tmp_path / "results" / "report.pdf").read_bytes().startswith(b"%PDF")
    assert "config.epochs is str" in (tmp_path / "results" / "REPORT.md").read_text()
    for key, value, problem in (("other_data", "yes", "other_data is str"), ("data", [], "data is list"),
                                ("best_epoch", 2.5, "best_epoch is float")):
        (folder / "metrics.json").write_text(json.dumps(dict(metrics, config=run.record, **{key: value})))
        assert report.main(["--results-dir", str(tmp_path / "results")]) == 0
        assert capsys.readouterr().err.splitlines() == [f"warning: {folder / 'metrics.json'}: {problem}; left out"]


def test_a_missing_results_folder_is_one_line_and_an_empty_one_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(report.main, ["--results-dir", str(tmp_path / "results-typo")])
    assert exit_info.value.code == 2 and not (tmp_path / "results-typo").exists()
    assert capsys.readouterr().err.splitlines() == [
        f"error: --results-dir {tmp_path / 'results-typo'}: no such folder (the training scripts write results/ in "
        "the repository, or the folder --out-dir named)"]
    (tmp_path / "empty").mkdir()
    assert report.main(["--results-dir", str(tmp_path / "empty")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (f"note: no run found in {tmp_path / 'empty'}: the report "
                                                       "lists the commands that make them")


def a_finished_q1_run(folder):
    """last.pt and best.pt of a Q1 run, written as the epoch loop writes them (settings resolved from flags)."""
    from tests.test_folders import write_checkpoint
    run = settings(q1_train, "--model", "basenet", "--epochs", "1", "--checkpoint-dir", str(folder))
    write_checkpoint(folder, run)
    return run


def test_a_damaged_last_pt_gives_way_to_a_readable_best_pt_in_one_line(tmp_path, capsys):
    a_finished_q1_run(tmp_path / "C")
    (tmp_path / "C" / "last.pt").write_bytes(b"half a checkpoint")
    capsys.readouterr()
    for flag, doing in (("--eval-only", "evaluating"), ("--resume", "continuing")):
        run = settings(q1_train, flag, "--checkpoint-dir", str(tmp_path / "C"))
        assert run.saved["epoch"] == 1
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].endswith(f"; {doing} from best.pt (epoch 1)")
        assert err[0].startswith(f"warning: {tmp_path / 'C' / 'last.pt'} is not a readable checkpoint (")
    (tmp_path / "C" / "best.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"best.pt is not a readable checkpoint \(.*\); neither checkpoint can be "
                                        r"read: train afresh over the run with --overwrite$"):
        settings(q1_train, "--eval-only", "--checkpoint-dir", str(tmp_path / "C"))
    (tmp_path / "C" / "best.pt").unlink()
    with pytest.raises(UserError, match=r"last.pt is not a readable checkpoint \(.*\); there is no best.pt to fall "
                                        r"back on: train afresh over the run with --overwrite$"):
        settings(q1_train, "--resume", "--checkpoint-dir", str(tmp_path / "C"))


def test_eval_only_predicts_from_best_pt_when_last_pt_is_damaged(tmp_path, tiny_course_data, capsys):
    q2(tiny_course_data, tmp_path / "out", tmp_path / "ckpt")
    first = json.loads((tmp_path / "out" / "metrics.json").read_text())
    (tmp_path / "ckpt" / "last.pt").write_bytes(b"\x00" * 64)
    q2(tiny_course_data, tmp_path / "out", tmp_path / "ckpt", "--eval-only")
    again = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert again["val_mIoU"] == first["val_mIoU"] and again["best_epoch"] == 1
    assert "evaluating from best.pt (epoch 1)" in capsys.readouterr().err


def test_classes_txt_saved_by_notepad_is_read_and_a_real_mismatch_shows_the_lines_that_differ(tmp_path):
    classes = ["background", "sports", "accessory", "animal", "vehicle", "person"]
    (tmp_path / "classes.txt").write_bytes("\ufeff".encode() + "\r\n".join(classes).encode() + b"\r\n")
    assert read_classes(tmp_path) == tuple(classes)
    (tmp_path / "classes.txt").write_text("\n".join(["background", "sport", *classes[2:5]]) + "\n")
    with pytest.raises(UserError) as error:
        read_classes(tmp_path)
    assert str(error.value) == (f"{tmp_path / 'classes.txt'}: not the course's 6 classes in their order (line 2: "
                                "expected 'sports', found 'sport'; line 6: expected 'person', found None)")


def test_a_flag_out_of_range_is_one_line_with_exit_code_2():
    for script, flag in (("q1_fashion/train.py", "--epochs=0"), ("q2_segmentation/train.py", "--crop=8")):
        done = subprocess.run([sys.executable, script, flag], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stdout == ""
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("train.py: error: argument ")
        assert done.stderr.rstrip().endswith("(--help lists the options)")


def test_ctrl_c_while_the_imports_load_is_one_line(tmp_path):
    """SIGINT half a second after start, while PyTorch is still importing: one line, exit code 130, and the script
    stops there (it wrote neither folder)."""
    folders = ["--out-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ckpt")]
    process = subprocess.Popen([sys.executable, "q1_fashion/train.py", "--epochs", "1", *folders], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err == "interrupted while starting; nothing was written\n" and out == ""
    assert not (tmp_path / "out").exists() and not (tmp_path / "ckpt").exists()


def test_an_interrupted_overwrite_says_the_old_run_is_gone(tmp_path, monkeypatch):
    from common.folders import claim, interruption, open_folders
    a_finished_q1_run(tmp_path / "C")
    run = settings(q1_train, "--model", "basenet", "--overwrite", "--checkpoint-dir", str(tmp_path / "C"),
                   "--out-dir", str(tmp_path / "O"))
    assert interruption(KeyboardInterrupt(), run).message.startswith(  # not claimed yet: the old run is intact
        f"interrupted; {tmp_path / 'C' / 'last.pt'} holds the last finished epoch")
    with open_folders(run):
        claim(run)
    assert interruption(KeyboardInterrupt(), run).message == (
        f"interrupted before the first epoch ended; nothing was saved, and the run it replaced (--overwrite) was "
        f"already removed from {tmp_path / 'C'} and {tmp_path / 'O'}")


def test_a_resume_before_any_validation_prints_no_minus_infinity(tmp_path, capsys):
    from common.checkpoint import capture_rng
    from common.training import Training, start_or_resume, train_one_epoch
    from tests.helpers import train_epochs
    from tests.test_defaults import fake_run, tiny_net
    run = fake_run(tmp_path, epochs=2, ema_decay=0.0)
    model = tiny_net(0)
    fresh = Training(run, model, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=1)
    batch = [(torch.randn(2, 4), torch.tensor([0, 1]))]
    state = {"model": model.state_dict(), "optimizer": fresh.optimizer.state_dict(), "ema": None, "scaler": None,
             "scheduler": fresh.scheduler.state_dict(), "epoch": 1, "best": -float("inf"), "history": [],
             "config": {}, "stretches": [], "rng": capture_rng()}
    run.mode, run.saved = "resume", state
    training = start_or_resume(run, model, torch.optim.SGD(model.parameters(), lr=0.1), 1, score="val_score")
    train_epochs(training, lambda epoch: train_one_epoch(training, batch, torch.nn.CrossEntropyLoss(), epoch))
    out = capsys.readouterr().out
    assert "resumed after epoch 1 (no epoch validated yet)" in out and "inf" not in out


def test_a_refused_run_leaves_no_folder_it_created(tmp_path):
    a_finished_q1_run(tmp_path / "C")
    fresh = tmp_path / "new" / "results" / "run"
    with pytest.raises(SystemExit) as exit_info:  # refused: the checkpoint folder holds a run
        run_cli(q1_train.main, ["--model", "basenet", "--checkpoint-dir", str(tmp_path / "C"), "--out-dir",
                                str(fresh)])
    assert exit_info.value.code == 2
    assert not (tmp_path / "new").exists()  # neither the folder nor the parents it made, nor a .lock
    assert sorted(path.name for path in (tmp_path / "C").iterdir()) == [".lock", "best.pt", "last.pt"]


# --- promises that had no test that fails when they break ---------------------------------------------------------

def test_every_recipe_value_reaches_what_it_configures():
    """The default recipes, read on the objects the scripts build: the loss's label smoothing, the optimizer's
    rate, momentum, Nesterov and weight decay, the schedule's peak and length, the weight average's decay."""
    from common.training import Training
    from q2_segmentation.losses import make_loss
    q1 = settings(q1_train, "--precision", "fp32")
    recipe = q1_train.RECIPES["improved"]
    model = q1_train.build(q1)
    optimizer = q1_train.make_optimizer(model, q1)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == \
        (recipe["lr"], recipe["momentum"], recipe["nesterov"], recipe["weight_decay"])
    training = Training(q1, model, optimizer, steps_per_epoch=10)
    multipliers = [training.scheduler.lr_lambdas[0](step) for step in range(10 * recipe["epochs"] + 1)]
    assert max(multipliers) == 1.0 and multipliers[-1] == pytest.approx(0.0, abs=1e-12)  # peak lr, then to 0
    assert training.ema.decay == recipe["ema_decay"]
    loss = torch.nn.CrossEntropyLoss(label_smoothing=q1.recipe["label_smoothing"])
    assert loss.label_smoothing == recipe["label_smoothing"] == 0.1
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)][0] == recipe["dropout"]

    q2_run = settings(q2_train, "--backbone", "efficientnet_lite0", "--no-pretrained", "--precision", "fp32")
    recipe = q2_train.RECIPES["improved"]
    model = q2_train.build(q2_run, None)
    groups = q2_train.make_optimizer(model, q2_run).param_groups
    assert [group["lr"] for group in groups] == [recipe["lr"] * recipe["trunk_lr_scale"], recipe["lr"]]
    assert {group["weight_decay"] for group in groups} == {recipe["weight_decay"]}
    assert Training(q2_run, model, q2_train.make_optimizer(model, q2_run),
                    steps_per_epoch=2).ema.decay == recipe["ema_decay"]
    loss = make_loss(q2_run.recipe["loss"], q2_run.recipe["loss_weight"])
    logits, target = torch.randn(1, 6, 4, 4), torch.randint(0, 6, (1, 4, 4))
    assert loss(logits, target).item() > torch.nn.functional.cross_entropy(logits, target).item()  # + Lovasz term
    frozen = [p.requires_grad for p in model.trunk.parameters()]
    assert not all(frozen) and any(frozen)  # freeze_stride 4: the early stages fixed, the rest trained


def test_a_holdout_never_overlaps_val_in_either_question(tiny_fashion_data, tiny_course_data, tmp_path):
    q1 = settings(q1_train, "--holdout", "300", "--limit", "1000", "--precision", "fp32")
    data = q1_train.load_data(q1, tiny_fashion_data)
    assert data.record["val_split"] == "holdout" and data.record["images"]["val"] == 300
    images, labels = q1_train.load_fashion_mnist(tiny_fashion_data)
    train_index, val_index = q1_train.split_indices(len(images))
    held = set(range(len(train_index) - 300, len(train_index)))
    assert held.isdisjoint(val_index.tolist()) and max(held) < val_index.min()
    assert torch.equal(data.val_images.cpu(), images[sorted(held)])  # the holdout is the last 300 training images

    data_dir = tmp_path / "five"
    shutil.copytree(tiny_course_data, data_dir)
    for name in ("3", "4"):
        write_segmentation_item(data_dir / "train", name, label_value=2)
    q2_run = settings(q2_train, "--backbone", "efficientnet_lite0", "--no-pretrained", "--holdout", "2")
    q2_data = q2_train.load_data(q2_run, data_dir)
    train = q2_train.load_split(data_dir, "train")
    assert q2_data.val.names == ["3", "4"] and q2_data.train.names == ["0", "1", "2"]  # the last 2 validate
    assert torch.equal(q2_data.val.images.cpu(), train.images[3:])
    assert np.array_equal(q2_data.val.labels.numpy(), train.labels[3:].numpy())
    assert q2_data.record["val_split"] == "holdout" and q2_data.record["images"]["val"] == 2
    val = q2_train.load_split(data_dir, "val")  # the course's val images are neither trained nor validated on
    assert q2_data.record["val_fingerprint"] != fingerprint(val.images, val.labels)
