"""pacnp: Pixel-Adaptive Convolution (Su et al., CVPR 2019) for NumPy and friends.

``v'_i = Σ_{j∈Ω(i)} K(f_i, f_j) · W[p_i − p_j] · v_j + b``

Forward and backward kernels are numba CPU kernels; every public function takes arrays of any
CPU array library (NumPy, torch, JAX, array-API libraries) and returns the caller's kind.
"""

from ._api import (
    pacconv2d,
    pacconv2d_backward,
    pacconv2d_fused,
    pacconv2d_fused_backward,
    pacconv_transpose2d,
    pacconv_transpose2d_backward,
    pacconv_transpose2d_fused,
    pacconv_transpose2d_fused_backward,
    packernel2d,
    packernel2d_backward,
    pacpool2d,
    pacpool2d_backward,
    pacpool2d_fused,
    pacpool2d_fused_backward,
)
from ._jit import KernelCacheWarning

__version__ = "0.1.0"

__all__ = [
    "packernel2d",
    "packernel2d_backward",
    "pacconv2d",
    "pacconv2d_backward",
    "pacconv_transpose2d",
    "pacconv_transpose2d_backward",
    "pacpool2d",
    "pacpool2d_backward",
    "pacconv2d_fused",
    "pacconv2d_fused_backward",
    "pacconv_transpose2d_fused",
    "pacconv_transpose2d_fused_backward",
    "pacpool2d_fused",
    "pacpool2d_fused_backward",
    "KernelCacheWarning",
]
