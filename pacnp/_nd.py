"""The 1-D and 3-D public functions: the 2-D ones' names with ``1d`` / ``3d``.

Every PAC function is one implementation over any number of spatial axes (``pacnp._api``:
``_packernel``, ``_op_forward``, ``_fused_forward`` …, which fold the leading spatial axes into
rows over per-axis tap tables, ``pacnp._core.fold_tables``); ``packernel2d`` and the other 2-D
names call it with ``nd=2``. The 1-D and 3-D names made here take exactly the 2-D function's
parameters (its signature, bound the same way) and call the same implementation with their
``nd``: nothing of the computation is repeated per dimension. Their docstrings give the N-D
shapes and a worked example, and point to the 2-D function for the full description.
"""

from __future__ import annotations

import functools
import inspect

from . import _api

_AXES = {1: ("L",), 3: ("D", "H", "W")}
_TAPS = {1: ("k",), 3: ("kd", "kh", "kw")}
#: the spatial sizes of the examples
_SIZE = {1: (16,), 3: (4, 5, 6)}


def _shape(*parts):
    return "(" + ", ".join(str(p) for p in parts) + ")"


def _sp(nd, suffix=""):
    return ", ".join(a + suffix for a in _AXES[nd])


def _down(n):
    """Output size of kernel 3, stride 2, padding 1."""
    return (n + 2 - 3) // 2 + 1


_SUMMARY = {
    "packernel": "The pixel-adaptive kernel K of Su et al. (2019), Eq. 3, from guide features",
    "pacconv": "Pixel-adaptive convolution (cross-correlation)",
    "pacconv_transpose": "Pixel-adaptive transposed convolution",
    "pacpool": "Pixel-adaptive pooling",
}


def _doc(family, nd, backward, fused):
    """The docstring of the ``nd``-D twin of a 2-D function."""
    name = f"{family}{nd}d" + ("_fused" if fused else "") + ("_backward" if backward else "")
    base = name.replace(f"{nd}d", "2d")
    fwd = name.replace("_backward", "")
    dims = "one spatial axis" if nd == 1 else f"{nd} spatial axes"
    if backward:
        head = f"Gradients of :func:`{fwd}` ({dims})."
    else:
        head = f"{_SUMMARY[family]}, over {dims}" + (", K computed on the fly." if fused else ".")
    S = _SIZE[nd]
    taps = ", ".join(_TAPS[nd])
    shapes = [f"guide ``(B, Cg, {_sp(nd)})``"]
    if family == "packernel":
        shapes += [
            f"K ``(B, 1 or Cg, {taps}, {_sp(nd, '_out')})``",
            f"mask ``(B, 1, {_sp(nd)})``",
            f"a ``full_N`` smooth_kernel ``{(('N',) * nd)}``".replace("'", ""),
        ]
    else:
        shapes.insert(0, f"input ``(B, C, {_sp(nd)})``")
        if not fused:
            shapes[1] = f"kernel ``(B, 1 or C, {taps}, {_sp(nd, '_out')})``"
        if family == "pacconv":
            shapes.append(f"weight ``(C_out, C_in, {taps})``")
        elif family == "pacconv_transpose":
            shapes.append(f"weight ``(C_in, C_out, {taps})`` (guide at the output resolution)")
        if fused:
            shapes.append(f"mask ``(B, 1, {_sp(nd)})``")
    text = f"""{head}

    The {nd}-D twin of :func:`{base}`: the same parameters, defaults, checks and results, with
    {dims} (layout ``N, C, {_sp(nd)}``, as ``torch.nn.functional.conv{nd}d``). Every size
    option (kernel_size, stride, padding, output_padding, dilation) is an int or a tuple of
    {nd} int{"s" if nd > 1 else ""}, one per spatial axis. Shapes: {"; ".join(shapes)}.

    See :func:`{base}` for the parameters, the returned values and the errors raised; the
    semantics page describes the geometry axis by axis.

    Examples
    --------
    >>> import numpy as np
    >>> import pacnp
    >>> rng = np.random.default_rng(0)
"""
    return text + _example(family, nd, backward, fused, name, S)


def _example(family, nd, backward, fused, name, S):
    k3 = (3,) * nd
    lines = []
    if family == "packernel":
        lines.append(f">>> guide = rng.random((1, 3) + {S})")
        if not backward:
            lines += [
                f">>> K, mask = pacnp.{name}(guide, 3, padding=1)",
                ">>> K.shape, mask",
                f"({_shape(1, 1, *k3, *S)}, None)",
            ]
        else:
            lines += [
                f">>> K, _ = pacnp.packernel{nd}d(guide, 3, padding=1)",
                f">>> d_guide, d_alpha, d_lambda, d_smooth = pacnp.{name}(",
                "...     np.ones_like(K), guide, 3, padding=1)",
                ">>> d_guide.shape, d_alpha",
                f"({_shape(1, 3, *S)}, None)",
            ]
        return "\n".join("    " + ln for ln in lines) + "\n    "
    if family == "pacconv_transpose":
        So = tuple(2 * n for n in S)
        geo = "stride=2, padding=1, output_padding=1"
        lines += [
            f">>> x, guide = rng.random((1, 2) + {S}), rng.random((1, 3) + {So})",
            f">>> w = rng.random((2, 5) + {k3})",
        ]
    elif family == "pacconv":
        So = S
        geo = "padding=1"
        lines += [
            f">>> x, guide = rng.random((1, 2) + {S}), rng.random((1, 3) + {S})",
            f">>> w = rng.random((4, 2) + {k3})",
        ]
    else:
        So = tuple(_down(n) for n in S)
        geo = "stride=2, padding=1"
        lines.append(f">>> x, guide = rng.random((1, 2) + {S}), rng.random((1, 3) + {S})")
    Cout = {"pacconv": 4, "pacconv_transpose": 5, "pacpool": 2}[family]
    kgeo = geo + (", transposed=True" if family == "pacconv_transpose" else "")
    norm = ", normalize_kernel=True" if family == "pacpool" else ""
    lines.append(f">>> K, _ = pacnp.packernel{nd}d(guide, 3, {kgeo}{norm})")
    two_step = f"pacnp.{family}{nd}d(x, K, " + ("3, " if family == "pacpool" else "w, ") + geo
    if fused:
        args = "x, guide, " + ("3, " if family == "pacpool" else "w, ") + geo + norm
    if not backward and not fused:
        lines += [f">>> out = {two_step})", ">>> out.shape", _shape(1, Cout, *So)]
    elif not backward:
        lines += [
            f">>> out, _ = pacnp.{name}({args})",
            f">>> out.shape, bool(np.allclose(out, {two_step})))",
            f"({_shape(1, Cout, *So)}, True)",
        ]
    else:
        grad = f"np.ones((1, {Cout}) + {So})"
        call = f"pacnp.{name}({grad}, " + (args if fused else two_step.split("(", 1)[1]) + ")"
        lines += [f">>> grads = {call}", ">>> [None if g is None else g.shape for g in grads]"]
        x_shape, g_shape = _shape(1, 2, *S), _shape(1, 3, *(So if "transpose" in name else S))
        w_shape = {"pacconv": _shape(4, 2, *k3), "pacconv_transpose": _shape(2, 5, *k3)}
        if fused:
            want = [x_shape, g_shape]
            if family != "pacpool":
                want += [w_shape[family], "None"]
            want += ["None", "None", "None"]
        else:
            want = [x_shape, _shape(1, 1, *k3, *So)]
            if family != "pacpool":
                want += [w_shape[family], "None"]
        lines.append("[" + ", ".join(want) + "]")
    out = []
    for ln in lines:  # keep doctest lines within the line length
        out.append("    " + ln)
    return "\n".join(out) + "\n    "


def _twin(base, impl, nd):
    """The ``nd``-D public function of the 2-D function ``base`` (same signature), running
    ``impl(name, nd, **arguments)``."""
    sig = inspect.signature(base)
    name = base.__name__.replace("2d", f"{nd}d")
    family = base.__name__.split("2d")[0]

    def twin(*args, **kwargs):
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{name}: {e}") from None
        bound.apply_defaults()
        return impl(name, nd, **bound.arguments)

    twin.__name__ = twin.__qualname__ = name
    twin.__module__ = base.__module__
    twin.__signature__ = sig
    twin.__doc__ = _doc(family, nd, "backward" in name, "fused" in name)
    return twin


def _impl(base):
    """The N-D implementation a 2-D public function calls (see ``_api``)."""
    n = base.__name__
    op = "pool" if n.startswith("pacpool") else "transpose" if "transpose" in n else "conv"
    if n.startswith("packernel"):
        return _api._packernel_backward if n.endswith("_backward") else _api._packernel
    if "fused" in n:
        run = _api._fused_backward if n.endswith("_backward") else _api._fused_forward
    else:
        run = _api._op_backward if n.endswith("_backward") else _api._op_forward
    return functools.partial(_call_op, run, op)


def _call_op(run, op, fn, nd, **arguments):
    return run(fn, nd, op, **arguments)


_BASES = [getattr(_api, n) for n in _api.__all__]
__all__ = []
for _nd in (1, 3):
    for _base in _BASES:
        _f = _twin(_base, _impl(_base), _nd)
        globals()[_f.__name__] = _f
        __all__.append(_f.__name__)
