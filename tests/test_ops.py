"""Every op, forward and backward, against the NumPy reference (tests/reference.py) and against
central finite differences, in float64; the identities with torch as separate tests."""

import itertools
import zlib

import numpy as np
import pytest
import reference as R
from cases import (
    CASE_LABELS,
    F64,
    FUSED_GRID,
    KERNEL_GRID,
    KERNEL_TYPES,
    OP_GRID,
    OPS,
    PAIR_GRID,
    SMALL_CASE_LABELS,
    SMALL_FUSED_GRID,
    SMALL_KERNEL_GRID,
    SMALL_OP_GRID,
    SMALL_PAIR_GRID,
    SMOOTH_TYPES,
    assert_close,
    kernel_case,
    op_case,
    simulator_grid,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import pacnp


# --------------------------------------------------------------------------- finite differences
def directional_fd(f, args, index, direction, eps=1e-6):
    """(f(a + εv) - f(a - εv)) / 2ε for argument ``index`` (a tuple index or a keyword name)."""

    def shifted(sign):
        a = list(args[0])
        kw = dict(args[1])
        if isinstance(index, int):
            a[index] = a[index] + sign * eps * direction
        else:
            kw[index] = np.asarray(kw[index]) + sign * eps * direction
        return np.asarray(f(*a, **kw))

    return (shifted(1) - shifted(-1)) / (2 * eps)


def test_simulator_grids_keep_their_small_subsets():
    """simulator_grid finds a small grid's entries in the full grid by identity: a small grid
    rebuilt from copies would leave the CUDA simulator nothing to run, silently."""
    for grid, small in (
        (KERNEL_GRID, SMALL_KERNEL_GRID),
        (OP_GRID, SMALL_OP_GRID),
        (FUSED_GRID, SMALL_FUSED_GRID),
        (PAIR_GRID, SMALL_PAIR_GRID),
        (CASE_LABELS, SMALL_CASE_LABELS),
    ):
        params = simulator_grid(grid, small)
        unmarked = [p for p in params if not isinstance(p, type(pytest.param(0)))]
        assert len(params) == len(grid) and 0 < len(unmarked) == len(small) < len(grid)


# --------------------------------------------------------------------------- packernel2d
@pytest.mark.parametrize(
    "k,s,d,kt,smooth,cw,norm,masked,tr", simulator_grid(KERNEL_GRID, SMALL_KERNEL_GRID)
)
def test_packernel2d_forward_backward_vs_reference(
    backend, k, s, d, kt, smooth, cw, norm, masked, tr
):
    rng = np.random.default_rng(
        zlib.crc32(repr((k, s, d, kt, smooth, cw, norm, masked, tr)).encode())
    )
    guide, kw = kernel_case(
        rng,
        k,
        s,
        d,
        kt,
        smooth,
        cw,
        norm,
        masked,
        tr,
        **backend.pick(dict(B=2, C=3), dict(B=1, C=2)),
    )
    K, om = backend.call(pacnp.packernel2d, guide, k, **kw)
    K_ref, om_ref = R.packernel2d(guide, k, **kw)
    assert K.shape == K_ref.shape and K.dtype == np.float64
    assert_close(K, K_ref, "K", **F64)
    assert_close(om, om_ref, "output_mask", **F64)
    gK = rng.standard_normal(K.shape)
    ours = backend.call(pacnp.packernel2d_backward, gK, guide, k, **kw)
    ref = R.packernel2d_backward(gK, guide, k, **kw)
    for name, a, b in zip(("guide", "inv_alpha", "inv_lambda", "smooth_kernel"), ours, ref):
        assert_close(a, b, f"d_{name}", rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("k,s,d,kt,smooth,cw,norm,masked,tr", KERNEL_GRID[::3])
def test_packernel2d_backward_vs_finite_differences(k, s, d, kt, smooth, cw, norm, masked, tr):
    rng = np.random.default_rng(7 + k * 100 + s * 10 + d)
    guide, kw = kernel_case(
        rng, k, s, d, kt, smooth, cw, norm, masked, tr, B=1, explicit_params=True
    )
    fwd = lambda g, k_, **o: pacnp.packernel2d(g, k_, **o)[0]
    K = fwd(guide, k, **kw)
    gK = rng.standard_normal(K.shape)
    grads = pacnp.packernel2d_backward(gK, guide, k, **kw)
    names = [0, "inv_alpha", "inv_lambda", "smooth_kernel"]
    for name, grad in zip(names, grads):
        if grad is None:
            continue
        base = guide if name == 0 else kw[name]
        v = rng.standard_normal(np.shape(base))
        fd = directional_fd(lambda *a, **o: np.sum(gK * fwd(*a, **o)), ((guide, k), kw), name, v)
        an = np.sum(np.asarray(grad) * v)
        assert abs(an - fd) <= 1e-6 * (1 + abs(fd)), f"d_{name}: analytic {an}, FD {fd}"


def test_packernel2d_gradients_present_exactly_when_differentiable():
    rng = np.random.default_rng(0)
    guide = rng.standard_normal((1, 2, 6, 6))

    def g(needs=None, **kw):
        K, _ = pacnp.packernel2d(guide, 3, padding=1, **kw)
        return pacnp.packernel2d_backward(np.ones(K.shape), guide, 3, padding=1, needs=needs, **kw)

    d = g()
    assert d[0] is not None and d[1] is None and d[2] is None and d[3] is None
    d = g(kernel_type="inv_0.5_-1", inv_alpha=0.5, inv_lambda=-1.0)
    assert d[1] is not None and d[2] is not None and np.shape(d[1]) == ()
    d = g(kernel_type="inv_0.5_-1")  # α, λ from the string: not inputs, no gradient
    assert d[1] is None and d[2] is None
    d = g(kernel_type="inv_0.5_-1_fixed", inv_alpha=0.5, inv_lambda=-1.0)
    assert d[1] is None and d[2] is None
    d = g(smooth_kernel_type="full_3", smooth_kernel=np.full((1, 1, 3, 3), 1 / 9))
    assert d[3].shape == (1, 1, 3, 3)
    d = g(
        kernel_type="inv_0.5_-1", inv_alpha=np.array([0.5, 0.2]), inv_lambda=-1.0, channel_wise=True
    )
    assert d[1].shape == (2,) and np.shape(d[2]) == ()
    d = g(
        needs=(False, True, True, False), kernel_type="inv_0.5_-1", inv_alpha=0.5, inv_lambda=-1.0
    )
    assert d[0] is None and d[1] is not None


# --------------------------------------------------------------------------- the three ops
@pytest.mark.parametrize(
    "op,k,s,d,shared,kc_many,with_bias", simulator_grid(OP_GRID, SMALL_OP_GRID)
)
def test_op_forward_backward_vs_reference(backend, op, k, s, d, shared, kc_many, with_bias):
    rng = np.random.default_rng(
        zlib.crc32(repr((op, k, s, d, shared, kc_many, with_bias)).encode())
    )
    args, kw = op_case(
        rng,
        op,
        k,
        s,
        d,
        shared,
        kc_many,
        with_bias,
        **backend.pick(dict(B=2, C=3, Co=4), dict(B=1, C=2, Co=3)),
    )
    fwd, bwd, rfwd, rbwd = OPS[op]
    out = backend.call(fwd, *args, **kw)
    assert_close(out, rfwd(*args, **kw), "forward", **F64)
    g = rng.standard_normal(out.shape)
    ours = backend.call(bwd, g, *args, **kw)
    ref = rbwd(g, *args, **kw)
    assert len(ours) == len(ref)
    for name, a, b in zip(("input", "kernel", "weight", "bias"), ours, ref):
        assert_close(a, b, f"d_{name}", **F64)
    # needs: skipped gradients are None, the others unchanged. Every subset; the simulator
    # runs one (test_arrays.test_needs_selects_gradients covers more of them there).
    masks = list(itertools.product([False, True], repeat=len(ours)))
    for mask in backend.pick(masks, [tuple(i % 2 == 0 for i in range(len(ours)))]):
        part = backend.call(bwd, g, *args, **kw, needs=mask)
        for want, a, full in zip(mask, part, ours):
            if want:
                assert_close(a, full, "needs subset", **F64)
            else:
                assert a is None


@pytest.mark.parametrize("op,k,s,d,shared,kc_many,with_bias", OP_GRID[::5])
def test_op_backward_vs_finite_differences(op, k, s, d, shared, kc_many, with_bias):
    rng = np.random.default_rng(11 + k + 10 * s + 100 * d)
    args, kw = op_case(
        rng, op, k, s, d, shared, kc_many, with_bias, p=d * (k - 1) // 2, B=1, C=2, Co=2
    )
    fwd, bwd, _, _ = OPS[op]
    out = fwd(*args, **kw)
    g = rng.standard_normal(out.shape)
    grads = bwd(g, *args, **kw)
    for index, grad in enumerate(grads):
        if grad is None:
            continue
        v = rng.standard_normal(np.shape(args[index]))
        fd = directional_fd(lambda *a, **o: np.sum(g * fwd(*a, **o)), (args, kw), index, v)
        an = np.sum(grad * v)
        assert abs(an - fd) <= 1e-7 * (1 + abs(fd)), f"grad {index}: analytic {an}, FD {fd}"


# --------------------------------------------------------------------------- identities
@pytest.mark.parametrize("s,p,d", [(1, 0, 1), (1, 1, 1), (2, 1, 1), (3, 2, 2), (2, 3, 1)])
def test_identity_ones_kernel_is_torch_conv2d(s, p, d):
    import torch

    rng = np.random.default_rng(s * 10 + p)
    x = rng.standard_normal((2, 3, 9, 10))
    w = rng.standard_normal((5, 3, 3, 3))
    b = rng.standard_normal(5)
    ref = torch.nn.functional.conv2d(
        torch.from_numpy(x),
        torch.from_numpy(w),
        torch.from_numpy(b),
        stride=s,
        padding=p,
        dilation=d,
    ).numpy()
    K = np.ones((2, 1, 3, 3) + ref.shape[2:])
    out = pacnp.pacconv2d(x, K, w, b, stride=s, padding=p, dilation=d)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    # shared filters == depthwise conv2d (groups=C) with the filter repeated
    ws = rng.standard_normal((1, 1, 3, 3))
    ref = torch.nn.functional.conv2d(
        torch.from_numpy(x),
        torch.from_numpy(ws).repeat(3, 1, 1, 1),
        stride=s,
        padding=p,
        dilation=d,
        groups=3,
    ).numpy()
    out = pacnp.pacconv2d(x, K, ws, stride=s, padding=p, dilation=d, shared_filters=True)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "k,s,p,op,d",
    [(3, 1, 1, 0, 1), (5, 2, 2, 1, 1), (3, 2, 0, 1, 2), (3, 3, 1, 2, 1), (5, 2, 1, 0, 2)],
)
def test_identity_ones_kernel_is_torch_conv_transpose2d(k, s, p, op, d):
    import torch

    rng = np.random.default_rng(k + s + p)
    x = rng.standard_normal((2, 3, 5, 4))
    w = rng.standard_normal((3, 4, k, k))
    b = rng.standard_normal(4)
    ref = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x),
        torch.from_numpy(w),
        torch.from_numpy(b),
        stride=s,
        padding=p,
        output_padding=op,
        dilation=d,
    ).numpy()
    K = np.ones((2, 1, k, k) + ref.shape[2:])
    out = pacnp.pacconv_transpose2d(x, K, w, b, stride=s, padding=p, output_padding=op, dilation=d)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (3, 2, 1), (5, 2, 2), (5, 3, 1), (3, 1, 0)])
def test_identity_normalised_constant_guide_pool_is_avg_pool2d(k, s, p):
    import torch

    rng = np.random.default_rng(k * s)
    x = rng.standard_normal((2, 3, 9, 11))
    guide = np.full((2, 4, 9, 11), 0.7)
    K, _ = pacnp.packernel2d(guide, k, stride=s, padding=p, normalize_kernel=True)
    out = pacnp.pacpool2d(x, K, k, stride=s, padding=p)
    ref = torch.nn.functional.avg_pool2d(
        torch.from_numpy(x), k, stride=s, padding=p, count_include_pad=False
    ).numpy()
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


def test_identity_gaussian_constant_guide_conv_is_conv2d():
    """K from a constant guide is 1 on valid taps: PAC reduces to the plain convolution."""
    import torch

    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 8, 8))
    w = rng.standard_normal((3, 2, 5, 5))
    K, _ = pacnp.packernel2d(np.zeros((1, 1, 8, 8)), 5, padding=2)
    out = pacnp.pacconv2d(x, K, w, padding=2)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=2).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


def test_flipped_weight_checkpoint_conversion():
    """The 2019 code paired K tap i with weight tap i; flipping the weights converts."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 2, 4, 4))
    K = rng.standard_normal((1, 1, 3, 3, 8, 8))
    w_old = rng.standard_normal((2, 3, 3, 3))
    # old convention written out directly: out[o, Y] = Σ K[i, Y] w_old[c, o, i] x[c, n(i, Y)]
    out_old = np.zeros((1, 3, 8, 8))
    xp = np.zeros((2, 8 + 2, 8 + 2))
    xp[:, 1:9:2, 1:9:2] = x[0]  # zero-inserted (stride 2), padded by 1 (k=3, p=1, op=1)
    for o, Y, X in itertools.product(range(3), range(8), range(8)):
        out_old[0, o, Y, X] = sum(
            K[0, 0, i, j, Y, X] * w_old[c, o, i, j] * xp[c, Y + i, X + j]
            for c in range(2)
            for i in range(3)
            for j in range(3)
        )
    out_new = pacnp.pacconv_transpose2d(
        x, K, np.ascontiguousarray(w_old[:, :, ::-1, ::-1]), stride=2, padding=1, output_padding=1
    )
    np.testing.assert_allclose(out_new, out_old, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- hypothesis
@settings(max_examples=25, deadline=None)
@given(st.data())
def test_random_configurations_two_step_path(data):
    k = data.draw(st.sampled_from([1, 3, 5]), "k")
    s = data.draw(st.integers(1, 3), "stride")
    d = data.draw(st.integers(1, 2), "dilation")
    tr = data.draw(st.booleans(), "transposed")
    kt = data.draw(st.sampled_from(KERNEL_TYPES), "kernel_type")
    sm = data.draw(st.sampled_from(SMOOTH_TYPES), "smooth")
    cw, norm, masked = (data.draw(st.booleans(), n) for n in ("channel_wise", "normalize", "mask"))
    seed = data.draw(st.integers(0, 2**31), "seed")
    rng = np.random.default_rng(seed)
    C = data.draw(st.integers(1, 3), "C")
    guide, kw = kernel_case(rng, k, s, d, kt, sm, cw, norm, masked, tr, B=1, C=C)
    K, _ = pacnp.packernel2d(guide, k, **kw)
    assert_close(K, R.packernel2d(guide, k, **kw)[0], "K", **F64)
    # feed the kernel to the matching op
    Ho, Wo = K.shape[-2:]
    p, op = kw["padding"], kw["output_padding"]
    if tr:
        x = rng.standard_normal(
            (
                1,
                C,
                (guide.shape[2] - 1 + 2 * p - d * (k - 1) - op) // s + 1,
                (guide.shape[3] - 1 + 2 * p - d * (k - 1) - op) // s + 1,
            )
        )
        w = rng.standard_normal((C, 2, k, k))
        args, okw = (x, K, w), dict(stride=s, padding=p, output_padding=op, dilation=d)
        fwd, bwd, rfwd, rbwd = OPS["transpose"]
    else:
        x = rng.standard_normal((1, C) + guide.shape[2:])
        w = rng.standard_normal((2, C, k, k))
        args, okw = (x, K, w), dict(stride=s, padding=p, dilation=d)
        fwd, bwd, rfwd, rbwd = OPS["conv"]
    out = fwd(*args, **okw)
    assert_close(out, rfwd(*args, **okw), "output", **F64)
    g = rng.standard_normal(out.shape)
    for a, b in zip(bwd(g, *args, **okw), rbwd(g, *args, **okw)):
        assert_close(a, b, "gradient", **F64)


@pytest.mark.parametrize("transposed", [False, True])
def test_dense_forward_in_column_tiles_vs_reference(transposed):
    """Wide rows with Cout·C·k² large enough that the dense forward multiplies each row in
    column tiles (pacnp.cpu.conv.gemm_tile; config.GEMM_SMALL_MNK), stride-1 runs and the
    phases of a transposed convolution alike."""
    from pacnp import config

    rng = np.random.default_rng(11)
    C, Cout, k = 16, 32, 5
    m = C * k * k
    tile = (config.GEMM_SMALL_MNK // (Cout * m)) // config.GEMM_MIN_TILE * config.GEMM_MIN_TILE
    W = 2 * tile + 7  # two full tiles and a ragged one
    if transposed:
        x = rng.standard_normal((1, C, 3, (W + 1) // 2))
        kw = dict(stride=2, padding=2, output_padding=W % 2 == 0 and 1 or 0)
        guide_hw = (5, 2 * ((W + 1) // 2) - 1 + kw["output_padding"])
        guide = rng.standard_normal((1, 2) + guide_hw)
        K = pacnp.packernel2d(guide, k, transposed=True, **kw)[0]
        weight = rng.standard_normal((C, Cout, k, k))
        out = pacnp.pacconv_transpose2d(x, K, weight, None, **kw)
        expect = R.pacconv_transpose2d(x, K, weight, None, **kw)
    else:
        x = rng.standard_normal((1, C, 3, W))
        guide = rng.standard_normal((1, 2, 3, W))
        K = pacnp.packernel2d(guide, k, padding=2)[0]
        weight = rng.standard_normal((Cout, C, k, k))
        bias = rng.standard_normal(Cout)
        out = pacnp.pacconv2d(x, K, weight, bias, padding=2)
        expect = R.pacconv2d(x, K, weight, bias, padding=2)
    assert tile >= config.GEMM_MIN_TILE and out.shape[-1] > 2 * tile
    assert_close(out, expect, "tiled dense forward", rtol=1e-10, atol=1e-10)
