"""The 12 Pascal3D+ categories, in the order used by the paper's tables."""

CATEGORIES: tuple[str, ...] = (
    "aeroplane", "bicycle", "boat", "bottle", "bus", "car",
    "chair", "diningtable", "motorbike", "sofa", "train", "tvmonitor",
)

# Short column names as printed in the paper's tables.
SHORT_NAMES: dict[str, str] = {
    "aeroplane": "aero", "bicycle": "bike", "boat": "boat", "bottle": "bottle", "bus": "bus",
    "car": "car", "chair": "chair", "diningtable": "dtable", "motorbike": "mbike", "sofa": "sofa",
    "train": "train", "tvmonitor": "tv",
}
