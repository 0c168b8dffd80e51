"""Q2 segmenters: an ImageNet-pretrained trunk (ResNet18 or EfficientNet-Lite0/1/2) and a dilated-conv head.

Every trunk returns feature maps at strides 4, 8, 16 and 32 and declares their channel counts; heads pick
what they need. The network upsamples the head's logits bilinearly to the input size.
"""
import torch
import torch.nn.functional as F
from torch import nn

from common.command import UserError

NUM_CLASSES = 6
BACKBONES = ("resnet18", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
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


def build_trunk(backbone, imagenet=None):
    """The trunk `backbone` names, starting from `imagenet` ((state dict, where it came from), as
    q2_segmentation.weights.imagenet_weights gives it), or from random weights when that is None."""
    if backbone == "resnet18":
        from torchvision.models import resnet18
        net, what, trunk = resnet18(weights=None), "ResNet18", ResNet18Trunk
    elif backbone.startswith("efficientnet_lite"):
        from efficientnet_lite_pytorch import EfficientNet
        size = backbone[-1]
        # image_size=None: TF "SAME" padding computed from each input's own size, as the weights were trained
        # (a fixed padding for the model's native 240 or 260 pixels would shift the 224-pixel maps)
        net = EfficientNet.from_name(f"efficientnet-lite{size}", image_size=None)
        what, trunk = f"EfficientNet-Lite{size}", EfficientNetLiteTrunk
    else:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {', '.join(BACKBONES)}")
    if imagenet is not None:
        state, source = imagenet
        try:
            net.load_state_dict(state, strict=True)
        except Exception as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"{source}: not a {what} state dict ({first})") from None
    return trunk(net)


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
    refined = "" if config["stride4_refine"] else " (at stride 4 the sum goes straight to the classifier)"
    return ("dilated 3x3 convs (dilation 1, 2, 4) at stride 32, then three bilinear x2 steps, each adding a 1x1 "
            f"projection of the trunk's stride-16, -8 and -4 maps and refining with a 3x3 conv{refined}; a final "
            "bilinear x4.")


def build_model(config, imagenet=None):
    """The network a run's config names (backbone, model, ladder switches); its trunk starts from `imagenet`
    (see build_trunk)."""
    trunk = build_trunk(config["backbone"], imagenet)
    name = config["model"]
    if name == "baseline":
        head = LadderHead(trunk.channels[-1])
    elif name == "ladder":
        head = LadderHead(trunk.channels[-1], config["dilated"], config["batchnorm"], config["stepwise"],
                          config["ladder_width"])
    elif name == "report_best":
        head = LadderHead(trunk.channels[-1], dilated=True, batchnorm=True, stepwise=True)
    elif name == "improved":
        head = ImprovedHead(trunk.channels, config["stride4_refine"])
    else:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return Segmenter(trunk, head)
