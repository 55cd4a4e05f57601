"""disent_jax: a JAX/Flax reimplementation of Lin et al., "Learning a Disentangled Embedding for
Monocular 3D Shape Retrieval and Pose Estimation".

The library is importable without flags; entry points live in `launch/`.
"""

__version__ = "0.1.0"
