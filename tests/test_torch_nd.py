"""pacnp.torch in 1-D and 3-D: gradcheck (float64) of every function and layer, results equal to
pacnp's NumPy functions, K ≡ 1 against torch's conv1d/conv3d, conv_transpose1d/3d and
avg_pool1d/3d, torch.compile(fullgraph=True), fillers, checkpoints, errors.

Every body runs for nd = 1 and nd = 3 (the 2-D layers are tests/test_torch.py's); sizes are tiny
so that gradcheck's finite differences stay cheap.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import pacnp  # noqa: E402
import pacnp.torch as pt  # noqa: E402

D = torch.float64
ND = pytest.mark.parametrize("nd", [1, 3])


@pytest.fixture(autouse=True)
def float32_default():
    """Layers are created in torch's default dtype: pin it to float32 (another module may have
    changed it) and restore it afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(20190616)


def rnd(*shape, gen, grad=True, scale=1.0, pos=False):
    t = torch.randn(shape, dtype=D, generator=gen) * scale
    if pos:
        t = t.abs() + 0.2
    return t.requires_grad_(grad)


def gradcheck(fn, inputs):
    # A volume's K has thousands of entries: the full numerical Jacobian (two forwards per entry)
    # took over a minute per test. torch's fast mode checks the directional derivative vᵀJu for
    # random u, v (numerical against analytical), which still fails for a wrong gradient of any
    # input; the exhaustive element-wise checks of the N-D gradients are tests/test_nd.py's.
    fast = sum(t.numel() for t in inputs if isinstance(t, torch.Tensor)) > 400
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=fast)


def S(nd, *sizes):
    """Spatial sizes for ``nd`` axes: the first ``nd`` of ``sizes`` (1-D gets a longer signal
    from the caller where it wants one)."""
    return tuple(sizes[:nd])


def fn(name, nd):
    """pacnp.torch's function ``name`` ("pacconv{}d") for ``nd`` axes."""
    return getattr(pt, name.format(nd))


def np_(t):
    return None if t is None else t.detach().numpy()


# =========================================================================== gradcheck
@ND
def test_gradcheck_packernel(gen, nd):
    """Guide, α and λ per channel, a learnable full_3 smoothing kernel, normalisation, mask."""
    s = S(nd, 5, 3, 3) if nd == 1 else S(nd, 3, 2, 3)
    g = rnd(1, 2, *s, gen=gen)
    a = rnd(2, gen=gen, pos=True)
    lam = (-rnd(2, gen=gen, grad=False, pos=True)).requires_grad_()
    sk = rnd(*(3,) * nd, gen=gen, scale=0.3)
    mask = (torch.rand(1, 1, *s, generator=gen) < 0.8).to(D)
    gradcheck(
        lambda g, a, lam, sk: fn("packernel{}d", nd)(
            g,
            mask,
            kernel_size=3,
            padding=1,
            kernel_type="inv_0.5_-1",
            smooth_kernel_type="full_3",
            smooth_kernel=sk,
            inv_alpha=a,
            inv_lambda=lam,
            channel_wise=True,
            normalize_kernel=True,
        )[0],
        (g, a, lam, sk),
    )


@ND
def test_gradcheck_packernel_transposed_dilated(gen, nd):
    s = S(nd, 6, 4, 4)  # the output of a stride-2 transposed conv of a (3, 2, 2) input
    gradcheck(
        lambda g: fn("packernel{}d", nd)(
            g,
            kernel_size=3,
            stride=2,
            padding=1,
            output_padding=1,
            transposed=True,
            smooth_kernel_type="gaussian",
        )[0],
        (rnd(1, 1, *s, gen=gen),),
    )
    gradcheck(
        lambda g: fn("packernel{}d", nd)(g, kernel_size=3, padding=2, dilation=2)[0],
        (rnd(1, 1, *S(nd, 5, 3, 3), gen=gen),),
    )


@ND
@pytest.mark.parametrize("variant", ["dense-strided-dilated", "shared", "channel-kernel"])
def test_gradcheck_pacconv(gen, nd, variant):
    s = S(nd, 5, 3, 4)
    x = rnd(1, 2, *s, gen=gen)
    k = (3,) * nd
    if variant == "dense-strided-dilated":
        stride, dilation = ((2,), (2,)) if nd == 1 else ((2, 1, 1), (1, 1, 2))
        out = tuple((n + 2 - d * 2 - 1) // st + 1 for n, st, d in zip(s, stride, dilation))
        K = rnd(1, 1, *k, *out, gen=gen, pos=True)
        w, b = rnd(3, 2, *k, gen=gen), rnd(3, gen=gen)
        kw = dict(stride=stride, padding=1, dilation=dilation)
    elif variant == "shared":
        K = rnd(1, 1, *k, *s, gen=gen, pos=True)
        w, b = rnd(1, 1, *k, gen=gen), rnd(2, gen=gen)
        kw = dict(padding=1, shared_filters=True)
    else:
        K = rnd(1, 2, *k, *(n - 2 for n in s), gen=gen, pos=True)
        w, b = rnd(3, 2, *k, gen=gen), None
        kw = {}
    args = (x, K, w) + ((b,) if b is not None else ())
    gradcheck(lambda x, K, w, *b: fn("pacconv{}d", nd)(x, K, w, *b, **kw), args)


@ND
def test_gradcheck_pacconv_transpose(gen, nd):
    s = S(nd, 3, 2, 2)
    x = rnd(1, 2, *s, gen=gen)
    k = (3,) * nd
    K = rnd(1, 1, *k, *(2 * n for n in s), gen=gen, pos=True)
    w, b = rnd(2, 3, *k, gen=gen), rnd(3, gen=gen)
    kw = dict(stride=2, padding=1, output_padding=1)
    gradcheck(lambda x, K, w, b: fn("pacconv_transpose{}d", nd)(x, K, w, b, **kw), (x, K, w, b))
    # shared filters, per-axis geometry
    stride, padding, op = (1, 2, 2)[:nd], (0, 1, 1)[:nd], (0, 1, 1)[:nd]
    out = tuple((n - 1) * st - 2 * p + 2 + o + 1 for n, st, p, o in zip(s, stride, padding, op))
    Ks = rnd(1, 2, *k, *out, gen=gen, pos=True)
    ws, bs = rnd(1, 1, *k, gen=gen), rnd(2, gen=gen)
    kws = dict(stride=stride, padding=padding, output_padding=op, shared_filters=True)
    gradcheck(lambda x, K, w, b: fn("pacconv_transpose{}d", nd)(x, K, w, b, **kws), (x, Ks, ws, bs))


@ND
def test_gradcheck_pacpool(gen, nd):
    s = S(nd, 5, 3, 3)
    x = rnd(1, 2, *s, gen=gen)
    K = rnd(1, 2, *(3,) * nd, *((n + 1) // 2 for n in s), gen=gen, pos=True)
    gradcheck(lambda x, K: fn("pacpool{}d", nd)(x, K, 3, stride=2, padding=1), (x, K))


@ND
def test_gradcheck_fused(gen, nd):
    s = S(nd, 5, 3, 3) if nd == 1 else S(nd, 3, 2, 3)
    x, g = rnd(1, 2, *s, gen=gen), rnd(1, 2, *s, gen=gen)
    w, b = rnd(2, 2, *(3,) * nd, gen=gen), rnd(2, gen=gen)
    a, lam = rnd(gen=gen, pos=True), (-rnd(gen=gen, grad=False, pos=True)).requires_grad_()
    sk = rnd(*(3,) * nd, gen=gen, scale=0.3)
    mask = torch.rand(1, 1, *s, generator=gen) < 0.8
    gradcheck(
        lambda x, g, w, b, a, lam, sk: fn("pacconv{}d_fused", nd)(
            x,
            g,
            w,
            b,
            padding=1,
            kernel_type="inv_0.5_-1",
            inv_alpha=a,
            inv_lambda=lam,
            smooth_kernel_type="full_3",
            smooth_kernel=sk,
            mask=mask,
        )[0],
        (x, g, w, b, a, lam, sk),
    )
    st = S(nd, 2, 2, 1)
    xt, gt = rnd(1, 2, *st, gen=gen), rnd(1, 2, *(2 * n for n in st), gen=gen)
    gradcheck(
        lambda x, g, w, b: fn("pacconv_transpose{}d_fused", nd)(
            x, g, w, b, stride=2, padding=1, output_padding=1, normalize_kernel=True
        )[0],
        (xt, gt, w, b),
    )
    gradcheck(
        lambda x, g: fn("pacpool{}d_fused", nd)(x, g, 3, stride=2, padding=1, channel_wise=True)[0],
        (x, g),
    )


# =========================================================================== layers
def _layer(kind, nd, *args, **kwargs):
    return getattr(pt, kind.format(nd))(*args, **kwargs).double()


@ND
@pytest.mark.parametrize("kind", ["PacConv{}d", "PacConvTranspose{}d", "PacPool{}d"])
def test_gradcheck_layers(gen, nd, kind):
    """Each layer's forward (the fused path) in every tensor input and parameter."""
    s = S(nd, 4, 3, 2)
    smooth = dict(kernel_type="inv_0.5_-1", smooth_kernel_type="full_3")
    if kind == "PacPool{}d":
        layer = _layer(kind, nd, 3, padding=1, channel_wise=True, out_channels=2, **smooth)
        gs = s
    elif kind == "PacConv{}d":
        layer = _layer(kind, nd, 2, 2, 3, padding=1, **smooth)
        gs = s
    else:
        layer = _layer(kind, nd, 2, 2, 3, stride=2, padding=1, output_padding=1, **smooth)
        gs = tuple(2 * n for n in s)
    x, g = rnd(1, 2, *s, gen=gen), rnd(1, 2, *gs, gen=gen)
    names = [n for n, _ in layer.named_parameters()]
    assert {"inv_alpha", "inv_lambda", "smooth_kernel"} <= set(names)
    params = tuple(p.detach().clone().requires_grad_() for p in layer.parameters())
    # the parameters as gradcheck's inputs: functional_call runs the layer with them in place
    # of its own, so the finite differences perturb what the layer computes with
    gradcheck(
        lambda x, g, *ps: torch.func.functional_call(layer, dict(zip(names, ps)), (x, g)),
        (x, g) + params,
    )


@ND
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_from_conv_equals_conv(gen, nd, dtype):
    """K ≡ 1 (a constant guide): PacConv{1,3}d.from_conv computes nn.Conv{1,3}d, gradients too."""
    conv = getattr(nn, f"Conv{nd}d")(3, 4, 3, stride=2, padding=1).to(dtype)
    pac = fn("PacConv{}d", nd).from_conv(conv)
    assert pac.weight.dtype == dtype and pac.weight is not conv.weight
    s = S(nd, 7, 5, 6)
    x = torch.randn(2, 3, *s, generator=gen, dtype=dtype, requires_grad=True)
    out = pac(x, torch.full((2, 2, *s), 0.7, dtype=dtype))
    ref = conv(x)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == D else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, ref, **tol)
    go = torch.randn_like(ref)
    for a, e in zip(
        torch.autograd.grad(out, (x, pac.weight, pac.bias), go),
        torch.autograd.grad(ref, (x, conv.weight, conv.bias), go),
    ):
        torch.testing.assert_close(a, e, **tol)


@ND
def test_from_conv_same_padding_and_dilation(gen, nd):
    conv = getattr(nn, f"Conv{nd}d")(2, 3, 3, padding="same", dilation=2, bias=False).double()
    pac = fn("PacConv{}d", nd).from_conv(conv)
    assert pac.padding == (2,) * nd and pac.bias is None
    s = S(nd, 9, 5, 6)
    x = torch.randn(1, 2, *s, generator=gen, dtype=D)
    torch.testing.assert_close(
        pac(x, torch.zeros(1, 1, *s, dtype=D)), conv(x), rtol=1e-12, atol=1e-12
    )


@ND
def test_from_conv_transpose_equals_conv_transpose(gen, nd):
    deconv = getattr(nn, f"ConvTranspose{nd}d")(
        3, 2, 3, stride=2, padding=1, output_padding=1
    ).double()
    pac = fn("PacConvTranspose{}d", nd).from_conv(deconv)
    x = torch.randn(2, 3, *S(nd, 4, 3, 2), generator=gen, dtype=D, requires_grad=True)
    ref = deconv(x)
    out = pac(x, torch.full((2, 1, *ref.shape[2:]), 0.3, dtype=D))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    go = torch.randn_like(ref)
    for a, e in zip(
        torch.autograd.grad(out, (x, pac.weight, pac.bias), go),
        torch.autograd.grad(ref, (x, deconv.weight, deconv.bias), go),
    ):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


@ND
def test_pool_layer_equals_avg_pool(gen, nd):
    pool = fn("PacPool{}d", nd)(3, stride=2, padding=1, normalize_kernel=True)
    s = S(nd, 7, 5, 6)
    x = torch.randn(2, 3, *s, generator=gen, dtype=D)
    out = pool(x, torch.full((2, 3, *s), 0.7, dtype=D))
    ref = getattr(F, f"avg_pool{nd}d")(x, 3, stride=2, padding=1, count_include_pad=False)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_from_conv_rejects_another_dimension():
    with pytest.raises(
        TypeError, match=r"PacConv3d.from_conv: conv must be a torch.nn.Conv3d, got Conv2d"
    ):
        pt.PacConv3d.from_conv(nn.Conv2d(2, 2, 3))
    with pytest.raises(
        TypeError,
        match=r"PacConvTranspose1d.from_conv: conv must be a torch.nn.ConvTranspose1d, "
        r"got Conv1d",
    ):
        pt.PacConvTranspose1d.from_conv(nn.Conv1d(2, 2, 3))
    with pytest.raises(ValueError, match=r"PacConv1d.from_conv: conv has groups=2"):
        pt.PacConv1d.from_conv(nn.Conv1d(4, 4, 3, groups=2))


@ND
def test_layers_equal_pacnp_numpy_functions(gen, nd):
    """Fused and two-step layer paths equal pacnp's NumPy functions on the same numbers."""
    s = S(nd, 9, 5, 4)
    x, g = (
        torch.randn(2, 2, *s, generator=gen, dtype=D),
        torch.randn(2, 3, *s, generator=gen, dtype=D),
    )
    mask = torch.rand(2, 1, *s, generator=gen) < 0.7
    kt = dict(kernel_type="inv_0.5_-1", smooth_kernel_type="gaussian")
    layer = fn("PacConv{}d", nd)(2, 3, 3, padding=1, **kt).double()
    out, out_mask = layer(x, g, mask=mask)
    K, K_mask = getattr(pacnp, f"packernel{nd}d")(np_(g), 3, padding=1, mask=np_(mask), **kt)
    ref = getattr(pacnp, f"pacconv{nd}d")(np_(x), K, np_(layer.weight), np_(layer.bias), padding=1)
    np.testing.assert_allclose(np_(out), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np_(out_mask), K_mask)
    Kt, _ = layer.compute_kernel(g, mask)
    np.testing.assert_allclose(np_(Kt), K, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(layer(x, None, Kt), out, rtol=1e-12, atol=1e-12)
    # transposed: the guide at the output resolution
    up = fn("PacConvTranspose{}d", nd)(2, 2, 3, stride=2, padding=1, output_padding=1).double()
    gt = torch.randn(2, 3, *(2 * n for n in s), generator=gen, dtype=D)
    ref = getattr(pacnp, f"pacconv_transpose{nd}d_fused")(
        np_(x), np_(gt), np_(up.weight), np_(up.bias), stride=2, padding=1, output_padding=1
    )[0]
    np.testing.assert_allclose(np_(up(x, gt)), ref, rtol=1e-12, atol=1e-12)
    # 'gaussian': its buffer (float32, as the reference code's) holds the float64 numbers
    # exactly, where average_3's 1/3**nd would differ from pacnp's float64 kernel by rounding
    pool = fn("PacPool{}d", nd)(3, stride=2, padding=1, smooth_kernel_type="gaussian").double()
    assert pool.smooth_kernel.shape == (1, 1) + (3,) * nd
    ref = getattr(pacnp, f"pacpool{nd}d_fused")(
        np_(x), np_(g), 3, stride=2, padding=1, smooth_kernel_type="gaussian"
    )[0]
    np.testing.assert_allclose(np_(pool(x, g)), ref, rtol=1e-12, atol=1e-12)


@ND
def test_learnable_smoothing_and_inv_parameters(gen, nd):
    layer = fn("PacConv{}d", nd)(
        2, 2, 3, padding=1, kernel_type="inv_0.5_-1", smooth_kernel_type="full_3"
    ).double()
    torch.testing.assert_close(
        layer.smooth_kernel, torch.full((1, 1) + (3,) * nd, 1 / 3**nd, dtype=D)
    )
    s = S(nd, 6, 4, 4)
    layer(
        torch.randn(1, 2, *s, generator=gen, dtype=D), torch.randn(1, 2, *s, generator=gen, dtype=D)
    ).square().sum().backward()
    for name in ("weight", "bias", "inv_alpha", "inv_lambda", "smooth_kernel"):
        grad = getattr(layer, name).grad
        assert grad is not None and grad.abs().sum() > 0, name


@ND
def test_fillers(nd):
    lin = fn("PacConvTranspose{}d", nd)(
        2, 2, 3, stride=2, padding=1, output_padding=1, filler="linear", normalize_kernel=True
    ).double()
    s = S(nd, 4, 3, 2)
    out = lin(torch.full((1, 2, *s), 2.5, dtype=D), torch.zeros(1, 1, *(2 * n for n in s), dtype=D))
    # (multi)linear upsampling with a normalised kernel keeps a constant constant, borders too
    torch.testing.assert_close(out, torch.full(out.shape, 2.5, dtype=D))
    ramp = torch.arange(4, dtype=D).reshape((1, 1) + (1,) * (nd - 1) + (4,))
    ramp = ramp.expand(1, 2, *s[:-1], 4) if nd == 3 else ramp.expand(1, 2, 4)
    gout = (1, 1) + tuple(2 * n for n in ramp.shape[2:])
    line = lin(ramp, torch.zeros(gout, dtype=D))[(0, 0) + (1,) * (nd - 1)]
    torch.testing.assert_close(line, torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3], dtype=D))
    crf = fn("PacConv{}d", nd)(3, 3, 5, padding=2, bias=False, filler="crf")
    centre = (slice(None), slice(None)) + (2,) * nd
    assert torch.all(crf.weight[centre] == 0) and torch.all(crf.weight[0, 0] == 0)
    near = (0, 1) + (2,) * (nd - 1) + (1,)
    far = (0, 1) + (2,) * (nd - 1) + (0,)
    assert crf.weight[near] > crf.weight[far] > 0
    pool = fn("PacConv{}d", nd)(3, 3, 3, padding=1, shared_filters=True, filler="crf_pool")
    assert pool.weight.shape == (1, 1) + (3,) * nd and pool.weight.sum() == 3**nd - 1
    uni = fn("PacConv{}d", nd)(2, 3, 3)
    assert uni.weight.shape == (3, 2) + (3,) * nd
    assert uni.weight.abs().max() <= 1 / (2 * 3**nd) ** 0.5


@ND
def test_fixed_gaussian_smoothing_buffer(gen, nd):
    pool = fn("PacPool{}d", nd)(3, padding=1, smooth_kernel_type="gaussian").double()
    v = torch.tensor([0.25, 0.5, 0.25], dtype=D)
    expect = v if nd == 1 else torch.einsum("i,j,k->ijk", v, v, v)
    torch.testing.assert_close(pool.smooth_kernel[0, 0], expect)
    s = S(nd, 6, 4, 4)
    x, g = (
        torch.randn(1, 2, *s, generator=gen, dtype=D),
        torch.randn(1, 2, *s, generator=gen, dtype=D),
    )
    K = getattr(pacnp, f"packernel{nd}d")(np_(g), 3, padding=1, smooth_kernel_type="gaussian")[0]
    np.testing.assert_allclose(
        np_(pool(x, g)), getattr(pacnp, f"pacpool{nd}d")(np_(x), K, 3, padding=1), rtol=1e-12
    )


def test_geometry_per_axis_and_errors():
    layer = pt.PacConv3d(1, 1, (3, 1, 3), stride=(1, 2, 1), padding=(1, 0, 1))
    assert layer.kernel_size == (3, 1, 3) and layer.weight.shape == (1, 1, 3, 1, 3)
    assert "stride=(1, 2, 1)" in repr(layer) and "padding=(1, 0, 1)" in repr(layer)
    assert "stride" not in repr(pt.PacPool1d(3))
    with pytest.raises(TypeError, match=r"PacConv3d: kernel_size must be an int or a tuple of 3"):
        pt.PacConv3d(1, 1, (3, 3))
    with pytest.raises(ValueError, match=r"PacConv1d: kernel_size must be odd"):
        pt.PacConv1d(1, 1, 4)
    with pytest.raises(ValueError, match=r"PacPool3d: stride must be positive"):
        pt.PacPool3d(3, stride=(1, 0, 1))
    with pytest.raises(ValueError, match=r"PacConv3d: filler='crf' needs a square kernel"):
        pt.PacConv3d(2, 2, (3, 3, 5), filler="crf")
    with pytest.raises(TypeError, match=r"pacnp.torch.pacconv1d: weight must be a torch.Tensor"):
        pt.pacconv1d(torch.zeros(1, 1, 5), torch.ones(1, 1, 3, 5), np.ones((1, 1, 3)))


def test_checkpoint_converter_flips_only_the_2d_transposed_weights(gen):
    model = nn.ModuleDict(
        dict(
            up1=pt.PacConvTranspose1d(1, 1, 3),
            up2=pt.PacConvTranspose2d(1, 1, 3),
            up3=pt.PacConvTranspose3d(1, 1, 3),
        )
    )
    sd = {k: torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()}
    out = pt.convert_reference_state_dict(sd, model)
    assert torch.equal(out["up2.weight"], sd["up2.weight"].flip(-2, -1))
    for key in ("up1.weight", "up3.weight", "up3.bias"):
        assert torch.equal(out[key], sd[key]), key


@ND
def test_pickled_layer_loads_with_weights_only(gen, nd):
    layer = fn("PacConvTranspose{}d", nd)(2, 2, 3, stride=2, padding=1, output_padding=1).double()
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    with torch.serialization.safe_globals([type(layer)]):
        loaded = torch.load(buf, weights_only=True)
    assert type(loaded) is type(layer) and type(layer).__module__ == "pacnp.torch"
    s = S(nd, 4, 3, 2)
    x = torch.randn(1, 2, *s, generator=gen, dtype=D)
    g = torch.randn(1, 3, *(2 * n for n in s), generator=gen, dtype=D)
    torch.testing.assert_close(loaded(x, g), layer(x, g), rtol=0, atol=0)


def test_reduced_precision_1d(gen):
    layer = pt.PacConv1d(2, 3, 3, padding=1)
    x, g = torch.randn(1, 2, 9, generator=gen), torch.randn(1, 2, 9, generator=gen)
    xh = x.to(torch.bfloat16).requires_grad_()
    out = layer(xh, g.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), layer(x, g), rtol=0.05, atol=0.05)
    out.float().sum().backward()
    assert xh.grad.dtype == torch.bfloat16


# =========================================================================== custom ops
def test_custom_ops_pass_opcheck_3d_and_1d(gen):
    x = torch.randn(1, 2, 3, 2, 3, generator=gen, dtype=D, requires_grad=True)
    g = torch.randn(1, 1, 3, 2, 3, generator=gen, dtype=D, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, 3, generator=gen, dtype=D, requires_grad=True)
    geo = dict(
        kernel_size=[3] * 3,
        stride=[1] * 3,
        padding=[1] * 3,
        output_padding=[0] * 3,
        dilation=[1] * 3,
    )
    torch.library.opcheck(
        torch.ops.pacnp.pac_fused.default,
        (
            x,
            g,
            w,
            None,
            None,
            None,
            None,
            None,
            "conv",
            *geo.values(),
            False,
            "gaussian",
            "none",
            False,
            False,
        ),
    )
    g1 = torch.randn(1, 2, 7, generator=gen, dtype=D, requires_grad=True)
    geo1 = dict(kernel_size=[3], stride=[2], padding=[1], output_padding=[0], dilation=[1])
    torch.library.opcheck(
        torch.ops.pacnp.packernel2d.default,
        (g1, None, None, None, None, *geo1.values(), "gaussian", "none", False, False, False),
    )
    x1 = torch.randn(1, 2, 7, generator=gen, dtype=D, requires_grad=True)
    K1 = torch.rand(1, 1, 3, 4, generator=gen, dtype=D, requires_grad=True)
    torch.library.opcheck(
        torch.ops.pacnp.pac_op.default, (x1, K1, None, None, "pool", *geo1.values(), False)
    )


# =========================================================================== torch.compile
class _SmallNet(nn.Module):
    """Every 1-D or 3-D layer class on both of its paths (fused, and a precomputed kernel)."""

    def __init__(self, nd):
        super().__init__()
        self.conv = getattr(nn, f"Conv{nd}d")(3, 4, 3, padding=1)
        self.pac = fn("PacConv{}d", nd)(
            4, 4, 3, padding=1, kernel_type="inv_0.5_-1", smooth_kernel_type="full_3"
        )
        self.pool = fn("PacPool{}d", nd)(3, stride=2, padding=1, normalize_kernel=True)
        self.up = fn("PacConvTranspose{}d", nd)(4, 2, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x, guide, mask):
        h = torch.relu(self.conv(x))
        h, m = self.pac(h, guide, mask=mask)  # fused, with a mask
        K, _ = self.pac.compute_kernel(guide)
        h = h + self.pac(h, None, K) * m  # two-step
        Kp, _ = self.pool.compute_kernel(guide)
        h = self.pool(h, guide) + self.pool(h, None, Kp)  # stride 2: half the resolution
        return self.up(h, guide)  # back up; the guide is at the output resolution


@ND
def test_torch_compile_fullgraph_forward_and_backward(gen, nd):
    torch.manual_seed(0)
    net = _SmallNet(nd)
    s = S(nd, 8, 4, 4)
    args = (
        torch.randn(2, 3, *s, generator=gen),
        torch.randn(2, 2, *s, generator=gen),
        torch.rand(2, 1, *s, generator=gen) > 0.3,
    )
    ref = net(*args)
    ref.square().sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    out = compiled(*args)
    out.square().sum().backward()
    torch.testing.assert_close(out, ref)
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[n], msg=n)
