"""Pure linen modules: the Stage I voxel embedder, its 3D convolutions and the output heads."""
