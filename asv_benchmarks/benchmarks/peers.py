"""Peers of pacnp in PyTorch, written from the equations of docs/semantics.md.

1. The unfold + einsum formulation — the approach of the 2019 reference code: unfold the guide
   into its k² taps, compute K at every tap, unfold the input, multiply by K, contract with the
   weights by einsum; backward through torch autograd. It materialises C·k²·H_out·W_out columns
   (several times over, with autograd), which is what pacnp avoids.
2. The dense ``conv2d`` / ``conv_transpose2d`` / ``avg_pool2d`` of the same shape, without an
   adaptive kernel: the practical floor of any PAC implementation.
3. SimpleITK's ``BilateralImageFilter`` (not PyTorch: the volume filter of W8), see
   :func:`simpleitk_bilateral`.

Scope: the Gaussian kernel without smoothing or mask (the benchmark workloads), optionally
normalised; any stride, padding, dilation and output_padding. K is exact — 0 at taps on padding
(and, transposed, between the samples of the zero-inserted input) — so that K itself and every
gradient equal pacnp's (``tests/test_bench.py`` checks this in float64).

Layouts are pacnp's (= torch's): input NCHW, conv weight [C_out, C_in, kh, kw], transposed weight
[C_in, C_out, kh, kw]. K is kept in unfold layout [B, 1, kh·kw, H_out·W_out];
``kernel_to_pacnp`` reshapes it to pacnp's [B, 1, kh, kw, H_out, W_out].
"""

from __future__ import annotations

import functools

try:  # importable without torch (asv imports every module of the suite to discover it)
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - the runners raise NotImplementedError first
    torch = F = None


def _pair(v):
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_out_size(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def conv_transpose_out_size(n, k, s, p, op, d):
    return (n - 1) * s - 2 * p + d * (k - 1) + op + 1


# --------------------------------------------------------------------------- validity masks
@functools.lru_cache(maxsize=64)
def _conv_valid(hw, k, s, p, d, dtype, device):
    """[1, 1, kh·kw, L]: 1 where tap (i, j) of output pixel l reads inside the image.

    A constant of the layer geometry (a buffer of the 2019 module); cached, never timed twice.
    """
    ones = torch.ones((1, 1) + hw, dtype=dtype, device=device)
    v = F.unfold(ones, k, dilation=d, padding=p, stride=s)
    return v.view(1, 1, k[0] * k[1], -1)


def _zero_insert_pad(x, s, p, op, k, d):
    """The zero-inserted input of a transposed convolution, padded so that a stride-1
    correlation with window k (dilation d) gives the output: tap i of output Y reads index
    q = Y + p − d(k−1) + i·d of the zero-inserted input (sample n = q/s where q % s == 0).
    Left pad d(k−1) − p, right pad d(k−1) − p + op per axis (negative: crop)."""
    B, C, H, W = x.shape
    z = x.new_zeros((B, C, (H - 1) * s[0] + 1, (W - 1) * s[1] + 1))
    z[:, :, :: s[0], :: s[1]] = x
    lh = d[0] * (k[0] - 1) - p[0]
    lw = d[1] * (k[1] - 1) - p[1]
    return F.pad(z, (lw, lw + op[1], lh, lh + op[0]))


@functools.lru_cache(maxsize=64)
def _transposed_valid(in_hw, k, s, p, op, d, dtype, device):
    """[1, 1, kh·kw, L]: 1 where tap (i, j) of output pixel l meets a sample of the zero-inserted
    input (semantics.md, transposed kernels)."""
    ones = torch.ones((1, 1) + in_hw, dtype=dtype, device=device)
    z = _zero_insert_pad(ones, s, p, op, k, d)
    v = F.unfold(z, k, dilation=d)
    return v.view(1, 1, k[0] * k[1], -1)


# --------------------------------------------------------------------------- the kernel K
def gaussian_kernel_unfold(
    guide,
    kernel_size,
    *,
    stride=1,
    padding=0,
    dilation=1,
    normalize=False,
    transposed=False,
    output_padding=0,
    in_hw=None,
):
    """K of ``packernel2d(guide, kernel_size, kernel_type="gaussian", ...)`` in unfold layout.

    ``K[b, 0, t, l] = exp(−½ Σ_c (f_c(tap t of l) − f_c(centre of l))²)`` at valid taps, 0
    elsewhere; normalised over the taps with ``normalize``. Transposed (the guide at the output
    resolution): stride 1, padding r = d(k−1)/2 on the guide, validity from the zero-inserted
    input of size ``in_hw``.
    """
    k, s, p, d = (_pair(v) for v in (kernel_size, stride, padding, dilation))
    B, Cg, H, W = guide.shape
    kk = k[0] * k[1]
    if transposed:
        r = (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2)
        cols = F.unfold(guide, k, dilation=d, padding=r, stride=1)
        valid = _transposed_valid(
            tuple(in_hw), k, s, p, _pair(output_padding), d, guide.dtype, guide.device
        )
    else:
        cols = F.unfold(guide, k, dilation=d, padding=p, stride=s)
        valid = _conv_valid((H, W), k, s, p, d, guide.dtype, guide.device) if p != (0, 0) else None
    cols = cols.view(B, Cg, kk, -1)
    centre = cols[:, :, kk // 2 : kk // 2 + 1, :]  # the middle tap is the window centre
    K = torch.exp(-0.5 * ((cols - centre) ** 2).sum(dim=1, keepdim=True))
    if transposed or valid is not None:
        K = K * valid
    if normalize:
        s_ = K.sum(dim=2, keepdim=True)
        K = K / torch.where(s_ > 0, s_, torch.ones_like(s_))
    return K


def kernel_to_pacnp(K, out_hw, kernel_size):
    """[B, 1, kh·kw, L] → pacnp's [B, 1, kh, kw, H_out, W_out] (a view)."""
    k = _pair(kernel_size)
    return K.view(K.shape[0], K.shape[1], k[0], k[1], out_hw[0], out_hw[1])


# --------------------------------------------------------------------------- ops with K
#: How the modulated columns meet the weights. ``"einsum"`` is the 2019 code's
#: ``torch.einsum`` over (c, tap); torch evaluates it by first permuting the columns into a copy.
#: ``"matmul"`` is the same contraction as one batched GEMM on the columns as they lie — the
#: formulation at its best (the ``torch_unfold_mm`` peer).
CONTRACTIONS = ("einsum", "matmul")


def _contract(cols, wm, contract):
    """out[b, o, l] = Σ_{c,t} wm[o, c, t] · cols[b, c, t, l]."""
    if contract == "einsum":
        return torch.einsum("bctl,oct->bol", cols, wm)
    if contract == "matmul":
        B, C, T, L = cols.shape
        return torch.matmul(wm.reshape(wm.shape[0], C * T), cols.reshape(B, C * T, L))
    raise ValueError(f"contract must be one of {CONTRACTIONS}, got {contract!r}")


def pacconv2d_unfold(
    x, K, weight, bias=None, *, stride=1, padding=0, dilation=1, contract="einsum"
):
    """out[b,o,y,x] = Σ_{c,t} W[o,c,t] · K[b,t,(y,x)] · x[b,c,tap t of (y,x)] + bias[o]."""
    s, p, d = (_pair(v) for v in (stride, padding, dilation))
    B, C, H, W = x.shape
    Cout, _, kh, kw = weight.shape
    Ho = conv_out_size(H, kh, s[0], p[0], d[0])
    Wo = conv_out_size(W, kw, s[1], p[1], d[1])
    cols = F.unfold(x, (kh, kw), dilation=d, padding=p, stride=s).view(B, C, kh * kw, -1)
    cols = cols * K
    out = _contract(cols, weight.reshape(Cout, C, kh * kw), contract).reshape(B, Cout, Ho, Wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def pacconv_transpose2d_unfold(
    x, K, weight, bias=None, *, stride=1, padding=0, output_padding=0, dilation=1, contract="einsum"
):
    """Transposed PAC as a stride-1 PAC correlation of the zero-inserted, padded input with the
    spatially flipped, transposed weights Wf[o, c, i, j] = weight[c, o, kh−1−i, kw−1−j]."""
    s, p, op, d = (_pair(v) for v in (stride, padding, output_padding, dilation))
    B, C, H, W = x.shape
    _, Cout, kh, kw = weight.shape
    Ho = conv_transpose_out_size(H, kh, s[0], p[0], op[0], d[0])
    Wo = conv_transpose_out_size(W, kw, s[1], p[1], op[1], d[1])
    z = _zero_insert_pad(x, s, p, op, (kh, kw), d)
    cols = F.unfold(z, (kh, kw), dilation=d).view(B, C, kh * kw, -1)
    cols = cols * K
    wf = weight.flip(2, 3).transpose(0, 1).reshape(Cout, C, kh * kw)
    out = _contract(cols, wf, contract).reshape(B, Cout, Ho, Wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def pacpool2d_unfold(x, K, kernel_size, *, stride=1, padding=0, dilation=1):
    """out[b,c,y,x] = Σ_t K[b,t,(y,x)] · x[b,c,tap t of (y,x)]."""
    k, s, p, d = (_pair(v) for v in (kernel_size, stride, padding, dilation))
    B, C, H, W = x.shape
    Ho = conv_out_size(H, k[0], s[0], p[0], d[0])
    Wo = conv_out_size(W, k[1], s[1], p[1], d[1])
    cols = F.unfold(x, k, dilation=d, padding=p, stride=s).view(B, C, k[0] * k[1], -1)
    return (cols * K).sum(dim=2).reshape(B, C, Ho, Wo)


# --------------------------------------------------------------------------- from the guide
def pacconv2d_from_guide(
    x,
    guide,
    weight,
    bias=None,
    *,
    stride=1,
    padding=0,
    dilation=1,
    normalize=False,
    contract="einsum",
):
    K = gaussian_kernel_unfold(
        guide,
        weight.shape[2:],
        stride=stride,
        padding=padding,
        dilation=dilation,
        normalize=normalize,
    )
    return pacconv2d_unfold(
        x, K, weight, bias, stride=stride, padding=padding, dilation=dilation, contract=contract
    )


def pacconv_transpose2d_from_guide(
    x,
    guide,
    weight,
    bias=None,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    normalize=False,
    contract="einsum",
):
    K = gaussian_kernel_unfold(
        guide,
        weight.shape[2:],
        stride=stride,
        padding=padding,
        dilation=dilation,
        normalize=normalize,
        transposed=True,
        output_padding=output_padding,
        in_hw=x.shape[2:],
    )
    return pacconv_transpose2d_unfold(
        x,
        K,
        weight,
        bias,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        contract=contract,
    )


def pacpool2d_from_guide(
    x, guide, kernel_size, *, stride=1, padding=0, dilation=1, normalize=False, contract=None
):
    """(``contract`` is accepted for a uniform call and ignored: pooling has no weights.)"""
    K = gaussian_kernel_unfold(
        guide, kernel_size, stride=stride, padding=padding, dilation=dilation, normalize=normalize
    )
    return pacpool2d_unfold(x, K, kernel_size, stride=stride, padding=padding, dilation=dilation)


# --------------------------------------------------------------------------- dense floor
def dense_conv2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1):
    return F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)


def dense_conv_transpose2d(
    x, weight, bias=None, *, stride=1, padding=0, output_padding=0, dilation=1
):
    return F.conv_transpose2d(
        x,
        weight,
        bias,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
    )


def dense_pool2d(x, kernel_size, *, stride=1, padding=0, dilation=1):
    """avg_pool2d(count_include_pad=False): pacpool2d with a normalised K ≡ 1."""
    if _pair(dilation) != (1, 1):
        raise NotImplementedError("avg_pool2d has no dilation")
    return F.avg_pool2d(x, kernel_size, stride=stride, padding=padding, count_include_pad=False)


# --------------------------------------------------------------------------- SimpleITK (W8)
#: ITK's BilateralImageFilter sets its window radius to ⌈DomainMu·DomainSigma / spacing⌉ per
#: axis; SimpleITK does not expose DomainMu, which keeps ITK's default 2.5
SITK_DOMAIN_MU = 2.5


def simpleitk_radius(sigma_spatial, spacing=1.0):
    """The window radius (voxels) SimpleITK's bilateral filter uses for ``sigma_spatial``."""
    import math

    return math.ceil(SITK_DOMAIN_MU * sigma_spatial / spacing)


def simpleitk_bilateral(volume, sigma_spatial, sigma_color, threads=None):
    """A no-argument callable running SimpleITK's ``BilateralImageFilter`` on ``volume``
    (a NumPy array, D × H × W; converted once, outside the call): DomainSigma
    ``sigma_spatial`` voxels, RangeSigma ``sigma_color``, on ``threads`` threads (ITK's own
    pool). Its window is the box of radius :func:`simpleitk_radius` (4 for σ_s = 1.5: 9³), its
    domain weights the exact Gaussian, its range Gaussian a 100-sample table, its border
    ITK's zero-flux Neumann condition (pacnp's ``nearest``). Raises NotImplementedError (asv:
    skipped) when SimpleITK is not installed."""
    import importlib.util

    if importlib.util.find_spec("SimpleITK") is None:
        raise NotImplementedError("SimpleITK is not installed")
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume)
    f = sitk.BilateralImageFilter()
    f.SetDomainSigma(float(sigma_spatial))
    f.SetRangeSigma(float(sigma_color))
    if threads is not None:
        f.SetNumberOfThreads(int(threads))
    return lambda: f.Execute(image)
