"""The mean-field engine: validation of one CRF call (:class:`_Run`, :class:`_Term`), the
unrolled forward loop and its backward (backpropagation through the steps)."""

from __future__ import annotations

import numbers

import numpy as np

from .. import _api as pac
from ._blur import _Blur
from ._checks import _check_positive_int, _check_reach, _check_steps, _odd_pair
from ._space import _is_float, _is_numpy, _Space
from ._terms import COMPAT_TYPES, FINAL_OUTPUTS, CRFGrads, PairwiseTerm


def _softmax(xp, L):
    if _is_numpy(xp):
        # NumPy: one temporary, updated in place (the generic form below makes four
        # label-sized temporaries; at 21 × 256² that is ~40 % of the softmax's time)
        e = L - L.max(axis=1, keepdims=True)
        np.exp(e, out=e)
        e /= e.sum(axis=1, keepdims=True)
        return e
    e = xp.exp(L - xp.max(L, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


def _log_softmax(xp, L):
    s = L - xp.max(L, axis=1, keepdims=True)
    return s - xp.log(xp.sum(xp.exp(s), axis=1, keepdims=True))


def _final(xp, final_output, L):
    if final_output == "softmax":
        return _softmax(xp, L)
    if final_output == "log_softmax":
        return _log_softmax(xp, L)
    return L


def _final_backward(xp, final_output, g, L):
    if final_output == "log_Q":
        return g
    S = _softmax(xp, L)
    if final_output == "softmax":
        return S * (g - xp.sum(g * S, axis=1, keepdims=True))
    return g - S * xp.sum(g, axis=1, keepdims=True)


class _Term:
    """A validated pairwise term, in the computing namespace, with its K (or features)."""

    def __init__(self, run, idx, term):
        fn, C = run.fn, run.C
        where = f"terms[{idx}]"
        if isinstance(term, dict):
            try:
                term = PairwiseTerm(**term)
            except TypeError as exc:
                raise TypeError(
                    f"{fn}: {where} is a dict with bad keys ({exc}); expected the "
                    f"fields of PairwiseTerm: compat_type, filter, weight, compat, "
                    f"dilation, blur"
                ) from None
        if not isinstance(term, PairwiseTerm):
            raise TypeError(
                f"{fn}: {where} must be a PairwiseTerm (or a dict of its fields), "
                f"got {type(term).__name__}"
            )
        kind = term.compat_type
        if kind not in COMPAT_TYPES:
            raise ValueError(
                f"{fn}: {where}.compat_type={kind!r}; expected one of {list(COMPAT_TYPES)}"
            )
        self.kind = kind
        self.dilation = _check_positive_int(fn, f"{where}.dilation", term.dilation)
        self.blur = _check_positive_int(fn, f"{where}.blur", term.blur)
        sp = run.space
        filt = sp.inp(term.filter, f"{where}.filter")
        if filt is None or not hasattr(filt, "shape"):
            raise TypeError(
                f"{fn}: {where}.filter must be an array, got {type(term.filter).__name__}"
            )
        dense = kind in ("na", "4d")
        want = "(C, C, kh, kw)" if dense else "(1, 1, kh, kw)"
        lead = (C, C) if dense else (1, 1)
        if len(filt.shape) != 4 or tuple(filt.shape[:2]) != lead:
            raise ValueError(
                f"{fn}: {where}.filter has shape {tuple(filt.shape)}; compat_type="
                f"{kind!r} with C={C} labels needs {want} = {lead + ('kh', 'kw')}"
            )
        _odd_pair(fn, f"{where}.filter", tuple(filt.shape[2:]))
        run.check_dtype(filt, f"{where}.filter")
        self.filter = filt
        self.k = tuple(int(v) for v in filt.shape[2:])
        _check_reach(fn, where, self.k, self.dilation, self.blur)
        self.pad = tuple(self.dilation * (k - 1) // 2 for k in self.k)
        compat = sp.inp(term.compat, f"{where}.compat")
        if kind == "2d":
            if compat is None or not hasattr(compat, "shape") or tuple(compat.shape) != (C, C):
                seen = None if compat is None else tuple(getattr(compat, "shape", ()))
                raise ValueError(
                    f"{fn}: {where}.compat must be a ({C}, {C}) array for "
                    f"compat_type='2d', got {seen if seen is not None else None}"
                )
            run.check_dtype(compat, f"{where}.compat")
        elif compat is not None:
            raise ValueError(
                f"{fn}: {where}.compat is only used with compat_type='2d', but "
                f"compat_type={kind!r}; pass compat=None"
            )
        self.compat = compat
        w = term.weight
        if isinstance(w, (bool, np.bool_)) or not (
            isinstance(w, numbers.Real) or hasattr(w, "shape") and w.shape == ()
        ):
            raise TypeError(f"{fn}: {where}.weight must be a real number or a 0-d array, got {w!r}")
        self.weight = sp.inp(w, f"{where}.weight")
        # potts enters as L += w·P(Q) (μ = −I), every other type as L −= w·μ(P(Q))
        self.sign = 1.0 if kind == "potts" else -1.0
        H, W = run.hw
        self.blurg = _Blur(sp, (H, W), self.blur, run.B, run.dtype) if self.blur > 1 else None
        self.coarse_hw = self.blurg.m if self.blurg else (H, W)
        self.K = None
        self.feat = None  # features at the message resolution (pooled), K's guide
        self.feat_src = None  # index of the caller's feature array they come from
        self.zguide = None
        if kind == "na":  # K ≡ 1: a zero guide makes packernel2d's Gaussian exactly 1
            self.zguide = sp.asarray(np.zeros((run.B, 1) + self.coarse_hw), run.dtype)

    # ------------------------------------------------------------ forward pieces
    def conv_kw(self):
        return dict(
            padding=self.pad, dilation=self.dilation, shared_filters=self.kind in ("2d", "potts")
        )

    def message(self, xp, X):
        """Y = P(X) on the coarse grid."""
        if self.kind == "na":
            return pac.pacconv2d_fused(
                X, self.zguide, self.filter, padding=self.pad, dilation=self.dilation
            )[0]
        return pac.pacconv2d(X, self.K, self.filter, **self.conv_kw())

    def mix(self, xp, Y):
        """μ' (the compatibility without potts' sign): M·Y for '2d', else Y."""
        if self.kind != "2d":
            return Y
        B, C, h, w = Y.shape
        return xp.reshape(xp.matmul(self.compat, xp.reshape(Y, (B, C, h * w))), (B, C, h, w))


class _Run:
    """Validation and the unrolled mean-field loop of one :func:`paccrf` call."""

    def __init__(
        self, fn, unary, edge_feat, terms, num_steps, unary_weight, final_output, logQ, kernels
    ):
        self.fn = fn
        if isinstance(terms, (PairwiseTerm, dict)):
            terms = [terms]
        try:
            terms = list(terms)
        except TypeError:
            raise TypeError(
                f"{fn}: terms must be a list of PairwiseTerm, got {type(terms).__name__}"
            ) from None
        named = dict(unary=unary, logQ=logQ)
        feats_in = edge_feat if isinstance(edge_feat, (list, tuple)) else [edge_feat]
        for i, f in enumerate(feats_in):
            named[f"edge_feat[{i}]" if isinstance(edge_feat, (list, tuple)) else "edge_feat"] = f
        if kernels is not None and isinstance(kernels, (list, tuple)):
            for i, k in enumerate(kernels):
                named[f"kernels[{i}]"] = k
        for i, t in enumerate(terms):
            if isinstance(t, PairwiseTerm):
                named[f"terms[{i}].filter"] = t.filter
                named[f"terms[{i}].compat"] = t.compat
        self.space = sp = _Space(fn, named)
        self.xp = sp.xp
        U = sp.inp(unary, "unary")
        if U is None or not hasattr(U, "shape"):
            raise TypeError(
                f"{fn}: unary must be an array (B, C, H, W), got {type(unary).__name__}"
            )
        if len(U.shape) != 4:
            raise ValueError(f"{fn}: unary must be 4-D (B, C, H, W), got shape {tuple(U.shape)}")
        if not _is_float(U.dtype):
            raise TypeError(f"{fn}: unary has dtype {U.dtype}; expected float32 or float64")
        self.U = U
        self.dtype = U.dtype
        self.B, self.C, H, W = (int(v) for v in U.shape)
        if min(self.C, H, W) < 1:
            raise ValueError(
                f"{fn}: unary has shape {tuple(U.shape)}; it needs at least one "
                f"label and a non-empty image"
            )
        self.hw = (H, W)
        self.T = _check_steps(fn, num_steps)
        if final_output not in FINAL_OUTPUTS:
            raise ValueError(
                f"{fn}: final_output={final_output!r}; expected one of {list(FINAL_OUTPUTS)}"
            )
        self.final_output = final_output
        if isinstance(unary_weight, (bool, np.bool_)) or not (
            isinstance(unary_weight, numbers.Real)
            or hasattr(unary_weight, "shape")
            and unary_weight.shape == ()
        ):
            raise TypeError(
                f"{fn}: unary_weight must be a real number or a 0-d array, got {unary_weight!r}"
            )
        self.wu = sp.inp(unary_weight, "unary_weight")
        L0 = sp.inp(logQ, "logQ")
        if L0 is not None:
            if tuple(L0.shape) != tuple(U.shape):
                raise ValueError(
                    f"{fn}: logQ has shape {tuple(L0.shape)}; expected the unary's {tuple(U.shape)}"
                )
            self.check_dtype(L0, "logQ")
        self.L0 = L0
        self.terms = [_Term(self, i, t) for i, t in enumerate(terms)]
        self._setup_kernels(edge_feat, kernels)

    def check_dtype(self, a, name):
        if a.dtype != self.dtype:
            raise TypeError(
                f"{self.fn}: {name} has dtype {a.dtype} but unary has {self.dtype}; "
                f"pass all floating arrays in one dtype (float32 or float64)"
            )

    def _check_feat(self, f, name):
        if f is None or not hasattr(f, "shape"):
            raise TypeError(
                f"{self.fn}: {name} must be an array (B, F, H, W), got {type(f).__name__}"
            )
        B, H, W = self.B, *self.hw
        if len(f.shape) != 4 or f.shape[0] != B or tuple(f.shape[2:]) != (H, W):
            raise ValueError(
                f"{self.fn}: {name} has shape {tuple(f.shape)}; expected "
                f"({B}, F, {H}, {W}) — the unary's batch and image size "
                f"(create it with create_YXRGB(image, ...))"
            )
        self.check_dtype(f, name)

    def _check_kernel(self, K, i, t):
        """A given K fits terms[i]: (B, 1 or C, kh, kw, h, w) at the term's message grid."""
        name = f"kernels[{i}]"
        if K is None or not hasattr(K, "shape"):
            raise TypeError(f"{self.fn}: {name} must be an array, got {type(K).__name__}")
        shape = tuple(int(v) for v in K.shape)
        if (
            len(shape) != 6
            or shape[0] != self.B
            or shape[1] not in (1, self.C)
            or shape[2:4] != t.k
            or shape[4:] != tuple(t.coarse_hw)
        ):
            want = (self.B, "1 or C") + t.k + tuple(t.coarse_hw)
            raise ValueError(
                f"{self.fn}: {name} has shape {shape}; terms[{i}] needs {want} "
                f"(packernel2d of its features at the message grid; "
                f"PacCRF.compute_kernels makes them)"
            )
        self.check_dtype(K, name)
        return K

    def _setup_kernels(self, edge_feat, kernels):
        fn, sp, n = self.fn, self.space, len(self.terms)
        self.kernels_given = kernels is not None
        self.shared_feat = not isinstance(edge_feat, (list, tuple))
        self.feats = []
        if kernels is not None:
            ks = list(kernels) if isinstance(kernels, (list, tuple)) else [kernels] * n
            if len(ks) != n:
                raise ValueError(
                    f"{fn}: kernels has {len(ks)} entries but there are {n} "
                    f"pairwise terms; give one K per term (None for 'na')"
                )
            for i, (t, K) in enumerate(zip(self.terms, ks)):
                if t.kind != "na":
                    if K is None:
                        raise ValueError(
                            f"{fn}: kernels[{i}] is None but terms[{i}] has "
                            f"compat_type={t.kind!r}, which needs a K"
                        )
                    t.K = self._check_kernel(sp.inp(K, f"kernels[{i}]"), i, t)
            return
        needs_k = [t for t in self.terms if t.kind != "na"]
        if not needs_k:
            return
        if self.shared_feat:
            self._check_feat(sp.inp(edge_feat, "edge_feat"), "edge_feat")
            self.feats = [sp.inp(edge_feat, "edge_feat")]
        else:
            if len(edge_feat) != n:
                raise ValueError(
                    f"{fn}: edge_feat is a list of {len(edge_feat)} arrays but "
                    f"there are {n} pairwise terms; give one per term (None for "
                    f"'na') or one array shared by all"
                )
            self.feats = [
                None if f is None else sp.inp(f, f"edge_feat[{i}]") for i, f in enumerate(edge_feat)
            ]
        pooled = {}
        for i, t in enumerate(self.terms):
            if t.kind == "na":
                continue
            src = 0 if self.shared_feat else i
            f = self.feats[src]
            name = "edge_feat" if self.shared_feat else f"edge_feat[{i}]"
            if not self.shared_feat:
                if f is None:
                    raise ValueError(
                        f"{fn}: {name} is None but terms[{i}] has compat_type="
                        f"{t.kind!r}, which needs features"
                    )
                self._check_feat(f, name)
            key = (src, t.blur)
            if key not in pooled:  # pooled features are shared by terms of one blur factor
                pooled[key] = f if t.blurg is None else t.blurg.down(f)
            t.feat, t.feat_src = pooled[key], src
            t.K, _ = pac.packernel2d(t.feat, t.k, padding=t.pad, dilation=t.dilation)

    # ------------------------------------------------------------ the loop
    def forward(self, save=False, keep_R=False, on_step=None):
        """L_T, and (``save``) what the backward needs: per step Q, per term the coarse
        input X, the message Y (2d) and (``keep_R``, for the weight gradients) the term's
        contribution R = Up(μ'(Y)). ``on_step(done, total)`` is called after every step."""
        xp, U = self.xp, self.U
        L = U if self.L0 is None else self.L0
        saved = []
        for step_no in range(self.T):
            Q = _softmax(xp, L)
            unit = isinstance(self.wu, numbers.Real) and self.wu == 1.0
            L = U if unit else U * self.wu  # w_u = 1 (the usual case) saves a pass
            step = dict(Q=Q, X={}, Y=[], R=[])
            for t in self.terms:
                key = t.blur
                if key not in step["X"]:  # one pooled Q per blur factor
                    step["X"][key] = Q if t.blurg is None else t.blurg.down(Q)
                X = step["X"][key]
                Y = t.message(xp, X)
                Z = t.mix(xp, Y)
                R = Z if t.blurg is None else t.blurg.up(xp, Z)
                if _is_numpy(xp) and not save:
                    # NumPy, nothing kept: R is always a fresh array (a PAC output, a matmul,
                    # or a crop of an upsampled one), so scale it and add L into it in place
                    # (two label-sized temporaries fewer per term and step)
                    R *= t.sign * t.weight
                    R += L
                    L = R
                else:
                    L = L + (t.sign * t.weight) * R
                if save:
                    step["Y"].append(Y if t.kind == "2d" else None)
                    step["R"].append(R if keep_R else None)
            if save:
                saved.append(step)
            if on_step is not None:
                on_step(step_no + 1, self.T)
        return L, saved

    def backward(self, grad, needs):
        xp, U = self.xp, self.U
        nU, nF, nK, nL0, nWu, nFilt, nComp, nW = needs
        n = len(self.terms)
        need_dK = (nF and not self.kernels_given) or (nK and self.kernels_given)
        L, saved = self.forward(save=True, keep_R=nW)
        dL = _final_backward(xp, self.final_output, grad, L)
        dU = dWu = None
        dfilt, dcomp, dw, dK = [None] * n, [None] * n, [None] * n, [None] * n
        for step in reversed(saved):
            if nU:
                dU = dL * self.wu if dU is None else dU + dL * self.wu
            if nWu:
                s = xp.sum(dL * U)
                dWu = s if dWu is None else dWu + s
            dQ = None
            for i, t in enumerate(self.terms):
                c = t.sign * t.weight
                if nW:
                    s = t.sign * xp.sum(dL * step["R"][i])
                    dw[i] = s if dw[i] is None else dw[i] + s
                dR = dL * c
                X = step["X"][t.blur]
                # Up is linear: its adjoint needs only the coarse shape, which is X's
                dZ = dR if t.blurg is None else t.blurg.up_adjoint(xp, dR, X)
                if t.kind == "2d":
                    Y = step["Y"][i]
                    B, C, h, w = Y.shape
                    dZr = xp.reshape(dZ, (B, C, h * w))
                    if nComp:
                        g = xp.sum(
                            xp.matmul(
                                dZr, xp.permute_dims(xp.reshape(Y, (B, C, h * w)), (0, 2, 1))
                            ),
                            axis=0,
                        )
                        dcomp[i] = g if dcomp[i] is None else dcomp[i] + g
                    dY = xp.reshape(xp.matmul(xp.permute_dims(t.compat, (1, 0)), dZr), (B, C, h, w))
                else:
                    dY = dZ
                dX, gK, gF = self._message_backward(t, dY, X, need_dK and t.kind != "na", nFilt)
                if gK is not None:
                    dK[i] = gK if dK[i] is None else dK[i] + gK
                if gF is not None:
                    dfilt[i] = gF if dfilt[i] is None else dfilt[i] + gF
                dQt = dX if t.blurg is None else t.blurg.down_adjoint(xp, dX, step["Q"])
                dQ = dQt if dQ is None else dQ + dQt
            if dQ is None:  # no pairwise terms: L_t does not depend on L_{t-1}
                dL = None
                break
            Q = step["Q"]
            dL = Q * (dQ - xp.sum(Q * dQ, axis=1, keepdims=True))
        dL0 = None
        if dL is not None:
            if self.L0 is None:
                if nU:
                    dU = dL if dU is None else dU + dL
            elif nL0:
                dL0 = dL
        if nU and dU is None:
            dU = xp.zeros_like(U)
        if nL0 and self.L0 is not None and dL0 is None:
            dL0 = xp.zeros_like(self.L0)
        if nWu and dWu is None:
            dWu = xp.sum(xp.zeros_like(U))
        d_feat = d_kernels = None
        if need_dK:
            if self.kernels_given:
                d_kernels = [
                    None if t.kind == "na" else (dK[i] if dK[i] is not None else xp.zeros_like(t.K))
                    for i, t in enumerate(self.terms)
                ]
            else:
                d_feat = self._feature_grads(dK)
        sp = self.space
        for i, t in enumerate(self.terms):
            if nFilt and dfilt[i] is None:
                dfilt[i] = xp.zeros_like(t.filter)
            if nComp and t.kind == "2d" and dcomp[i] is None:
                dcomp[i] = xp.zeros_like(t.compat)
            if nW and dw[i] is None:
                dw[i] = xp.sum(xp.zeros_like(U))
        lst = lambda v: [sp.out(a) for a in v]  # noqa: E731
        return CRFGrads(
            unary=sp.out(dU) if nU else None,
            edge_feat=(sp.out(d_feat) if self.shared_feat else lst(d_feat))
            if d_feat is not None
            else None,
            kernels=lst(d_kernels) if d_kernels is not None else None,
            logQ=sp.out(dL0) if nL0 else None,
            unary_weight=sp.out(dWu) if nWu else None,
            filters=lst(dfilt) if nFilt else None,
            compats=lst(dcomp) if nComp else None,
            weights=lst(dw) if nW else None,
        )

    def _message_backward(self, t, dY, X, need_K, need_filter):
        if t.kind == "na":
            g = pac.pacconv2d_fused_backward(
                dY,
                X,
                t.zguide,
                t.filter,
                padding=t.pad,
                dilation=t.dilation,
                needs=(True, False, need_filter, False, False, False, False),
            )
            return g[0], None, g[2]
        g = pac.pacconv2d_backward(
            dY, X, t.K, t.filter, **t.conv_kw(), needs=(True, need_K, need_filter, False)
        )
        return g[0], g[1], g[2]

    def _feature_grads(self, dK):
        xp = self.xp
        out = [None] * len(self.feats)
        for i, t in enumerate(self.terms):
            if t.kind == "na" or dK[i] is None:
                continue
            g = pac.packernel2d_backward(
                dK[i],
                t.feat,
                t.k,
                padding=t.pad,
                dilation=t.dilation,
                needs=(True, False, False, False),
            )[0]
            if t.blurg is not None:
                g = t.blurg.down_adjoint(xp, g, self.feats[t.feat_src])
            src = t.feat_src
            out[src] = g if out[src] is None else out[src] + g
        for i, f in enumerate(self.feats):
            if out[i] is None and f is not None:
                out[i] = xp.zeros_like(f)
        if self.shared_feat:
            return out[0] if out else None  # None: no term reads the features
        return out
