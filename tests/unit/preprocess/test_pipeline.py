import numpy as np

from pcam_core import wire
from services.preprocess.pipeline import Serving, preprocess_uploads
from services.preprocess.stain import MacenkoNormalizer


def test_items_follow_uploads_and_tensor_holds_only_accepted(patch_paths) -> None:
    uploads = [patch_paths[0].read_bytes(), b"not an image", patch_paths[1].read_bytes()]
    batch = preprocess_uploads(uploads, Serving("rel-1", MacenkoNormalizer()))
    assert [item.index for item in batch.items] == [0, 1, 2]
    assert [item.ok for item in batch.items] == [True, False, True]
    assert batch.items[1].error.status == 415
    assert batch.images.shape == (2, 96, 96, 3)
    assert batch.items[0].stain_normalized is True and 0 < batch.items[0].tissue_fraction <= 1
    assert batch.release == "rel-1"
    # The batch goes over the wire as is.
    np.testing.assert_array_equal(wire.decode(wire.encode(batch)).images, batch.images)


def test_all_rejected_gives_an_empty_tensor() -> None:
    batch = preprocess_uploads([b"", b"x"], Serving("rel-1", MacenkoNormalizer()))
    assert batch.images.shape == (0, 96, 96, 3)
    assert [item.error.status for item in batch.items] == [400, 415]
