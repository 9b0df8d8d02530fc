"""PyTorch adapter: pacnp's kernels as autograd-aware torch operators, functions and layers.

A drop-in for the PAC layers of the 2019 reference code (``pac.py`` / ``paccrf.py`` of
NVlabs/pacnet, which stopped working at PyTorch 1.2), on today's PyTorch (≥ 2.4):

* functional ``packernel2d``, ``pacconv2d``, ``pacconv_transpose2d``, ``pacpool2d`` with the
  reference code's argument names (``native_impl`` accepted and ignored), plus the fused
  ``pacconv2d_fused``, ``pacconv_transpose2d_fused``, ``pacpool2d_fused`` (guide → output);
* layers ``PacConv2d``, ``PacConvTranspose2d``, ``PacPool2d`` (same constructor arguments and
  defaults, same parameter/buffer names, so state dicts line up), ``from_conv`` hot-swapping;
* the same functions and layers for signals and volumes, ``...1d`` and ``...3d`` (layout
  N, C, *S as torch's conv1d / conv3d), on the same custom ops;
* ``PacCRF``, ``PacCRFLoose``, ``create_YXRGB``, ``create_position_feats``;
* ``convert_reference_state_dict`` / ``load_reference_state_dict`` for checkpoints of the
  reference code (its transposed-convolution weights are spatially flipped).

One module per concern, each built on the one before it:

``_ops``         the ``torch.library`` custom ops (``torch.ops.pacnp.*``): fake implementations
                 and autograd formulas, so ``torch.compile(fullgraph=True)`` has no graph breaks;
``functional``   the reference-signature functions: argument conversion, then one op call;
``layers``       the ``nn.Module`` layers, their fillers and ``from_conv``;
``checkpoints``  loading state dicts of the reference code;
``crf``          ``PacCRF`` / ``PacCRFLoose`` and the DenseCRF feature helpers.

This package holds public names only; import them from here (``import pacnp.torch as pac``).
"""

# ``import torch`` in the submodules is PyTorch, not this package: Python 3 imports are absolute
# and this package is ``pacnp.torch``. (Only a sys.path entry of pacnp/ itself, e.g. running a
# file of pacnp/ as a script, would make it ``torch``; so it was with the one-file module.)
from .checkpoints import convert_reference_state_dict, load_reference_state_dict
from .crf import PacCRF, PacCRFLoose, create_position_feats, create_YXRGB
from .functional import (
    pacconv1d,
    pacconv1d_fused,
    pacconv2d,
    pacconv2d_fused,
    pacconv3d,
    pacconv3d_fused,
    pacconv_transpose1d,
    pacconv_transpose1d_fused,
    pacconv_transpose2d,
    pacconv_transpose2d_fused,
    pacconv_transpose3d,
    pacconv_transpose3d_fused,
    packernel1d,
    packernel2d,
    packernel3d,
    pacpool1d,
    pacpool1d_fused,
    pacpool2d,
    pacpool2d_fused,
    pacpool3d,
    pacpool3d_fused,
)
from .layers import (
    PacConv1d,
    PacConv2d,
    PacConv3d,
    PacConvTranspose1d,
    PacConvTranspose2d,
    PacConvTranspose3d,
    PacPool1d,
    PacPool2d,
    PacPool3d,
)

__all__ = [
    "packernel2d",
    "pacconv2d",
    "pacconv_transpose2d",
    "pacpool2d",
    "pacconv2d_fused",
    "pacconv_transpose2d_fused",
    "pacpool2d_fused",
    "PacConv2d",
    "PacConvTranspose2d",
    "PacPool2d",
    "packernel1d",
    "pacconv1d",
    "pacconv_transpose1d",
    "pacpool1d",
    "pacconv1d_fused",
    "pacconv_transpose1d_fused",
    "pacpool1d_fused",
    "PacConv1d",
    "PacConvTranspose1d",
    "PacPool1d",
    "packernel3d",
    "pacconv3d",
    "pacconv_transpose3d",
    "pacpool3d",
    "pacconv3d_fused",
    "pacconv_transpose3d_fused",
    "pacpool3d_fused",
    "PacConv3d",
    "PacConvTranspose3d",
    "PacPool3d",
    "PacCRF",
    "PacCRFLoose",
    "create_YXRGB",
    "create_position_feats",
    "convert_reference_state_dict",
    "load_reference_state_dict",
]

# Every public name keeps the module it had when pacnp.torch was one file. Pickles of whole
# models and torch.load(weights_only=True) allowlists name a class by module and qualname
# ("pacnp.torch.PacConv2d"), so models saved before the split keep loading, and saved ones do
# not depend on this package's inner layout. (Cost: inspect.getsource of these classes looks in
# this file and finds nothing; the layers are not TorchScript-able anyway.)
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
