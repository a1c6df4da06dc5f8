"""The model I/O contract every ensemble member honours, in every format (docs/architecture.md#model-io-contract)."""

from typing import Final

PATCH_SIZE: Final = 96
CHANNELS: Final = 3
CENTER_SIZE: Final = 32
"""PCam's label is 1 iff a tumor pixel lies in the center CENTER_SIZE x CENTER_SIZE region."""

INPUT_NAME: Final = "image"
INPUT_TRITON_DTYPE: Final = "UINT8"
INPUT_SHAPE: Final = (PATCH_SIZE, PATCH_SIZE, CHANNELS)
"""Per-patch shape (NHWC, RGB, already stain-normalized); the batch dimension is dynamic."""
PATCH_BYTES: Final = PATCH_SIZE * PATCH_SIZE * CHANNELS
"""Bytes of one uint8 patch on the wire."""

OUTPUT_NAME: Final = "logit"
OUTPUT_TRITON_DTYPE: Final = "FP32"
OUTPUT_SHAPE: Final = (1,)
"""One uncalibrated logit per patch."""

FEATURE_DISTANCE_NAME: Final = "feature_distance"
FEATURE_DISTANCE_SHAPE: Final = (1,)
"""Per patch, the member's penultimate features' Mahalanobis distance from the training patches'
(squared, divided by the feature dimension; training/served.py): the feature_outlier flag's input,
computed in the same forward pass as the logit. Members of releases with review rules export it."""

ACTIVATION_MAP_NAME: Final = "activation_map"
ACTIVATION_MAP_SHAPE: Final = (PATCH_SIZE, PATCH_SIZE)
"""Per patch, where the member's logit comes from, in logit units, one value per input pixel
(training/maps.py): the class activation map of a CNN, the attention rollout of a ViT, computed in the
same forward pass as the logit. Positive: evidence for tumor; zero-sum over the patch."""

MEMBER_OUTPUTS: Final = (OUTPUT_NAME, FEATURE_DISTANCE_NAME, ACTIVATION_MAP_NAME)
"""Every output of a served member graph, in the graph's (and config.pbtxt's) order."""
OUTPUT_SHAPES: Final = {
    OUTPUT_NAME: OUTPUT_SHAPE,
    FEATURE_DISTANCE_NAME: FEATURE_DISTANCE_SHAPE,
    ACTIVATION_MAP_NAME: ACTIVATION_MAP_SHAPE,
}
"""Per-patch shape of each member output (all FP32)."""

TTA_VIEWS: Final = 8
"""Test-time augmentation views: the 8 dihedral transforms (quarter turns, with and without a flip),
each mapping the center region onto itself, so a patch's label holds in every view."""
