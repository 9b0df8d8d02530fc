"""pacnp.crf: mean-field inference with PAC messages (the paper's Sec. 5).

Forward against the float64 NumPy reference (``reference.paccrf``) for every compatibility
type, output type, dilation and blur factor; the reference's pooling / upsampling against
torch's own; backward against central finite differences (directional derivatives along random
directions, float64, tiny shapes); the object form, the torch layer, real-image refinement and
the error messages.
"""

import re

import numpy as np
import pytest
import reference as R

from pacnp import crf

C, H, W = 3, 6, 7


def make_term(rng, kind, *, C=C, k=3, dilation=1, blur=1, weight=0.7, dtype=np.float64):
    dense = kind in ("na", "4d")
    filt = (rng.standard_normal((C, C, k, k) if dense else (1, 1, k, k)) * 0.4).astype(dtype)
    compat = rng.standard_normal((C, C)).astype(dtype) if kind == "2d" else None
    return crf.PairwiseTerm(kind, filt, weight, compat, dilation, blur)


def inputs(rng, B=2, C=C, H=H, W=W, F=4, dtype=np.float64):
    U = rng.standard_normal((B, C, H, W)).astype(dtype)
    f = rng.standard_normal((B, F, H, W)).astype(dtype)
    return U, f


# --------------------------------------------------------------------------- reference
@pytest.mark.parametrize("hw", [(6, 7), (9, 5), (5, 5), (16, 11)])
@pytest.mark.parametrize("b", [2, 3, 4])
def test_reference_blur_is_torch_pool_and_interpolate(hw, b):
    """The reference's Down / Up are torch's avg_pool2d(count_include_pad=False) and
    interpolate(bilinear, align_corners=False) + crop, which the 2019 PacCRF used."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    H_, W_ = hw
    pad = (R.crf_blur_pad(H_, b), R.crf_blur_pad(W_, b))
    x = np.random.default_rng(0).standard_normal((1, 2, H_, W_))
    pooled = F.avg_pool2d(torch.from_numpy(x), b, padding=pad, count_include_pad=False).numpy()
    np.testing.assert_allclose(R.crf_avg_pool(x, b), pooled, atol=1e-14)
    up = F.interpolate(
        torch.from_numpy(pooled), scale_factor=b, mode="bilinear", align_corners=False
    ).numpy()[:, :, pad[0] : pad[0] + H_, pad[1] : pad[1] + W_]
    np.testing.assert_allclose(R.crf_upsample(pooled, b, hw), up, atol=1e-14)


# --------------------------------------------------------------------------- forward
@pytest.mark.parametrize("final_output", crf.FINAL_OUTPUTS)
@pytest.mark.parametrize("kind", crf.COMPAT_TYPES)
def test_forward_matches_reference(kind, final_output):
    rng = np.random.default_rng(1)
    U, f = inputs(rng)
    term = make_term(rng, kind)
    kw = dict(num_steps=3, unary_weight=0.8, final_output=final_output)
    out = crf.paccrf(U, f, [term], **kw)
    np.testing.assert_allclose(out, R.paccrf(U, f, [term], **kw), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", crf.COMPAT_TYPES)
@pytest.mark.parametrize(
    "blur, dilation, hw",
    [(1, 2, (6, 7)), (2, 1, (6, 7)), (3, 1, (7, 5)), (2, 2, (9, 8)), (4, 1, (9, 10))],
)
def test_forward_geometry_matches_reference(kind, blur, dilation, hw):
    rng = np.random.default_rng(2)
    U, f = inputs(rng, H=hw[0], W=hw[1])
    term = make_term(rng, kind, dilation=dilation, blur=blur)
    kw = dict(num_steps=2, final_output="log_softmax")
    np.testing.assert_allclose(
        crf.paccrf(U, f, [term], **kw), R.paccrf(U, f, [term], **kw), rtol=1e-10, atol=1e-10
    )


def test_several_terms_shared_and_per_term_features():
    rng = np.random.default_rng(3)
    U, f = inputs(rng)
    f2 = rng.standard_normal((2, 2, H, W))
    terms = [
        make_term(rng, "4d", k=5),
        make_term(rng, "potts", blur=2, dilation=2),
        make_term(rng, "2d", blur=2),
        make_term(rng, "na"),
    ]
    kw = dict(num_steps=3, final_output="softmax", unary_weight=1.3)
    shared = crf.paccrf(U, f, terms, **kw)
    np.testing.assert_allclose(shared, R.paccrf(U, f, terms, **kw), rtol=1e-10, atol=1e-12)
    feats = [f, f2, f, None]
    per_term = crf.paccrf(U, feats, terms, **kw)
    np.testing.assert_allclose(per_term, R.paccrf(U, feats, terms, **kw), rtol=1e-10, atol=1e-12)
    assert not np.allclose(per_term, shared)


def test_float32_close_to_float64():
    rng = np.random.default_rng(4)
    U, f = inputs(rng)
    term = make_term(rng, "4d")
    t32 = crf.PairwiseTerm("4d", term.filter.astype(np.float32), 0.7)
    out = crf.paccrf(U.astype(np.float32), f.astype(np.float32), [t32], num_steps=3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, R.paccrf(U, f, [term], num_steps=3), rtol=1e-4, atol=1e-4)


def test_zero_steps_and_no_terms():
    rng = np.random.default_rng(5)
    U, f = inputs(rng)
    np.testing.assert_allclose(
        crf.paccrf(U, f, [make_term(rng, "4d")], num_steps=0, final_output="softmax"),
        R._crf_softmax(U),
    )
    # without pairwise terms a step is the scaled unary
    np.testing.assert_allclose(crf.paccrf(U, None, [], num_steps=2, unary_weight=2.0), 2.0 * U)


def test_potts_equals_2d_with_one_minus_identity():
    """Potts (μ = −I) and '2d' with M = 1 − I differ by a label-independent term only."""
    rng = np.random.default_rng(6)
    U, f = inputs(rng)
    filt = rng.random((1, 1, 3, 3))
    potts = crf.PairwiseTerm("potts", filt, 0.9)
    twod = crf.PairwiseTerm("2d", filt, 0.9, 1.0 - np.eye(C))
    a = crf.paccrf(U, f, [potts], num_steps=3, final_output="softmax")
    b = crf.paccrf(U, f, [twod], num_steps=3, final_output="softmax")
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_kernels_computed_once_can_be_passed():
    rng = np.random.default_rng(7)
    U, f = inputs(rng)
    terms = [make_term(rng, "4d"), make_term(rng, "potts", blur=2), make_term(rng, "na")]
    model = crf.PacCRF(C, 3, dtype=np.float64)
    model.terms = terms
    Ks = model.compute_kernels(f)
    assert Ks[2] is None and Ks[0].shape == (2, 1, 3, 3, H, W) and Ks[1].shape[-2:] == (3, 4)
    a = crf.paccrf(U, f, terms, num_steps=3)
    b = crf.paccrf(U, None, terms, num_steps=3, kernels=Ks)
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


def test_logQ_chains_steps():
    """Two one-step calls from logQ (the 2019 PacCRFLoose) equal one two-step call."""
    rng = np.random.default_rng(8)
    U, f = inputs(rng)
    terms = [make_term(rng, "2d")]
    one = crf.paccrf(U, f, terms, num_steps=1)
    two = crf.paccrf(U, f, terms, num_steps=1, logQ=one)
    np.testing.assert_allclose(two, crf.paccrf(U, f, terms, num_steps=2), rtol=1e-13)


# --------------------------------------------------------------------------- backward
def _directional_check(fun, grad, x, rng, n_dirs=3, eps=1e-6, name=""):
    """⟨grad, v⟩ equals the central difference of ``fun`` along random directions v."""
    x = np.asarray(x, dtype=np.float64)
    for _ in range(n_dirs):
        v = rng.standard_normal(x.shape)
        num = (fun(x + eps * v) - fun(x - eps * v)) / (2 * eps)
        ana = float(np.sum(np.asarray(grad) * v))
        assert abs(num - ana) <= 1e-6 * max(1.0, abs(num)), (name, num, ana)


BACKWARD_CASES = [
    ("na", 1, 1),
    ("2d", 1, 2),
    ("4d", 1, 1),
    ("potts", 1, 1),
    ("2d", 2, 1),
    ("4d", 3, 1),
    ("potts", 2, 2),
]


@pytest.mark.parametrize("final_output", ["log_softmax", "softmax"])
@pytest.mark.parametrize("kind, blur, dilation", BACKWARD_CASES)
def test_backward_matches_finite_differences(kind, blur, dilation, final_output):
    rng = np.random.default_rng(9)
    U, f = inputs(rng, B=1)
    term = make_term(rng, kind, blur=blur, dilation=dilation)
    other = make_term(rng, "potts")  # a second term sharing the features
    G = rng.standard_normal(U.shape)
    kw = dict(num_steps=2, unary_weight=0.9, final_output=final_output)

    def loss(U=U, f=f, terms=(term, other), **over):
        return float(np.sum(G * crf.paccrf(U, f, list(terms), **{**kw, **over})))

    g = crf.paccrf_backward(G, U, f, [term, other], **kw)
    assert g.kernels is None and g.logQ is None
    _directional_check(lambda x: loss(U=x), g.unary, U, rng, name="unary")
    _directional_check(lambda x: loss(f=x), g.edge_feat, f, rng, name="edge_feat")
    _directional_check(
        lambda x: loss(unary_weight=float(x)), g.unary_weight, 0.9, rng, name="unary_weight"
    )

    def with_term(**change):
        fields = dict(vars(term))
        fields.update(change)
        return (crf.PairwiseTerm(**fields), other)

    _directional_check(
        lambda x: loss(terms=with_term(filter=x)), g.filters[0], term.filter, rng, name="filter"
    )
    _directional_check(
        lambda x: loss(terms=with_term(weight=float(x))),
        g.weights[0],
        term.weight,
        rng,
        name="weight",
    )
    if kind == "2d":
        _directional_check(
            lambda x: loss(terms=with_term(compat=x)), g.compats[0], term.compat, rng, name="compat"
        )
    else:
        assert g.compats[0] is None


def test_backward_kernels_logQ_and_per_term_features():
    rng = np.random.default_rng(10)
    U, f = inputs(rng, B=1)
    terms = [make_term(rng, "4d"), make_term(rng, "2d", blur=2)]
    model = crf.PacCRF(C, 2, dtype=np.float64)
    model.terms = terms
    Ks = model.compute_kernels(f)
    L0 = rng.standard_normal(U.shape)
    G = rng.standard_normal(U.shape)
    kw = dict(num_steps=2, final_output="log_Q")
    g = crf.paccrf_backward(G, U, None, terms, kernels=Ks, logQ=L0, **kw)
    assert g.edge_feat is None and len(g.kernels) == 2

    def loss(U=U, L0=L0, Ks=Ks):
        return float(np.sum(G * crf.paccrf(U, None, terms, kernels=list(Ks), logQ=L0, **kw)))

    _directional_check(lambda x: loss(U=x), g.unary, U, rng, name="unary")
    _directional_check(lambda x: loss(L0=x), g.logQ, L0, rng, name="logQ")
    for i in range(2):
        _directional_check(
            lambda x, i=i: loss(Ks=[x if j == i else Ks[j] for j in range(2)]),
            g.kernels[i],
            Ks[i],
            rng,
            name=f"kernels[{i}]",
        )
    f2 = rng.standard_normal((1, 2, H, W))
    g2 = crf.paccrf_backward(G, U, [f, f2], terms, **kw)
    assert isinstance(g2.edge_feat, list) and g2.edge_feat[1].shape == f2.shape
    _directional_check(
        lambda x: float(np.sum(G * crf.paccrf(U, [f, x], terms, **kw))),
        g2.edge_feat[1],
        f2,
        rng,
        name="edge_feat[1]",
    )


def test_needs_selects_gradients():
    rng = np.random.default_rng(11)
    U, f = inputs(rng)
    terms = [make_term(rng, "4d")]
    G = rng.standard_normal(U.shape)
    full = crf.paccrf_backward(G, U, f, terms, num_steps=2)
    part = crf.paccrf_backward(G, U, f, terms, num_steps=2, needs=("unary", "weights"))
    assert part.edge_feat is None and part.filters is None and part.unary_weight is None
    np.testing.assert_allclose(part.unary, full.unary, rtol=1e-14)
    np.testing.assert_allclose(part.weights[0], full.weights[0], rtol=1e-14)
    bools = crf.paccrf_backward(
        G, U, f, terms, num_steps=2, needs=(False, True, False, False, False, False, False, False)
    )
    assert bools.unary is None
    np.testing.assert_allclose(bools.edge_feat, full.edge_feat, rtol=1e-14)


# --------------------------------------------------------------------------- object form
def test_object_form_initialisation_and_call():
    model = crf.PacCRF(4, 2, final_output="softmax", perturbed_init=False, dtype=np.float64)
    model.add_pairwise_kernel(5, compat_type="4d")
    model.add_pairwise_kernel(3, compat_type="potts", spatial_filter=False, pairwise_weight=2.0)
    model.add_pairwise_kernel(3, compat_type="2d", blur=2)
    t4, tp, t2 = model.terms
    # the 2019 'crf' filler: Gaussian of σ = k/4 scaled to mean 1 over the window, centre 0
    e = np.exp(-0.5 * ((np.arange(5) - 2) / 1.25) ** 2)
    gauss = np.outer(e, e) * 25 / np.outer(e, e).sum()
    gauss[2, 2] = 0
    np.testing.assert_allclose(t4.filter[0, 1], gauss, rtol=1e-12)
    np.testing.assert_array_equal(t4.filter[1, 1], 0)  # 1 − I compatibility
    np.testing.assert_array_equal(tp.filter[0, 0], [[1, 1, 1], [1, 0, 1], [1, 1, 1]])
    np.testing.assert_array_equal(t2.compat, 1 - np.eye(4))
    assert tp.weight == 2.0 and "0d_3_1_1" in repr(model)
    rng = np.random.default_rng(12)
    U, f = inputs(rng, C=4)
    out = model(U, f)
    np.testing.assert_allclose(
        out, R.paccrf(U, f, model.terms, num_steps=2, final_output="softmax"), rtol=1e-10
    )
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-12)
    perturbed = crf.PacCRF(4, 1, seed=0, pairwise_kernels=dict(kernel_size=3))
    assert perturbed.terms[0].filter.dtype == np.float32
    assert 0 < np.abs(perturbed.terms[0].filter[1, 1]).max() <= 5e-4


def test_object_backward_fixed_weighting():
    rng = np.random.default_rng(13)
    U, f = inputs(rng)
    model = crf.PacCRF(
        C, 2, fixed_weighting=True, dtype=np.float64, pairwise_kernels=[dict(compat_type="2d")]
    )
    g = model.backward(np.ones_like(U), U, f)
    assert g.weights is None and g.unary_weight is None
    assert g.compats[0].shape == (C, C) and np.abs(g.compats[0]).max() > 0


def test_matches_torch_paccrf_layer():
    """pacnp.torch.PacCRF (which stores the Potts weight negated) computes the same."""
    torch = pytest.importorskip("torch")
    ptorch = pytest.importorskip("pacnp.torch")
    rng = np.random.default_rng(14)
    U, f = inputs(rng)
    layer = ptorch.PacCRF(C, 3, final_output="log_softmax", perturbed_init=False).double()
    layer.add_pairwise_kernel(3, compat_type="4d", pairwise_weight=0.6)
    layer.add_pairwise_kernel(3, compat_type="potts", dilation=2, pairwise_weight=1.5)
    layer.add_pairwise_kernel(3, compat_type="2d", blur=2, pairwise_weight=0.8)
    layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.from_numpy(np.asarray(rng.standard_normal(tuple(p.shape)) * 0.1)))
        expect = layer(torch.from_numpy(U), torch.from_numpy(f)).numpy()
    kinds = ("4d", "potts", "2d")
    terms = []
    for i, kind in enumerate(kinds):
        w = float(layer.pairwise_weights[i].detach())
        compat = (
            None if layer.compat[i] is None else layer.compat[i].weight.detach().numpy()[:, :, 0, 0]
        )
        terms.append(
            crf.PairwiseTerm(
                kind,
                layer.messengers[i].weight.detach().numpy(),
                -w if kind == "potts" else w,
                compat,
                layer.messengers[i].dilation[0],
                layer.blur[i],
            )
        )
    out = crf.paccrf(
        U,
        f,
        terms,
        num_steps=3,
        unary_weight=float(layer.unary_weight.detach()),
        final_output="log_softmax",
    )
    np.testing.assert_allclose(out, expect, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- arrays
def test_array_api_and_torch_inputs_come_back_in_their_library():
    rng = np.random.default_rng(15)
    U, f = inputs(rng)
    term = make_term(rng, "2d", blur=2)
    expect = crf.paccrf(U, f, [term], num_steps=2)
    xp = pytest.importorskip("array_api_strict")
    sterm = crf.PairwiseTerm("2d", xp.asarray(term.filter), 0.7, xp.asarray(term.compat), 1, 2)
    out = crf.paccrf(xp.asarray(U), xp.asarray(f), [sterm], num_steps=2)
    assert type(out).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(out), expect, rtol=1e-12)
    g = crf.paccrf_backward(xp.ones_like(out), xp.asarray(U), xp.asarray(f), [sterm], num_steps=2)
    assert type(g.edge_feat).__module__.startswith("array_api_strict")
    torch = pytest.importorskip("torch")
    tterm = crf.PairwiseTerm(
        "2d", torch.from_numpy(term.filter), 0.7, torch.from_numpy(term.compat), 1, 2
    )
    tout = crf.paccrf(torch.from_numpy(U), torch.from_numpy(f), [tterm], num_steps=2)
    assert isinstance(tout, torch.Tensor)
    np.testing.assert_allclose(tout.numpy(), expect, rtol=1e-12)


def test_create_features():
    img = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    feats = crf.create_YXRGB(img, yx_scale=2.0, rgb_scale=[10.0, 20.0, 40.0])
    assert feats.shape == (2, 5, 4, 5) and feats.dtype == np.float32
    np.testing.assert_allclose(feats[1, 0, 3, 2], 1.5)  # y / 2
    np.testing.assert_allclose(feats[1, 1, 3, 2], 1.0)  # x / 2
    np.testing.assert_allclose(feats[1, 3], img[1, 1] / 20.0)
    same = crf.create_YXRGB(img.astype(np.float64), scales=[2.0, 2.0, 10.0, 20.0, 40.0])
    assert same.dtype == np.float64
    np.testing.assert_allclose(same, feats, rtol=1e-6)
    pos = crf.create_position_feats((3, 4), scales=(1.0, 4.0), bs=2)
    assert pos.shape == (2, 2, 3, 4)
    np.testing.assert_allclose(pos[0, 1, 0], [0, 0.25, 0.5, 0.75])


# --------------------------------------------------------------------------- crf_refine
def _kmeans_labels(img, k, iters=8):
    """A rough colour segmentation: k-means in RGB from brightness-quantile seeds."""
    x = img.reshape(-1, 3).astype(np.float64)
    order = np.argsort(x.sum(axis=1))
    centres = x[order[np.linspace(0, len(x) - 1, k).astype(int)]]
    for _ in range(iters):
        lab = np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        centres = np.stack(
            [x[lab == i].mean(0) if np.any(lab == i) else centres[i] for i in range(k)]
        )
    return lab.reshape(img.shape[:2])


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_crf_refine_cleans_a_noisy_segmentation_of_a_real_image(name):
    data = pytest.importorskip("skimage.data")
    img = getattr(data, name)()[::4, ::4]  # uint8 RGB, (H, W, 3)
    k = 4
    clean = _kmeans_labels(img, k)
    onehot = (clean[None] == np.arange(k)[:, None, None]).astype(np.float64)
    logits = 1.5 * onehot + np.random.default_rng(0).standard_normal(onehot.shape)
    probs = np.exp(logits)
    probs = (probs / probs.sum(axis=0)).astype(np.float32)
    before = np.mean(probs.argmax(axis=0) == clean)
    refined = crf.crf_refine(probs, img)
    assert refined.shape == probs.shape and refined.dtype == np.float32
    np.testing.assert_allclose(refined.sum(axis=0), 1.0, rtol=1e-5)
    after = np.mean(refined.argmax(axis=0) == clean)
    assert before < 0.75 and after > before + 0.15, (before, after)
    # batched, channel-first image and float image in [0, 1] give the same
    batched = crf.crf_refine(probs[None], np.moveaxis(img, -1, 0)[None] / 255.0, channel_axis=1)
    np.testing.assert_allclose(batched[0], refined, atol=2e-4)


# --------------------------------------------------------------------------- errors
def _raises(exc, *fragments):
    pattern = ".*".join(re.escape(s) for s in fragments)
    return pytest.raises(exc, match=re.compile(pattern, re.S))


def test_errors_name_function_argument_and_value():
    rng = np.random.default_rng(16)
    U, f = inputs(rng)
    good = make_term(rng, "4d")
    with _raises(ValueError, "paccrf", "terms[0].compat_type='3d'", "potts"):
        crf.paccrf(U, f, [crf.PairwiseTerm("3d", good.filter)], num_steps=1)
    with _raises(ValueError, "paccrf", "terms[0].filter has shape (1, 1, 3, 3)", "(C, C, kh, kw)"):
        crf.paccrf(U, f, [crf.PairwiseTerm("4d", np.ones((1, 1, 3, 3)))], num_steps=1)
    with _raises(ValueError, "terms[0].filter", "odd"):
        crf.paccrf(U, f, [crf.PairwiseTerm("potts", np.ones((1, 1, 2, 2)))], num_steps=1)
    with _raises(ValueError, "terms[0].compat must be a (3, 3) array", "'2d'"):
        crf.paccrf(U, f, [crf.PairwiseTerm("2d", np.ones((1, 1, 3, 3)))], num_steps=1)
    with _raises(ValueError, "paccrf", "final_output='probs'", "log_softmax"):
        crf.paccrf(U, f, [good], num_steps=1, final_output="probs")
    with _raises(ValueError, "paccrf", "unary must be 4-D", "(3, 6, 7)"):
        crf.paccrf(U[0], f, [good], num_steps=1)
    with _raises(ValueError, "edge_feat has shape (2, 4, 6, 6)", "(2, F, 6, 7)"):
        crf.paccrf(U, f[..., :6], [good], num_steps=1)
    with _raises(TypeError, "edge_feat has dtype float32 but unary has float64"):
        crf.paccrf(U, f.astype(np.float32), [good], num_steps=1)
    with _raises(TypeError, "paccrf", "unary has dtype int64", "float32 or float64"):
        crf.paccrf(U.astype(np.int64), f, [good], num_steps=1)
    with _raises(ValueError, "num_steps must be an int >= 0", "-1"):
        crf.paccrf(U, f, [good], num_steps=-1)
    with _raises(ValueError, "terms[0].blur must be a positive int", "0"):
        crf.paccrf(U, f, [crf.PairwiseTerm("4d", good.filter, blur=0)], num_steps=1)
    with _raises(ValueError, "kernels has 2 entries but there are 1 pairwise terms"):
        crf.paccrf(U, None, [good], num_steps=1, kernels=[None, None])
    with _raises(ValueError, "paccrf_backward", "grad_output has shape (2, 3, 6, 6)"):
        crf.paccrf_backward(U[..., :6], U, f, [good], num_steps=1)
    with _raises(ValueError, "paccrf_backward", "needs"):
        crf.paccrf_backward(U, U, f, [good], num_steps=1, needs=("unary", "bias"))
    torch = pytest.importorskip("torch")
    with _raises(TypeError, "paccrf", "arrays from different libraries", "unary: torch"):
        crf.paccrf(torch.from_numpy(U), f, [good], num_steps=1)


def test_object_and_refine_errors():
    with _raises(ValueError, "PacCRF.add_pairwise_kernel", "kernel_size must be odd", "4"):
        crf.PacCRF(3, 1).add_pairwise_kernel(4)
    with _raises(ValueError, "PacCRF.add_pairwise_kernel", "compat_type='3d'"):
        crf.PacCRF(3, 1).add_pairwise_kernel(3, compat_type="3d")
    with _raises(ValueError, "PacCRF", "final_output='x'"):
        crf.PacCRF(3, 1, final_output="x")
    probs = np.full((2, 8, 9), 0.5, np.float32)
    img = np.zeros((8, 9, 3), np.uint8)
    with _raises(ValueError, "crf_refine", "image has 1 image(s) of size (9, 8)", "(8, 9)"):
        crf.crf_refine(probs, np.zeros((9, 8, 3), np.uint8))
    with _raises(ValueError, "crf_refine", "probabilities must be >= 0"):
        crf.crf_refine(-probs, img)
    with _raises(ValueError, "crf_refine", "probabilities must be (C, H, W) or (B, C, H, W)"):
        crf.crf_refine(probs[0], img)
    with _raises(ValueError, "crf_refine", "kernel_size must be odd", "4"):
        crf.crf_refine(probs, img, kernel_size=4)
    with _raises(ValueError, "crf_refine", "sigma_color must be a positive number", "0"):
        crf.crf_refine(probs, img, sigma_color=0)
    with _raises(ValueError, "crf_refine", "channel_axis=5"):
        crf.crf_refine(probs, img, channel_axis=5)


# --------------------------------------------------------------------------- benchmark peer
def test_benchmark_torch_peer_computes_the_same():
    """The W6 peer of asv_benchmarks/benchmarks/bench_crf.py (unfold + einsum) computes what
    pacnp.crf computes, on a small float64 instance of the workload."""
    import importlib

    torch = pytest.importorskip("torch")
    from cases import load_ratio_table

    common = load_ratio_table().load_suite()
    mod = importlib.import_module(common.__name__.rsplit(".", 1)[0] + ".bench_crf")
    w = mod.CRFWorkload(B=2, C=5, hw=20, steps=3, k=5, dilation=2)
    pac = mod.make_crf_runner("pacnp", w, dtype=np.float64).run()
    peer = mod.make_crf_runner("torch_unfold", w, dtype=np.float64).run()
    assert isinstance(peer, torch.Tensor)
    np.testing.assert_allclose(pac, peer.numpy(), rtol=1e-10, atol=1e-10)
    U, f, filt = mod.make_crf_inputs(w, np.float64)
    ref = R.paccrf(
        U,
        f,
        [dict(compat_type="4d", filter=filt, weight=1.0, dilation=2)],
        num_steps=3,
        final_output="log_softmax",
    )
    np.testing.assert_allclose(pac, ref, rtol=1e-10, atol=1e-10)


def test_on_step_reports_every_mean_field_step():
    rng = np.random.default_rng(3)
    probs = rng.random((3, 6, 7)).astype(np.float32)
    image = rng.random((6, 7, 3)).astype(np.float32)
    seen = []
    out = crf.crf_refine(probs, image, num_steps=3, on_step=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    np.testing.assert_array_equal(out, crf.crf_refine(probs, image, num_steps=3))
    with pytest.raises(TypeError, match="on_step"):
        crf.crf_refine(probs, image, on_step=5)
