"""pacnp.torch: gradients (gradcheck, float64), layer identities against torch's own layers,
torch.compile, CRF, checkpoints of the reference code, autocast, zero-copy, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import pacnp  # noqa: E402
import pacnp.torch as pt  # noqa: E402
from pacnp import _ops  # noqa: E402

D = torch.float64


def rnd(*shape, gen, grad=True, scale=1.0, pos=False):
    t = torch.randn(shape, dtype=D, generator=gen) * scale
    if pos:
        t = t.abs() + 0.2
    return t.requires_grad_(grad)


@pytest.fixture(autouse=True)
def float32_default():
    """These tests create layers and tensors in torch's default dtype: pin it to float32 (another
    test module may have changed the process-wide default) and restore it afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def gradcheck(fn, inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


# =========================================================================== gradcheck
def test_gradcheck_packernel2d_gaussian_mask_fixed_smoothing(gen):
    g = rnd(1, 2, 5, 4, gen=gen)
    mask = torch.rand(1, 1, 5, 4, generator=gen) < 0.7
    gradcheck(
        lambda g: pt.packernel2d(g, mask, kernel_size=3, padding=1, smooth_kernel_type="gaussian")[
            0
        ],
        (g,),
    )


def test_gradcheck_packernel2d_inv_learnable_all(gen):
    """α, λ (one per channel), a full_3 smoothing kernel, normalisation, mask: all tensors."""
    g = rnd(1, 2, 4, 4, gen=gen)
    a = rnd(2, gen=gen, pos=True)
    lam = (-rnd(2, gen=gen, grad=False, pos=True)).requires_grad_()
    sk = rnd(1, 1, 3, 3, gen=gen, scale=0.3)
    mask = (torch.rand(1, 1, 4, 4, generator=gen) < 0.8).to(D)
    gradcheck(
        lambda g, a, lam, sk: pt.packernel2d(
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


def test_gradcheck_packernel2d_transposed_dilated(gen):
    g = rnd(1, 2, 6, 4, gen=gen)  # output of a stride-2 transposed conv of a 3×2 input
    a = rnd(gen=gen, pos=True)
    gradcheck(
        lambda g, a: pt.packernel2d(
            g,
            kernel_size=3,
            stride=2,
            padding=1,
            output_padding=1,
            transposed=True,
            kernel_type="inv_0.3_0.7_asym",
            inv_alpha=a,
            inv_lambda=0.7,
        )[0],
        (g, a),
    )
    g2 = rnd(1, 1, 5, 5, gen=gen)
    gradcheck(lambda g: pt.packernel2d(g, kernel_size=3, padding=2, dilation=2)[0], (g2,))


@pytest.mark.parametrize("variant", ["dense-strided-dilated", "shared", "channel-kernel"])
def test_gradcheck_pacconv2d(gen, variant):
    x = rnd(1, 2, 5, 5, gen=gen)
    if variant == "dense-strided-dilated":
        K = rnd(1, 1, 3, 3, 3, 3, gen=gen, pos=True)
        w, b = rnd(3, 2, 3, 3, gen=gen), rnd(3, gen=gen)
        kw = dict(stride=(2, 1), padding=1, dilation=(1, 2))
    elif variant == "shared":
        K = rnd(1, 1, 3, 3, 5, 5, gen=gen, pos=True)
        w, b = rnd(1, 1, 3, 3, gen=gen), rnd(2, gen=gen)
        kw = dict(padding=1, shared_filters=True)
    else:
        K = rnd(1, 2, 3, 3, 3, 3, gen=gen, pos=True)
        w, b = rnd(3, 2, 3, 3, gen=gen), None
        kw = {}
    args = (x, K, w) + ((b,) if b is not None else ())
    gradcheck(lambda x, K, w, *b: pt.pacconv2d(x, K, w, *b, **kw), args)


@pytest.mark.parametrize("variant", ["dense", "shared"])
def test_gradcheck_pacconv_transpose2d(gen, variant):
    x = rnd(1, 2, 3, 2, gen=gen)
    if variant == "dense":
        K = rnd(1, 1, 3, 3, 6, 4, gen=gen, pos=True)
        w, b = rnd(2, 3, 3, 3, gen=gen), rnd(3, gen=gen)
        kw = dict(stride=2, padding=1, output_padding=1)
    else:
        K = rnd(1, 2, 3, 3, 7, 4, gen=gen, pos=True)
        w, b = rnd(1, 1, 3, 3, gen=gen), rnd(2, gen=gen)
        kw = dict(
            stride=(1, 2),
            padding=(0, 1),
            output_padding=(0, 1),
            dilation=(2, 1),
            shared_filters=True,
        )
    gradcheck(lambda x, K, w, b: pt.pacconv_transpose2d(x, K, w, b, **kw), (x, K, w, b))


def test_gradcheck_pacpool2d(gen):
    x = rnd(1, 2, 5, 5, gen=gen)
    K = rnd(1, 2, 3, 3, 3, 3, gen=gen, pos=True)
    gradcheck(lambda x, K: pt.pacpool2d(x, K, 3, stride=2, padding=1), (x, K))


def test_gradcheck_fused_conv(gen):
    x, g = rnd(1, 2, 4, 4, gen=gen), rnd(1, 2, 4, 4, gen=gen)
    w, b = rnd(3, 2, 3, 3, gen=gen), rnd(3, gen=gen)
    a, lam = rnd(gen=gen, pos=True), (-rnd(gen=gen, grad=False, pos=True)).requires_grad_()
    sk = rnd(3, 3, gen=gen, scale=0.3)
    mask = torch.rand(1, 1, 4, 4, generator=gen) < 0.8
    gradcheck(
        lambda x, g, w, b, a, lam, sk: pt.pacconv2d_fused(
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


def test_gradcheck_fused_transpose_and_pool(gen):
    x, g = rnd(1, 2, 3, 2, gen=gen), rnd(1, 2, 6, 4, gen=gen)
    w, b = rnd(2, 2, 3, 3, gen=gen), rnd(2, gen=gen)
    gradcheck(
        lambda x, g, w, b: pt.pacconv_transpose2d_fused(
            x, g, w, b, stride=2, padding=1, output_padding=1, normalize_kernel=True
        )[0],
        (x, g, w, b),
    )
    x2, g2 = rnd(1, 2, 5, 5, gen=gen), rnd(1, 2, 5, 5, gen=gen)
    gradcheck(
        lambda x, g: pt.pacpool2d_fused(x, g, 3, stride=2, padding=1, channel_wise=True)[0],
        (x2, g2),
    )


# =========================================================================== layers
def _const_guide(B, H, W, dtype=D):
    return torch.full((B, 3, H, W), 0.7, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_from_conv_equals_conv2d(gen, dtype):
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, dilation=1).to(dtype)
    pac = pt.PacConv2d.from_conv(conv)
    assert pac.weight.dtype == dtype and pac.weight is not conv.weight
    x = torch.randn(2, 3, 7, 6, generator=gen, dtype=dtype, requires_grad=True)
    out = pac(x, _const_guide(2, 7, 6, dtype))
    ref = conv(x)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == D else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, ref, **tol)
    # the same gradients as the layer it replaces
    go = torch.randn_like(ref)
    gx, gw, gb = torch.autograd.grad(out, (x, pac.weight, pac.bias), go)
    rx, rw, rb = torch.autograd.grad(ref, (x, conv.weight, conv.bias), go)
    for a, e in ((gx, rx), (gw, rw), (gb, rb)):
        torch.testing.assert_close(a, e, **tol)


def test_from_conv_same_padding_and_dilation(gen):
    conv = nn.Conv2d(2, 3, 3, padding="same", dilation=2, bias=False).double()
    pac = pt.PacConv2d.from_conv(conv)
    assert pac.padding == (2, 2) and pac.bias is None
    x = torch.randn(1, 2, 6, 6, generator=gen, dtype=D)
    torch.testing.assert_close(pac(x, _const_guide(1, 6, 6)), conv(x), rtol=1e-12, atol=1e-12)


def test_from_conv_transpose_equals_conv_transpose2d(gen):
    deconv = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1).double()
    pac = pt.PacConvTranspose2d.from_conv(deconv)
    x = torch.randn(2, 3, 4, 5, generator=gen, dtype=D, requires_grad=True)
    ref = deconv(x)
    out = pac(x, _const_guide(2, *ref.shape[2:]))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    go = torch.randn_like(ref)
    for a, e in zip(
        torch.autograd.grad(out, (x, pac.weight, pac.bias), go),
        torch.autograd.grad(ref, (x, deconv.weight, deconv.bias), go),
    ):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_from_conv_rejects_what_pac_cannot_copy():
    with pytest.raises(ValueError, match=r"PacConv2d.from_conv: conv has groups=2"):
        pt.PacConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match=r"padding_mode='reflect'"):
        pt.PacConv2d.from_conv(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(
        TypeError,
        match=r"PacConvTranspose2d.from_conv: conv must be a "
        r"torch.nn.ConvTranspose2d, got Conv2d",
    ):
        pt.PacConvTranspose2d.from_conv(nn.Conv2d(4, 4, 3))


def test_pacpool2d_layer_equals_avg_pool2d(gen):
    pool = pt.PacPool2d(3, stride=2, padding=1, normalize_kernel=True)
    x = torch.randn(2, 3, 7, 6, generator=gen, dtype=D)
    out = pool(x, _const_guide(2, 7, 6))
    ref = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        nn.AvgPool2d(3, 2, 1, count_include_pad=False)(x), out, rtol=1e-12, atol=1e-12
    )


def test_layer_two_step_equals_fused_and_returns_mask(gen):
    layer = pt.PacConv2d(
        2, 3, 3, padding=1, kernel_type="inv_0.5_-1", smooth_kernel_type="full_3"
    ).double()
    x = torch.randn(2, 2, 5, 6, generator=gen, dtype=D)
    g = torch.randn(2, 2, 5, 6, generator=gen, dtype=D)
    mask = torch.rand(2, 1, 5, 6, generator=gen) < 0.6
    out, out_mask = layer(x, g, mask=mask)
    K, K_mask = layer.compute_kernel(g, mask)
    torch.testing.assert_close(out, layer(x, None, K), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_mask, K_mask)
    assert out_mask.shape == (2, 1, 5, 6) and isinstance(layer(x, g), torch.Tensor)


def test_learnable_kernel_parameters_get_gradients(gen):
    layer = pt.PacConv2d(
        2, 3, 3, padding=1, kernel_type="inv_0.5_-1", smooth_kernel_type="full_3"
    ).double()
    names = {n for n, _ in layer.named_parameters()}
    assert names == {"weight", "bias", "inv_alpha", "inv_lambda", "smooth_kernel"}
    assert layer.inv_alpha.item() == 0.5 and layer.inv_lambda.item() == -1.0
    torch.testing.assert_close(layer.smooth_kernel, torch.full((1, 1, 3, 3), 1 / 9, dtype=D))
    x = torch.randn(1, 2, 5, 5, generator=gen, dtype=D)
    g = torch.randn(1, 2, 5, 5, generator=gen, dtype=D)
    layer(x, g).square().sum().backward()
    for name in names:
        grad = getattr(layer, name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    fixed = pt.PacPool2d(3, kernel_type="inv_0.5_-1_fixed", smooth_kernel_type="average_3")
    assert list(fixed.parameters()) == []
    assert {n for n, _ in fixed.named_buffers()} == {"inv_alpha", "inv_lambda", "smooth_kernel"}
    cw = pt.PacPool2d(3, padding=1, kernel_type="inv_1_-0.5", channel_wise=True, out_channels=2)
    assert cw.inv_alpha.shape == (2,)
    xs = torch.randn(1, 2, 4, 4, generator=gen)
    cw(xs, torch.randn(1, 2, 4, 4, generator=gen)).sum().backward()
    assert cw.inv_alpha.grad.shape == (2,) and cw.inv_lambda.grad.abs().sum() > 0


def test_fixed_smoothing_buffer_is_the_kernel_used(gen):
    """The reference code's layers smooth with their smooth_kernel buffer; so does pacnp.torch
    (a fixed-type kernel is the same numbers as pacnp's built-in one)."""
    layer = pt.PacPool2d(3, padding=1, smooth_kernel_type="gaussian").double()
    assert layer.smooth_kernel.shape == (1, 1, 3, 3)
    x = torch.randn(1, 2, 5, 5, generator=gen, dtype=D)
    g = torch.randn(1, 2, 5, 5, generator=gen, dtype=D)
    K = pacnp.packernel2d(g, 3, padding=1, smooth_kernel_type="gaussian")[0]
    torch.testing.assert_close(
        layer(x, g), pacnp.pacpool2d(x, K, 3, padding=1), rtol=1e-12, atol=1e-12
    )


def test_fillers():
    lin = pt.PacConvTranspose2d(
        2, 2, 3, stride=2, padding=1, output_padding=1, filler="linear", normalize_kernel=True
    ).double()
    x = torch.full((1, 2, 3, 4), 2.5, dtype=D)
    out = lin(x, _const_guide(1, 6, 8))
    # bilinear upsampling with a normalised kernel keeps a constant image constant, borders
    # included; each channel only feeds itself
    torch.testing.assert_close(out, torch.full((1, 2, 6, 8), 2.5, dtype=D))
    x2 = torch.arange(4, dtype=D).reshape(1, 1, 1, 4).expand(1, 2, 3, 4)
    row = lin(x2, _const_guide(1, 6, 8))[0, 0, 2]
    # linear interpolation between samples, the last one repeated at the border
    torch.testing.assert_close(row, torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3], dtype=D))
    crf = pt.PacConv2d(3, 3, 5, padding=2, bias=False, filler="crf")
    assert torch.all(crf.weight[:, :, 2, 2] == 0) and torch.all(crf.weight[0, 0] == 0)
    assert crf.weight[0, 1, 1, 2] > crf.weight[0, 1, 0, 2] > 0
    pool = pt.PacConv2d(3, 3, 3, padding=1, shared_filters=True, filler="crf_pool")
    assert "weight" in dict(pool.named_buffers()) and pool.weight.sum() == 8
    with pytest.raises(ValueError, match="filler='pool' is a fixed pooling filter"):
        pt.PacConv2d(3, 3, 3, filler="pool")
    with pytest.raises(ValueError, match="filler='linear'"):
        pt.PacConv2d(3, 3, 3, filler="linear")
    with pytest.raises(ValueError, match="filler='gauss'; expected one of"):
        pt.PacConv2d(3, 3, 3, filler="gauss")


def test_constructor_errors_name_the_layer_and_argument():
    with pytest.raises(ValueError, match="PacConv2d: kernel_size must be odd"):
        pt.PacConv2d(2, 2, 4)
    with pytest.raises(ValueError, match="PacConv2d: unknown kernel_type 'gauss'"):
        pt.PacConv2d(2, 2, 3, kernel_type="gauss")
    with pytest.raises(ValueError, match="PacPool2d: unknown smooth_kernel_type"):
        pt.PacPool2d(3, smooth_kernel_type="box_3")
    with pytest.raises(ValueError, match="needs out_channels"):
        pt.PacPool2d(3, kernel_type="inv_1_-1", channel_wise=True)
    with pytest.raises(ValueError, match="in_channels \\(2\\) must equal out_channels \\(3\\)"):
        pt.PacConv2d(2, 3, 3, shared_filters=True)


def test_functional_errors():
    x = torch.zeros(1, 2, 5, 5)
    with pytest.raises(
        TypeError,
        match=r"pacnp.torch.pacconv2d: weight must be a "
        r"torch.Tensor, got ndarray",
    ):
        pt.pacconv2d(x, torch.ones(1, 1, 3, 3, 5, 5), np.ones((2, 2, 3, 3)), padding=1)
    # pacnp's own validation reaches the caller unchanged
    with pytest.raises(
        ValueError,
        match=r"pacconv2d: kernel has shape \(1, 1, 3, 3, 5, 5\) "
        r"but input, kernel size 3, stride=\(1, 1\), "
        r"padding=\(2, 2\)",
    ):
        pt.pacconv2d(x, torch.ones(1, 1, 3, 3, 5, 5), torch.ones(2, 2, 3, 3), padding=2)
    with pytest.raises(TypeError, match="pacpool2d_fused: stride must be an int or a pair"):
        pt.pacpool2d_fused(x, x, 3, stride="2")
    with pytest.raises(TypeError, match="has dtype float64 but the computation runs in float32"):
        pt.pacconv2d(x, torch.ones(1, 1, 3, 3, 5, 5), torch.ones(2, 2, 3, 3, dtype=D), padding=1)


def test_reference_signatures_and_native_impl_ignored(gen):
    g = torch.randn(1, 2, 5, 5, generator=gen)
    x = torch.randn(1, 2, 5, 5, generator=gen)
    K, m = pt.packernel2d(
        input=g,
        mask=None,
        kernel_size=3,
        stride=1,
        padding=1,
        output_padding=0,
        dilation=1,
        kernel_type="gaussian",
        smooth_kernel_type="none",
        smooth_kernel=None,
        inv_alpha=None,
        inv_lambda=None,
        channel_wise=False,
        normalize_kernel=False,
        transposed=False,
        native_impl=True,
    )
    assert m is None
    w = torch.randn(3, 2, 3, 3, generator=gen)
    a = pt.pacconv2d(x, K, w, None, 1, 1, 1, False, True)  # all positional, as in the reference
    torch.testing.assert_close(a, pacnp.pacconv2d(x, K, w, padding=1))
    p = pt.pacpool2d(x, K, 3, 1, 1, 1, native_impl=True)
    torch.testing.assert_close(p, pacnp.pacpool2d(x, K, 3, padding=1))
    layer = pt.PacConvTranspose2d(
        2, 2, 3, 2, 1, 1, 1, True, "gaussian", "none", False, False, "uniform", True
    )
    assert layer(x, torch.randn(1, 2, 10, 10, generator=gen)).shape == (1, 2, 10, 10)


# =========================================================================== checkpoints
def _reference_transposed_conv(x, w_ref, b, stride, padding, output_padding):
    """The reference code's transposed convolution with K ≡ 1: zero-insert the input, pad it by
    (k−1)−p (plus output_padding at the end), cross-correlate with the *unflipped* weight."""
    B, C, H, W = x.shape
    k = w_ref.shape[-1]
    z = x.new_zeros(B, C, (H - 1) * stride + 1, (W - 1) * stride + 1)
    z[:, :, ::stride, ::stride] = x
    q = k - 1 - padding
    z = F.pad(z, (q, q + output_padding, q, q + output_padding))
    return F.conv2d(z, w_ref.transpose(0, 1), b)


def test_reference_checkpoint_converter(gen):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = pt.PacConv2d(2, 3, 3, padding=1)
            self.up = pt.PacConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1)

    net = Net().double()
    w_ref = torch.randn(3, 2, 3, 3, generator=gen, dtype=D)  # as the reference trained it
    sd = dict(net.state_dict(), **{"up.weight": w_ref})
    before = {k: v.clone() for k, v in sd.items()}
    pt.load_reference_state_dict(net, sd)
    assert all(torch.equal(sd[k], before[k]) for k in sd)  # input not modified
    torch.testing.assert_close(net.up.weight, w_ref.flip(-2, -1))
    torch.testing.assert_close(net.down.weight, sd["down.weight"])
    x = torch.randn(1, 3, 3, 4, generator=gen, dtype=D)
    out = net.up(x, _const_guide(1, 6, 8))
    ref = _reference_transposed_conv(x, w_ref, net.up.bias, 2, 1, 1)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # without the conversion the result would differ: the test can fail
    assert not torch.allclose(
        pt.pacconv_transpose2d(
            x, torch.ones(1, 1, 3, 3, 6, 8, dtype=D), w_ref, net.up.bias, 2, 1, 1
        ),
        ref,
    )


def test_whole_model_pickles_name_the_public_module(gen):
    """A pickled model names its classes by module: ``pacnp.torch.PacConv2d``, as when
    pacnp.torch was one file, so models saved then load under a weights_only allowlist."""
    import io

    assert {getattr(pt, n).__module__ for n in pt.__all__} == {"pacnp.torch"}
    layer = pt.PacConv2d(2, 2, 3, padding=1).double()
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    with torch.serialization.safe_globals([pt.PacConv2d]):
        loaded = torch.load(buf, weights_only=True)
    assert type(loaded) is pt.PacConv2d
    x = torch.randn(1, 2, 4, 5, generator=gen, dtype=D)
    g = torch.randn(1, 3, 4, 5, generator=gen, dtype=D)
    torch.testing.assert_close(loaded(x, g), layer(x, g), rtol=0, atol=0)


# =========================================================================== torch.compile
class _SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pac = pt.PacConv2d(
            4, 4, 3, padding=1, kernel_type="inv_0.5_-1", smooth_kernel_type="full_3"
        )
        self.pool = pt.PacPool2d(3, padding=1, normalize_kernel=True)
        self.up = pt.PacConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x, guide, guide_hr, mask):
        h = torch.relu(self.conv(x))
        h, m = self.pac(h, guide, mask=mask)
        K, _ = self.pac.compute_kernel(guide)
        h = h + self.pac(h, None, K) * m
        h = self.pool(h, guide)
        return self.up(h, guide_hr)


def test_torch_compile_fullgraph_forward_and_backward(gen):
    torch.manual_seed(0)
    net = _SmallNet()
    args = (
        torch.randn(2, 3, 6, 5, generator=gen),
        torch.randn(2, 2, 6, 5, generator=gen),
        torch.randn(2, 2, 12, 10, generator=gen),
        torch.rand(2, 1, 6, 5, generator=gen) > 0.3,
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


def test_custom_ops_pass_opcheck(gen):
    x = torch.randn(1, 2, 4, 4, generator=gen, dtype=D, requires_grad=True)
    g = torch.randn(1, 2, 4, 4, generator=gen, dtype=D, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, generator=gen, dtype=D, requires_grad=True)
    geo = dict(
        kernel_size=[3, 3], stride=[1, 1], padding=[1, 1], output_padding=[0, 0], dilation=[1, 1]
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
    K = torch.rand(1, 1, 3, 3, 4, 4, generator=gen, dtype=D, requires_grad=True)
    torch.library.opcheck(
        torch.ops.pacnp.pac_op.default, (x, K, w, None, "conv", *geo.values(), False)
    )
    torch.library.opcheck(
        torch.ops.pacnp.packernel2d.default,
        (g, None, None, None, None, *geo.values(), "gaussian", "none", False, False, False),
    )


# =========================================================================== autocast / dtypes
def test_reduced_precision_inputs_compute_in_float32(gen):
    layer = pt.PacConv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 5, 5, generator=gen)
    g = torch.randn(1, 2, 5, 5, generator=gen)
    ref = layer(x, g)
    for dt in (torch.float16, torch.bfloat16):
        xh = x.to(dt).requires_grad_()
        out = layer(xh, g.to(dt))
        assert out.dtype == dt
        torch.testing.assert_close(
            out.float(), layer(xh.float(), g.to(dt).float()), rtol=1e-2, atol=1e-2
        )
        out.float().sum().backward()
        assert xh.grad.dtype == dt and layer.weight.grad.dtype == torch.float32
        layer.zero_grad()
    assert ref.dtype == torch.float32


def test_autocast_model(gen):
    net = _SmallNet()
    args = (
        torch.randn(1, 3, 6, 5, generator=gen),
        torch.randn(1, 2, 6, 5, generator=gen),
        torch.randn(1, 2, 12, 10, generator=gen),
        torch.ones(1, 1, 6, 5, dtype=torch.bool),
    )
    ref = net(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(*args)
    assert out.dtype == torch.bfloat16  # the nn.Conv2d in front ran in bfloat16
    out.float().square().sum().backward()  # no dtype mismatch in backward
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())
    torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.1)


# =========================================================================== zero copy
def test_kernels_see_the_tensors_own_memory(monkeypatch, gen):
    seen = {}
    op_forward, fused_forward = _ops.op_forward, _ops.fused_forward

    def spy_op(be, plan):
        out = op_forward(be, plan)
        seen.update(x=plan.x.ctypes.data, K=plan.K.ctypes.data, out=out.ctypes.data)
        return out

    def spy_fused(be, kplan, oplan):
        out, m = fused_forward(be, kplan, oplan)
        seen.update(x=oplan.x.ctypes.data, guide=kplan.guide.ctypes.data, out=out.ctypes.data)
        return out, m

    monkeypatch.setattr(_ops, "op_forward", spy_op)
    monkeypatch.setattr(_ops, "fused_forward", spy_fused)
    x = torch.randn(1, 2, 5, 5, generator=gen, requires_grad=True)
    g = torch.randn(1, 2, 5, 5, generator=gen)
    K = torch.rand(1, 1, 3, 3, 5, 5, generator=gen)
    out = pt.pacpool2d(x, K, 3, padding=1)
    assert seen == dict(x=x.data_ptr(), K=K.data_ptr(), out=out.data_ptr())
    seen.clear()
    w = torch.randn(3, 2, 3, 3, generator=gen)
    out, _ = pt.pacconv2d_fused(x, g, w, padding=1)
    assert seen == dict(x=x.data_ptr(), guide=g.data_ptr(), out=out.data_ptr())


# =========================================================================== CRF
def test_create_yxrgb_and_position_feats():
    img = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).reshape(2, 3, 2, 4)
    f = pt.create_YXRGB(img, scales=[2.0, 4.0, 1.0, 2.0, 10.0])
    assert f.shape == (2, 5, 2, 4)
    torch.testing.assert_close(f[1, 0, 1], torch.full((4,), 0.5))  # y / 2
    torch.testing.assert_close(f[0, 1, 0], torch.arange(4.0) / 4)  # x / 4
    torch.testing.assert_close(f[:, 2:], img / torch.tensor([1.0, 2.0, 10.0]).view(3, 1, 1))
    pos = pt.create_position_feats((2, 3), bs=2)
    assert pos.shape == (2, 2, 2, 3) and pos[1, 1, 1, 2] == 2 and pos[0, 0, 1, 0] == 1
    with pytest.raises(ValueError, match="create_YXRGB: give scales or yx_scale/rgb_scale"):
        pt.create_YXRGB(img, yx_scale=[1, 1], scales=[1, 1, 1, 1, 1])


def test_crf_one_step_matches_the_mean_field_update(gen):
    """One mean-field step with a Potts box kernel, computed by hand: the (learnable) pairwise
    and unary weights take part in the result."""
    C, H, W = 3, 5, 6
    crf = pt.PacCRF(
        C,
        1,
        final_output="log_Q",
        unary_weight=0.75,
        pairwise_kernels=dict(
            kernel_size=3, compat_type="potts", spatial_filter=False, pairwise_weight=1.5
        ),
    ).double()
    unary = torch.randn(1, C, H, W, generator=gen, dtype=D)
    feat = torch.randn(1, 2, H, W, generator=gen, dtype=D)
    out = crf(unary, feat)
    K, _ = pt.packernel2d(feat, kernel_size=3, padding=1)
    Q = F.softmax(unary, 1)
    cols = F.unfold(Q, 3, padding=1).view(1, C, 9, H, W)
    msg = cols * K.view(1, 1, 9, H, W)
    msg = msg.sum(2) - msg[:, :, 4]  # no message from a pixel to itself
    torch.testing.assert_close(out, 0.75 * unary + 1.5 * msg, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [pt.PacCRF, pt.PacCRFLoose])
def test_crf_forward_backward_all_kernel_kinds(gen, cls):
    C, H, W = 3, 7, 6
    kernels = [
        dict(kernel_size=3, compat_type="4d"),
        dict(kernel_size=3, dilation=2, compat_type="2d", pairwise_weight=0.5),
        dict(kernel_size=3, compat_type="potts", spatial_filter=True),
        dict(kernel_size=3, compat_type="potts", spatial_filter=False, blur=2),
        dict(kernel_size=3, compat_type="na"),
    ]
    crf = cls(C, 2, final_output="log_softmax", pairwise_kernels=kernels)
    assert crf.num_pairwise_kernels() == 5
    unary = torch.randn(2, C, H, W, generator=gen, requires_grad=True)
    img = torch.rand(2, 3, H, W, generator=gen, requires_grad=True)
    feat = pt.create_YXRGB(img, scales=[3.0, 3.0, 0.2, 0.2, 0.2])
    out = crf(unary, feat)
    assert out.shape == unary.shape
    torch.testing.assert_close(out.exp().sum(1), torch.ones(2, H, W))
    out[:, 0].sum().backward()
    assert unary.grad.abs().sum() > 0 and img.grad.abs().sum() > 0
    steps = crf.steps if cls is pt.PacCRFLoose else [crf]
    for step in steps:
        for i, w in enumerate(step.pairwise_weights):
            assert w.requires_grad and w.grad is not None and w.grad != 0, i
        assert step.unary_weight.grad != 0
    fixed = cls(C, 1, fixed_weighting=True, pairwise_kernels=kernels[:1])
    first = fixed.steps[0] if cls is pt.PacCRFLoose else fixed
    assert not first.pairwise_weights[0].requires_grad and first.unary_weight == 1.0


def test_crf_gradcheck_small(gen):
    crf = pt.PacCRF(
        2,
        2,
        final_output="softmax",
        pairwise_kernels=[
            dict(kernel_size=3, compat_type="4d"),
            dict(kernel_size=3, compat_type="potts", spatial_filter=False),
        ],
    ).double()
    unary = torch.randn(1, 2, 4, 4, generator=gen, dtype=D, requires_grad=True)
    feat = torch.randn(1, 2, 4, 4, generator=gen, dtype=D, requires_grad=True)
    gradcheck(lambda u, f: crf(u, f), (unary, feat))
    with pytest.raises(ValueError, match="compat_type='3d'; expected one of"):
        crf.add_pairwise_kernel(compat_type="3d")
    with pytest.raises(ValueError, match="final_output='probs'"):
        pt.PacCRF(2, 1, final_output="probs")


# =========================================================================== packaging
def test_import_pacnp_imports_no_framework():
    code = (
        "import sys, pacnp; bad = [m for m in ('torch', 'jax') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
