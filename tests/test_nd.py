"""The N-D operations (issue 16): ``packernel{1,3}d``, ``pacconv{1,3}d``,
``pacconv_transpose{1,3}d``, ``pacpool{1,3}d`` and their ``_fused`` variants, forward and
backward, in float64:

* the N-D reference (tests/reference.py) against scalar loops written from docs/semantics.md,
  against its own finite differences, and against itself one dimension lower (an axis of
  size 1 with a one-tap window changes nothing);
* every pacnp forward against the reference over grids whose geometry differs per axis, every
  backward against the reference's gradient and against central finite differences of the
  forward, the fused path against the two-step path (2-D runs through the same grids, as the
  cross-check that the grids and the N-D reference agree with the 2-D functions);
* identities: K ≡ 1 gives torch's conv1d / conv3d / conv_transpose1d / conv_transpose3d, a
  normalised K of a constant guide torch's avg_pool1d / avg_pool3d;
* bad input: the error names the function and the argument.
"""

import itertools
import re
import zlib

import numpy as np
import pytest
import reference as R
from cases import (
    EXACT,
    F64,
    KERNEL_TYPES,
    ND_DIMS,
    ND_FUSED,
    ND_OPS,
    SMOOTH_TYPES,
    assert_close,
    nd_fn,
    nd_fused_case,
    nd_fused_grid,
    nd_kernel_case,
    nd_kernel_grid,
    nd_op_case,
    nd_op_grid,
    two_step_nd,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import pacnp

KERNEL_GRADS = ("guide", "inv_alpha", "inv_lambda", "smooth_kernel")
OP_GRADS = ("input", "kernel", "weight", "bias")
FUSED_GRADS = ("input", "guide", "weight", "bias", "inv_alpha", "inv_lambda", "smooth_kernel")
POOL_FUSED_GRADS = ("input", "guide", "inv_alpha", "inv_lambda", "smooth_kernel")


def seeded(*key):
    """A generator seeded by a test's parameters (the same numbers on every run)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def directional_fd(f, args, kwargs, index, direction, eps=1e-5):
    """The derivative of ``f`` along ``direction`` in positional argument ``index`` (or keyword
    ``index``): central differences at steps ε and ε/2, Richardson-extrapolated,
    ``(4 D(ε/2) - D(ε)) / 3``, so that the truncation error is O(ε⁴). The inv kernels near
    ``Σ Δ² = 0`` are strongly curved, and a full_N smoothing kernel in 3-D moves every
    feature at once: there a plain central difference is off by O(ε²) times the third
    derivative, 1e-6 relative at ε = 1e-6."""

    def at(step):
        a, kw = list(args), dict(kwargs)
        if isinstance(index, int):
            a[index] = a[index] + step * direction
        else:
            kw[index] = np.asarray(kw[index]) + step * direction
        return f(*a, **kw)

    def central(h):
        return (at(h) - at(-h)) / (2 * h)

    return (4 * central(eps / 2) - central(eps)) / 3


def check_fd(loss, args, kwargs, grads, names, rng, what):
    """Every gradient that is not None against a central difference of ``loss`` along a random
    direction; ``names[i]`` is the positional index or keyword of ``grads[i]``."""
    checked = 0
    for name, grad in zip(names, grads):
        if grad is None or name is None:
            continue
        base = args[name] if isinstance(name, int) else kwargs[name]
        v = rng.standard_normal(np.shape(base))
        fd = directional_fd(loss, args, kwargs, name, v)
        an = float(np.sum(np.asarray(grad) * v))
        assert abs(an - fd) <= 1e-6 * (1 + abs(fd)), f"{what} d_{name}: analytic {an}, FD {fd}"
        checked += 1
    return checked


# =========================================================================== grids
def kernel_id(c):
    return f"{c[0]}d-k{''.join(map(str, c[1]))}-{c[6]}-{c[7]}" + ("-transposed" if c[11] else "")


def op_id(c):
    return f"{c[0]}-{c[1]}d-k{''.join(map(str, c[2]))}"


def fused_id(c):
    return f"{c[1]}-{c[0]}d-k{''.join(map(str, c[2][1]))}-{c[2][6]}-{c[2][7]}"


def grid_params(grid, small, ident):
    """``grid`` as one-argument pytest parameters named by ``ident``; the entries that are not
    in ``small`` (by identity) carry the ``full_grid`` mark, which the ``backend`` fixture skips
    in the CUDA simulator (cases.simulator_grid, for a test that takes the case whole)."""
    return [
        pytest.param(
            c,
            id=ident(c),
            marks=() if any(c is x for x in small) else pytest.mark.full_grid,
        )
        for c in grid
    ]


def first(grid, pred):
    """The first entry of ``grid`` for which ``pred`` holds (by identity, for grid_params)."""
    return next(c for c in grid if pred(c))


KERNEL_GRID = [c for nd in ND_DIMS for c in nd_kernel_grid(nd)]
OP_GRID = [c for nd in ND_DIMS for c in nd_op_grid(nd)]
FUSED_GRID = [(nd,) + c for nd in ND_DIMS for c in nd_fused_grid(nd)]
#: what the CUDA simulator runs (it runs every GPU thread as a Python thread): per function
#: one 1-D case and one 3-D case, windows of more than one tap, kernels other than the
#: plain gaussian where the grid has them, two axes of three taps in 3-D
SMALL_KERNEL_GRID = [
    first(KERNEL_GRID, lambda c: c[0] == 1 and c[1][0] > 1 and c[6] != "gaussian"),
    first(KERNEL_GRID, lambda c: c[0] == 3 and max(c[1]) <= 3 and sorted(c[1])[1] > 1),
]
SMALL_OP_GRID = [
    first(OP_GRID, lambda c, op=op: c[1] == 1 and c[0] == op and c[2][0] > 1)
    for op in ("conv", "transpose", "pool")
] + [first(OP_GRID, lambda c: c[1] == 3 and c[0] == "transpose" and min(c[2]) == max(c[2]) == 3)]
SMALL_FUSED_GRID = [
    first(
        FUSED_GRID,
        lambda c, op=op: c[0] == 1 and c[1] == op and c[2][1][0] > 1 and c[2][6] != "gaussian",
    )
    for op in ("conv", "transpose", "pool")
] + [
    min(
        (c for c in FUSED_GRID if c[0] == 3 and sorted(c[2][1])[1] > 1),
        key=lambda c: np.prod(c[2][1]),  # the fewest taps
    )
]


def test_grids_cover_the_options():
    """The random grids hold every option they are meant to test, in 1-D and 3-D, with a
    geometry that differs between axes; the simulator subsets are in the grids."""
    for nd in (1, 3):
        ks = [c for c in KERNEL_GRID if c[0] == nd]
        assert {c[6] for c in ks} == {
            "gaussian",
            "inv_0.5_-1",
            "inv_1_-0.5_asym",
            "inv_0.3_0.7_fixed",
            "inv_0.2_0.5_asym_fixed",
        }
        assert {c[7] for c in ks} == {"none", "gaussian", "average_3", "full_3", "full_5"}
        for flag in (8, 9, 10, 11):
            assert {c[flag] for c in ks} == {False, True}, flag
        ops = [c for c in OP_GRID if c[1] == nd]
        assert {c[0] for c in ops} == {"conv", "transpose", "pool"}
        assert {(c[7], c[8], c[9]) for c in ops if c[0] == "conv"} == {
            (False, False, True),
            (True, True, False),
            (False, True, False),
            (True, False, True),
        }
        if nd == 3:
            for i in (1, 2, 3, 4):  # k, stride, padding, dilation differ between axes somewhere
                assert any(len(set(c[i])) > 1 for c in ks), i
                assert any(len(set(c[i + 1])) > 1 for c in ops), i
    for grid, small in (
        (KERNEL_GRID, SMALL_KERNEL_GRID),
        (OP_GRID, SMALL_OP_GRID),
        (FUSED_GRID, SMALL_FUSED_GRID),
    ):
        params = grid_params(grid, small, repr)
        unmarked = [p for p in params if not p.marks]
        assert 0 < len(unmarked) == len(small) < len(grid)


# =========================================================================== the reference
def _smoothing_kernel(kw, nd):
    t = kw["smooth_kernel_type"]
    if t == "none":
        return None
    if t == "gaussian":
        w = (0.25, 0.5, 0.25)
        return {
            u: float(np.prod([w[a] for a in u])) for u in itertools.product(range(3), repeat=nd)
        }
    n = int(t.split("_")[1])
    if t.startswith("average"):
        return {u: 1.0 / n**nd for u in itertools.product(range(n), repeat=nd)}
    S = np.asarray(kw["smooth_kernel"]).reshape((n,) * nd)
    return {u: float(S[u]) for u in itertools.product(range(n), repeat=nd)}


def scalar_packernel(guide, k, kw):
    """packernel{nd}d one output position and one tap at a time, from docs/semantics.md."""
    nd = guide.ndim - 2
    B, Cg = guide.shape[:2]
    size = guide.shape[2:]
    s, p, op, d = (kw[n] for n in ("stride", "padding", "output_padding", "dilation"))
    tr, cw = kw["transposed"], kw["channel_wise"]
    r = [d[a] * (k[a] - 1) // 2 for a in range(nd)]
    if tr:
        n_in = [(size[a] - 1 + 2 * p[a] - 2 * r[a] - op[a]) // s[a] + 1 for a in range(nd)]
        out = size
    else:
        out = tuple((size[a] + 2 * p[a] - d[a] * (k[a] - 1) - 1) // s[a] + 1 for a in range(nd))
    S = _smoothing_kernel(kw, nd)
    h = 0 if S is None else max(u[0] for u in S) // 2  # the smoothing radius

    def feature(b, pos):
        if S is None:
            return guide[(b, slice(None)) + pos]
        acc = np.zeros(Cg)
        for u, weight in S.items():
            q = tuple(pos[a] + u[a] - h for a in range(nd))
            if all(0 <= q[a] < size[a] for a in range(nd)):
                acc += weight * guide[(b, slice(None)) + q]
        return acc

    kt = R._parse_kernel_type(kw["kernel_type"])
    alpha = np.broadcast_to(np.asarray(kw.get("inv_alpha", kt["alpha"]), float).ravel(), (Cg,))
    lam = np.broadcast_to(np.asarray(kw.get("inv_lambda", kt["lambda"]), float).ravel(), (Cg,))
    mask = kw.get("mask")
    K = np.zeros((B, Cg if cw else 1) + tuple(k) + out)
    om = np.zeros((B, 1) + out)
    for b in range(B):
        for y in itertools.product(*(range(n) for n in out)):
            c = y if tr else tuple(y[a] * s[a] - p[a] + r[a] for a in range(nd))
            f = feature(b, c)
            n_valid, n_mask = 0, 0.0
            Km = {}
            for t in itertools.product(*(range(n) for n in k)):
                P = tuple(
                    (y[a] - r[a] if tr else y[a] * s[a] - p[a]) + t[a] * d[a] for a in range(nd)
                )
                if tr:
                    q = [P[a] + p[a] - r[a] for a in range(nd)]
                    ok = all(q[a] % s[a] == 0 and 0 <= q[a] // s[a] < n_in[a] for a in range(nd))
                else:
                    ok = all(0 <= P[a] < size[a] for a in range(nd))
                if not ok:
                    continue
                delta = guide[(b, slice(None)) + P] - f
                if kt["asym"]:
                    delta = np.maximum(delta, 0.0)
                sq = delta**2 if cw else np.full(1, np.sum(delta**2))
                if kt["kind"] == "gaussian":
                    val = np.exp(-0.5 * sq)
                else:
                    val = (alpha if cw else alpha[:1]) + (sq + 1e-4) ** (
                        (lam if cw else lam[:1]) / 2
                    )
                m = 1.0 if mask is None else float(mask[(b, 0) + P])
                Km[t] = val * m
                n_valid += 1
                n_mask += m
            total = sum(Km.values()) if Km else 0.0
            for t, v in Km.items():
                if kw["normalize_kernel"]:
                    v = np.where(total != 0, v / np.where(total != 0, total, 1), 0.0)
                elif mask is not None:
                    v = v * n_valid / n_mask if n_mask > 0 else 0.0 * v
                K[(b, slice(None)) + t + y] = v
            om[(b, 0) + y] = n_mask > 0
    return K, (om if mask is not None else None)


def scalar_op(op, x, K, w, b, k, kw):
    """pacconv / pacconv_transpose / pacpool one output position and one tap at a time."""
    nd = x.ndim - 2
    B, C = x.shape[:2]
    size = x.shape[2:]
    s, p, d = (kw[n] for n in ("stride", "padding", "dilation"))
    shared = kw.get("shared_filters", False)
    out_size = K.shape[2 + nd :]
    if op == "pool" or shared:
        Cout = C
    else:
        Cout = w.shape[1] if op == "transpose" else w.shape[0]
    out = np.zeros((B, Cout) + out_size)
    for bb, y in itertools.product(range(B), itertools.product(*(range(n) for n in out_size))):
        for t in itertools.product(*(range(n) for n in k)):
            if op == "transpose":
                q = [y[a] + p[a] - d[a] * (k[a] - 1) + t[a] * d[a] for a in range(nd)]
                if not all(q[a] % s[a] == 0 and 0 <= q[a] // s[a] < size[a] for a in range(nd)):
                    continue
                pos = tuple(q[a] // s[a] for a in range(nd))
                wt = tuple(k[a] - 1 - t[a] for a in range(nd))  # the flipped weight tap
            else:
                pos = tuple(y[a] * s[a] - p[a] + t[a] * d[a] for a in range(nd))
                if not all(0 <= pos[a] < size[a] for a in range(nd)):
                    continue
                wt = tuple(t)
            for c in range(C):
                a = K[(bb, c if K.shape[1] > 1 else 0) + tuple(t) + y] * x[(bb, c) + pos]
                if op == "pool":
                    out[(bb, c) + y] += a
                elif shared:
                    out[(bb, c) + y] += w[(0, 0) + wt] * a
                elif op == "transpose":
                    out[(bb, slice(None)) + y] += w[(c, slice(None)) + wt] * a
                else:
                    out[(bb, slice(None)) + y] += w[(slice(None), c) + wt] * a
        if b is not None:
            out[(bb, slice(None)) + y] += b
    return out


#: 3-D (and 1-D) configurations for the scalar loops: few voxels, every option somewhere
SCALAR_KERNEL_CASES = [
    (3, (3, 1, 3), (2, 1, 1), (1, 0, 0), (1, 1, 2), (0, 0, 0), "gaussian", "gaussian",
     False, True, True, False),
    (3, (3, 3, 1), (2, 1, 3), (1, 1, 0), (1, 2, 1), (1, 0, 2), "inv_0.5_-1_asym", "full_3",
     True, False, True, True),
    (3, (1, 3, 3), (1, 2, 1), (0, 0, 1), (2, 1, 1), (0, 0, 0), "inv_0.3_0.7", "average_3",
     False, False, False, False),
    (1, (5,), (2,), (2,), (1,), (1,), "inv_1_-0.5", "full_5", True, True, True, True),
    (1, (3,), (3,), (1,), (2,), (0,), "gaussian", "none", False, False, True, False),
]  # fmt: skip


@pytest.mark.parametrize("case", SCALAR_KERNEL_CASES, ids=kernel_id)
def test_reference_packernel_nd_vs_scalar_loops(case):
    rng = seeded("scalar kernel", case)
    guide, kw = nd_kernel_case(rng, *case, B=1, C=2)
    k = case[1]
    K, om = R.packernel_nd(guide, k, nd=case[0], **kw)
    K_loop, om_loop = scalar_packernel(guide, k, kw)
    assert_close(K, K_loop, "K", rtol=1e-12, atol=1e-13)
    assert_close(om, om_loop, "output_mask", **EXACT)


#: (op, nd, k, stride, padding, dilation, output_padding, shared, one K per channel, bias)
SCALAR_OP_CASES = [
    ("conv", 3, (3, 1, 3), (2, 1, 1), (1, 0, 2), (1, 1, 2), (0, 0, 0), False, True, True),
    ("conv", 1, (3,), (2,), (2,), (2,), (0,), True, False, True),
    ("transpose", 3, (3, 3, 1), (2, 1, 3), (1, 0, 0), (1, 2, 1), (1, 0, 2), False, False, True),
    ("transpose", 3, (1, 3, 3), (1, 3, 2), (0, 1, 1), (2, 1, 1), (1, 2, 0), True, True, False),
    ("transpose", 1, (5,), (3,), (2,), (1,), (2,), False, True, False),
    ("pool", 3, (3, 3, 1), (1, 2, 2), (1, 1, 0), (2, 1, 1), (0, 0, 0), False, True, False),
    ("pool", 1, (3,), (1,), (0,), (3,), (0,), False, False, False),
]


@pytest.mark.parametrize("case", SCALAR_OP_CASES, ids=op_id)
def test_reference_ops_nd_vs_scalar_loops(case):
    rng = seeded("scalar op", case)
    args, kw = nd_op_case(rng, *case, B=1, C=2, Co=2)
    op, nd, k = case[:3]
    if op == "pool":
        got = R.pacpool_nd(*args, nd=nd, **kw)
        want = scalar_op(op, args[0], args[1], None, None, k, kw)
    else:
        fn = R.pacconv_nd if op == "conv" else R.pacconv_transpose_nd
        got = fn(*args, nd=nd, **kw)
        want = scalar_op(op, *args, k, kw)
    assert_close(got, want, op, rtol=1e-12, atol=1e-12)


def _insert_axis(a, positions, size=1):
    """``a`` with a new axis of ``size`` 1 at each of ``positions`` (ascending)."""
    for pos in positions:
        a = np.expand_dims(a, pos)
    return a


def _with(v, at, new):
    """The per-axis tuple ``v`` with ``new`` inserted at axis ``at``."""
    v = tuple(v)
    return v[:at] + (new,) + v[at:]


@pytest.mark.parametrize("lib", [R, pacnp], ids=["reference", "pacnp"])
@pytest.mark.parametrize("nd", [1, 2])
def test_one_dimension_more_with_a_trivial_axis(lib, nd):
    """An nd-D call equals the (nd+1)-D call with an extra axis of size 1 (one tap, any stride
    and dilation) at any position: the same kernel, the same op outputs, the same gradients.
    Smoothing is none or a full_N kernel that is zero off the centre plane (the fixed ones
    would also weight the zero padding of the new axis)."""
    hi = nd + 1
    tol = EXACT if lib is R else F64
    kernels = [c for c in nd_kernel_grid(nd) if c[7] in ("none", "full_3", "full_5")]
    for n, case in enumerate(kernels):
        at = n % hi  # where the new axis goes among the spatial axes
        rng = seeded("trivial axis", nd, n)
        guide, kw = nd_kernel_case(rng, *case)
        k = case[1]
        kw_hi = dict(kw)
        for name, new in (("stride", 1 + n % 3), ("padding", 0), ("dilation", 1 + n % 2)):
            kw_hi[name] = _with(kw[name], at, new)
        kw_hi["output_padding"] = _with(kw["output_padding"], at, 0)
        if "mask" in kw:
            kw_hi["mask"] = np.expand_dims(kw["mask"], 2 + at)
        if "smooth_kernel" in kw:
            S = kw["smooth_kernel"]
            lead = S.ndim - nd
            N = S.shape[-1]
            S_hi = np.zeros(S.shape[:lead] + (N,) * hi)
            centre = (slice(None),) * (lead + at) + (N // 2,)
            S_hi[centre] = S
            kw_hi["smooth_kernel"] = S_hi
        guide_hi = np.expand_dims(guide, 2 + at)
        k_hi = _with(k, at, 1)
        K, om = nd_fn(lib, "packernel2d", nd)(guide, k, **kw)
        K_hi, om_hi = nd_fn(lib, "packernel2d", hi)(guide_hi, k_hi, **kw_hi)
        assert K_hi.shape == _insert_axis(K, (2 + at, 2 + hi + at)).shape
        assert_close(K_hi.reshape(K.shape), K, f"K {case}", **tol)
        if om is not None:
            assert_close(om_hi.reshape(om.shape), om, f"output_mask {case}", **tol)
        gK = rng.standard_normal(K.shape)
        grads = nd_fn(lib, "packernel2d_backward", nd)(gK, guide, k, **kw)
        grads_hi = nd_fn(lib, "packernel2d_backward", hi)(
            gK.reshape(K_hi.shape), guide_hi, k_hi, **kw_hi
        )
        for name, g, g_hi in zip(KERNEL_GRADS, grads, grads_hi):
            if name == "smooth_kernel" and g is not None:
                g_hi = g_hi[centre]  # the rest is the gradient of the zeros off the plane
            assert_close(
                None if g_hi is None else np.reshape(g_hi, np.shape(g)), g, f"d_{name}", **tol
            )

    for n, case in enumerate(nd_op_grid(nd)):
        at = (n + 1) % hi
        op = case[0]
        rng = seeded("trivial axis op", nd, n)
        args, kw = nd_op_case(rng, *case)
        x, K = args[:2]
        kw_hi = dict(kw)
        for name, new in (("stride", 1 + n % 3), ("padding", 0), ("dilation", 1 + n % 2)):
            kw_hi[name] = _with(kw[name], at, new)
        if op == "transpose":
            kw_hi["output_padding"] = _with(kw["output_padding"], at, 0)
        x_hi = np.expand_dims(x, 2 + at)
        K_hi = _insert_axis(K, (2 + at, 2 + hi + at))
        if op == "pool":
            args_hi = (x_hi, K_hi, _with(case[2], at, 1))
        else:
            args_hi = (x_hi, K_hi, np.expand_dims(args[2], 2 + at), args[3])
        fwd, bwd = (nd_fn(lib, name, nd) for name in ND_OPS[op])
        fwd_hi, bwd_hi = (nd_fn(lib, name, hi) for name in ND_OPS[op])
        out = fwd(*args, **kw)
        out_hi = fwd_hi(*args_hi, **kw_hi)
        assert out_hi.shape == np.expand_dims(out, 2 + at).shape, (case, out_hi.shape)
        assert_close(out_hi.reshape(out.shape), out, f"{op} {case}", **tol)
        g = rng.standard_normal(out.shape)
        grads = bwd(g, *args, **kw)
        grads_hi = bwd_hi(g.reshape(out_hi.shape), *args_hi, **kw_hi)
        for name, a, a_hi in zip(OP_GRADS, grads, grads_hi):
            assert_close(None if a_hi is None else a_hi.reshape(np.shape(a)), a, f"d_{name}", **tol)


@pytest.mark.parametrize("case", [c for c in KERNEL_GRID if c[0] != 2][::2], ids=kernel_id)
def test_reference_packernel_nd_backward_vs_finite_differences(case):
    nd = case[0]
    rng = seeded("ref kernel fd", case)
    guide, kw = nd_kernel_case(rng, *case, B=1)
    k = case[1]
    K, _ = R.packernel_nd(guide, k, nd=nd, **kw)
    gK = rng.standard_normal(K.shape)
    grads = R.packernel_nd_backward(gK, guide, k, nd=nd, **kw)
    loss = lambda g_, **o: np.sum(gK * R.packernel_nd(g_, k, nd=nd, **o)[0])  # noqa: E731
    check_fd(loss, (guide,), kw, grads, (0, "inv_alpha", "inv_lambda", "smooth_kernel"), rng, case)


@pytest.mark.parametrize("case", [c for c in OP_GRID if c[1] != 2][::2], ids=op_id)
def test_reference_ops_nd_backward_vs_finite_differences(case):
    op, nd = case[:2]
    rng = seeded("ref op fd", case)
    args, kw = nd_op_case(rng, *case, B=1)
    fwd = {"conv": R.pacconv_nd, "transpose": R.pacconv_transpose_nd, "pool": R.pacpool_nd}[op]
    bwd = {
        "conv": R.pacconv_nd_backward,
        "transpose": R.pacconv_transpose_nd_backward,
        "pool": R.pacpool_nd_backward,
    }[op]
    out = fwd(*args, nd=nd, **kw)
    g = rng.standard_normal(out.shape)
    grads = bwd(g, *args, nd=nd, **kw)
    loss = lambda *a, **o: np.sum(g * fwd(*a, nd=nd, **o))  # noqa: E731
    names = (0, 1) if op == "pool" else (0, 1, 2, 3)
    assert check_fd(loss, args, kw, grads, names, rng, case) >= 2


# =========================================================================== pacnp vs reference
@pytest.mark.parametrize("case", grid_params(KERNEL_GRID, SMALL_KERNEL_GRID, kernel_id))
def test_packernel_nd_forward_backward_vs_reference(backend, case):
    nd = case[0]
    rng = seeded("kernel", case)
    guide, kw = nd_kernel_case(rng, *case, **backend.pick({}, dict(B=1, C=2)))
    k = case[1]
    K, om = backend.call(nd_fn(pacnp, "packernel2d", nd), guide, k, **kw)
    K_ref, om_ref = nd_fn(R, "packernel2d", nd)(guide, k, **kw)
    assert K.dtype == np.float64
    assert_close(K, K_ref, "K", **F64)
    assert_close(om, om_ref, "output_mask", **F64)
    gK = rng.standard_normal(K.shape)
    ours = backend.call(nd_fn(pacnp, "packernel2d_backward", nd), gK, guide, k, **kw)
    ref = nd_fn(R, "packernel2d_backward", nd)(gK, guide, k, **kw)
    assert len(ours) == 4
    for name, a, b in zip(KERNEL_GRADS, ours, ref):
        assert_close(a, b, f"d_{name}", rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("case", KERNEL_GRID[::2], ids=kernel_id)
def test_packernel_nd_backward_vs_finite_differences(case):
    nd = case[0]
    rng = seeded("kernel fd", case)
    guide, kw = nd_kernel_case(rng, *case, B=1)
    k = case[1]
    fwd = nd_fn(pacnp, "packernel2d", nd)
    K, _ = fwd(guide, k, **kw)
    gK = rng.standard_normal(K.shape)
    grads = nd_fn(pacnp, "packernel2d_backward", nd)(gK, guide, k, **kw)
    loss = lambda g_, **o: np.sum(gK * fwd(g_, k, **o)[0])  # noqa: E731
    check_fd(loss, (guide,), kw, grads, (0, "inv_alpha", "inv_lambda", "smooth_kernel"), rng, case)


@pytest.mark.parametrize("case", grid_params(OP_GRID, SMALL_OP_GRID, op_id))
def test_op_nd_forward_backward_vs_reference(backend, case):
    op, nd = case[:2]
    rng = seeded("op", case)
    args, kw = nd_op_case(rng, *case, **backend.pick({}, dict(B=1, C=2, Co=2)))
    fwd, bwd = (nd_fn(pacnp, name, nd) for name in ND_OPS[op])
    rfwd, rbwd = (nd_fn(R, name, nd) for name in ND_OPS[op])
    out = backend.call(fwd, *args, **kw)
    assert_close(out, rfwd(*args, **kw), "forward", **F64)
    g = rng.standard_normal(out.shape)
    ours = backend.call(bwd, g, *args, **kw)
    ref = rbwd(g, *args, **kw)
    assert len(ours) == len(ref)
    for name, a, b in zip(OP_GRADS, ours, ref):
        assert_close(a, b, f"d_{name}", **F64)
    # needs: the gradients not asked for are None, the others unchanged
    needs = tuple(i % 2 == 0 for i in range(len(ours)))
    part = backend.call(bwd, g, *args, **kw, needs=needs)
    for want, a, full in zip(needs, part, ours):
        if want:
            assert_close(a, full, "needs subset", **EXACT)
        else:
            assert a is None


@pytest.mark.parametrize("case", OP_GRID[::2], ids=op_id)
def test_op_nd_backward_vs_finite_differences(case):
    op, nd = case[:2]
    rng = seeded("op fd", case)
    args, kw = nd_op_case(rng, *case, B=1)
    fwd, bwd = (nd_fn(pacnp, name, nd) for name in ND_OPS[op])
    out = fwd(*args, **kw)
    g = rng.standard_normal(out.shape)
    grads = bwd(g, *args, **kw)
    loss = lambda *a, **o: np.sum(g * fwd(*a, **o))  # noqa: E731
    names = (0, 1) if op == "pool" else (0, 1, 2, 3)
    assert check_fd(loss, args, kw, grads, names, rng, case) >= 2


# =========================================================================== fused
@pytest.mark.parametrize("case", grid_params(FUSED_GRID, SMALL_FUSED_GRID, fused_id))
def test_fused_nd_equals_two_step(backend, case):
    nd, op, kcase, shared = case
    rng = seeded("fused", nd, op, kcase, shared)
    lead, geo, kw, k = nd_fused_case(
        rng, op, kcase, shared, **backend.pick({}, dict(B=1, C=2, Cout=2))
    )
    out, om = backend.call(nd_fn(pacnp, ND_FUSED[op][0], nd), *lead, **geo, **kw)
    g = rng.standard_normal(out.shape)
    grads = backend.call(nd_fn(pacnp, ND_FUSED[op][1], nd), g, *lead, **geo, **kw)
    names = POOL_FUSED_GRADS if op == "pool" else FUSED_GRADS
    assert len(grads) == len(names)
    for lib, tol, grad_tol in (
        (pacnp, EXACT, dict(rtol=1e-10, atol=1e-11)),
        (R, F64, dict(rtol=1e-9, atol=1e-11)),
    ):
        ref_out, ref_om, ref_grads = two_step_nd(nd, op, lead, k, geo, kw, g, lib=lib)
        what = f"vs the two-step path of {lib.__name__}"
        assert_close(out, ref_out, f"output {what}", **tol)
        assert_close(om, ref_om, f"output_mask {what}", **EXACT)
        for name, a, r in zip(names, grads, ref_grads):
            assert_close(a, r, f"d_{name} {what}", **grad_tol)


@pytest.mark.parametrize(
    "case", [c for c in FUSED_GRID if c[0] != 2 and c[1] == "transpose"], ids=fused_id
)
def test_fused_nd_transposed_on_dirty_memory(dirty_memory, case):
    """With NaN in every uninitialised host buffer, the fused transposed op in 1-D and 3-D
    still matches the reference: its stripes of K are never read at the taps that meet no
    sample (folded rows included: a depthwise weight gradient once read them there)."""
    nd, op, kcase, shared = case
    rng = seeded("fused dirty", nd, op, kcase, shared)
    lead, geo, kw, k = nd_fused_case(rng, op, kcase, shared, B=1)
    out, om = nd_fn(pacnp, ND_FUSED[op][0], nd)(*lead, **geo, **kw)
    g = rng.standard_normal(out.shape)
    grads = nd_fn(pacnp, ND_FUSED[op][1], nd)(g, *lead, **geo, **kw)
    ref_out, ref_om, ref_grads = two_step_nd(nd, op, lead, k, geo, kw, g, lib=R)
    assert_close(out, ref_out, "output", **F64)
    assert_close(om, ref_om, "output_mask", **EXACT)
    for name, a, r in zip(FUSED_GRADS, grads, ref_grads):
        assert_close(a, r, f"d_{name}", rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("case", [c for c in FUSED_GRID if c[0] != 2][::3], ids=fused_id)
def test_fused_nd_backward_vs_finite_differences(case):
    nd, op, kcase, shared = case
    rng = seeded("fused fd", nd, op, kcase, shared)
    lead, geo, kw, k = nd_fused_case(rng, op, kcase, shared, B=1)
    fwd = nd_fn(pacnp, ND_FUSED[op][0], nd)
    out, _ = fwd(*lead, **geo, **kw)
    g = rng.standard_normal(out.shape)
    grads = nd_fn(pacnp, ND_FUSED[op][1], nd)(g, *lead, **geo, **kw)
    loss = lambda *a, **o: np.sum(g * fwd(*a, **geo, **o)[0])  # noqa: E731
    names = (0, 1, "inv_alpha", "inv_lambda", "smooth_kernel")
    if op != "pool":
        names = (0, 1, 2, 3) + names[2:]
    assert check_fd(loss, lead, kw, grads, names, rng, (nd, op, kcase)) >= 2


# =========================================================================== identities
#: per-axis geometries (kernel size, stride, padding, dilation) of the torch identities
CONV_GEOMETRIES = {
    1: [((3,), (1,), (1,), (1,)), ((5,), (2,), (3,), (2,)), ((1,), (3,), (0,), (1,))],
    3: [
        ((3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1)),
        ((3, 1, 5), (2, 1, 3), (1, 0, 3), (1, 2, 1)),
        ((1, 3, 3), (1, 3, 2), (0, 2, 1), (1, 2, 2)),
    ],
}
IDENTITY_SIZES = {1: (11,), 3: (5, 6, 7)}


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize(
    "nd,geometry", [(nd, g) for nd in (1, 3) for g in CONV_GEOMETRIES[nd]], ids=str
)
def test_identity_ones_kernel_is_torch_conv(nd, geometry):
    torch = _torch()
    k, s, p, d = geometry
    conv = getattr(torch.nn.functional, f"conv{nd}d")
    rng = seeded("conv identity", nd, geometry)
    x = rng.standard_normal((2, 3) + IDENTITY_SIZES[nd])
    w = rng.standard_normal((4, 3) + k)
    b = rng.standard_normal(4)
    t = torch.from_numpy
    ref = conv(t(x), t(w), t(b), stride=s, padding=p, dilation=d).numpy()
    K = np.ones((2, 1) + k + ref.shape[2:])
    out = nd_fn(pacnp, "pacconv2d", nd)(x, K, w, b, stride=s, padding=p, dilation=d)
    assert_close(out, ref, "K ≡ 1", **EXACT)
    # shared filters == the depthwise convolution (groups=C) with the filter repeated
    ws = rng.standard_normal((1, 1) + k)
    ref = conv(
        t(x), t(ws).repeat((3,) + (1,) * (nd + 1)), stride=s, padding=p, dilation=d, groups=3
    )
    out = nd_fn(pacnp, "pacconv2d", nd)(
        x, K, ws, stride=s, padding=p, dilation=d, shared_filters=True
    )
    assert_close(out, ref.numpy(), "K ≡ 1, shared filters", **EXACT)
    # the fused path with a constant guide: the gaussian K is 1 at every valid tap
    if max(pi - di * (ki - 1) // 2 for ki, pi, di in zip(k, p, d)) <= 0:
        guide = np.full((2, 2) + IDENTITY_SIZES[nd], 0.3)
        out, _ = nd_fn(pacnp, "pacconv2d_fused", nd)(
            x, guide, w, b, stride=s, padding=p, dilation=d
        )
        ref = conv(t(x), t(w), t(b), stride=s, padding=p, dilation=d).numpy()
        assert_close(out, ref, "fused, constant guide", **EXACT)


TRANSPOSE_GEOMETRIES = {
    1: [
        ((3,), (1,), (1,), (0,), (1,)),
        ((5,), (2,), (2,), (1,), (1,)),
        ((3,), (3,), (0,), (2,), (2,)),
    ],
    3: [
        ((3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), (1, 1, 1)),
        ((3, 1, 5), (2, 3, 1), (0, 0, 2), (1, 2, 0), (2, 1, 1)),
        ((1, 3, 3), (1, 2, 3), (0, 2, 1), (0, 0, 2), (1, 2, 1)),
    ],
}
TRANSPOSE_SIZES = {1: (6,), 3: (3, 4, 3)}


@pytest.mark.parametrize(
    "nd,geometry", [(nd, g) for nd in (1, 3) for g in TRANSPOSE_GEOMETRIES[nd]], ids=str
)
def test_identity_ones_kernel_is_torch_conv_transpose(nd, geometry):
    torch = _torch()
    k, s, p, op, d = geometry
    conv_t = getattr(torch.nn.functional, f"conv_transpose{nd}d")
    rng = seeded("transpose identity", nd, geometry)
    x = rng.standard_normal((2, 3) + TRANSPOSE_SIZES[nd])
    w = rng.standard_normal((3, 4) + k)
    b = rng.standard_normal(4)
    t = torch.from_numpy
    kw = dict(stride=s, padding=p, output_padding=op, dilation=d)
    ref = conv_t(t(x), t(w), t(b), **kw).numpy()
    K = np.ones((2, 1) + k + ref.shape[2:])
    out = nd_fn(pacnp, "pacconv_transpose2d", nd)(x, K, w, b, **kw)
    assert_close(out, ref, "K ≡ 1", **EXACT)
    ws = rng.standard_normal((1, 1) + k)
    ref = conv_t(t(x), t(ws).repeat((3,) + (1,) * (nd + 1)), groups=3, **kw).numpy()
    out = nd_fn(pacnp, "pacconv_transpose2d", nd)(x, K, ws, shared_filters=True, **kw)
    assert_close(out, ref, "K ≡ 1, shared filters", **EXACT)


#: (kernel size, stride, padding) per axis; torch's average pooling has no dilation
POOL_GEOMETRIES = {
    1: [((3,), (1,), (1,)), ((5,), (2,), (2,)), ((3,), (3,), (0,))],
    3: [
        ((3, 3, 3), (1, 1, 1), (1, 1, 1)),
        ((3, 1, 5), (2, 1, 3), (1, 0, 2)),
        ((5, 3, 1), (3, 2, 1), (1, 1, 0)),
    ],
}


@pytest.mark.parametrize(
    "nd,geometry", [(nd, g) for nd in (1, 3) for g in POOL_GEOMETRIES[nd]], ids=str
)
def test_identity_constant_guide_pool_is_torch_avg_pool(nd, geometry):
    """A normalised K of a constant guide averages over the taps inside the volume
    (count_include_pad=False), the two-step and the fused path alike; K ≡ 1/Πk averages over
    the whole window, padding included (count_include_pad=True)."""
    torch = _torch()
    k, s, p = geometry
    avg = getattr(torch.nn.functional, f"avg_pool{nd}d")
    rng = seeded("pool identity", nd, geometry)
    x = rng.standard_normal((2, 3) + IDENTITY_SIZES[nd])
    guide = np.full((2, 4) + IDENTITY_SIZES[nd], 0.7)
    ref = avg(torch.from_numpy(x), k, stride=s, padding=p, count_include_pad=False).numpy()
    K, _ = nd_fn(pacnp, "packernel2d", nd)(guide, k, stride=s, padding=p, normalize_kernel=True)
    out = nd_fn(pacnp, "pacpool2d", nd)(x, K, k, stride=s, padding=p)
    assert_close(out, ref, "count_include_pad=False", **EXACT)
    out, _ = nd_fn(pacnp, "pacpool2d_fused", nd)(
        x, guide, k, stride=s, padding=p, normalize_kernel=True
    )
    assert_close(out, ref, "fused, count_include_pad=False", **EXACT)
    ref = avg(torch.from_numpy(x), k, stride=s, padding=p, count_include_pad=True).numpy()
    K = np.full((2, 1) + k + ref.shape[2:], 1.0 / np.prod(k))
    out = nd_fn(pacnp, "pacpool2d", nd)(x, K, k, stride=s, padding=p)
    assert_close(out, ref, "count_include_pad=True", **EXACT)


# =========================================================================== bad input
def _expect(exc, fn_name, arg, call):
    """``call()`` raises ``exc`` whose message starts with ``fn_name:`` and names ``arg``."""
    pattern = rf"^{re.escape(fn_name)}: .*(?<!\w){re.escape(arg)}(?!\w)"
    with pytest.raises(exc, match=pattern):
        call()


def _conv3d_args(rng):
    x = rng.standard_normal((1, 2, 4, 5, 6))
    K = rng.standard_normal((1, 1, 3, 3, 3, 4, 5, 6))
    w = rng.standard_normal((3, 2, 3, 3, 3))
    return x, K, w


def test_bad_input_wrong_ndim():
    rng = np.random.default_rng(0)
    x, K, w = _conv3d_args(rng)
    f = pacnp.pacconv3d
    _expect(ValueError, "pacconv3d", "input", lambda: f(x[:, :, 0], K, w, padding=1))
    _expect(ValueError, "pacconv3d", "weight", lambda: f(x, K, w[..., 0], padding=1))
    _expect(ValueError, "pacconv3d", "kernel", lambda: f(x, K[..., 0], w, padding=1))
    x1 = rng.standard_normal((1, 2, 7))
    _expect(
        ValueError,
        "pacpool1d",
        "input",
        lambda: pacnp.pacpool1d(x1[..., None], np.ones((1, 1, 3, 7)), 3, padding=1),
    )
    _expect(ValueError, "packernel1d", "guide", lambda: pacnp.packernel1d(x, 3))
    _expect(ValueError, "packernel3d", "guide", lambda: pacnp.packernel3d(x1, 3))
    _expect(
        ValueError,
        "pacconv_transpose3d",
        "input",
        lambda: pacnp.pacconv_transpose3d(x[0], K, np.zeros((2, 3, 3, 3, 3))),
    )
    _expect(
        ValueError,
        "pacconv3d_fused",
        "guide",
        lambda: pacnp.pacconv3d_fused(x, x[:, :, 0], w, padding=1),
    )
    g = rng.standard_normal((1, 3, 4, 5))
    _expect(
        ValueError,
        "pacconv3d_backward",
        "grad_output",
        lambda: pacnp.pacconv3d_backward(g, x, K, w, padding=1),
    )


def test_bad_input_tuple_of_the_wrong_length():
    rng = np.random.default_rng(1)
    x, K, w = _conv3d_args(rng)
    bad = (ValueError, TypeError)
    _expect(bad, "packernel3d", "kernel_size", lambda: pacnp.packernel3d(x, (3, 3), padding=1))
    _expect(bad, "packernel1d", "kernel_size", lambda: pacnp.packernel1d(x[:, :, 0, 0], (3, 3)))
    _expect(bad, "pacpool3d", "kernel_size", lambda: pacnp.pacpool3d(x, K, (3, 3), padding=1))
    _expect(
        bad,
        "pacpool1d",
        "kernel_size",
        lambda: pacnp.pacpool1d(x[:, :, 0, 0], K[:, :, 0, 0, :, 0, 0], (3, 3, 3)),
    )
    _expect(bad, "pacconv3d", "stride", lambda: pacnp.pacconv3d(x, K, w, stride=(1, 1), padding=1))
    _expect(bad, "pacconv3d", "padding", lambda: pacnp.pacconv3d(x, K, w, padding=(1, 1, 1, 1)))
    _expect(
        bad, "pacconv3d", "dilation", lambda: pacnp.pacconv3d(x, K, w, padding=1, dilation=(1, 1))
    )
    x1 = rng.standard_normal((1, 2, 4))
    _expect(
        bad,
        "pacconv_transpose1d",
        "output_padding",
        lambda: pacnp.pacconv_transpose1d(
            x1,
            np.ones((1, 1, 3, 8)),
            np.ones((2, 2, 3)),
            stride=2,
            padding=1,
            output_padding=(1, 1),
        ),
    )
    _expect(
        bad,
        "pacconv3d_fused",
        "stride",
        lambda: pacnp.pacconv3d_fused(x, x, w, stride=(2, 2), padding=1),
    )


def test_bad_input_kernel_of_the_wrong_shape():
    rng = np.random.default_rng(2)
    x, K, w = _conv3d_args(rng)
    for bad in (K[:, :, :, :, :, :, :, :5], K[:, :, :, :, :2], np.repeat(K, 3, axis=1)):
        _expect(
            ValueError, "pacconv3d", "kernel", lambda bad=bad: pacnp.pacconv3d(x, bad, w, padding=1)
        )
        _expect(
            ValueError, "pacpool3d", "kernel", lambda bad=bad: pacnp.pacpool3d(x, bad, 3, padding=1)
        )
    x1 = rng.standard_normal((1, 2, 7))
    K1 = rng.standard_normal((1, 1, 3, 6))  # the output has 7 positions with padding=1
    _expect(
        ValueError,
        "pacconv1d",
        "kernel",
        lambda: pacnp.pacconv1d(x1, K1, np.ones((3, 2, 3)), padding=1),
    )
    _expect(
        ValueError,
        "pacconv_transpose1d",
        "kernel",
        lambda: pacnp.pacconv_transpose1d(x1, K1, np.ones((2, 3, 3)), padding=1),
    )
    g = rng.standard_normal(K.shape[:2] + (3, 3, 3, 4, 5, 7))
    _expect(
        ValueError,
        "packernel3d_backward",
        "grad_kernel",
        lambda: pacnp.packernel3d_backward(g, x, 3, padding=1),
    )


def test_nd_names_are_public():
    """Every N-D name of the spec is exported, with the 2-D function's parameters."""
    import inspect

    for base in ("packernel2d", "pacconv2d", "pacconv_transpose2d", "pacpool2d"):
        for suffix in ("", "_backward") + (
            ("_fused", "_fused_backward") if base != "packernel2d" else ()
        ):
            two = getattr(pacnp, base + suffix)
            for nd in (1, 3):
                name = base.replace("2d", f"{nd}d") + suffix
                assert name in pacnp.__all__, name
                fn = getattr(pacnp, name)
                assert list(inspect.signature(fn).parameters) == list(
                    inspect.signature(two).parameters
                ), name


# =========================================================================== edge-case arrays
def _views(rng, shape, kind):
    """A float64 array of ``shape`` as ``kind``: C order, a strided view, axes permuted (no
    dimension is contiguous in memory order), or float32."""
    if kind == "strided":
        big = rng.standard_normal(shape[:-1] + (2 * shape[-1],))
        return big[..., ::2]
    if kind == "permuted":
        return np.moveaxis(
            rng.standard_normal(shape[::-1]), range(len(shape)), range(len(shape))[::-1]
        )
    a = rng.standard_normal(shape)
    return a.astype(np.float32) if kind == "float32" else a


@pytest.mark.parametrize("kind", ["strided", "permuted", "float32"])
@pytest.mark.parametrize("nd", [1, 3])
def test_edge_case_arrays_vs_reference(nd, kind):
    """Strided, permuted and float32 inputs give the reference's results (float32 to float32
    accuracy), forward and backward, two-step and fused."""
    rng = seeded("edge", nd, kind)
    size = (7,) if nd == 1 else (4, 5, 3)
    k = (3,) * nd
    kw = dict(padding=1, stride=(2,) * nd if nd == 1 else (1, 2, 1))
    x = _views(rng, (1, 2) + size, kind)
    guide = _views(rng, (1, 2) + size, kind)
    w = _views(rng, (3, 2) + k, kind)
    tol = dict(rtol=2e-5, atol=2e-5) if kind == "float32" else F64
    K, _ = nd_fn(pacnp, "packernel2d", nd)(guide, k, **kw)
    K_ref, _ = nd_fn(R, "packernel2d", nd)(guide, k, **kw)
    assert K.dtype == x.dtype
    assert_close(K, K_ref, "K", **tol)
    out = nd_fn(pacnp, "pacconv2d", nd)(x, K_ref.astype(x.dtype), w, **kw)
    assert_close(out, nd_fn(R, "pacconv2d", nd)(x, K_ref, w, **kw), "pacconv", **tol)
    g = _views(rng, out.shape, kind)
    grads = nd_fn(pacnp, "pacconv2d_backward", nd)(g, x, K_ref.astype(x.dtype), w, **kw)
    ref = nd_fn(R, "pacconv2d_backward", nd)(g, x, K_ref, w, **kw)
    for name, a, b in zip(OP_GRADS, grads, ref):
        assert_close(a, b, f"d_{name}", **tol)
    out, _ = nd_fn(pacnp, "pacconv2d_fused", nd)(x, guide, w, **kw)
    assert_close(out, nd_fn(R, "pacconv2d", nd)(x, K_ref, w, **kw), "fused", **tol)


@pytest.mark.parametrize("nd", [1, 3])
def test_one_voxel_and_window_wider_than_the_volume(nd):
    """A single voxel (every tap but the centre invalid) and a dilated window wider than the
    volume: K, the ops and the fused path still match the reference."""
    rng = seeded("one voxel", nd)
    for size, k, d, p in (
        ((1,) * nd, (3,) * nd, (1,) * nd, (1,) * nd),
        ((2,) * nd, (5,) * nd, (2,) * nd, (4,) * nd),
    ):
        guide = rng.standard_normal((1, 2) + size)
        x = rng.standard_normal((1, 3) + size)
        w = rng.standard_normal((2, 3) + k)
        kw = dict(padding=p, dilation=d, kernel_type="inv_0.5_-1", normalize_kernel=True)
        K, _ = nd_fn(pacnp, "packernel2d", nd)(guide, k, **kw)
        K_ref, _ = nd_fn(R, "packernel2d", nd)(guide, k, **kw)
        assert_close(K, K_ref, f"K {size}", **F64)
        geo = dict(padding=p, dilation=d)
        out = nd_fn(pacnp, "pacconv2d", nd)(x, K_ref, w, **geo)
        assert_close(out, nd_fn(R, "pacconv2d", nd)(x, K_ref, w, **geo), f"pacconv {size}", **F64)
        out, _ = nd_fn(pacnp, "pacpool2d_fused", nd)(
            x, guide, k, **geo, **{n: kw[n] for n in ("kernel_type", "normalize_kernel")}
        )
        assert_close(
            out, nd_fn(R, "pacpool2d", nd)(x, K_ref, k, **geo), f"fused pool {size}", **F64
        )


def test_bad_input_kernel_options_of_the_wrong_shape():
    rng = np.random.default_rng(3)
    guide = rng.standard_normal((1, 2, 4, 5, 6))
    f = pacnp.packernel3d
    _expect(
        ValueError,
        "packernel3d",
        "smooth_kernel",
        lambda: f(guide, 3, padding=1, smooth_kernel_type="full_3", smooth_kernel=np.ones((3, 3))),
    )
    _expect(
        ValueError,
        "packernel3d",
        "mask",
        lambda: f(guide, 3, padding=1, mask=np.ones((1, 1, 4, 5))),
    )
    _expect(
        ValueError,
        "packernel1d",
        "mask",
        lambda: pacnp.packernel1d(guide[:, :, 0, 0], 3, padding=1, mask=np.ones((1, 1, 5))),
    )
    _expect(
        ValueError,
        "packernel3d",
        "inv_alpha",
        lambda: f(guide, 3, kernel_type="inv_0.5_-1", inv_alpha=np.ones(3), channel_wise=True),
    )


# =========================================================================== fused schedules
#: (op, kernel size, dilation, padding, kernel type, guide channels, channels, size): fused
#: depthwise ops with a symmetric K and filter and stride 1, which pacnp runs in pair form
#: (pacnp._core.pair_geometry), in 1-D and 3-D
ND_PAIR_CASES = [
    ("conv", (3,), (1,), (1,), "gaussian", 2, 3, (11,)),
    ("conv", (5,), (2,), (1,), "inv_0.5_-1", 1, 2, (9,)),
    ("pool", (7,), (1,), (3,), "gaussian", 3, 2, (4,)),  # window wider than the signal
    ("conv", (3, 3, 3), (1, 1, 1), (1, 1, 1), "gaussian", 2, 2, (4, 5, 6)),
    ("conv", (3, 5, 3), (2, 1, 1), (2, 2, 0), "inv_0.3_0.7", 1, 2, (3, 4, 7)),
    ("pool", (5, 3, 3), (1, 2, 1), (2, 2, 1), "gaussian", 3, 1, (2, 3, 5)),
    ("conv", (1, 3, 5), (1, 1, 2), (0, 1, 4), "gaussian", 1, 1, (1, 2, 3)),
    # padding other than "same" on the leading axes: output rows are not image rows
    ("conv", (3, 3, 3), (1, 1, 1), (0, 1, 0), "gaussian", 2, 2, (4, 5, 6)),
    ("pool", (5, 3, 3), (2, 1, 2), (1, 0, 2), "inv_0.5_-1", 1, 3, (9, 4, 6)),
    ("conv", (3, 5, 1), (1, 2, 1), (0, 3, 0), "inv_1_0.7", 3, 2, (3, 9, 2)),
]


def pair_id(c):
    return f"{c[0]}-{len(c[1])}d-k{''.join(map(str, c[1]))}"


#: the CUDA simulator's: the 1-D window and the 3-D one with a single plane
SMALL_PAIR_CASES = [ND_PAIR_CASES[0], ND_PAIR_CASES[6]]


@pytest.mark.parametrize("case", grid_params(ND_PAIR_CASES, SMALL_PAIR_CASES, pair_id))
def test_pair_form_nd_vs_reference(backend, case, monkeypatch):
    from pacnp import _ops

    op, k, d, p, kt, Cg, C, size = case
    nd = len(k)
    rng = seeded("pair", case)
    x = rng.standard_normal((2, C) + size)
    guide = rng.standard_normal((2, Cg) + size)
    kw = dict(padding=p, dilation=d, kernel_type=kt)
    seen = []

    def spy(kplan, oplan):
        pairs = pair_geometry(kplan, oplan)
        seen.append(pairs is not None)
        return pairs

    pair_geometry = _ops.pair_geometry
    monkeypatch.setattr(_ops, "pair_geometry", spy)
    K, _ = nd_fn(R, "packernel2d", nd)(guide, k, **kw)
    if op == "pool":
        lead = (x, guide, k)
        ref = nd_fn(R, "pacpool2d", nd)(x, K, k, padding=p, dilation=d)
    else:
        w = rng.standard_normal((1, 1) + k)
        w = w + w[(0, 0) + (slice(None, None, -1),) * nd][None, None]  # w(δ) = w(−δ)
        b = rng.standard_normal(C)
        lead = (x, guide, w, b)
        kw["shared_filters"] = True
        ref = nd_fn(R, "pacconv2d", nd)(x, K, w, b, padding=p, dilation=d, shared_filters=True)
    out, om = backend.call(nd_fn(pacnp, ND_FUSED[op][0], nd), *lead, **kw)
    assert seen == [True], "the pair form was not taken"
    assert om is None
    assert_close(out, ref, "pair form", **F64)
    g = rng.standard_normal(out.shape)
    grads = backend.call(nd_fn(pacnp, ND_FUSED[op][1], nd), g, *lead, **kw)
    geo = dict(stride=1, padding=p, dilation=d)
    if op != "pool":
        geo["shared_filters"] = True
    _, _, ref_grads = two_step_nd(nd, op, lead, k, geo, dict(kernel_type=kt), g, lib=R)
    for name, a, r in zip(POOL_FUSED_GRADS if op == "pool" else FUSED_GRADS, grads, ref_grads):
        assert_close(a, r, f"d_{name}", rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("case", [c for c in FUSED_GRID if c[0] != 2][1::2], ids=fused_id)
def test_fused_nd_in_many_stripes(case, monkeypatch):
    """K computed a few (folded) rows at a time: stripes end inside a plane of a volume."""
    from pacnp import config

    monkeypatch.setattr(config, "STRIPE_BYTES", 1)
    nd, op, kcase, shared = case
    rng = seeded("stripes", case)
    lead, geo, kw, k = nd_fused_case(rng, op, kcase, shared)
    out, om = nd_fn(pacnp, ND_FUSED[op][0], nd)(*lead, **geo, **kw)
    g = rng.standard_normal(out.shape)
    names = POOL_FUSED_GRADS if op == "pool" else FUSED_GRADS
    # every gradient but the weight's: the dead taps are trimmed then (2-D only)
    needs = tuple(n != "weight" for n in names)
    grads = nd_fn(pacnp, ND_FUSED[op][1], nd)(g, *lead, **geo, **kw, needs=needs)
    ref_out, ref_om, ref_grads = two_step_nd(nd, op, lead, k, geo, kw, g, lib=R)
    assert_close(out, ref_out, "output", **F64)
    assert_close(om, ref_om, "output_mask", **EXACT)
    for name, want, a, r in zip(names, needs, grads, ref_grads):
        assert_close(a, r if want else None, f"d_{name}", rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("nd", [1, 3])
def test_dense_forward_in_column_tiles_nd(nd, transposed):
    """A last axis long enough that the dense forward multiplies each (folded) row in column
    tiles (config.GEMM_SMALL_MNK), two full tiles and a ragged one."""
    from pacnp import config

    rng = seeded("tiles", nd, transposed)
    C, Cout = 8, 32
    k = (5,) if nd == 1 else (3, 1, 5)
    m = C * int(np.prod(k))
    tile = (config.GEMM_SMALL_MNK // (Cout * m)) // config.GEMM_MIN_TILE * config.GEMM_MIN_TILE
    assert tile >= config.GEMM_MIN_TILE
    W = 2 * tile + 7
    lead = () if nd == 1 else (2, 3)
    if transposed:
        s = (1,) * (nd - 1) + (2,)
        kw = dict(
            stride=s,
            padding=tuple(ki // 2 for ki in k),
            output_padding=(0,) * (nd - 1) + (int(W % 2 == 0),),
        )
        x = rng.standard_normal((1, C) + lead + ((W + 1) // 2,))
        weight = rng.standard_normal((C, Cout) + k)
        K = rng.standard_normal((1, 1) + k + lead + (W,))
        out = nd_fn(pacnp, "pacconv_transpose2d", nd)(x, K, weight, **kw)
        ref = nd_fn(R, "pacconv_transpose2d", nd)(x, K, weight, **kw)
    else:
        kw = dict(padding=tuple(ki // 2 for ki in k))
        x = rng.standard_normal((1, C) + lead + (W,))
        weight = rng.standard_normal((Cout, C) + k)
        bias = rng.standard_normal(Cout)
        K = rng.standard_normal((1, 1) + k + lead + (W,))
        out = nd_fn(pacnp, "pacconv2d", nd)(x, K, weight, bias, **kw)
        ref = nd_fn(R, "pacconv2d", nd)(x, K, weight, bias, **kw)
    assert out.shape[-1] == W > 2 * tile
    assert_close(out, ref, "tiled dense forward", rtol=1e-10, atol=1e-10)


# =========================================================================== hypothesis
@settings(max_examples=30, deadline=None)
@given(st.data())
def test_random_nd_configurations(data):
    """Random 1-D / 3-D configurations: sizes down to one voxel per axis, every option; K, the
    matching op (forward and backward) and the fused path against the reference."""
    nd = data.draw(st.sampled_from([1, 3]), "nd")
    tr = data.draw(st.booleans(), "transposed")
    op = "transpose" if tr else data.draw(st.sampled_from(["conv", "pool"]), "op")
    k, s, d, p, opd, size, size_in = [], [], [], [], [], [], []
    for a in range(nd):
        ka = data.draw(st.sampled_from([1, 3, 5]), f"k{a}")
        sa = data.draw(st.integers(1, 3), f"stride{a}")
        da = data.draw(st.integers(1, 2), f"dilation{a}")
        r = da * (ka - 1) // 2
        pa = data.draw(st.integers(0, r), f"padding{a}")
        if tr:
            oa = data.draw(st.integers(0, max(sa, da) - 1), f"output_padding{a}")
            na = data.draw(st.integers(1, 3), f"size_in{a}")
            size_in.append(na)
            size.append((na - 1) * sa - 2 * pa + da * (ka - 1) + oa + 1)
        else:
            oa = 0
            lo = max(1, da * (ka - 1) + 1 - 2 * pa)  # at least one output
            na = data.draw(st.integers(lo, lo + 4), f"size{a}")
            size.append(na)
            size_in.append(na)
        for lst, v in ((k, ka), (s, sa), (d, da), (p, pa), (opd, oa)):
            lst.append(v)
    k, s, d, p, opd, size, size_in = map(tuple, (k, s, d, p, opd, size, size_in))
    kt = data.draw(st.sampled_from(KERNEL_TYPES), "kernel_type")
    smooth = data.draw(st.sampled_from(SMOOTH_TYPES), "smooth")
    cw, norm, masked, shared = (
        data.draw(st.booleans(), n) for n in ("channel_wise", "normalize", "mask", "shared")
    )
    B = data.draw(st.integers(1, 2), "B")
    C = data.draw(st.integers(1, 3), "C")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31), "seed"))
    kcase = (nd, k, s, p, d, opd, kt, smooth, cw, norm, masked, tr)
    guide, kw = nd_kernel_case(rng, *kcase, B=B, C=C, size_in=size_in)
    assert guide.shape[2:] == size
    K, om = nd_fn(pacnp, "packernel2d", nd)(guide, k, **kw)
    K_ref, om_ref = nd_fn(R, "packernel2d", nd)(guide, k, **kw)
    assert_close(K, K_ref, "K", **F64)
    assert_close(om, om_ref, "output_mask", **F64)
    lead, geo, kkw, _ = nd_fused_case(rng, op, kcase, shared, B=B, C=C, Cout=2, size_in=size_in)
    assert lead[0].shape[2:] == size_in
    x = lead[0]
    fwd, bwd = (nd_fn(pacnp, name, nd) for name in ND_OPS[op])
    rfwd, rbwd = (nd_fn(R, name, nd) for name in ND_OPS[op])
    args = (x, K_ref, k) if op == "pool" else (x, K_ref) + lead[2:]
    out = fwd(*args, **geo)
    assert_close(out, rfwd(*args, **geo), op, **F64)
    g = rng.standard_normal(out.shape)
    for name, a, b in zip(OP_GRADS, bwd(g, *args, **geo), rbwd(g, *args, **geo)):
        assert_close(a, b, f"{op} d_{name}", **F64)
    out, om = nd_fn(pacnp, ND_FUSED[op][0], nd)(*lead, **geo, **kkw)
    ref_out, ref_om, _ = two_step_nd(nd, op, lead, k, geo, kkw, g, lib=R)
    assert_close(out, ref_out, "fused", **F64)
    assert_close(om, ref_om, "fused output_mask", **EXACT)
