"""DeepNCuts, the segmentation network of paper §6.2 / Table 2: backbone
features → two new Conv-ReLU pairs → per-pixel features X (m × d) whose
affinity W = X Λ Xᵀ is trained with the normalized-cuts objective J2 (or J1)
against the ground-truth segments (:class:`matbp.nn.NormalizedCutsLoss`).

Interface (what a training loop needs)::

    model = DeepNCuts("alexnet", weights="alexnet.pth")        # stride 1: every pixel
    X = model(images)                  # (N, m, d), m = h·w, (h, w) = model.last_grid
    labels = model.loss_labels(gt)     # gt (N, H, W) int → (N, m), the same grid
    loss = NormalizedCutsLoss("j2")(X, labels, model.Lambda())   # Lambda() is None unless learn_lambda

* **Feeds** (``model.feed_channels`` channels): ``alexnet``: conv5/ReLU-5,
  the last convolutional layer before the final max-pool (256 channels,
  stride ≈ 16); ``vgg16``: relu4_1, the first ReLU of block 4 (512 channels,
  stride 8), concatenated with relu5_3, the top of block 5 (512 channels,
  stride 16) resized bilinearly to relu4_1's grid (1024 channels in all: the
  paper's two feeds with different receptive fields and coarseness);
  ``small``: the small CPU backbone's output (64 channels, stride 2).
* **Head** (``model.head``, randomly initialised, the paper's "two Conv-ReLU
  pairs"): ``conv1`` 1×1 (feed → ``hidden``) + ReLU, ``dropout`` (rate 0.25,
  element-wise, between the last two layers as in the paper), ``conv2`` 1×1
  (``hidden`` → ``feature_dim`` = d) + softplus.

  - 1×1 kernels: the feeds already have large receptive fields (ReLU-5:
    ~160 px; relu5_3: ~200 px) and the paper asks the head for capacity (many
    filters below) and a low rank on top, not more context; a 1×1 head is a
    per-position embedding, 9× cheaper in parameters than 3×3 (VGG: 1.07M
    instead of 9.5M new weights for 200 training images) and it does not
    widen the blur of segment boundaries on the coarse feed grid.
  - softplus as the last non-linearity, a smooth ReLU: the paper needs
    non-negative features (a non-negative affinity W, positive degrees for
    J1 and for clustering); softplus output is *strictly* positive and its
    gradient never vanishes, so no feature channel and no pixel can die (a
    ReLU output can be all zero at a pixel, making its degree 0 — J1 and the
    spectral clustering then fail — or in a channel, which then never
    recovers). ReLU in the hidden layer, as in the paper.
  - initialisation: He (fan-in, ReLU gain) for ``conv1``, fan-in with unit
    gain for ``conv2``, zero biases, so the pre-softplus activations have the
    scale of the feed activations.

* **Upsampling to the loss grid**: the d-dimensional features are resized
  bilinearly (``align_corners=False``) to the full image resolution H×W,
  which keeps them non-negative (convex combinations); with ``stride`` s > 1
  the full-resolution map is then subsampled at pixels (s·i, s·j), giving the
  grid (h, w) = (⌈H/s⌉, ⌈W/s⌉) (:meth:`DeepNCuts.grid_size`), exactly the
  pixels ``labels[..., ::s, ::s]`` that :meth:`DeepNCuts.loss_labels`
  returns. Flattening is row-major: pixel (i, j) is row i·w + j of X. The
  default s = 1 takes the loss at every pixel (m = H·W: the low-rank J2 costs
  O(m d²), so 154,401 pixels of a 481×321 BSDS image are cheap).
* **Λ** (``learn_lambda=True``): a learned diagonal metric Λ =
  diag(softplus(θ)), θ initialised to log(e − 1) so that Λ = I at the start
  (the paper's linear affinity W = X Xᵀ). Positive entries keep W = X Λ Xᵀ
  entrywise positive for the positive X (so J1's degrees stay positive), it
  is exactly symmetric and positive definite (W positive semi-definite, rank
  ≤ d), and d parameters do not fight the head's last layer (a full PSD
  Λ = L Lᵀ can have negative entries and would duplicate ``conv2``).
  ``model.Lambda()`` returns the (d, d) matrix, or None without
  ``learn_lambda``; it is a new (not pretrained) parameter ``lambda_raw``.

``pretrained_parameter_names`` / ``weights`` follow
:func:`matbp.models.load_weights`: a torchvision-format state dict whose
``features.*`` tensors initialise the backbone (AlexNet's conv1–conv5, VGG-16's
13 conv layers); the head and Λ are always new.
"""

import math
from collections import OrderedDict
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import build_backbone, check_choice
from .o2p import _check_dropout, _check_int, _Model

NCUTS_BACKBONES: Tuple[str, ...] = ("small", "alexnet", "vgg16")

# hidden filters of the first new conv (paper §6.2: 256 for AlexNet, 1024 for VGG)
DEFAULT_HIDDEN = {"small": 64, "alexnet": 256, "vgg16": 1024}

# indices in torchvision's VGG-16 ``features`` (no BatchNorm)
VGG16_RELU4_1 = 18
VGG16_RELU5_3 = 29

_WHERE = "matbp.models.DeepNCuts"


class NCutsHead(nn.Sequential):
    """conv1 (1×1, in → hidden) + ReLU, dropout, conv2 (1×1, hidden → d) + softplus."""

    def __init__(self, in_channels: int, hidden: int, feature_dim: int, dropout: float):
        super().__init__(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, hidden, kernel_size=1),
                relu1=nn.ReLU(inplace=True),
                dropout=nn.Dropout(p=dropout),
                conv2=nn.Conv2d(hidden, feature_dim, kernel_size=1),
                softplus=nn.Softplus(),
            )
        )
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv1.bias)
        nn.init.kaiming_normal_(self.conv2.weight, mode="fan_in", nonlinearity="linear")
        nn.init.zeros_(self.conv2.bias)


def _check_images(images) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"{_WHERE}: images must be a tensor (N, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{_WHERE}: images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if not images.dtype.is_floating_point:
        raise ValueError(f"{_WHERE}: images must be floating point, got {images.dtype}")


class DeepNCuts(_Model):
    """DeepNCuts (paper §6.2): images (N, 3, H, W) → features X (N, m, d) at
    the loss grid (h, w) = (⌈H/stride⌉, ⌈W/stride⌉), m = h·w, row-major.

    Args:
        backbone: one of :data:`NCUTS_BACKBONES` (see the module docstring for
            the feeds).
        feature_dim: d, the filters of the last layer (the paper: 20, which
            bounds the rank of W).
        hidden: filters of the first new conv layer; None: 256 (alexnet),
            1024 (vgg16), 64 (small).
        dropout: rate of the dropout between the two new layers.
        stride: the loss grid is the image resolution divided by ``stride``
            (1: every pixel).
        learn_lambda: learn a diagonal metric Λ (``Lambda()``), else Λ = I
            (``Lambda()`` is None).
        weights: path of a torchvision-format state dict for the backbone, or
            None (random initialisation).

    Attributes: ``backbone``, ``head`` (:class:`NCutsHead`), ``feature_dim``,
    ``hidden``, ``stride``, ``feed_channels``, ``backbone_name``,
    ``pretrained_parameter_names``, ``last_grid`` ((h, w) of the last
    ``forward`` / :meth:`backbone_features`, None before the first), and
    ``lambda_raw`` (only with ``learn_lambda``).
    """

    def __init__(
        self,
        backbone: str,
        *,
        feature_dim: int = 20,
        hidden: Optional[int] = None,
        dropout: float = 0.25,
        stride: int = 1,
        learn_lambda: bool = False,
        weights=None,
    ):
        check_choice(backbone, NCUTS_BACKBONES, "backbone", _WHERE)
        feature_dim = _check_int(feature_dim, "feature_dim", _WHERE)
        hidden = _check_int(hidden, "hidden", _WHERE, allow_none=True)
        stride = _check_int(stride, "stride", _WHERE)
        dropout = _check_dropout(dropout, _WHERE)
        if not isinstance(learn_lambda, bool):
            raise ValueError(f"{_WHERE}: argument 'learn_lambda' must be True or False, got {learn_lambda!r}")
        if hidden is None:
            hidden = DEFAULT_HIDDEN[backbone]

        bb = build_backbone(backbone, last_pool=False)
        if backbone == "vgg16":
            f = bb.features
            assert len(f) == VGG16_RELU5_3 + 1 and isinstance(f[VGG16_RELU5_3], nn.ReLU)
            assert isinstance(f[VGG16_RELU4_1], nn.ReLU) and f[VGG16_RELU4_1 - 1].out_channels == 512
            assert sum(isinstance(m, nn.MaxPool2d) for m in f[:VGG16_RELU4_1]) == 3
            feed_channels = 2 * bb.out_channels
        else:
            feed_channels = bb.out_channels
        head = NCutsHead(feed_channels, hidden, feature_dim, dropout)
        super().__init__(bb, head, weights)

        self.backbone_name = backbone
        self.feature_dim = feature_dim
        self.hidden = hidden
        self.stride = stride
        self.feed_channels = feed_channels
        self.learn_lambda = learn_lambda
        self.last_grid: Optional[Tuple[int, int]] = None
        if learn_lambda:
            # softplus(log(e − 1)) = 1: Λ = I at initialisation
            self.lambda_raw = nn.Parameter(torch.full((feature_dim,), math.log(math.e - 1.0)))
        else:
            self.register_parameter("lambda_raw", None)

    # ------------------------------------------------------------------ grids

    def grid_size(self, height: int, width: int) -> Tuple[int, int]:
        """The loss grid (h, w) = (⌈H/stride⌉, ⌈W/stride⌉) of an H×W image."""
        s = self.stride
        return (-(-int(height) // s), -(-int(width) // s))

    def _to_loss_grid(self, maps: Tensor, size: Tuple[int, int]) -> Tensor:
        """Feature maps (N, C, h', w') → bilinear to the image size → every
        stride-th pixel: (N, C, h, w); also records ``last_grid``."""
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
        s = self.stride
        if s > 1:
            maps = maps[:, :, ::s, ::s]
        self.last_grid = (int(maps.shape[-2]), int(maps.shape[-1]))
        return maps

    @staticmethod
    def _flatten(maps: Tensor) -> Tensor:
        """(N, C, h, w) → (N, h·w, C), row-major pixels, contiguous."""
        n, c = maps.shape[:2]
        return maps.permute(0, 2, 3, 1).reshape(n, -1, c).contiguous()

    def loss_labels(self, labels: Tensor) -> Tensor:
        """Ground-truth segment ids (*, H, W) (integer) → (*, m) on the loss
        grid: ``labels[..., ::stride, ::stride]`` flattened row-major, the
        pixels whose features ``forward`` returns. Raises ValueError if the
        grid differs from ``last_grid`` (labels of another image, or
        transposed)."""
        if not isinstance(labels, Tensor):
            raise TypeError(f"{_WHERE}.loss_labels: labels must be a tensor (*, H, W), got {type(labels).__name__}")
        if labels.dim() < 2:
            raise ValueError(f"{_WHERE}.loss_labels: labels must have shape (*, H, W), got {tuple(labels.shape)}")
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise ValueError(f"{_WHERE}.loss_labels: labels must be an integer tensor, got {labels.dtype}")
        s = self.stride
        sub = labels[..., ::s, ::s] if s > 1 else labels
        grid = (int(sub.shape[-2]), int(sub.shape[-1]))
        if self.last_grid is not None and grid != tuple(self.last_grid):
            raise ValueError(
                f"{_WHERE}.loss_labels: labels of shape {tuple(labels.shape)} give the loss grid {grid} at "
                f"stride {s}, but the last forward's grid is {tuple(self.last_grid)}"
            )
        return sub.reshape(*sub.shape[:-2], -1)

    # ------------------------------------------------------------------ features

    def feeds(self, images: Tensor) -> Tensor:
        """The backbone feeds (N, feed_channels, h', w') on the feed grid
        (ReLU-5 for alexnet; relu4_1 ‖ upsampled relu5_3 for vgg16)."""
        _check_images(images)
        if self.backbone_name != "vgg16":
            return self.backbone(images)
        x = images
        relu4_1 = None
        for i, layer in enumerate(self.backbone.features):
            x = layer(x)
            if i == VGG16_RELU4_1:
                relu4_1 = x  # the next layer is a conv: nothing modifies it in place
        relu5_3 = F.interpolate(x, size=relu4_1.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([relu4_1, relu5_3], dim=1)

    def forward_map(self, images: Tensor) -> Tensor:
        """The learned features as maps (N, d, h, w) on the loss grid."""
        return self._to_loss_grid(self.head(self.feeds(images)), tuple(images.shape[-2:]))

    def forward(self, images: Tensor) -> Tensor:
        """images (N, 3, H, W) → X (N, m, d), non-negative (strictly positive),
        m = h·w with (h, w) = ``last_grid`` = :meth:`grid_size` (H, W)."""
        return self._flatten(self.forward_map(images))

    def backbone_features(self, images: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """The raw feeds (no head) on the loss grid, (N, m, feed_channels),
        and the grid (h, w): the NCuts baseline of Table 2 (features of the
        non-finetuned network). ReLU outputs: non-negative but may be zero at
        some pixels. Beware the size at full resolution (vgg16: 1024 floats
        per pixel, 632 MB for a 481×321 image)."""
        maps = self._to_loss_grid(self.feeds(images), tuple(images.shape[-2:]))
        return self._flatten(maps), self.last_grid

    def Lambda(self) -> Optional[Tensor]:  # noqa: N802 - the paper's symbol
        """The metric Λ (d, d) = diag(softplus(``lambda_raw``)) of W = X Λ Xᵀ,
        or None (Λ = I) without ``learn_lambda``."""
        if self.lambda_raw is None:
            return None
        return torch.diag(F.softplus(self.lambda_raw))

    def extra_repr(self) -> str:
        return (
            f"backbone={self.backbone_name!r}, feature_dim={self.feature_dim}, hidden={self.hidden}, "
            f"stride={self.stride}, learn_lambda={self.learn_lambda}"
        )
