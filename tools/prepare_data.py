"""Fill data/ from the course's data folder or its data.zip, so both train.py scripts find their files.

    cs543-prepare-data --source ~/Downloads/data.zip
    cs543-prepare-data --source ../shared/data/cs543_mp4 --link      # or: python -m tools.prepare_data ...

The result is the course's own layout: data/classes.txt, data/train, data/val, data/test and
data/fashion/fashion_secret_test_data.npy. Fashion-MNIST itself is not in the course folder: the Q1
script finds it in data/fashion/FashionMNIST/raw, in Debian's dataset-fashion-mnist, or downloads it.
"""
import argparse
import shutil
import sys
import zipfile
from pathlib import Path

from common.paths import DATA_DIR
from common.runtime import UserError, run_cli
from q2_segmentation.data import ignored_warning, split_files

ENTRIES = ("classes.txt", "train", "val", "test", "fashion/fashion_secret_test_data.npy")


def find_root(folder):
    """The folder holding classes.txt: `folder` itself or one level down (zips often add `data/`)."""
    for candidate in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        if (candidate / "classes.txt").is_file():
            return candidate
    raise UserError(f"{folder}: no classes.txt here or one level down; is this the course's data folder?")


def copy_split(source, target):
    """Copy a split folder's course files (N.jpg, N.png); leave out the rest, saying so in one line."""
    course, other = split_files(source)
    target.mkdir()
    for path in course:
        shutil.copyfile(path, target / path.name)
    warning = ignored_warning(source, other)
    if warning:
        print(f"warning: {warning}; not copied", file=sys.stderr)


def refuse_overlap(root, data_dir):
    """Preparing a folder from itself, or from a folder inside or around it, would replace the course's files
    with links to themselves or delete them before copying: refused, before anything is touched."""
    source, target = root.resolve(), data_dir.resolve()
    if source == target or target in source.parents or source in target.parents:
        raise UserError(f"--source {root} and --data-dir {data_dir} are the same folder or one holds the other "
                        f"({source} and {target}); give the course's own data folder as --source")


def place(source, target, link):
    """Put `source` at `target`: the new copy or link is built beside the old one and swapped in only once
    it is complete, so a failure leaves the old one in place."""
    fresh = target.with_name(f".{target.name}.new")
    remove(fresh)
    if link:
        fresh.symlink_to(source.resolve())
    elif source.is_dir():
        copy_split(source, fresh)
    else:
        shutil.copyfile(source, fresh)
    old = target.with_name(f".{target.name}.old")
    remove(old)
    if target.is_symlink() or target.exists():
        target.rename(old)
    fresh.rename(target)
    remove(old)


def remove(path):
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def prepare(source, data_dir, link=False):
    source, data_dir = Path(source), Path(data_dir)
    if not source.exists():
        raise UserError(f"--source {source}: not found")
    if source.is_dir():
        fill(find_root(source), data_dir, link)
        return data_dir
    if not zipfile.is_zipfile(source):
        raise UserError(f"--source {source}: neither a folder nor a zip file")
    if link:
        raise UserError("--link needs a folder as --source, not a zip")
    unpacked = data_dir / ".unpacked"
    try:  # the unpacked copy goes on every outcome, failures included
        remove(unpacked)
        try:
            with zipfile.ZipFile(source) as archive:
                archive.extractall(unpacked)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise UserError(f"--source {source}: cannot unpack ({error})") from None
        fill(find_root(unpacked), data_dir, link=False, unpacked=True)
    finally:
        remove(unpacked)
    return data_dir


def fill(root, data_dir, link, unpacked=False):
    """Each course entry of `root` into `data_dir`, checked complete before anything is replaced.
    `unpacked`: root is this tool's own unpacked zip, inside data_dir by design."""
    if not unpacked:
        refuse_overlap(root, data_dir)
    missing = [entry for entry in ENTRIES if not (root / entry).exists()]
    if missing:
        raise UserError(f"{root}: missing {', '.join(missing)}")
    for entry in ENTRIES:
        target = data_dir / entry
        target.parent.mkdir(parents=True, exist_ok=True)
        place(root / entry, target, link)
        print(f"{'linked' if link else 'copied'} {root / entry} -> {target}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="cs543-prepare-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="the course's data folder or data.zip")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR,
                        help="where to put it (default: data/ in the repository)")
    parser.add_argument("--link", action="store_true", help="symlink instead of copying (folder sources only)")
    args = parser.parse_args(argv)
    prepare(args.source, args.data_dir, args.link)
    print(f"{args.data_dir} is ready")


def cli():
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
