"""Feed the scripts each bad input from the reliability issue; print the exit code and the line each printed.

Builds damaged copies of the data in a temporary folder; needs data/ prepared. Run by hand:

    python bench/bad_inputs.py
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from common.paths import REPO_ROOT as REPO
from q1_fashion.data import locate_fashion_mnist


def run(title, argv, env=None):
    result = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    last = (result.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
    print(f"- {title}\n  exit {result.returncode}: {last}")


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
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    scratch = Path(tempfile.mkdtemp())
    q1, q2 = "q1_fashion/train.py", "q2_segmentation/train.py"
    outs = ["--out-dir", str(scratch / "out"), "--checkpoint-dir", str(scratch / "ckpt")]
    nowhere = {"CS543_FASHION_SYSTEM_DIR": str(scratch / "no-debian-package")}
    print("bad inputs and what each printed:")
    run("Q1, missing data dir and no Fashion-MNIST, no network", [q1, "--data-dir", str(scratch / "none"), *outs],
        nowhere)
    run("Q2, missing data dir", [q2, "--data-dir", str(scratch / "none"), *outs])

    for damage in ("truncated", "corrupt"):
        raw = scratch / damage / "fashion" / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for path in locate_fashion_mnist(REPO / "data", download=False).values():
            shutil.copy(path, raw / Path(path).name)
        images = raw / "train-images-idx3-ubyte.gz"
        data = images.read_bytes()
        images.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x1f\x8b" + os.urandom(1000))
        run(f"Q1, {damage} train-images-idx3-ubyte.gz", [q1, "--data-dir", str(scratch / damage), *outs], nowhere)

    for damage in ("corrupt_jpg", "bad_label", "wrong_size", "missing_png"):
        root = tiny_course(scratch / damage, damage)
        run(f"Q2, {damage.replace('_', ' ')}", [q2, "--backbone", "efficientnet_lite0", "--data-dir", str(root), *outs])

    run("Q1, non-numeric flag", [q1, "--epochs", "ten"])
    run("Q1, out-of-range flag", [q1, "--dropout", "1.5"])
    run("Q1, --resume with no checkpoint", [q1, "--model", "basenet", "--resume", *outs])
    run("Q2, --eval-only with no checkpoint", [q2, "--backbone", "efficientnet_lite0", "--eval-only", *outs])
    good = tiny_course(scratch / "good")
    run("Q2, one epoch to make a checkpoint (expected to succeed)",
        [q2, "--backbone", "efficientnet_lite0", "--model", "baseline", "--epochs", "1", "--data-dir", str(good),
         *outs])
    run("Q2, checkpoint of another backbone", [q2, "--backbone", "resnet18", "--no-pretrained", "--model", "baseline",
                                               "--eval-only", "--data-dir", str(good), *outs])
    run("Q2, ResNet18 weights unavailable offline", [q2, "--data-dir", str(good), "--epochs", "1", *outs],
        {"TORCH_HOME": str(scratch / "empty-torch-home")})
    blocker = scratch / "a-file"
    blocker.write_text("")
    run("Q1, unwritable --out-dir", [q1, "--out-dir", str(blocker / "out")])
    run("Q1, NaN/inf loss (--lr 1e30)", [q1, "--model", "basenet", "--lr", "1e30", "--limit", "2000", *outs])
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
