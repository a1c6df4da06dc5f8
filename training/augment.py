"""Label-preserving training augmentation on uint8 NHWC batches (what the model takes, see
pcam_core.contract), driven by one explicit torch.Generator so a run is reproducible.

Used: the 8 dihedral transforms (rotations by 90 degrees and flips), HED stain jitter (Tellez et al.
2018) and brightness/contrast/saturation jitter. Not used, on purpose: blur, elastic deformation and
CutMix, because each can change or erase what decides PCam's label (see docs/training.md).

Every function takes uint8 (N, H, W, 3) and returns a new uint8 tensor of the same shape, on the images'
device: training augments on the accelerator, so the CPU only reads patches. The random draws come only
from the (CPU) generator given, in a fixed order (dihedral, HED, color), one draw per image, so a run's
stream of draws is the same on every device.
"""

from __future__ import annotations

import torch

from pcam_core.contract import TTA_VIEWS
from pcam_core.tta import dihedral_steps
from training.config import AugmentConfig, ColorJitterConfig, HedJitterConfig

# Stain vectors of haematoxylin, eosin and DAB (rows; RGB optical densities), from Ruifrok & Johnston,
# "Quantification of histochemical staining by color deconvolution", Anal. Quant. Cytol. Histol. 23
# (2001), as skimage.color.colorconv.rgb_from_hed has them; skimage's hed_from_rgb (used by rgb2hed) is
# its inverse. Written out here so training does not depend on scikit-image.
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
_MIN_INTENSITY = 1e-6  # as skimage: log(0) avoided by clamping the intensity


def dihedral(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply one of the 8 rotations/flips, drawn per patch, to uint8 NHWC images.

    The center-32 label is invariant under all of them (the center square maps onto itself).
    Transform t (0..7) is pcam_core.tta.dihedral_steps(t), as in serving's TTA views.
    """
    choice = torch.randint(0, TTA_VIEWS, (len(images),), generator=generator)
    out = torch.empty_like(images)
    for t in range(TTA_VIEWS):
        idx = torch.nonzero(choice == t).squeeze(1).to(images.device)
        if len(idx):
            out[idx] = dihedral_transform(images[idx], t)
    return out


def dihedral_transform(images: torch.Tensor, t: int) -> torch.Tensor:
    """Transform t (0..7) of the dihedral group of the square on NHWC images (pcam_core.tta's numbering)."""
    flip, turns = dihedral_steps(t)
    return torch.rot90(images.flip(2) if flip else images, turns, dims=(1, 2))


def dihedral_inverse(images: torch.Tensor, t: int) -> torch.Tensor:
    """The inverse of dihedral_transform(., t): rotate back, then undo the flip."""
    flip, turns = dihedral_steps(t)
    x = torch.rot90(images, -turns, dims=(1, 2))
    return x.flip(2) if flip else x


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def hed_jitter(images: torch.Tensor, generator: torch.Generator, scale: float, shift: float) -> torch.Tensor:
    """Tellez et al. 2018 HED jitter: per image and stain, H/E/D' = alpha * H/E/D + beta.

    RGB -> optical density (-ln of the intensity in (0, 1]) -> stain space (HED_FROM_RGB), alpha ~
    U(1 - scale, 1 + scale) and beta ~ U(-shift, shift) drawn per image and per stain channel, back to
    RGB and clipped to [0, 255]. Densities are natural-log ODs, as rgb2hed gave them when Tellez et al.
    used it (newer skimage divides by -ln(1e-6)); the stain values are not clipped at 0 (skimage does),
    so scale = shift = 0 gives the input back up to rounding.
    """
    n, device = len(images), images.device
    alpha = 1 + (torch.rand((n, 1, 1, 3), generator=generator, dtype=torch.float64) * 2 - 1) * scale
    beta = (torch.rand((n, 1, 1, 3), generator=generator, dtype=torch.float64) * 2 - 1) * shift
    rgb = (images.to(torch.float32) / 255).clamp_min(_MIN_INTENSITY)
    od = -torch.log(rgb)
    stains = od @ HED_FROM_RGB.to(device, torch.float32)
    stains = stains * alpha.to(device, torch.float32) + beta.to(device, torch.float32)
    out = torch.exp(-(stains @ RGB_FROM_HED.to(device, torch.float32)))
    return _to_uint8(out * 255)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of NHWC float images, (N, H, W, 1), the weights torchvision uses."""
    return x[..., 0:1] * 0.299 + x[..., 1:2] * 0.587 + x[..., 2:3] * 0.114


def color_jitter(
    images: torch.Tensor, generator: torch.Generator, brightness: float, contrast: float, saturation: float
) -> torch.Tensor:
    """Brightness, then contrast, then saturation, each with a factor ~ U(1 - s, 1 + s) per image.

    The blends are torchvision's (adjust_brightness/contrast/saturation): brightness scales, contrast
    blends with the image's mean luma, saturation with the pixel's luma; clipped to [0, 255] after each,
    as torchvision does. Factors are drawn for all three even where one is 0 (then it is 1), so the
    stream of draws does not depend on which are on.
    """
    n = len(images)
    factors = 1 + (torch.rand((3, n, 1, 1, 1), generator=generator, dtype=torch.float64) * 2 - 1) * (
        torch.tensor([brightness, contrast, saturation], dtype=torch.float64).view(3, 1, 1, 1, 1)
    )
    b, c, s = factors.to(images.device, torch.float32)
    x = images.to(torch.float32)
    x = (x * b).clamp(0, 255)
    mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    x = (mean + c * (x - mean)).clamp(0, 255)
    gray = _grayscale(x)
    x = (gray + s * (x - gray)).clamp(0, 255)
    return _to_uint8(x)


def augment(images: torch.Tensor, generator: torch.Generator, config: AugmentConfig) -> torch.Tensor:
    """The configured augmentations in their fixed order: dihedral, HED jitter, color jitter.

    With the defaults (dihedral only) this draws from the generator exactly what train.py always did.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 NHWC RGB images, got {images.dtype} {tuple(images.shape)}")
    if config.dihedral:
        images = dihedral(images, generator)
    hed: HedJitterConfig | None = config.hed_jitter
    if hed is not None:
        images = hed_jitter(images, generator, hed.scale, hed.shift)
    color: ColorJitterConfig | None = config.color_jitter
    if color is not None:
        images = color_jitter(images, generator, color.brightness, color.contrast, color.saturation)
    return images
