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

from common.command import UserError, run_cli
from common.files import DATA_DIR
from common.settings import Parser
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


def overlaps(a, b):
    return a == b or a in b.parents or b in a.parents


def refuse_overlap(root, data_dir):
    """Preparing a folder from itself, from a folder inside or around it, or from a folder whose entries are
    links into it (a folder prepared from it with --link) would replace the course's files with links to
    themselves or delete them before copying: refused, before anything is touched. Every path is compared
    where it resolves, so a relative or symlinked --source is caught as well."""
    target = data_dir.resolve()
    if overlaps(root.resolve(), target):
        raise UserError(f"--source {root} and --data-dir {data_dir} are the same folder or one holds the other "
                        f"({root.resolve()} and {target}); give the course's own data folder as --source")
    for entry in ENTRIES:
        try:
            resolved = (root / entry).resolve(strict=True)
        except FileNotFoundError:
            continue  # fill() names what is missing
        except (OSError, RuntimeError):
            raise UserError(f"--source {root}: {root / entry} is a loop of symbolic links; give the course's own "
                            "data folder as --source") from None
        if overlaps(resolved, target):
            raise UserError(f"--source {root}: {root / entry} is a link into --data-dir {data_dir} ({resolved}); "
                            "give the course's own data folder as --source")


def same_content(source, built):
    """Is `built` (a fresh copy or link) complete: the same course files, or the same bytes count?"""
    if source.is_dir():
        return sorted(p.name for p in split_files(built)[0]) == sorted(p.name for p in split_files(source)[0])
    return built.stat().st_size == source.stat().st_size


def place(source, target, link):
    """Put `source` at `target`: the new copy or link is built beside the old one, checked complete, and
    swapped in only then, so a failure leaves the old one in place."""
    fresh = target.with_name(f".{target.name}.new")
    try:
        remove(fresh)
        if link:
            fresh.symlink_to(source.resolve(), target_is_directory=source.is_dir())
        elif source.is_dir():
            copy_split(source, fresh)
        else:
            shutil.copyfile(source, fresh)
        if not same_content(source, fresh):
            raise OSError(f"{fresh} does not match {source} after {'linking' if link else 'copying'}")
        old = target.with_name(f".{target.name}.old")
        remove(old)
        if target.is_symlink() or target.exists():
            target.rename(old)
        fresh.rename(target)
        remove(old)
    except OSError as error:
        remove(fresh)
        if link:
            raise
        raise UserError(f"cannot write {target}: {error.strerror or error} (the previous data is intact)") from None


def can_link(data_dir):
    """Can this account make symbolic links in `data_dir`? (Windows without Developer Mode cannot.)"""
    probe = data_dir / ".link-probe"
    try:
        remove(probe)
        probe.symlink_to(data_dir.resolve(), target_is_directory=True)
    except OSError:
        return False
    finally:
        if probe.is_symlink():
            probe.unlink()
    return True


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
    data_dir.mkdir(parents=True, exist_ok=True)
    if link and not can_link(data_dir):
        print(f"warning: this account cannot make symbolic links in {data_dir} (on Windows: Developer Mode is "
              "off); copying instead", file=sys.stderr)
        link = False
    for entry in ENTRIES:
        target = data_dir / entry
        target.parent.mkdir(parents=True, exist_ok=True)
        place(root / entry, target, link)
        print(f"{'linked' if link else 'copied'} {root / entry} -> {target}")


def main(argv=None):
    parser = Parser(prog="cs543-prepare-data", description=__doc__,
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
