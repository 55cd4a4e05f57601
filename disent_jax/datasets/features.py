"""The one feature specification of every image dataset (synthetic renders, Pascal3D+, held-out renders).

All builders write these features (TFDS, array_record, no TensorFlow: images are fed as encoded PNG/JPEG
bytes, see ../shared/design.md), so the input pipeline, Stage II and evaluation read every dataset the same way.

Conventions (see disent_jax/geometry.py):
  * `quaternion`: the object-to-camera rotation R_cv (X_c = R_cv X_o + t, CV camera: X right, Y down,
    Z forward) as a canonical scalar-first unit quaternion, in the normalised CAD frame
    (disent_jax/cad/model.py; normalisation never rotates, so this is also the source CAD frame's rotation).
  * `viewpoint`: Pascal3D+ (azimuth, elevation, theta) in radians of that rotation
    (`geometry.camera_rotation_to_viewpoint`).
  * `bbox`: (x1, y1, x2, y2) in pixels of the full image, continuous coordinates (pixel i spans [i, i+1));
    the box of the object's visible part, as Pascal3D+ annotates it.
  * `translation`: the crop-relative label (x, y, z) of `geometry.camera_to_crop_translation` for `bbox`
    and `intrinsics`; `translation_camera`: the normalised object's origin in the camera frame (the scene
    scaled so the model has radius 0.5), from which `translation` is computed.
  * `intrinsics`: K (3x3) in the same pixel convention (cx = W/2 is the image centre).
  * `crop`: the square crop of side max(w, h) centred on the bbox centre (zero padding outside the
    image), resized to the builder's crop size (`disent_jax.datasets.crops.square_crop`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds


def pose_features(categories: Sequence[str]) -> tfds.features.FeaturesDict:
  """The FeaturesDict of one object instance in one image."""
  return tfds.features.FeaturesDict({
      "instance_id": tfds.features.Text(),  # unique and stable, e.g. 'test/000123' or '2008_000021/0'
      "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
      "crop": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
      "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
      "bbox_area": tfds.features.Scalar(dtype=np.float32),
      "category": tfds.features.ClassLabel(names=list(categories)),
      "cad_index": tfds.features.Scalar(dtype=np.int32),  # 1-based, as Pascal3D+ annotations
      "quaternion": tfds.features.Tensor(shape=(4,), dtype=np.float32),
      "viewpoint": tfds.features.Tensor(shape=(3,), dtype=np.float32),
      "translation": tfds.features.Tensor(shape=(3,), dtype=np.float32),
      "translation_camera": tfds.features.Tensor(shape=(3,), dtype=np.float32),
      "intrinsics": tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
      "occluded": tfds.features.Scalar(dtype=np.bool_),
      "truncated": tfds.features.Scalar(dtype=np.bool_),
      "difficult": tfds.features.Scalar(dtype=np.bool_),
  })
