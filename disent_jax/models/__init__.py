"""Pure linen modules: the Stage I voxel embedder, the Stage II ResNet regressor and their shared heads."""
