"""Plain NumPy float64 reference for pacnp, written from docs/semantics.md, in 1, 2 and 3
spatial dimensions.

No numba, no torch: this module is what the kernels are tested against, so it favours code
that can be checked line by line against the equations over speed.  Every rule of
docs/semantics.md is stated per axis (Su et al. 2019, Eq. 3, with the window over ``nd``
axes instead of two), so the reference keeps one tap table per axis -- which position tap
``i`` of output ``y`` reads, and whether it is valid -- and a tap ``t = (t_0, ..., t_{nd-1})``
is valid when it is valid on every axis.  Loops run over the taps ``t`` of the window; each
loop body works on all output positions, batches and channels at once with NumPy fancy
indexing (a tap reads one position per output index of each axis, so the gather is
``a[..., idx_0[:, None, None], idx_1[None, :, None], idx_2[None, None, :]]`` in 3-D).

The public names are those of pacnp: ``packernel{1,2,3}d``, ``pacconv{1,2,3}d``,
``pacconv_transpose{1,2,3}d``, ``pacpool{1,2,3}d`` and their ``_backward``; each is the
N-D function (``packernel_nd`` ...) with ``nd`` fixed.  Layout ``(N, C, *spatial)``; a kernel
``K`` is ``(B, 1|C, *k, *S_out)``; a weight ``(Cout, Cin, *k)`` (transposed:
``(Cin, Cout, *k)``).

Readings of docs/semantics.md that the text leaves open (the most natural one is taken):

* ``padding <= r`` is required for ``packernel2d`` in both modes (the document states the
  rejection next to the geometry, for both).  ``pacconv2d`` / ``pacconv_transpose2d`` /
  ``pacpool2d`` accept any padding that gives a positive output size, like torch.
* ``output_padding`` only matters with ``transposed=True``; it is ignored otherwise.
* ``output_mask`` is returned as float64 0.0 / 1.0 (the document gives no dtype).
* ``inv_alpha`` / ``inv_lambda`` with ``channel_wise`` may be a scalar (broadcast to every
  channel) or shape ``(Cg,)``; without ``channel_wise`` they must hold one value (shape ``()``
  or ``(1,)``).  The gradient has the shape of the array as passed (summed over broadcasts).
  Either one may be passed without the other; the missing one comes from the string.
* ``inv_alpha`` / ``inv_lambda`` passed together with the gaussian kernel are ignored
  (gradient None).  ``smooth_kernel`` is ignored unless ``smooth_kernel_type`` is ``full_N``.
* The gaussian kernel type is exactly ``"gaussian"`` (``_asym`` is documented for the
  ``inv_`` family only).
* ``shared_filters`` in ``pacconv_transpose2d`` uses the single filter flipped like the
  unshared one: ``W[0, 0, kh-1-i, kw-1-j]`` (the document spells the shared form out for
  ``pacconv2d`` only).
* ``bias`` has one entry per output channel, i.e. ``Cin`` entries with ``shared_filters``.
* Normalisation where ``Σ_taps Km == 0`` (exactly) gives ``K = 0``; its gradient there is 0.
* In ``nd`` dimensions the smoothing kernels are the 2-D ones over ``nd`` axes: ``gaussian``
  the outer product of ``[¼, ½, ¼]`` with itself ``nd`` times, ``average_N`` ``1/N^nd``
  everywhere, ``full_N`` an array of shape ``(N,)*nd`` or ``(1, 1) + (N,)*nd``.
"""

import itertools

import numpy as np

INV_EPS = 1e-4  # the 1e-4 inside (Σ Δ² + 1e-4)^(λ/2)

#: the einsum letters of the spatial axes, by dimension (the 2-D ones are the old "yx")
_SPATIAL_LETTERS = {1: "x", 2: "yx", 3: "zyx"}


# ----------------------------------------------------------------------------- helpers


def _ntuple(v, nd, name="value"):
    """An int or a tuple of ``nd`` ints as a tuple of ``nd`` ints."""
    if isinstance(v, (int, np.integer)):
        return (int(v),) * nd
    v = tuple(int(a) for a in v)
    assert len(v) == nd, f"{name}: expected an int or {nd} ints, got {v!r}"
    return v


def _pair(v):
    return _ntuple(v, 2, "pair")


def _f64(a, ndim=None, name="array"):
    a = np.asarray(a, dtype=np.float64)
    if ndim is not None:
        assert a.ndim == ndim, f"{name} must be {ndim}-d, got shape {a.shape}"
    return a


def _open(vectors):
    """Per-axis index vectors as an open grid: vector ``a`` shaped ``(1, .., n_a, .., 1)``
    (np.ix_ without its reading of boolean vectors as masks)."""
    nd = len(vectors)
    return tuple(
        np.asarray(v).reshape((1,) * a + (-1,) + (1,) * (nd - a - 1)) for a, v in enumerate(vectors)
    )


def _valid_nd(valid_axes):
    """The outer AND of per-axis validity vectors: a tap is valid iff valid on every axis."""
    grid = _open(valid_axes)
    v = grid[0]
    for g in grid[1:]:
        v = v & g
    return v


def _clipped(a, idx):
    """The index vectors of the last ``len(idx)`` axes of ``a`` clipped into range (the
    positions of invalid taps are read, then multiplied by 0)."""
    nd = len(idx)
    return [np.clip(i, 0, a.shape[a.ndim - nd + ax] - 1) for ax, i in enumerate(idx)]


def _gather(a, idx, valid):
    """``out[..., y_0, .., y_n] = a[..., idx_0[y_0], .., idx_n[y_n]]`` where ``valid``, else 0."""
    return a[(Ellipsis,) + _open(_clipped(a, idx))] * valid


def _scatter_add(target, idx, valid, values):
    """Adjoint of ``_gather``: ``target[..., idx_0[y_0], ..] += values[..., y_0, ..]`` (valid
    only)."""
    np.add.at(target, (Ellipsis,) + _open(_clipped(target, idx)), values * valid)


def _safe_div(num, den):
    """``num / den`` where ``den != 0``, else 0 (never NaN)."""
    num, den = np.broadcast_arrays(num, den)
    out = np.zeros(num.shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _tap(t):
    """Index of tap ``t`` in an array ``(B, C, *k, ...)``."""
    return (slice(None), slice(None)) + tuple(t)


def _over_taps(a, nd):
    """``a`` of shape ``(B, C, *S_out)`` broadcast against ``(B, C, *k, *S_out)``."""
    return a[(slice(None), slice(None)) + (None,) * nd]


def _spatial_axes(nd, lead=2):
    return tuple(range(lead, lead + nd))


# ----------------------------------------------------------------------------- geometry


def _kernel_axis(n, k, s, p, op, d, transposed):
    """One axis of packernel2d.

    Returns ``(n_out, P, valid, centre)``: ``P[y, i]`` is the guide position read by tap ``i``
    of output ``y``, ``valid[y, i]`` whether the tap is valid, ``centre[y]`` the window centre.
    """
    assert k >= 1 and k % 2 == 1, f"kernel size must be odd, got {k}"
    assert s >= 1 and d >= 1 and op >= 0
    r = d * (k - 1) // 2
    assert 0 <= p <= r, f"padding {p} must be in [0, r={r}]"
    taps = np.arange(k)
    if not transposed:
        n_out = (n + 2 * p - d * (k - 1) - 1) // s + 1
        assert n_out >= 1, "empty output"
        y = np.arange(n_out)
        P = y[:, None] * s - p + taps[None, :] * d
        valid = (P >= 0) & (P < n)
        centre = y * s - p + r
    else:
        num = n - 1 + 2 * p - 2 * r - op
        assert num >= 0 and num % s == 0, "transposed: H_in must be a positive integer"
        n_in = num // s + 1
        n_out = n
        y = np.arange(n_out)
        P = y[:, None] - r + taps[None, :] * d
        q = y[:, None] + p - 2 * r + taps[None, :] * d  # == P + p - r
        valid = (q % s == 0) & (q >= 0) & (q // s < n_in)
        centre = y
    assert np.all((centre >= 0) & (centre < n))
    assert np.all((P[valid] >= 0) & (P[valid] < n))
    return n_out, P, valid, centre


def _conv_axis(n, k, s, p, d):
    """One axis of conv2d / pacpool2d: ``(n_out, idx, valid)``, ``idx[y, i] = y*s - p + i*d``."""
    assert k >= 1 and s >= 1 and d >= 1 and p >= 0
    n_out = (n + 2 * p - d * (k - 1) - 1) // s + 1
    assert n_out >= 1, "empty output"
    idx = np.arange(n_out)[:, None] * s - p + np.arange(k)[None, :] * d
    valid = (idx >= 0) & (idx < n)
    return n_out, idx, valid


def _conv_transpose_axis(n_in, k, s, p, op, d):
    """One axis of conv_transpose2d: ``(n_out, idx, valid)``; tap ``i`` of output ``Y`` reads input
    ``idx[Y, i] = q / s`` with ``q = Y + p - d(k-1) + i*d``, valid iff ``q % s == 0`` and in
    range."""
    assert k >= 1 and s >= 1 and d >= 1 and p >= 0 and op >= 0
    n_out = (n_in - 1) * s - 2 * p + d * (k - 1) + op + 1
    assert n_out >= 1, "empty output"
    q = np.arange(n_out)[:, None] + p - d * (k - 1) + np.arange(k)[None, :] * d
    valid = (q % s == 0) & (q >= 0) & (q // s < n_in)
    return n_out, q // s, valid


# ----------------------------------------------------------------------------- packernel


def _parse_kernel_type(kernel_type):
    """``"gaussian"`` or ``"inv_{alpha}_{lambda}"`` + optional ``_asym`` / ``_fixed`` (any
    order)."""
    parts = kernel_type.split("_")
    if parts == ["gaussian"]:
        return {"kind": "gaussian", "alpha": None, "lambda": None, "asym": False, "fixed": False}
    assert parts[0] == "inv" and len(parts) >= 3, f"unknown kernel_type {kernel_type!r}"
    suffixes = parts[3:]
    assert set(suffixes) <= {"asym", "fixed"} and len(set(suffixes)) == len(suffixes), kernel_type
    return {
        "kind": "inv",
        "alpha": float(parts[1]),
        "lambda": float(parts[2]),
        "asym": "asym" in suffixes,
        "fixed": "fixed" in suffixes,
    }


def _smoothing_filter(smooth_kernel_type, smooth_kernel, nd=2):
    """The ``(N,)*nd`` smoothing kernel S, or None for ``"none"``."""
    if smooth_kernel_type == "none":
        return None
    if smooth_kernel_type == "gaussian":
        w = np.array([0.25, 0.5, 0.25])
        S = w
        for _ in range(nd - 1):
            S = np.multiply.outer(S, w)  # separable: the product of the 1-D weights
        return S
    name, _, n = smooth_kernel_type.partition("_")
    N = int(n)
    assert N >= 1 and N % 2 == 1, f"smoothing size must be odd, got {smooth_kernel_type!r}"
    if name == "average":
        return np.full((N,) * nd, 1.0 / N**nd)
    assert name == "full", f"unknown smooth_kernel_type {smooth_kernel_type!r}"
    S = _f64(smooth_kernel)
    assert S.shape in ((N,) * nd, (1, 1) + (N,) * nd), (
        f"smooth_kernel shape {S.shape} for {smooth_kernel_type} in {nd}-D"
    )
    return S.reshape((N,) * nd)


def _zero_pad(a, h, nd):
    """``a`` with ``h`` zeros on both sides of each of its last ``nd`` axes."""
    spatial = a.shape[a.ndim - nd :]
    out = np.zeros(a.shape[: a.ndim - nd] + tuple(n + 2 * h for n in spatial))
    out[(Ellipsis,) + tuple(slice(h, h + n) for n in spatial)] = a
    return out


def _window(u, spatial):
    """The slice of a padded array that tap ``u`` of the smoothing kernel reads."""
    return (Ellipsis,) + tuple(slice(ua, ua + n) for ua, n in zip(u, spatial))


def _smooth(guide, S):
    """``F[b,ch,Y] = Σ_u S[u] · guide[b,ch,Y+u-N//2]`` over the ``nd`` axes (zero outside)."""
    nd = S.ndim
    N = S.shape[0]
    h = N // 2
    spatial = guide.shape[2:]
    padded = _zero_pad(guide, h, nd)
    F = np.zeros(guide.shape)
    for u in itertools.product(range(N), repeat=nd):
        F += S[u] * padded[_window(u, spatial)]
    return F


def _smooth_backward(grad_F, guide, S):
    """Gradients of ``_smooth`` with respect to ``guide`` and ``S``."""
    nd = S.ndim
    N = S.shape[0]
    h = N // 2
    spatial = guide.shape[2:]
    padded = _zero_pad(guide, h, nd)
    grad_padded = np.zeros(padded.shape)
    grad_S = np.zeros(S.shape)
    for u in itertools.product(range(N), repeat=nd):
        grad_padded[_window(u, spatial)] += S[u] * grad_F
        grad_S[u] = np.sum(grad_F * padded[_window(u, spatial)])
    inner = (Ellipsis,) + tuple(slice(h, h + n) for n in spatial)
    return grad_padded[inner], grad_S


def _inv_param(arg, from_string, Cg, channel_wise, name, nd=2):
    """``(value as passed or None, value broadcast for the formulas)``.

    The broadcast value has shape ``(1, Cg) + (1,)*nd`` with channel_wise, else ``()``."""
    if arg is None:
        return None, np.float64(from_string)
    a = _f64(arg)
    if channel_wise:
        assert a.shape in ((), (1,), (Cg,)), f"{name} shape {a.shape}, expected () or ({Cg},)"
        return a, np.broadcast_to(a.reshape(-1), (Cg,)).reshape((1, Cg) + (1,) * nd)
    assert a.size == 1 and a.ndim <= 1, (
        f"{name} must be a scalar without channel_wise, got {a.shape}"
    )
    return a, a.reshape(())


def _reduce_to(grad_cg, shape):
    """Sum a per-channel gradient ``(Cg,)`` (or a scalar) back to the shape of the argument."""
    grad_cg = np.asarray(grad_cg, dtype=np.float64)
    if shape == grad_cg.shape:
        return grad_cg.copy()
    return np.asarray(grad_cg.sum()).reshape(shape)


def _packernel_forward(
    guide,
    kernel_size,
    *,
    nd,
    stride,
    padding,
    output_padding,
    dilation,
    kernel_type,
    smooth_kernel_type,
    smooth_kernel,
    inv_alpha,
    inv_lambda,
    channel_wise,
    normalize_kernel,
    mask,
    transposed,
):
    """Forward pass of packernel_nd; returns a dict of everything the backward needs."""
    guide = _f64(guide, nd + 2, "guide")
    B, Cg = guide.shape[:2]
    S_in = guide.shape[2:]
    k = _ntuple(kernel_size, nd, "kernel_size")
    s = _ntuple(stride, nd, "stride")
    p = _ntuple(padding, nd, "padding")
    op = _ntuple(output_padding, nd, "output_padding")
    d = _ntuple(dilation, nd, "dilation")
    if not transposed:
        op = (0,) * nd  # output_padding only matters for the transposed geometry
    axes = [_kernel_axis(S_in[a], k[a], s[a], p[a], op[a], d[a], transposed) for a in range(nd)]
    S_out = tuple(ax[0] for ax in axes)
    P = [ax[1] for ax in axes]
    v_axis = [ax[2] for ax in axes]
    centre = [ax[3] for ax in axes]

    kt = _parse_kernel_type(kernel_type)
    alpha_arg = lambda_arg = None
    alpha = lam = None
    if kt["kind"] == "inv":
        alpha_arg, alpha = _inv_param(inv_alpha, kt["alpha"], Cg, channel_wise, "inv_alpha", nd)
        lambda_arg, lam = _inv_param(inv_lambda, kt["lambda"], Cg, channel_wise, "inv_lambda", nd)

    S = _smoothing_filter(smooth_kernel_type, smooth_kernel, nd)
    F = guide if S is None else _smooth(guide, S)
    f = F[(Ellipsis,) + _open(centre)]  # centre features, (B, Cg, *S_out)

    if mask is not None:
        m = _f64(mask, nd + 2, "mask")
        assert m.shape == (B, 1) + S_in, f"mask shape {m.shape}, expected {(B, 1) + S_in}"

    Ck = Cg if channel_wise else 1
    valid = np.zeros(k + S_out, dtype=bool)  # tap validity
    D = np.zeros((B, Cg) + k + S_out)  # Δ before the _asym clamp
    Kraw = np.zeros((B, Ck) + k + S_out)
    mt = np.zeros((B, 1) + k + S_out)  # mask at the tap (1 without a mask), 0 at invalid taps
    for t in itertools.product(*(range(ka) for ka in k)):
        vt = _valid_nd([v_axis[a][:, t[a]] for a in range(nd)])
        idx = [P[a][:, t[a]] for a in range(nd)]
        valid[t] = vt
        G = _gather(guide, idx, vt)
        D[_tap(t)] = (G - f) * vt
        Dc = np.maximum(D[_tap(t)], 0.0) if kt["asym"] else D[_tap(t)]
        sq = Dc**2 if channel_wise else np.sum(Dc**2, axis=1, keepdims=True)
        if kt["kind"] == "gaussian":
            val = np.exp(-0.5 * sq)
        else:
            val = alpha + (sq + INV_EPS) ** (lam / 2)
        Kraw[_tap(t)] = val * vt
        if mask is None:
            mt[_tap(t)] = vt
        else:
            mt[_tap(t)] = _gather(m, idx, vt)

    taps = _spatial_axes(nd)  # the tap axes of (B, C, *k, *S_out)
    Km = Kraw * mt
    n_valid = valid.sum(axis=tuple(range(nd))).astype(np.float64)  # S_out
    n_in = mt.sum(axis=taps)  # (B, 1, *S_out)
    output_mask = None if mask is None else (n_in > 0).astype(np.float64)

    Z = factor = None
    if normalize_kernel:
        Z = Km.sum(axis=taps)  # (B, Ck, *S_out)
        K = _safe_div(Km, _over_taps(Z, nd))
    elif mask is not None:
        factor = _safe_div(n_valid, n_in)  # (B, 1, *S_out); 0 where n_in == 0
        K = Km * _over_taps(factor, nd)
    else:
        K = Kraw
    return {
        "nd": nd,
        "guide": guide,
        "S": S,
        "kt": kt,
        "channel_wise": channel_wise,
        "alpha_arg": alpha_arg,
        "lambda_arg": lambda_arg,
        "alpha": alpha,
        "lam": lam,
        "smooth_kernel_arg": smooth_kernel,
        "smooth_kernel_type": smooth_kernel_type,
        "P": P,
        "centre": centre,
        "valid": valid,
        "D": D,
        "Kraw": Kraw,
        "mt": mt,
        "Z": Z,
        "factor": factor,
        "K": K,
        "output_mask": output_mask,
    }


def packernel_nd(
    guide,
    kernel_size,
    *,
    nd,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
    mask=None,
    transposed=False,
):
    """Adaptive kernel ``K [B, 1|Cg, *k, *S_out]`` and ``output_mask [B, 1, *S_out]`` (or
    None) of an ``nd``-dimensional guide ``[B, Cg, *S]``."""
    st = _packernel_forward(
        guide,
        kernel_size,
        nd=nd,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        kernel_type=kernel_type,
        smooth_kernel_type=smooth_kernel_type,
        smooth_kernel=smooth_kernel,
        inv_alpha=inv_alpha,
        inv_lambda=inv_lambda,
        channel_wise=channel_wise,
        normalize_kernel=normalize_kernel,
        mask=mask,
        transposed=transposed,
    )
    return st["K"], st["output_mask"]


def packernel_nd_backward(
    grad_kernel,
    guide,
    kernel_size,
    *,
    nd,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    kernel_type="gaussian",
    smooth_kernel_type="none",
    smooth_kernel=None,
    inv_alpha=None,
    inv_lambda=None,
    channel_wise=False,
    normalize_kernel=False,
    mask=None,
    transposed=False,
):
    """``(d_guide, d_inv_alpha, d_inv_lambda, d_smooth_kernel)`` for ``Σ grad_kernel · K``."""
    st = _packernel_forward(
        guide,
        kernel_size,
        nd=nd,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        kernel_type=kernel_type,
        smooth_kernel_type=smooth_kernel_type,
        smooth_kernel=smooth_kernel,
        inv_alpha=inv_alpha,
        inv_lambda=inv_lambda,
        channel_wise=channel_wise,
        normalize_kernel=normalize_kernel,
        mask=mask,
        transposed=transposed,
    )
    K, Kraw, mt, D, valid = st["K"], st["Kraw"], st["mt"], st["D"], st["valid"]
    gK = _f64(grad_kernel)
    assert gK.shape == K.shape, f"grad_kernel shape {gK.shape}, expected {K.shape}"
    guide = st["guide"]
    kt = st["kt"]
    B, Cg = D.shape[:2]
    k = D.shape[2 : 2 + nd]
    S_out = D.shape[2 + nd :]
    taps = _spatial_axes(nd)

    # Final K -> Km.
    if normalize_kernel:
        # K_t = Km_t / Z with Z = Σ_s Km_s:  dL/dKm_t = (g_t - Σ_s g_s K_s) / Z  (0 where Z == 0).
        Z = _over_taps(st["Z"], nd)
        gKm = _safe_div(gK - np.sum(gK * K, axis=taps, keepdims=True), Z)
    elif mask is not None:
        gKm = gK * _over_taps(st["factor"], nd)
    else:
        gKm = gK
    # Km = Kraw · m.
    gKraw = gKm * mt

    grad_guide = np.zeros(guide.shape)
    grad_f = np.zeros((B, Cg) + S_out)  # gradient of the centre features
    inv = kt["kind"] == "inv"
    want_alpha = inv and not kt["fixed"] and st["alpha_arg"] is not None
    want_lambda = inv and not kt["fixed"] and st["lambda_arg"] is not None
    Ck = Kraw.shape[1]
    grad_alpha = np.zeros(Ck)  # per channel (channel_wise) or one value
    grad_lam = np.zeros(Ck)
    over_pixels = (0,) + _spatial_axes(nd)  # batch and S_out of (B, Ck, *S_out)
    for t in itertools.product(*(range(ka) for ka in k)):
        vt = valid[t]
        Dt = D[_tap(t)]
        Dc = np.maximum(Dt, 0.0) if kt["asym"] else Dt
        g = gKraw[_tap(t)] * vt  # (B, Ck, *S_out)
        if kt["kind"] == "gaussian":
            # val = exp(-½ Σ Δc²):  dval/dΔc = -val · Δc
            val = Kraw[_tap(t)]
            grad_Dc = -g * val * Dc
        else:
            # val = α + T^(λ/2), T = Σ Δc² + 1e-4:  dval/dΔc = λ T^(λ/2 - 1) Δc,
            # dval/dα = 1, dval/dλ = ½ ln(T) T^(λ/2).
            sq = Dc**2 if channel_wise else np.sum(Dc**2, axis=1, keepdims=True)
            T = sq + INV_EPS
            lam = st["lam"]
            grad_Dc = g * lam * T ** (lam / 2 - 1) * Dc
            grad_alpha += g.sum(axis=over_pixels)
            grad_lam += np.sum(g * 0.5 * np.log(T) * T ** (lam / 2), axis=over_pixels)
        # _asym: Δc = max(Δ, 0), derivative 1 for Δ > 0 else 0.
        grad_D = grad_Dc * (Dt > 0) if kt["asym"] else grad_Dc
        # Δ = guide[P] - f
        _scatter_add(grad_guide, [st["P"][a][:, t[a]] for a in range(nd)], vt, grad_D)
        grad_f -= grad_D * vt

    # f = F[:, :, centre]
    grad_F = np.zeros(guide.shape)
    np.add.at(grad_F, (Ellipsis,) + _open(st["centre"]), grad_f)
    grad_S = None
    if st["S"] is None:
        grad_guide += grad_F
    else:
        g_from_F, grad_S = _smooth_backward(grad_F, guide, st["S"])
        grad_guide += g_from_F

    d_alpha = (
        _reduce_to(grad_alpha if channel_wise else grad_alpha[0], st["alpha_arg"].shape)
        if want_alpha
        else None
    )
    d_lambda = (
        _reduce_to(grad_lam if channel_wise else grad_lam[0], st["lambda_arg"].shape)
        if want_lambda
        else None
    )
    d_smooth = None
    if st["smooth_kernel_type"].startswith("full_"):
        d_smooth = grad_S.reshape(np.shape(st["smooth_kernel_arg"]))
    return grad_guide, d_alpha, d_lambda, d_smooth


# ----------------------------------------------------------------------------- pacconv


def _check_kernel(kernel, B, C, k, S_out):
    nd = len(k)
    K = _f64(kernel, 2 + 2 * nd, "kernel")
    assert K.shape[0] == B and K.shape[1] in (1, C) and K.shape[2:] == tuple(k) + tuple(S_out), (
        f"kernel shape {K.shape}, expected ({B}, 1|{C}, *{tuple(k)}, *{tuple(S_out)})"
    )
    return K


def _conv_weights(weight, Cin, shared_filters, transposed, nd):
    Wt = _f64(weight, nd + 2, "weight")
    k = Wt.shape[2:]
    if shared_filters:
        assert Wt.shape[:2] == (1, 1), f"shared filters need weight [1,1,*k], got {Wt.shape}"
        Cout = Cin
    elif transposed:
        assert Wt.shape[0] == Cin, f"weight {Wt.shape} is not [Cin={Cin}, Cout, *k]"
        Cout = Wt.shape[1]
    else:
        assert Wt.shape[1] == Cin, f"weight {Wt.shape} is not [Cout, Cin={Cin}, *k]"
        Cout = Wt.shape[0]
    return Wt, k, Cout


def _check_bias(bias, Cout):
    if bias is None:
        return None
    b = _f64(bias, 1, "bias")
    assert b.shape == (Cout,), f"bias shape {b.shape}, expected ({Cout},)"
    return b


def _pac_geometry(
    x,
    kernel,
    weight,
    bias,
    stride,
    padding,
    output_padding,
    dilation,
    shared_filters,
    transposed,
    nd,
):
    """Shared set-up of pacconv_nd / pacconv_transpose_nd.

    Returns ``(x, K, W, b, Cout, S_out, taps)`` where ``taps`` lists, per tap ``t``:
    ``(t, idx, valid, wt)`` -- the input positions it reads along each axis for every
    output position, its validity, and which weight tap it multiplies."""
    x = _f64(x, nd + 2, "x")
    B, Cin = x.shape[:2]
    S_in = x.shape[2:]
    Wt, k, Cout = _conv_weights(weight, Cin, shared_filters, transposed, nd)
    s = _ntuple(stride, nd, "stride")
    p = _ntuple(padding, nd, "padding")
    d = _ntuple(dilation, nd, "dilation")
    if transposed:
        op = _ntuple(output_padding, nd, "output_padding")
        axes = [_conv_transpose_axis(S_in[a], k[a], s[a], p[a], op[a], d[a]) for a in range(nd)]
    else:
        axes = [_conv_axis(S_in[a], k[a], s[a], p[a], d[a]) for a in range(nd)]
    S_out = tuple(ax[0] for ax in axes)
    K = _check_kernel(kernel, B, Cin, k, S_out)
    b = _check_bias(bias, Cout)
    taps = []
    for t in itertools.product(*(range(ka) for ka in k)):
        vt = _valid_nd([axes[a][2][:, t[a]] for a in range(nd)])
        idx = [axes[a][1][:, t[a]] for a in range(nd)]
        # transposed: W[c, o, k-1-t] (docs/semantics.md, pacconv_transpose2d)
        wt = tuple(ka - 1 - ta for ka, ta in zip(k, t)) if transposed else t
        taps.append((t, idx, vt, wt))
    return x, K, Wt, b, Cout, S_out, taps


def _pac_forward(
    x,
    kernel,
    weight,
    bias,
    stride,
    padding,
    output_padding,
    dilation,
    shared_filters,
    transposed,
    nd,
):
    x, K, Wt, b, Cout, S_out, taps = _pac_geometry(
        x,
        kernel,
        weight,
        bias,
        stride,
        padding,
        output_padding,
        dilation,
        shared_filters,
        transposed,
        nd,
    )
    sp = _SPATIAL_LETTERS[nd]
    out = np.zeros((x.shape[0], Cout) + S_out)
    for t, idx, vt, wt in taps:
        a = K[_tap(t)] * _gather(x, idx, vt)  # (B, Cin, *S_out)
        if shared_filters:
            out += Wt[(0, 0) + wt] * a
        elif transposed:
            out += np.einsum(f"bc{sp},co->bo{sp}", a, Wt[_tap(wt)])
        else:
            out += np.einsum(f"bc{sp},oc->bo{sp}", a, Wt[_tap(wt)])
    if b is not None:
        out += b[(None, slice(None)) + (None,) * nd]
    return out


def _pac_backward(
    grad_output,
    x,
    kernel,
    weight,
    bias,
    stride,
    padding,
    output_padding,
    dilation,
    shared_filters,
    transposed,
    nd,
):
    x, K, Wt, b, Cout, S_out, taps = _pac_geometry(
        x,
        kernel,
        weight,
        bias,
        stride,
        padding,
        output_padding,
        dilation,
        shared_filters,
        transposed,
        nd,
    )
    g = _f64(grad_output, nd + 2, "grad_output")
    assert g.shape == (x.shape[0], Cout) + S_out, f"grad_output shape {g.shape}"
    sp = _SPATIAL_LETTERS[nd]
    dx = np.zeros(x.shape)
    dK = np.zeros(K.shape)
    dW = np.zeros(Wt.shape)
    for t, idx, vt, wt in taps:
        xs = _gather(x, idx, vt)
        Kt = K[_tap(t)]
        a = Kt * xs
        # out += Σ_c a[c] · W[o, c] ;  da[c] = Σ_o g[o] · W[o, c]
        if shared_filters:
            dW[(0, 0) + wt] += np.sum(g * a)
            da = g * Wt[(0, 0) + wt]
        elif transposed:
            dW[_tap(wt)] += np.einsum(f"bo{sp},bc{sp}->co", g, a)
            da = np.einsum(f"bo{sp},co->bc{sp}", g, Wt[_tap(wt)])
        else:
            dW[_tap(wt)] += np.einsum(f"bo{sp},bc{sp}->oc", g, a)
            da = np.einsum(f"bo{sp},oc->bc{sp}", g, Wt[_tap(wt)])
        # a = K · xs
        dK[_tap(t)] = np.sum(da * xs, axis=1, keepdims=True) if K.shape[1] == 1 else da * xs
        _scatter_add(dx, idx, vt, da * Kt)
    db = None if b is None else g.sum(axis=(0,) + _spatial_axes(nd))
    return dx, dK, dW, db


def pacconv_nd(
    x, kernel, weight, bias=None, *, nd, stride=1, padding=0, dilation=1, shared_filters=False
):
    """``out[b,o,y] = Σ_{c,t} K[b,c|0,t,y] W[o,c,t] x[b,c,y*s-p+t*d] + bias[o]`` (per axis)."""
    return _pac_forward(
        x, kernel, weight, bias, stride, padding, 0, dilation, shared_filters, False, nd
    )


def pacconv_nd_backward(
    grad_output,
    x,
    kernel,
    weight,
    bias=None,
    *,
    nd,
    stride=1,
    padding=0,
    dilation=1,
    shared_filters=False,
):
    """``(dx, dkernel, dweight, dbias or None)``."""
    return _pac_backward(
        grad_output,
        x,
        kernel,
        weight,
        bias,
        stride,
        padding,
        0,
        dilation,
        shared_filters,
        False,
        nd,
    )


def pacconv_transpose_nd(
    x,
    kernel,
    weight,
    bias=None,
    *,
    nd,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    shared_filters=False,
):
    """``out[b,o,Y] = Σ_{c, valid t} K[b,c|0,t,Y] W[c,o,k-1-t] x[b,c,n(Y, t)] + bias[o]``."""
    return _pac_forward(
        x,
        kernel,
        weight,
        bias,
        stride,
        padding,
        output_padding,
        dilation,
        shared_filters,
        True,
        nd,
    )


def pacconv_transpose_nd_backward(
    grad_output,
    x,
    kernel,
    weight,
    bias=None,
    *,
    nd,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    shared_filters=False,
):
    """``(dx, dkernel, dweight, dbias or None)``."""
    return _pac_backward(
        grad_output,
        x,
        kernel,
        weight,
        bias,
        stride,
        padding,
        output_padding,
        dilation,
        shared_filters,
        True,
        nd,
    )


# ----------------------------------------------------------------------------- pacpool


def _pool_geometry(x, kernel, kernel_size, stride, padding, dilation, nd):
    x = _f64(x, nd + 2, "x")
    B, C = x.shape[:2]
    S_in = x.shape[2:]
    k = _ntuple(kernel_size, nd, "kernel_size")
    s = _ntuple(stride, nd, "stride")
    p = _ntuple(padding, nd, "padding")
    d = _ntuple(dilation, nd, "dilation")
    axes = [_conv_axis(S_in[a], k[a], s[a], p[a], d[a]) for a in range(nd)]
    S_out = tuple(ax[0] for ax in axes)
    K = _check_kernel(kernel, B, C, k, S_out)
    taps = [
        (
            t,
            [axes[a][1][:, t[a]] for a in range(nd)],
            _valid_nd([axes[a][2][:, t[a]] for a in range(nd)]),
        )
        for t in itertools.product(*(range(ka) for ka in k))
    ]
    return x, K, S_out, taps


def pacpool_nd(x, kernel, kernel_size, *, nd, stride=1, padding=0, dilation=1):
    """``out[b,c,y] = Σ_t K[b,c|0,t,y] · x[b,c,y*s-p+t*d]`` (per axis)."""
    x, K, S_out, taps = _pool_geometry(x, kernel, kernel_size, stride, padding, dilation, nd)
    out = np.zeros(x.shape[:2] + S_out)
    for t, idx, vt in taps:
        out += K[_tap(t)] * _gather(x, idx, vt)
    return out


def pacpool_nd_backward(
    grad_output, x, kernel, kernel_size, *, nd, stride=1, padding=0, dilation=1
):
    """``(dx, dkernel)``."""
    x, K, S_out, taps = _pool_geometry(x, kernel, kernel_size, stride, padding, dilation, nd)
    g = _f64(grad_output, nd + 2, "grad_output")
    assert g.shape == x.shape[:2] + S_out, f"grad_output shape {g.shape}"
    dx = np.zeros(x.shape)
    dK = np.zeros(K.shape)
    for t, idx, vt in taps:
        xs = _gather(x, idx, vt)
        dK[_tap(t)] = np.sum(g * xs, axis=1, keepdims=True) if K.shape[1] == 1 else g * xs
        _scatter_add(dx, idx, vt, g * K[_tap(t)])
    return dx, dK


# ----------------------------------------------------------------------------- public names


def _with_nd(generic, nd, name):
    """``generic`` with ``nd`` fixed, under pacnp's name (e.g. ``pacconv3d``); the positional
    and keyword arguments are exactly pacnp's."""

    def fn(*args, **kwargs):
        return generic(*args, nd=nd, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{generic.__name__} with nd={nd}: {generic.__doc__}"
    return fn


packernel1d = _with_nd(packernel_nd, 1, "packernel1d")
packernel2d = _with_nd(packernel_nd, 2, "packernel2d")
packernel3d = _with_nd(packernel_nd, 3, "packernel3d")
packernel1d_backward = _with_nd(packernel_nd_backward, 1, "packernel1d_backward")
packernel2d_backward = _with_nd(packernel_nd_backward, 2, "packernel2d_backward")
packernel3d_backward = _with_nd(packernel_nd_backward, 3, "packernel3d_backward")
pacconv1d = _with_nd(pacconv_nd, 1, "pacconv1d")
pacconv2d = _with_nd(pacconv_nd, 2, "pacconv2d")
pacconv3d = _with_nd(pacconv_nd, 3, "pacconv3d")
pacconv1d_backward = _with_nd(pacconv_nd_backward, 1, "pacconv1d_backward")
pacconv2d_backward = _with_nd(pacconv_nd_backward, 2, "pacconv2d_backward")
pacconv3d_backward = _with_nd(pacconv_nd_backward, 3, "pacconv3d_backward")
pacconv_transpose1d = _with_nd(pacconv_transpose_nd, 1, "pacconv_transpose1d")
pacconv_transpose2d = _with_nd(pacconv_transpose_nd, 2, "pacconv_transpose2d")
pacconv_transpose3d = _with_nd(pacconv_transpose_nd, 3, "pacconv_transpose3d")
pacconv_transpose1d_backward = _with_nd(
    pacconv_transpose_nd_backward, 1, "pacconv_transpose1d_backward"
)
pacconv_transpose2d_backward = _with_nd(
    pacconv_transpose_nd_backward, 2, "pacconv_transpose2d_backward"
)
pacconv_transpose3d_backward = _with_nd(
    pacconv_transpose_nd_backward, 3, "pacconv_transpose3d_backward"
)
pacpool1d = _with_nd(pacpool_nd, 1, "pacpool1d")
pacpool2d = _with_nd(pacpool_nd, 2, "pacpool2d")
pacpool3d = _with_nd(pacpool_nd, 3, "pacpool3d")
pacpool1d_backward = _with_nd(pacpool_nd_backward, 1, "pacpool1d_backward")
pacpool2d_backward = _with_nd(pacpool_nd_backward, 2, "pacpool2d_backward")
pacpool3d_backward = _with_nd(pacpool_nd_backward, 3, "pacpool3d_backward")

__all__ = [
    "packernel_nd",
    "packernel_nd_backward",
    "pacconv_nd",
    "pacconv_nd_backward",
    "pacconv_transpose_nd",
    "pacconv_transpose_nd_backward",
    "pacpool_nd",
    "pacpool_nd_backward",
] + [
    f"{op}{nd}d{suffix}"
    for op in ("packernel", "pacconv", "pacconv_transpose", "pacpool")
    for nd in (1, 2, 3)
    for suffix in ("", "_backward")
]


# ----------------------------------------------------------------------------- mean-field CRF
# The CRF of the paper's Sec. 5 (pacnp/crf.py's module docstring), written from the update
#   L_t = w_u·U − Σ_m w_m · μ_m(Up_m(P_m(Down_m(softmax(L_{t−1})))))
# with the pooling and the bilinear upsampling written from torch's definitions
# (avg_pool2d(count_include_pad=False), interpolate(mode="bilinear", align_corners=False)),
# independently of pacnp's transposed-convolution formulation of them.

CRF_COMPAT_TYPES = ("na", "2d", "4d", "potts")


def crf_blur_pad(n, b):
    """Per-axis padding that makes an axis of n pixels a multiple of b, split over both sides."""
    return ((-n) % b + 1) // 2


def crf_avg_pool(x, b):
    """b×b mean over the pixels inside the image, stride b, padding ``crf_blur_pad``."""
    x = _f64(x, 4, "x")
    B, C, H, W = x.shape
    ph, pw = crf_blur_pad(H, b), crf_blur_pad(W, b)
    mh, mw = (H + 2 * ph - b) // b + 1, (W + 2 * pw - b) // b + 1
    out = np.zeros((B, C, mh, mw))
    for y in range(mh):
        r0, r1 = max(y * b - ph, 0), min(y * b - ph + b, H)
        for xx in range(mw):
            c0, c1 = max(xx * b - pw, 0), min(xx * b - pw + b, W)
            out[:, :, y, xx] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return out


def _bilinear_matrix(n_in, n_out, s):
    """A[Y, i]: torch's align_corners=False weights, source ``max((Y + ½)/s − ½, 0)``."""
    A = np.zeros((n_out, n_in))
    for Y in range(n_out):
        src = max((Y + 0.5) / s - 0.5, 0.0)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        A[Y, i0] += 1.0 - lam
        A[Y, i1] += lam
    return A


def crf_upsample(z, b, out_hw):
    """Bilinear upsampling by b, then the crop ``[pad : pad + H]`` back to ``out_hw``."""
    z = _f64(z, 4, "z")
    H, W = out_hw
    mh, mw = z.shape[2:]
    Ay = _bilinear_matrix(mh, mh * b, b)
    Ax = _bilinear_matrix(mw, mw * b, b)
    up = np.einsum("Yi,bcij,Xj->bcYX", Ay, z, Ax)
    ph, pw = crf_blur_pad(H, b), crf_blur_pad(W, b)
    return up[:, :, ph : ph + H, pw : pw + W]


def _crf_field(term, name, default=None):
    if isinstance(term, dict):
        return term.get(name, default)
    return getattr(term, name, default)


def _crf_softmax(L):
    e = np.exp(L - L.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def crf_message(Q, feat, term):
    """``μ(Up(P(Down(Q))))`` of one pairwise term (without its weight)."""
    kind = _crf_field(term, "compat_type")
    assert kind in CRF_COMPAT_TYPES, kind
    filt = _f64(_crf_field(term, "filter"), 4, "filter")
    d = int(_crf_field(term, "dilation", 1))
    b = int(_crf_field(term, "blur", 1))
    kh, kw = filt.shape[2:]
    pad = (d * (kh - 1) // 2, d * (kw - 1) // 2)
    X = Q if b == 1 else crf_avg_pool(Q, b)
    if kind == "na":  # no adaptive kernel: K ≡ 1
        K = np.ones((X.shape[0], 1, kh, kw) + X.shape[2:])
    else:
        f = _f64(feat, 4, "feat")
        if b > 1:
            f = crf_avg_pool(f, b)
        K, _ = packernel2d(f, (kh, kw), padding=pad, dilation=d)
    Y = pacconv2d(X, K, filt, padding=pad, dilation=d, shared_filters=kind in ("2d", "potts"))
    if kind == "2d":
        Y = np.einsum("oc,bchw->bohw", _f64(_crf_field(term, "compat"), 2, "compat"), Y)
    elif kind == "potts":
        Y = -Y
    return Y if b == 1 else crf_upsample(Y, b, Q.shape[2:])


def paccrf(
    unary, edge_feat, terms, *, num_steps, unary_weight=1.0, final_output="log_Q", logQ=None
):
    """Mean-field inference, float64: ``num_steps`` updates from ``logQ`` (default ``unary``),
    then ``final_output`` ∈ {log_Q, softmax, log_softmax}. ``edge_feat``: one array for all
    terms or a list (one per term)."""
    U = _f64(unary, 4, "unary")
    feats = list(edge_feat) if isinstance(edge_feat, (list, tuple)) else [edge_feat] * len(terms)
    L = U if logQ is None else _f64(logQ, 4, "logQ")
    for _ in range(num_steps):
        Q = _crf_softmax(L)
        L = float(unary_weight) * U
        for term, f in zip(terms, feats):
            L = L - float(_crf_field(term, "weight", 1.0)) * crf_message(Q, f, term)
    if final_output == "softmax":
        return _crf_softmax(L)
    if final_output == "log_softmax":
        s = L - L.max(axis=1, keepdims=True)
        return s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    assert final_output == "log_Q", final_output
    return L


__all__ += ["crf_avg_pool", "crf_upsample", "crf_message", "paccrf"]
