"""pacnp.dask against the in-memory functions: the same numbers, chunk by chunk.

Every wrapper is compared with the in-memory call on the whole array (float64, to 1e-12) with
uneven chunks, chunks smaller than the halo, 1-pixel images and batch-chunked inputs; then one
filter through the threaded and process schedulers and through a real ``distributed``
LocalCluster.
"""

import subprocess
import sys

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import pacnp  # noqa: E402
from pacnp import dask as pdask  # noqa: E402
from pacnp import filters  # noqa: E402

ATOL = 1e-12


def close(actual, expected):
    """``actual`` (dask) computed on the synchronous scheduler equals ``expected``."""
    assert isinstance(actual, da.Array)
    a = actual.compute(scheduler="sync")
    assert a.shape == expected.shape and a.dtype == expected.dtype
    np.testing.assert_allclose(a, expected, rtol=0, atol=ATOL)


# chunkings of a (…, 23, 19) image: uneven; smaller than any halo (1 pixel); one chunk
CHUNKS = {"uneven": ((4, 9, 10), (2, 6, 11)), "tiny": (1, 1), "whole": (-1, -1)}


# --------------------------------------------------------------------------- filters
@pytest.mark.parametrize("border", filters.BORDERS)
@pytest.mark.parametrize("chunks", CHUNKS)
def test_joint_bilateral_filter(border, chunks):
    rng = np.random.default_rng(0)
    img = rng.random((3, 23, 19))  # channels first
    guide = rng.random((2, 23, 19))
    expected = filters.joint_bilateral_filter(
        img, guide, sigma_spatial=1.2, sigma_color=0.3, border=border, channel_axis=0
    )
    out = pdask.joint_bilateral_filter(
        da.from_array(img, chunks=(1,) + CHUNKS[chunks]),
        da.from_array(guide, chunks=(2, 5, 7)),
        sigma_spatial=1.2,
        sigma_color=0.3,
        border=border,
        channel_axis=0,
    )
    close(out, expected)


def test_bilateral_filter_batch_chunked_channels_last_default_sigma():
    rng = np.random.default_rng(1)
    img = rng.random((2, 3, 17, 15, 2))  # two batch axes, channels last
    expected = filters.bilateral_filter(img, radius=3, sigma_spatial=2.0, channel_axis=-1)
    out = pdask.bilateral_filter(
        da.from_array(img, chunks=(1, 2, 5, 8, 1)), radius=3, sigma_spatial=2.0, channel_axis=-1
    )
    close(out, expected)


def test_joint_bilateral_filter_uint8_exact():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (31, 26), dtype=np.uint8)
    guide = rng.integers(0, 256, (31, 26, 3), dtype=np.uint8)
    expected = filters.joint_bilateral_filter(
        img, guide, sigma_spatial=1.5, sigma_color=20.0, guide_channel_axis=-1
    )
    out = pdask.joint_bilateral_filter(
        da.from_array(img, chunks=(7, 9)),
        da.from_array(guide, chunks=(10, 10, 3)),
        sigma_spatial=1.5,
        sigma_color=20.0,
        guide_channel_axis=-1,
    )
    got = out.compute(scheduler="sync")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (13, 1)])
@pytest.mark.parametrize("border", ["reflect", "renormalize"])
def test_one_pixel_images(shape, border):
    rng = np.random.default_rng(3)
    img = rng.random((2,) + shape)  # a batch of two
    expected = filters.bilateral_filter(img, sigma_spatial=1.0, sigma_color=0.5, border=border)
    out = pdask.bilateral_filter(
        da.from_array(img, chunks=(1, 1, 4)), sigma_spatial=1.0, sigma_color=0.5, border=border
    )
    close(out, expected)
    expected = filters.detail_preserving_pool(img, 3, stride=2, border=border)
    close(
        pdask.detail_preserving_pool(
            da.from_array(img, chunks=(1, 1, 2)), 3, stride=2, border=border
        ),
        expected,
    )


@pytest.mark.parametrize(
    "k,stride,border",
    [(3, 2, "renormalize"), (5, 3, "reflect"), (1, 2, "nearest"), (3, 1, "constant")],
)
@pytest.mark.parametrize("chunks", ["uneven", "tiny"])
def test_detail_preserving_pool(k, stride, border, chunks):
    rng = np.random.default_rng(4)
    img = rng.random((2, 23, 19))
    expected = filters.detail_preserving_pool(
        img, k, stride=stride, alpha=0.5, lam=0.7, border=border
    )
    out = pdask.detail_preserving_pool(
        da.from_array(img, chunks=(1,) + CHUNKS[chunks]),
        k,
        stride=stride,
        alpha=0.5,
        lam=0.7,
        border=border,
    )
    close(out, expected)


@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("with_confidence", [False, True])
def test_joint_bilateral_upsample(factor, with_confidence):
    rng = np.random.default_rng(5)
    low = rng.random((2, 13, 11))  # batch of two grey images
    guide = rng.random((2, 3, 13 * factor, 11 * factor))
    conf = rng.random((2, 13, 11)) if with_confidence else None
    expected = filters.joint_bilateral_upsample(
        low, guide, factor, guide_channel_axis=1, confidence=conf
    )
    out = pdask.joint_bilateral_upsample(
        da.from_array(low, chunks=(1, (2, 4, 7), 3)),
        da.from_array(guide, chunks=(2, 1, 9, 9)),
        factor,
        guide_channel_axis=1,
        confidence=None if conf is None else da.from_array(conf, chunks=(2, 5, 5)),
    )
    close(out, expected)


# --------------------------------------------------------------------------- volumes, signals
# a (…, 11, 9, 10) volume split on every spatial axis: uneven chunks, and chunks of 2 voxels
# (smaller than the halos: merged into their neighbours)
VOL_CHUNKS = {"uneven": ((3, 5, 3), (4, 5), (2, 3, 5)), "small": (2, 2, 2)}


@pytest.mark.parametrize("border", filters.BORDERS)
@pytest.mark.parametrize("chunks", VOL_CHUNKS)
def test_bilateral_filter_3d(border, chunks):
    """A 2-channel volume, anisotropic spacing (halos 1, 2, 3 voxels), chunked on every axis."""
    rng = np.random.default_rng(20)
    vol = rng.random((11, 9, 10, 2))
    kw = dict(
        sigma_spatial=1.0,
        sigma_color=0.4,
        border=border,
        channel_axis=-1,
        spatial_dims=3,
        spacing=(3.0, 1.5, 1.0),
    )
    expected = filters.bilateral_filter(vol, **kw)
    lazy = pdask.bilateral_filter(da.from_array(vol, chunks=VOL_CHUNKS[chunks] + (1,)), **kw)
    assert all(len(c) > 1 for c in lazy.chunks[:3])  # split on every spatial axis
    close(lazy, expected)


def test_joint_bilateral_filter_3d_batch_and_default_sigma():
    rng = np.random.default_rng(21)
    vol = rng.random((2, 8, 9, 10))  # a batch of two grey volumes
    guide = rng.random((2, 8, 9, 10, 3))
    kw = dict(sigma_spatial=1.2, radius=(1, 2, 2), spatial_dims=3, guide_channel_axis=-1)
    expected = filters.joint_bilateral_filter(vol, guide, **kw)
    lazy = pdask.joint_bilateral_filter(
        da.from_array(vol, chunks=(1, 3, 4, 5)), da.from_array(guide, chunks=(2, 4, 4, 4, 3)), **kw
    )
    close(lazy, expected)


@pytest.mark.parametrize("border", filters.BORDERS)
def test_joint_bilateral_filter_1d(border):
    rng = np.random.default_rng(22)
    sig = rng.random((3, 50))
    guide = rng.random((3, 50, 2))
    kw = dict(
        sigma_spatial=2.0,
        sigma_color=0.3,
        radius=5,
        border=border,
        spatial_dims=1,
        guide_channel_axis=-1,
    )
    expected = filters.joint_bilateral_filter(sig, guide, **kw)
    lazy = pdask.joint_bilateral_filter(
        da.from_array(sig, chunks=(2, (7, 20, 3, 20))), da.from_array(guide, chunks=(3, 9, 2)), **kw
    )
    close(lazy, expected)


@pytest.mark.parametrize("factor", [2, 3])
def test_joint_bilateral_upsample_3d(factor):
    rng = np.random.default_rng(23)
    low = rng.random((7, 6, 5))
    guide = rng.random((7 * factor, 6 * factor, 5 * factor))
    conf = rng.random((7, 6, 5))
    kw = dict(sigma_color=0.4, spatial_dims=3)
    expected = filters.joint_bilateral_upsample(low, guide, factor, confidence=conf, **kw)
    lazy = pdask.joint_bilateral_upsample(
        da.from_array(low, chunks=(3, 2, 2)),
        da.from_array(guide, chunks=8),
        factor,
        confidence=da.from_array(conf, chunks=3),
        **kw,
    )
    assert all(len(c) > 1 for c in lazy.chunks)
    close(lazy, expected)


@pytest.mark.parametrize("border", filters.BORDERS)
def test_detail_preserving_pool_3d(border):
    rng = np.random.default_rng(24)
    vol = rng.random((2, 11, 9, 10))  # C D H W
    kw = dict(stride=(1, 2, 3), alpha=0.5, lam=0.7, border=border, channel_axis=0, spatial_dims=3)
    expected = filters.detail_preserving_pool(vol, (3, 3, 5), **kw)
    lazy = pdask.detail_preserving_pool(da.from_array(vol, chunks=(1, 4, 4, 4)), (3, 3, 5), **kw)
    assert all(len(c) > 1 for c in lazy.chunks[1:])
    close(lazy, expected)


# --------------------------------------------------------------------------- fused PAC ops
# (kernel_size, stride, padding, dilation, smoothing, mask, normalize, shared filters)
FUSED = [
    (3, 1, 1, 1, "none", False, False, False),
    (5, 2, 1, 1, "gaussian", True, True, False),
    (3, 3, 0, 2, "average_5", False, False, True),
    (5, 1, 0, 1, "none", True, False, False),
    (3, 2, 2, 2, "full_3", True, True, True),
]


def _fused_case(rng, k, shared, c_in=2, c_out=4, transposed=False):
    if shared:
        return rng.random((1, 1, k, k)), rng.random(c_in)
    shape = (c_in, c_out, k, k) if transposed else (c_out, c_in, k, k)
    return rng.random(shape), rng.random(c_out)


def _kernel_kw(rng, smooth, normalize):
    kw = dict(smooth_kernel_type=smooth, normalize_kernel=normalize)
    if smooth.startswith("full_"):
        kw["smooth_kernel"] = rng.random((3, 3))
    return kw


def _check_with_mask(got, expected):
    out, mask = got
    close(out, expected[0])
    if expected[1] is None:
        assert mask is None
    else:
        close(mask, expected[1])


X_CHUNKS = (1, 1, (5, 5, 6, 7), (2, 17))  # batch and channels split, rows and columns uneven


@pytest.mark.parametrize("k,s,p,d,smooth,masked,normalize,shared", FUSED)
def test_pacconv2d_and_pacpool2d_fused(k, s, p, d, smooth, masked, normalize, shared):
    rng = np.random.default_rng(6)
    x, g = rng.random((2, 2, 23, 19)), rng.random((2, 3, 23, 19))
    m = (rng.random((2, 1, 23, 19)) > 0.3).astype(np.float64)
    w, b = _fused_case(rng, k, shared)
    kw = _kernel_kw(rng, smooth, normalize)
    geo = dict(stride=s, padding=p, dilation=d)
    xd, gd = da.from_array(x, chunks=X_CHUNKS), da.from_array(g, chunks=(2, 1, 7, 7))
    md = da.from_array(m, chunks=(1, 1, 4, 6)) if masked else None
    expected = pacnp.pacconv2d_fused(
        x, g, w, b, shared_filters=shared, mask=m if masked else None, **geo, **kw
    )
    _check_with_mask(
        pdask.pacconv2d_fused(xd, gd, w, b, shared_filters=shared, mask=md, **geo, **kw), expected
    )
    expected = pacnp.pacpool2d_fused(x, g, k, mask=m if masked else None, **geo, **kw)
    _check_with_mask(pdask.pacpool2d_fused(xd, gd, k, mask=md, **geo, **kw), expected)


@pytest.mark.parametrize("k,s,p,d,smooth,masked,normalize,shared", FUSED)
def test_pacconv_transpose2d_fused(k, s, p, d, smooth, masked, normalize, shared):
    rng = np.random.default_rng(7)
    x = rng.random((2, 2, 23, 19))
    w, b = _fused_case(rng, k, shared, transposed=True)
    kw = _kernel_kw(rng, smooth, normalize)
    for op in range(max(s, d)):
        ho, wo = ((n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n in x.shape[2:])
        g = rng.random((2, 3, ho, wo))
        m = (rng.random((2, 1, ho, wo)) > 0.3).astype(np.float64)
        geo = dict(stride=s, padding=p, output_padding=op, dilation=d, shared_filters=shared)
        expected = pacnp.pacconv_transpose2d_fused(
            x, g, w, b, mask=m if masked else None, **geo, **kw
        )
        got = pdask.pacconv_transpose2d_fused(
            da.from_array(x, chunks=X_CHUNKS),
            da.from_array(g, chunks=(2, 1, 9, 9)),
            w,
            b,
            mask=da.from_array(m, chunks=(1, 1, 9, 9)) if masked else None,
            **geo,
            **kw,
        )
        _check_with_mask(got, expected)


def test_fused_float32_and_one_pixel():
    rng = np.random.default_rng(8)
    x, g = rng.random((1, 2, 1, 9), np.float32), rng.random((1, 3, 1, 9), np.float32)
    w = rng.random((3, 2, 3, 3), np.float32)
    expected, _ = pacnp.pacconv2d_fused(x, g, w, padding=1, kernel_type="inv_0.5_-1")
    out, _ = pdask.pacconv2d_fused(
        da.from_array(x, chunks=(1, 1, 1, 1)),
        da.from_array(g, chunks=(1, 3, 1, 2)),
        w,
        padding=1,
        kernel_type="inv_0.5_-1",
    )
    got = out.compute(scheduler="sync")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- CRF
@pytest.mark.parametrize("num_steps", [1, 2])
def test_paccrf(num_steps):
    from pacnp import crf

    rng = np.random.default_rng(10)
    unary, feat = rng.normal(size=(2, 3, 41, 37)), rng.normal(size=(2, 4, 41, 37))
    terms = [
        crf.PairwiseTerm("potts", rng.random((1, 1, 5, 5)), weight=0.7, dilation=2),
        crf.PairwiseTerm("4d", rng.random((3, 3, 3, 3)), weight=0.3),
        dict(compat_type="na", filter=rng.random((3, 3, 3, 3)), weight=0.2),
    ]
    feats = [feat, feat[:, :2], None]
    expected = crf.paccrf(
        unary, feats, terms, num_steps=num_steps, final_output="softmax", logQ=0.5 * unary
    )
    out = pdask.paccrf(
        da.from_array(unary, chunks=(1, 3, (3, 12, 26), 9)),
        [
            da.from_array(feat, chunks=(1, 4, 9, 9)),
            da.from_array(feat[:, :2], chunks=(2, 2, 5, 5)),
            None,
        ],
        terms,
        num_steps=num_steps,
        final_output="softmax",
        logQ=da.from_array(0.5 * unary, chunks=8),
    )
    assert len(out.chunks[2]) > 1 and len(out.chunks[3]) > 1  # the receptive field crosses seams
    close(out, expected)


def test_paccrf_rejects_blur():
    from pacnp import crf

    term = crf.PairwiseTerm("potts", np.ones((1, 1, 3, 3)), blur=2)
    with pytest.raises(ValueError, match="blur"):
        pdask.paccrf(da.zeros((1, 2, 8, 8)), da.zeros((1, 1, 8, 8)), [term], num_steps=1)


# --------------------------------------------------------------------------- chunk plans
def test_plan_chunks_merges_small_chunks_and_aligns_to_stride():
    plan = pdask.plan_chunks(
        "forward", 40, (3, 3, 7, 11, 16), stride=3, padding=2, radius=2, halo=4
    )
    depth = plan["input_depth"][0]
    assert depth == 6  # ⌈4 / 3⌉ · 3
    assert sum(plan["input_chunks"]) == 40
    assert min(plan["input_chunks"]) >= depth
    assert all(b % 3 == 0 for b in np.cumsum(plan["input_chunks"])[:-1])
    assert sum(plan["output_chunks"]) == (40 + 4 - 4 - 1) // 3 + 1
    one = pdask.plan_chunks("forward", 1, (1,), radius=3)
    assert one["input_chunks"] == (1,) and one["input_depth"] == (0, 0)
    up = pdask.plan_chunks(
        "transposed", 20, (1,) * 20, stride=4, padding=5, radius=6, output_padding=1, halo=6
    )
    assert sum(up["output_chunks"]) == 80 and up["guide_chunks"] == up["output_chunks"]
    assert min(up["input_chunks"]) >= max(up["input_depth"])
    assert min(up["guide_chunks"]) >= max(up["guide_depth"])


def test_errors_name_the_argument():
    img = np.zeros((8, 8))
    with pytest.raises(TypeError, match="image must be a dask array"):
        pdask.bilateral_filter(img)
    with pytest.raises(ValueError, match="guide batch and spatial sizes"):
        pdask.joint_bilateral_filter(da.zeros((8, 8)), da.zeros((8, 9)))
    with pytest.raises(ValueError, match="border must be one of"):
        pdask.bilateral_filter(da.zeros((8, 8)), border="wrap")
    with pytest.raises(ValueError, match="guide has shape"):
        pdask.pacconv2d_fused(
            da.zeros((1, 1, 8, 8)), da.zeros((1, 1, 8, 7)), np.ones((1, 1, 3, 3)), padding=1
        )


# --------------------------------------------------------------------------- threads
def test_numba_threads_default_env_and_restore(monkeypatch):
    import numba

    monkeypatch.delenv(pdask.ENV_NUMBA_THREADS, raising=False)
    assert pdask._numba_threads(None) == 1
    monkeypatch.setenv(pdask.ENV_NUMBA_THREADS, "2")
    assert pdask._numba_threads(None) == 2
    assert pdask._numba_threads(3) == 3
    monkeypatch.setenv(pdask.ENV_NUMBA_THREADS, "0")
    with pytest.raises(ValueError, match="numba_threads"):
        pdask._numba_threads(None)
    before = numba.get_num_threads()
    assert pdask._run_with_threads(1, numba.get_num_threads) == 1
    assert numba.get_num_threads() == before


def test_import_pacnp_does_not_import_dask():
    code = (
        "import sys, pacnp, pacnp.filters; "
        "sys.exit(1 if any(m == 'dask' or m.startswith('dask.') for m in sys.modules) "
        "else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --------------------------------------------------------------------------- schedulers
def _scheduler_case():
    rng = np.random.default_rng(9)
    img = rng.random((2, 40, 36))
    expected = filters.bilateral_filter(img, sigma_spatial=1.5, sigma_color=0.4)
    out = pdask.bilateral_filter(
        da.from_array(img, chunks=(1, 13, 17)), sigma_spatial=1.5, sigma_color=0.4
    )
    return out, expected


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_local_schedulers(scheduler):
    out, expected = _scheduler_case()
    got = out.compute(scheduler=scheduler, num_workers=2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


def test_distributed_local_cluster():
    distributed = pytest.importorskip("distributed")
    out, expected = _scheduler_case()
    with (
        distributed.LocalCluster(
            processes=True,
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        with distributed.get_task_stream(client) as stream:
            got = client.compute(out).result()
        workers = set(cluster.scheduler_info["workers"])
    # the graph's tasks ran in the cluster's worker processes
    ran_on = {task["worker"] for task in stream.data}
    assert ran_on and ran_on <= workers
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
