"""Checkpoints of the 2019 reference code (NVlabs/pacnet) for pacnp's torch layers.

Parameter and buffer names and shapes are the same; the only conversion needed is that the
reference ``PacConvTranspose2d`` applied its weight spatially flipped relative to
``nn.ConvTranspose2d`` (and pacnp), so those weights are flipped on load.

The reference code had 2-D layers only: ``PacConvTranspose1d`` / ``3d`` weights never come from
it, are always in torch's orientation, and pass through unchanged.
"""

from __future__ import annotations

from .layers import PacConvTranspose2d

__all__ = ["convert_reference_state_dict", "load_reference_state_dict"]


def convert_reference_state_dict(state_dict, model):
    """Convert a state dict saved from the 2019 reference code's layers for ``model``.

    The names and shapes of parameters and buffers are the same; the one difference is that
    the reference ``PacConvTranspose2d`` applied its weight spatially flipped relative to
    ``nn.ConvTranspose2d`` (and pacnp), so the weight of every :class:`PacConvTranspose2d` in
    ``model`` is flipped on its last two axes. Everything else is passed through unchanged,
    the weights of the 1-D and 3-D layers included (the reference code had none).

    Parameters
    ----------
    state_dict : Mapping[str, Tensor]
        As saved by the reference code (``model.state_dict()`` there).
    model : nn.Module
        The pacnp.torch model it is for (only its module names and types are used).

    Returns
    -------
    dict
        A new state dict for ``model.load_state_dict``; the input is not modified.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> model = torch.nn.Sequential(pac.PacConvTranspose2d(1, 1, 3))
    >>> saved = {k: v.clone() for k, v in model.state_dict().items()}   # as the 2019 code saved
    >>> converted = pac.convert_reference_state_dict(saved, model)
    >>> bool(torch.equal(converted["0.weight"], saved["0.weight"].flip(-2, -1)))
    True
    """
    out = type(state_dict)(state_dict) if isinstance(state_dict, dict) else dict(state_dict)
    for name, module in model.named_modules():
        if isinstance(module, PacConvTranspose2d):
            key = f"{name}.weight" if name else "weight"
            if key in out:
                out[key] = out[key].flip(-2, -1)
    return out


def load_reference_state_dict(model, state_dict, strict=True):
    """``model.load_state_dict(convert_reference_state_dict(state_dict, model), strict)``.

    Parameters
    ----------
    model : nn.Module
        A model built from pacnp.torch layers.
    state_dict : Mapping[str, Tensor]
        As saved by the 2019 reference code.
    strict : bool, optional
        As ``nn.Module.load_state_dict``.

    Returns
    -------
    NamedTuple
        ``load_state_dict``'s ``(missing_keys, unexpected_keys)``.

    Examples
    --------
    >>> import torch
    >>> import pacnp.torch as pac
    >>> model = torch.nn.Sequential(pac.PacConv2d(1, 2, 3, padding=1))
    >>> pac.load_reference_state_dict(model, model.state_dict())
    <All keys matched successfully>
    """
    return model.load_state_dict(convert_reference_state_dict(state_dict, model), strict=strict)
