"""Feed the scripts each bad input a student meets; print the exit code and the line each printed.

Builds damaged copies of the data in a temporary folder; needs data/ prepared. Run by hand:

    python tools/bad_inputs.py
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common.files import REPO_ROOT as REPO
from common.settings import Parser
from q1_fashion.data import locate_fashion_mnist

ROWS = []


def run(title, argv, env=None, pick=None, signal_after=None):
    """Run `python ARGV`; record the exit code and the line it ended with (or the first line containing
    `pick`, from stdout or stderr). `signal_after`: (file, signal) sent once that file exists, or (seconds,
    signal)."""
    process = subprocess.Popen([sys.executable, *argv], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, **(env or {})})
    if signal_after:
        trigger, number = signal_after
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None:
            if (isinstance(trigger, Path) and trigger.exists()) or (isinstance(trigger, float)
                                                                     and time.time() > deadline - 300 + trigger):
                process.send_signal(number)
                break
            time.sleep(0.05)
    out, err = process.communicate()
    lines = [line for line in (out + err).splitlines() if pick and pick in line] if pick else []
    last = lines[0] if lines else (err.strip().splitlines() or ["(nothing on stderr)"])[-1]
    ROWS.append((title, process.returncode, last))
    print(f"- {title}\n  exit {process.returncode}: {last}", flush=True)


def folders(scratch, name):
    return ["--out-dir", str(scratch / name / "out"), "--checkpoint-dir", str(scratch / name / "ckpt")]


def tiny_course(root, damage=None):
    """3 train, 2 val, 2 test items copied from data/, then one damage applied."""
    for split, count in (("train", 3), ("val", 2), ("test", 2)):
        (root / split).mkdir(parents=True)
        for index in range(count):
            shutil.copy(REPO / "data" / split / f"{index}.jpg", root / split / f"{index}.jpg")
            if split != "test":
                shutil.copy(REPO / "data" / split / f"{index}.png", root / split / f"{index}.png")
    shutil.copy(REPO / "data" / "classes.txt", root / "classes.txt")
    item = root / "train" / "1"
    if damage == "corrupt_jpg":
        item.with_suffix(".jpg").write_bytes(item.with_suffix(".jpg").read_bytes()[:500])
    elif damage == "bad_label":
        label = np.array(Image.open(item.with_suffix(".png")))
        label[0, 0] = 9
        Image.fromarray(label).save(item.with_suffix(".png"))
    elif damage == "wrong_size":
        Image.open(item.with_suffix(".jpg")).resize((200, 180)).save(item.with_suffix(".jpg"))
    elif damage == "missing_png":
        item.with_suffix(".png").unlink()
    return root


def main():
    Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    scratch = Path(tempfile.mkdtemp())
    q1, q2 = "q1_fashion/train.py", "q2_segmentation/train.py"
    nowhere = {"CS543_FASHION_SYSTEM_DIR": str(scratch / "no-debian-package")}
    print("bad inputs and what each printed:")
    run("Q1, missing data dir and no Fashion-MNIST, no network",
        [q1, "--data-dir", str(scratch / "none"), *folders(scratch, "a")], nowhere)
    run("Q2, missing data dir", [q2, "--data-dir", str(scratch / "none"), *folders(scratch, "b")])

    for damage in ("truncated", "corrupt"):
        raw = scratch / damage / "fashion" / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for path in locate_fashion_mnist(REPO / "data", download=False).values():
            shutil.copy(path, raw / Path(path).name)
        images = raw / "train-images-idx3-ubyte.gz"
        data = images.read_bytes()
        images.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x1f\x8b" + os.urandom(1000))
        run(f"Q1, {damage} train-images-idx3-ubyte.gz",
            [q1, "--data-dir", str(scratch / damage), *folders(scratch, damage)], nowhere)

    for damage in ("corrupt_jpg", "bad_label", "wrong_size", "missing_png"):
        root = tiny_course(scratch / damage, damage)
        run(f"Q2, {damage.replace('_', ' ')}", [q2, "--backbone", "efficientnet_lite0", "--data-dir", str(root),
                                                *folders(scratch, damage)])

    run("Q1, non-numeric flag", [q1, "--epochs", "ten"])
    run("Q1, out-of-range flag", [q1, "--dropout", "1.5"])
    run("Q1, --batch-size 1", [q1, "--batch-size", "1"])
    run("Q1, --resume with no checkpoint", [q1, "--model", "basenet", "--resume", *folders(scratch, "c")])
    run("Q2, --eval-only with no checkpoint", [q2, "--backbone", "efficientnet_lite0", "--eval-only",
                                               *folders(scratch, "d")])
    good = tiny_course(scratch / "good")
    made = folders(scratch, "made")
    run("Q2, one epoch to make a checkpoint (expected to succeed)",
        [q2, "--backbone", "efficientnet_lite0", "--model", "baseline", "--epochs", "1", "--data-dir", str(good),
         *made])
    run("Q2, checkpoint of another backbone", [q2, "--backbone", "resnet18", "--no-pretrained", "--model", "baseline",
                                               "--eval-only", "--data-dir", str(good), *made])
    run("Q2, a fresh run into that run's folder", [q2, "--backbone", "efficientnet_lite0", "--model", "baseline",
                                                   "--epochs", "1", "--data-dir", str(good), *made])
    run("Q2, --eval-only --epochs 30 of that 1-epoch run", [q2, "--model", "baseline", "--eval-only", "--epochs",
                                                            "30", "--data-dir", str(good), *made])
    other = tiny_course(scratch / "other-val")
    Image.fromarray(np.full((224, 224, 3), 77, np.uint8)).save(other / "val" / "0.jpg")
    run("Q2, --eval-only on other val images, without --out-dir", [q2, "--model", "baseline", "--eval-only",
                                                                   "--data-dir", str(other), "--checkpoint-dir",
                                                                   str(scratch / "made" / "ckpt")])
    run("Q2, --eval-only on other val images, with --out-dir", [q2, "--model", "baseline", "--eval-only",
                                                                "--data-dir", str(other), "--out-dir",
                                                                str(scratch / "other-out"), "--checkpoint-dir",
                                                                str(scratch / "made" / "ckpt")],
        pick="evaluated on other data")
    notepad = tiny_course(scratch / "notepad")
    names = (notepad / "classes.txt").read_text().split()
    (notepad / "classes.txt").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(names).encode() + b"\r\n")
    run("Q2, classes.txt saved by Notepad (BOM, CRLF): accepted", [q2, "--model", "baseline", "--epochs", "1",
                                                                  "--data-dir", str(notepad),
                                                                  *folders(scratch, "notepad")], pick="wrote")
    (notepad / "classes.txt").write_text("\n".join(["background", "sport", *names[2:]]) + "\n")
    run("Q2, classes.txt with a misspelt class", [q2, "--model", "baseline", "--data-dir", str(notepad),
                                                  *folders(scratch, "notepad2")])
    run("Q2, --eval-only with 2 test-time scales: the printout names them",
        [q2, "--model", "baseline", "--eval-only", "--tta", "--tta-scales", "0.75,1", "--data-dir", str(good),
         *made], pick="test-time augmentation")
    run("Q2, ResNet18 weights unavailable offline (auto falls back)",
        [q2, "--data-dir", str(good), "--epochs", "1", *folders(scratch, "e")],
        {"TORCH_HOME": str(scratch / "empty-torch-home")}, pick="backbone auto")
    damaged_home = scratch / "damaged-torch-home"
    (damaged_home / "hub" / "checkpoints").mkdir(parents=True)
    (damaged_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"half a download")
    run("Q2, damaged cached resnet18-f37072fd.pth, --backbone auto",
        [q2, "--data-dir", str(good), "--epochs", "1", *folders(scratch, "f")], {"TORCH_HOME": str(damaged_home)},
        pick="backbone auto")
    run("Q2, damaged cached resnet18-f37072fd.pth, --backbone resnet18",
        [q2, "--backbone", "resnet18", "--data-dir", str(good), "--epochs", "1", *folders(scratch, "g")],
        {"TORCH_HOME": str(damaged_home)})
    blocker = scratch / "a-file"
    blocker.write_text("")
    run("Q1, unwritable --out-dir", [q1, "--out-dir", str(blocker / "out")])
    run("Q1, NaN/inf loss (--lr 1e30)", [q1, "--model", "basenet", "--lr", "1e30", "--limit", "2000",
                                         *folders(scratch, "h")])
    run("Q1, --final --limit 2000: what the run says it trained on",
        [q1, "--model", "basenet", "--final", "--epochs", "1", "--limit", "2000", *folders(scratch, "i")],
        pick="train 2000 images")
    run("Q1, Ctrl-C while the imports load", [q1, "--model", "basenet", *folders(scratch, "early")],
        signal_after=(0.5, signal.SIGINT))
    print(f"  folders left: {(scratch / 'early').exists()}")
    run("Q1, Ctrl-C before the first epoch ends", [q1, "--model", "basenet", "--epochs", "3",
                                                   *folders(scratch, "j")], signal_after=(4.0, signal.SIGINT))
    run("Q1, SIGTERM after an epoch", [q1, "--model", "basenet", "--epochs", "50", "--limit", "3000",
                                       *folders(scratch, "k")],
        signal_after=(scratch / "k" / "ckpt" / "last.pt", signal.SIGTERM))

    # a finished Q1 run, then what may not touch it
    q1_run = folders(scratch, "q1run")
    run("Q1, one epoch to make a run (expected to succeed)",
        [q1, "--model", "basenet", "--epochs", "1", "--limit", "2000", *q1_run])
    run("Q1, --overwrite with a missing --data-dir", [q1, "--model", "basenet", "--overwrite", "--data-dir",
                                                      str(scratch / "none"), *q1_run])
    print(f"  its last.pt and predictions still there: {(scratch / 'q1run' / 'ckpt' / 'last.pt').is_file()} and "
          f"{(scratch / 'q1run' / 'out' / 'Q1_label_predictions.npy').is_file()}")
    run("Q1, --overwrite --seed -1", [q1, "--model", "basenet", "--overwrite", "--seed", "-1", *q1_run])
    run("Q1, --overwrite stopped before its first epoch ends", [q1, "--model", "basenet", "--overwrite", *q1_run],
        signal_after=(4.0, signal.SIGINT))
    run("Q1, one epoch to make the run again (expected to succeed)",
        [q1, "--model", "basenet", "--epochs", "1", "--limit", "2000", "--overwrite", *q1_run])
    shutil.copy(scratch / "q1run" / "ckpt" / "best.pt", scratch / "damaged-last.pt")
    (scratch / "q1run" / "ckpt" / "last.pt").write_bytes(b"half a checkpoint")
    run("Q1, --eval-only with a damaged last.pt and a readable best.pt", [q1, "--eval-only", *q1_run],
        pick="is not a readable checkpoint")
    (scratch / "q1run" / "ckpt" / "best.pt").write_bytes(b"")
    run("Q1, --eval-only with both checkpoints damaged", [q1, "--eval-only", *q1_run])
    shutil.copy(scratch / "damaged-last.pt", scratch / "q1run" / "ckpt" / "best.pt")
    shutil.copy(scratch / "damaged-last.pt", scratch / "q1run" / "ckpt" / "last.pt")
    run("Q1, a fresh run refused: the folders it created are removed",
        [q1, "--model", "basenet", "--checkpoint-dir", str(scratch / "q1run" / "ckpt"), "--out-dir",
         str(scratch / "new" / "out")])
    print(f"  {scratch / 'new'} left: {(scratch / 'new').exists()}")
    run("Q1, a fresh run with --out-dir of that run's results",
        [q1, "--model", "basenet", "--epochs", "1", "--limit", "2000", "--out-dir", str(scratch / "q1run" / "out"),
         "--checkpoint-dir", str(scratch / "other-ckpt")])
    run("Q2, --eval-only of a Q1 checkpoint", [q2, "--eval-only", "--checkpoint-dir", str(scratch / "q1run" / "ckpt")])
    run("Q1, --resume of a Q2 checkpoint", [q1, "--resume", "--checkpoint-dir", str(scratch / "made" / "ckpt")])
    run("Q1, --holdout 60000", [q1, "--holdout", "60000", *folders(scratch, "l")])
    run("Q1, --holdout 55000", [q1, "--holdout", "55000", *folders(scratch, "l")])
    run("Q1, --device mps where there is none", [q1, "--device", "mps", *folders(scratch, "m")])
    locked_out = scratch / "locked"
    (locked_out / ".lock").mkdir(parents=True)
    run("Q1, a .lock that cannot be opened", [q1, "--model", "basenet", "--out-dir", str(locked_out),
                                              "--checkpoint-dir", str(locked_out)])
    only_best = scratch / "only-best"
    shutil.copytree(scratch / "q1run" / "ckpt", only_best)
    (only_best / "last.pt").unlink()
    run("Q1, a fresh run where only best.pt is left", [q1, "--model", "basenet", "--checkpoint-dir", str(only_best),
                                                       "--out-dir", str(scratch / "ob-out")])
    run("Q1, --resume where only best.pt is left", [q1, "--resume", "--checkpoint-dir", str(only_best), "--out-dir",
                                                    str(scratch / "ob-out")], pick="is missing")

    course = tiny_course(scratch / "course")
    (course / "fashion").mkdir()
    np.save(course / "fashion" / "fashion_secret_test_data.npy", np.zeros((2, 28, 28), np.uint8))
    run("cs543-prepare-data --source X --data-dir X --link", ["-m", "tools.prepare_data", "--source", str(course),
                                                              "--data-dir", str(course), "--link"])
    run("cs543-prepare-data --source parent --data-dir parent/data (copy)",
        ["-m", "tools.prepare_data", "--source", str(course), "--data-dir", str(course / "data")])
    damaged_zip = scratch / "data.zip"
    data = bytearray(Path(shutil.make_archive(str(scratch / "whole"), "zip", root_dir=course)).read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)  # a member garbled: unpacking fails halfway
    damaged_zip.write_bytes(bytes(data))
    run("cs543-prepare-data with a damaged zip", ["-m", "tools.prepare_data", "--source", str(damaged_zip),
                                                  "--data-dir", str(scratch / "zip-data")])
    print(f"  .unpacked left behind: {(scratch / 'zip-data' / '.unpacked').exists()}")
    course_b = scratch / "course-b"
    run("cs543-prepare-data: B linked from the course folder A (expected to succeed)",
        ["-m", "tools.prepare_data", "--source", str(course), "--data-dir", str(course_b), "--link"])
    run("cs543-prepare-data: A linked back from B", ["-m", "tools.prepare_data", "--source", str(course_b),
                                                     "--data-dir", str(course), "--link"])
    print(f"  A's train images still there: {len(list((course / 'train').glob('*.jpg')))}")
    typed = scratch / "typed"
    (typed / "q1_fashion" / "basenet").mkdir(parents=True)
    (typed / "q1_fashion" / "basenet" / "metrics.json").write_text(
        '{"model": "basenet", "params": 4414, "epochs": 1, "train_seconds": 1.0, "val_accuracy": "88.1", '
        '"val_per_class": {}, "config": null}')
    run("cs543-report with a string accuracy and config null", ["-m", "tools.report", "--results-dir", str(typed)],
        pick="warning")
    results = scratch / "results"
    (results / "q1_fashion" / "basenet").mkdir(parents=True)
    (results / "q1_fashion" / "basenet" / "metrics.json").write_text('{"model": "basenet", "val_acc')
    run("cs543-report with a truncated metrics.json", ["-m", "tools.report", "--results-dir", str(results)],
        pick="warning")
    np.save(scratch / "zero-d.npy", np.float32(0.5))
    np.save(scratch / "labels.npy", np.zeros(5000, np.int64))
    (scratch / "Q1_label_predictions.npy").write_text("<!DOCTYPE html><html><title>Google Drive</title>")
    run("cs543-check of a web page saved as the .npy", ["-m", "tools.check_submission",
                                                         str(scratch / "Q1_label_predictions.npy")])
    np.save(scratch / "Q1_label_predictions.npy", np.full((2000, 10), 0.1))
    run("cs543-check of a Q1 file in float64", ["-m", "tools.check_submission",
                                                str(scratch / "Q1_label_predictions.npy")], pick="INVALID")
    bad_config = scratch / "bad-config"
    (bad_config / "q1_fashion" / "basenet").mkdir(parents=True)
    (bad_config / "q1_fashion" / "basenet" / "metrics.json").write_text(
        '{"model": "basenet", "params": 4414, "epochs": 15, "train_seconds": 1.0, "val_accuracy": 88.1, '
        '"val_per_class": {}, "config": {"epochs": "15"}}')
    run("cs543-report with config.epochs the string \"15\"", ["-m", "tools.report", "--results-dir",
                                                               str(bad_config)], pick="warning")
    print(f"  report.pdf written: {(bad_config / 'report.pdf').is_file()}")
    run("cs543-report --results-dir that does not exist", ["-m", "tools.report", "--results-dir",
                                                           str(scratch / "results-typo")])
    print(f"  folder created: {(scratch / 'results-typo').exists()}")
    run("cs543-check of a 0-d file with --labels", ["-m", "tools.check_submission", str(scratch / "zero-d.npy"),
                                                    "--labels", str(scratch / "labels.npy")], pick="INVALID")
    run("bench/runs.py --help", ["bench/runs.py", "--help"], pick="usage")

    print("\n| case | exit | what it printed |\n|---|---:|---|")
    for title, code, line in ROWS:
        print(f"| {title} | {code} | {line.replace('|', '/')} |")
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
