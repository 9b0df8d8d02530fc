"""Plain NumPy float64 reference for pacnp, written from docs/semantics.md.

No numba, no torch: this module is what the kernels are tested against, so it favours code
that can be checked line by line against the equations over speed.  Loops run over the
taps ``(i, j)`` of the window; each loop body works on all output pixels, batches and
channels at once with NumPy fancy indexing (a tap reads one guide / input position per
output row and one per output column, so the gather is ``a[..., rows[:, None], cols[None, :]]``).

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
"""

import numpy as np

INV_EPS = 1e-4  # the 1e-4 inside (Σ Δ² + 1e-4)^(λ/2)

__all__ = [
    "packernel2d",
    "pacconv2d",
    "pacconv_transpose2d",
    "pacpool2d",
    "packernel2d_backward",
    "pacconv2d_backward",
    "pacconv_transpose2d_backward",
    "pacpool2d_backward",
]


# ----------------------------------------------------------------------------- helpers


def _pair(v):
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    v = tuple(int(a) for a in v)
    assert len(v) == 2, f"expected an int or a pair, got {v!r}"
    return v


def _f64(a, ndim=None, name="array"):
    a = np.asarray(a, dtype=np.float64)
    if ndim is not None:
        assert a.ndim == ndim, f"{name} must be {ndim}-d, got shape {a.shape}"
    return a


def _gather(a, rows, cols, valid2):
    """``out[..., y, x] = a[..., rows[y], cols[x]]`` where ``valid2[y, x]``, else 0."""
    r = np.clip(rows, 0, a.shape[-2] - 1)
    c = np.clip(cols, 0, a.shape[-1] - 1)
    return a[..., r[:, None], c[None, :]] * valid2


def _scatter_add(target, rows, cols, valid2, values):
    """Adjoint of ``_gather``: ``target[..., rows[y], cols[x]] += values[..., y, x]`` (valid
    only)."""
    r = np.clip(rows, 0, target.shape[-2] - 1)
    c = np.clip(cols, 0, target.shape[-1] - 1)
    np.add.at(target, (Ellipsis, r[:, None], c[None, :]), values * valid2)


def _safe_div(num, den):
    """``num / den`` where ``den != 0``, else 0 (never NaN)."""
    num, den = np.broadcast_arrays(num, den)
    out = np.zeros(num.shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


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


# ----------------------------------------------------------------------------- packernel2d


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


def _smoothing_filter(smooth_kernel_type, smooth_kernel):
    """The N×N smoothing kernel S, or None for ``"none"``."""
    if smooth_kernel_type == "none":
        return None
    if smooth_kernel_type == "gaussian":
        w = np.array([0.25, 0.5, 0.25])
        return np.outer(w, w)
    name, _, n = smooth_kernel_type.partition("_")
    N = int(n)
    assert N >= 1 and N % 2 == 1, f"smoothing size must be odd, got {smooth_kernel_type!r}"
    if name == "average":
        return np.full((N, N), 1.0 / (N * N))
    assert name == "full", f"unknown smooth_kernel_type {smooth_kernel_type!r}"
    S = _f64(smooth_kernel)
    assert S.shape in ((N, N), (1, 1, N, N)), (
        f"smooth_kernel shape {S.shape} for {smooth_kernel_type}"
    )
    return S.reshape(N, N)


def _zero_pad(a, h):
    out = np.zeros(a.shape[:-2] + (a.shape[-2] + 2 * h, a.shape[-1] + 2 * h))
    out[..., h : h + a.shape[-2], h : h + a.shape[-1]] = a
    return out


def _smooth(guide, S):
    """``F[b,ch,Y,X] = Σ_{u,v} S[u,v] · guide[b,ch,Y+u-N//2,X+v-N//2]`` (zero outside)."""
    N = S.shape[0]
    h = N // 2
    H, W = guide.shape[-2:]
    padded = _zero_pad(guide, h)
    F = np.zeros(guide.shape)
    for u in range(N):
        for v in range(N):
            F += S[u, v] * padded[..., u : u + H, v : v + W]
    return F


def _smooth_backward(grad_F, guide, S):
    """Gradients of ``_smooth`` with respect to ``guide`` and ``S``."""
    N = S.shape[0]
    h = N // 2
    H, W = guide.shape[-2:]
    padded = _zero_pad(guide, h)
    grad_padded = np.zeros(padded.shape)
    grad_S = np.zeros((N, N))
    for u in range(N):
        for v in range(N):
            grad_padded[..., u : u + H, v : v + W] += S[u, v] * grad_F
            grad_S[u, v] = np.sum(grad_F * padded[..., u : u + H, v : v + W])
    return grad_padded[..., h : h + H, h : h + W], grad_S


def _inv_param(arg, from_string, Cg, channel_wise, name):
    """``(value as passed or None, value broadcast for the formulas)``.

    The broadcast value has shape ``(1, Cg, 1, 1)`` with channel_wise, else ``()``."""
    if arg is None:
        return None, np.float64(from_string)
    a = _f64(arg)
    if channel_wise:
        assert a.shape in ((), (1,), (Cg,)), f"{name} shape {a.shape}, expected () or ({Cg},)"
        return a, np.broadcast_to(a.reshape(-1), (Cg,)).reshape(1, Cg, 1, 1)
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
    """Forward pass of packernel2d; returns a dict of everything the backward needs."""
    guide = _f64(guide, 4, "guide")
    B, Cg, H, W = guide.shape
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    oph, opw = _pair(output_padding)
    dh, dw = _pair(dilation)
    if not transposed:
        oph = opw = 0  # output_padding only matters for the transposed geometry
    Ho, Py, vy, cy = _kernel_axis(H, kh, sh, ph, oph, dh, transposed)
    Wo, Px, vx, cx = _kernel_axis(W, kw, sw, pw, opw, dw, transposed)

    kt = _parse_kernel_type(kernel_type)
    alpha_arg = lambda_arg = None
    alpha = lam = None
    if kt["kind"] == "inv":
        alpha_arg, alpha = _inv_param(inv_alpha, kt["alpha"], Cg, channel_wise, "inv_alpha")
        lambda_arg, lam = _inv_param(inv_lambda, kt["lambda"], Cg, channel_wise, "inv_lambda")

    S = _smoothing_filter(smooth_kernel_type, smooth_kernel)
    F = guide if S is None else _smooth(guide, S)
    f = F[:, :, cy[:, None], cx[None, :]]  # centre features, (B, Cg, Ho, Wo)

    if mask is not None:
        m = _f64(mask, 4, "mask")
        assert m.shape == (B, 1, H, W), f"mask shape {m.shape}, expected {(B, 1, H, W)}"

    Ck = Cg if channel_wise else 1
    valid = np.zeros((kh, kw, Ho, Wo), dtype=bool)  # tap validity
    D = np.zeros((B, Cg, kh, kw, Ho, Wo))  # Δ before the _asym clamp
    Kraw = np.zeros((B, Ck, kh, kw, Ho, Wo))
    mt = np.zeros((B, 1, kh, kw, Ho, Wo))  # mask at the tap (1 without a mask), 0 at invalid taps
    for i in range(kh):
        for j in range(kw):
            v2 = vy[:, i][:, None] & vx[:, j][None, :]
            valid[i, j] = v2
            G = _gather(guide, Py[:, i], Px[:, j], v2)
            D[:, :, i, j] = (G - f) * v2
            Dc = np.maximum(D[:, :, i, j], 0.0) if kt["asym"] else D[:, :, i, j]
            sq = Dc**2 if channel_wise else np.sum(Dc**2, axis=1, keepdims=True)
            if kt["kind"] == "gaussian":
                val = np.exp(-0.5 * sq)
            else:
                val = alpha + (sq + INV_EPS) ** (lam / 2)
            Kraw[:, :, i, j] = val * v2
            if mask is None:
                mt[:, :, i, j] = v2
            else:
                mt[:, :, i, j] = _gather(m, Py[:, i], Px[:, j], v2)

    Km = Kraw * mt
    n_valid = valid.sum(axis=(0, 1)).astype(np.float64)  # (Ho, Wo)
    n_in = mt.sum(axis=(2, 3))  # (B, 1, Ho, Wo)
    output_mask = None if mask is None else (n_in > 0).astype(np.float64)

    Z = factor = None
    if normalize_kernel:
        Z = Km.sum(axis=(2, 3))  # (B, Ck, Ho, Wo)
        K = _safe_div(Km, Z[:, :, None, None])
    elif mask is not None:
        factor = _safe_div(n_valid, n_in)  # (B, 1, Ho, Wo); 0 where n_in == 0
        K = Km * factor[:, :, None, None]
    else:
        K = Kraw
    return {
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
        "Py": Py,
        "Px": Px,
        "cy": cy,
        "cx": cx,
        "valid": valid,
        "D": D,
        "Kraw": Kraw,
        "mt": mt,
        "Z": Z,
        "factor": factor,
        "K": K,
        "output_mask": output_mask,
    }


def packernel2d(
    guide,
    kernel_size,
    *,
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
    """Adaptive kernel ``K [B, 1|Cg, kh, kw, Ho, Wo]`` and ``output_mask [B, 1, Ho, Wo]`` (or
    None)."""
    st = _packernel_forward(
        guide,
        kernel_size,
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


def packernel2d_backward(
    grad_kernel,
    guide,
    kernel_size,
    *,
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
    B, Cg, kh, kw, Ho, Wo = D.shape

    # Final K -> Km.
    if normalize_kernel:
        # K_t = Km_t / Z with Z = Σ_s Km_s:  dL/dKm_t = (g_t - Σ_s g_s K_s) / Z  (0 where Z == 0).
        Z = st["Z"][:, :, None, None]
        gKm = _safe_div(gK - np.sum(gK * K, axis=(2, 3), keepdims=True), Z)
    elif mask is not None:
        gKm = gK * st["factor"][:, :, None, None]
    else:
        gKm = gK
    # Km = Kraw · m.
    gKraw = gKm * mt

    grad_guide = np.zeros(guide.shape)
    grad_f = np.zeros((B, Cg, Ho, Wo))  # gradient of the centre features
    inv = kt["kind"] == "inv"
    want_alpha = inv and not kt["fixed"] and st["alpha_arg"] is not None
    want_lambda = inv and not kt["fixed"] and st["lambda_arg"] is not None
    Ck = Kraw.shape[1]
    grad_alpha = np.zeros(Ck)  # per channel (channel_wise) or one value
    grad_lam = np.zeros(Ck)
    for i in range(kh):
        for j in range(kw):
            v2 = valid[i, j]
            Dt = D[:, :, i, j]
            Dc = np.maximum(Dt, 0.0) if kt["asym"] else Dt
            g = gKraw[:, :, i, j] * v2  # (B, Ck, Ho, Wo)
            if kt["kind"] == "gaussian":
                # val = exp(-½ Σ Δc²):  dval/dΔc = -val · Δc
                val = Kraw[:, :, i, j]
                grad_Dc = -g * val * Dc
            else:
                # val = α + T^(λ/2), T = Σ Δc² + 1e-4:  dval/dΔc = λ T^(λ/2 - 1) Δc,
                # dval/dα = 1, dval/dλ = ½ ln(T) T^(λ/2).
                sq = Dc**2 if channel_wise else np.sum(Dc**2, axis=1, keepdims=True)
                T = sq + INV_EPS
                lam = st["lam"]
                grad_Dc = g * lam * T ** (lam / 2 - 1) * Dc
                grad_alpha += g.sum(axis=(0, 2, 3))
                grad_lam += np.sum(g * 0.5 * np.log(T) * T ** (lam / 2), axis=(0, 2, 3))
            # _asym: Δc = max(Δ, 0), derivative 1 for Δ > 0 else 0.
            grad_D = grad_Dc * (Dt > 0) if kt["asym"] else grad_Dc
            # Δ = guide[P] - f
            _scatter_add(grad_guide, st["Py"][:, i], st["Px"][:, j], v2, grad_D)
            grad_f -= grad_D * v2

    # f = F[:, :, centre]
    grad_F = np.zeros(guide.shape)
    np.add.at(grad_F, (Ellipsis, st["cy"][:, None], st["cx"][None, :]), grad_f)
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


# ----------------------------------------------------------------------------- pacconv2d


def _check_kernel(kernel, B, C, kh, kw, Ho, Wo):
    K = _f64(kernel, 6, "kernel")
    assert K.shape[0] == B and K.shape[1] in (1, C) and K.shape[2:] == (kh, kw, Ho, Wo), (
        f"kernel shape {K.shape}, expected ({B}, 1|{C}, {kh}, {kw}, {Ho}, {Wo})"
    )
    return K


def _conv_weights(weight, Cin, shared_filters, transposed):
    Wt = _f64(weight, 4, "weight")
    kh, kw = Wt.shape[2:]
    if shared_filters:
        assert Wt.shape[:2] == (1, 1), f"shared filters need weight [1,1,kh,kw], got {Wt.shape}"
        Cout = Cin
    elif transposed:
        assert Wt.shape[0] == Cin, f"weight {Wt.shape} is not [Cin={Cin}, Cout, kh, kw]"
        Cout = Wt.shape[1]
    else:
        assert Wt.shape[1] == Cin, f"weight {Wt.shape} is not [Cout, Cin={Cin}, kh, kw]"
        Cout = Wt.shape[0]
    return Wt, kh, kw, Cout


def _check_bias(bias, Cout):
    if bias is None:
        return None
    b = _f64(bias, 1, "bias")
    assert b.shape == (Cout,), f"bias shape {b.shape}, expected ({Cout},)"
    return b


def _pac_geometry(
    x, kernel, weight, bias, stride, padding, output_padding, dilation, shared_filters, transposed
):
    """Shared set-up of pacconv2d / pacconv_transpose2d.

    Returns ``(x, K, W, b, Cout, taps)`` where ``taps`` lists, per tap ``(i, j)``:
    ``(i, j, rows, cols, valid2, wi, wj)`` -- the input rows/cols it reads for every output
    pixel, its validity, and which weight tap it multiplies."""
    x = _f64(x, 4, "x")
    B, Cin, H, Wd = x.shape
    Wt, kh, kw, Cout = _conv_weights(weight, Cin, shared_filters, transposed)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    if transposed:
        oph, opw = _pair(output_padding)
        Ho, iy, vy = _conv_transpose_axis(H, kh, sh, ph, oph, dh)
        Wo, ix, vx = _conv_transpose_axis(Wd, kw, sw, pw, opw, dw)
    else:
        Ho, iy, vy = _conv_axis(H, kh, sh, ph, dh)
        Wo, ix, vx = _conv_axis(Wd, kw, sw, pw, dw)
    K = _check_kernel(kernel, B, Cin, kh, kw, Ho, Wo)
    b = _check_bias(bias, Cout)
    taps = []
    for i in range(kh):
        for j in range(kw):
            v2 = vy[:, i][:, None] & vx[:, j][None, :]
            wi, wj = (kh - 1 - i, kw - 1 - j) if transposed else (i, j)
            taps.append((i, j, iy[:, i], ix[:, j], v2, wi, wj))
    return x, K, Wt, b, Cout, (Ho, Wo), taps


def _pac_forward(
    x, kernel, weight, bias, stride, padding, output_padding, dilation, shared_filters, transposed
):
    x, K, Wt, b, Cout, (Ho, Wo), taps = _pac_geometry(
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
    )
    out = np.zeros((x.shape[0], Cout, Ho, Wo))
    for i, j, rows, cols, v2, wi, wj in taps:
        a = K[:, :, i, j] * _gather(x, rows, cols, v2)  # (B, Cin, Ho, Wo)
        if shared_filters:
            out += Wt[0, 0, wi, wj] * a
        elif transposed:
            out += np.einsum("bcyx,co->boyx", a, Wt[:, :, wi, wj])
        else:
            out += np.einsum("bcyx,oc->boyx", a, Wt[:, :, wi, wj])
    if b is not None:
        out += b[None, :, None, None]
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
):
    x, K, Wt, b, Cout, (Ho, Wo), taps = _pac_geometry(
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
    )
    g = _f64(grad_output, 4, "grad_output")
    assert g.shape == (x.shape[0], Cout, Ho, Wo), f"grad_output shape {g.shape}"
    dx = np.zeros(x.shape)
    dK = np.zeros(K.shape)
    dW = np.zeros(Wt.shape)
    for i, j, rows, cols, v2, wi, wj in taps:
        xs = _gather(x, rows, cols, v2)
        Kt = K[:, :, i, j]
        a = Kt * xs
        # out += Σ_c a[c] · W[o, c] ;  da[c] = Σ_o g[o] · W[o, c]
        if shared_filters:
            dW[0, 0, wi, wj] += np.sum(g * a)
            da = g * Wt[0, 0, wi, wj]
        elif transposed:
            dW[:, :, wi, wj] += np.einsum("boyx,bcyx->co", g, a)
            da = np.einsum("boyx,co->bcyx", g, Wt[:, :, wi, wj])
        else:
            dW[:, :, wi, wj] += np.einsum("boyx,bcyx->oc", g, a)
            da = np.einsum("boyx,oc->bcyx", g, Wt[:, :, wi, wj])
        # a = K · xs
        dK[:, :, i, j] = np.sum(da * xs, axis=1, keepdims=True) if K.shape[1] == 1 else da * xs
        _scatter_add(dx, rows, cols, v2, da * Kt)
    db = None if b is None else g.sum(axis=(0, 2, 3))
    return dx, dK, dW, db


def pacconv2d(
    x, kernel, weight, bias=None, *, stride=1, padding=0, dilation=1, shared_filters=False
):
    """``out[b,o,y,x] = Σ_{c,i,j} K[b,c|0,i,j,y,x] W[o,c,i,j] x[b,c,y*s-p+i*d,x*s-p+j*d]
    + bias[o]``."""
    return _pac_forward(
        x, kernel, weight, bias, stride, padding, 0, dilation, shared_filters, False
    )


def pacconv2d_backward(
    grad_output,
    x,
    kernel,
    weight,
    bias=None,
    *,
    stride=1,
    padding=0,
    dilation=1,
    shared_filters=False,
):
    """``(dx, dkernel, dweight, dbias or None)``."""
    return _pac_backward(
        grad_output, x, kernel, weight, bias, stride, padding, 0, dilation, shared_filters, False
    )


def pacconv_transpose2d(
    x,
    kernel,
    weight,
    bias=None,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    shared_filters=False,
):
    """``out[b,o,Y,X] = Σ_{c, valid i,j} K[b,c|0,i,j,Y,X] W[c,o,kh-1-i,kw-1-j] x[b,c,n_y,n_x]
    + bias[o]``."""
    return _pac_forward(
        x, kernel, weight, bias, stride, padding, output_padding, dilation, shared_filters, True
    )


def pacconv_transpose2d_backward(
    grad_output,
    x,
    kernel,
    weight,
    bias=None,
    *,
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
    )


# ----------------------------------------------------------------------------- pacpool2d


def _pool_geometry(x, kernel, kernel_size, stride, padding, dilation):
    x = _f64(x, 4, "x")
    B, C, H, W = x.shape
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    Ho, iy, vy = _conv_axis(H, kh, sh, ph, dh)
    Wo, ix, vx = _conv_axis(W, kw, sw, pw, dw)
    K = _check_kernel(kernel, B, C, kh, kw, Ho, Wo)
    taps = [
        (i, j, iy[:, i], ix[:, j], vy[:, i][:, None] & vx[:, j][None, :])
        for i in range(kh)
        for j in range(kw)
    ]
    return x, K, (Ho, Wo), taps


def pacpool2d(x, kernel, kernel_size, *, stride=1, padding=0, dilation=1):
    """``out[b,c,y,x] = Σ_{i,j} K[b,c|0,i,j,y,x] · x[b,c,y*s-p+i*d,x*s-p+j*d]``."""
    x, K, (Ho, Wo), taps = _pool_geometry(x, kernel, kernel_size, stride, padding, dilation)
    out = np.zeros(x.shape[:2] + (Ho, Wo))
    for i, j, rows, cols, v2 in taps:
        out += K[:, :, i, j] * _gather(x, rows, cols, v2)
    return out


def pacpool2d_backward(grad_output, x, kernel, kernel_size, *, stride=1, padding=0, dilation=1):
    """``(dx, dkernel)``."""
    x, K, (Ho, Wo), taps = _pool_geometry(x, kernel, kernel_size, stride, padding, dilation)
    g = _f64(grad_output, 4, "grad_output")
    assert g.shape == x.shape[:2] + (Ho, Wo), f"grad_output shape {g.shape}"
    dx = np.zeros(x.shape)
    dK = np.zeros(K.shape)
    for i, j, rows, cols, v2 in taps:
        xs = _gather(x, rows, cols, v2)
        dK[:, :, i, j] = np.sum(g * xs, axis=1, keepdims=True) if K.shape[1] == 1 else g * xs
        _scatter_add(dx, rows, cols, v2, g * K[:, :, i, j])
    return dx, dK


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
