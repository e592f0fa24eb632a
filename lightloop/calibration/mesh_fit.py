"""Global model fit of a unitary mesh layer from coherent-receiver sweeps (HAL access only).

Measurement: the forward source is dark and the layer's injector lights the N unit vectors at once (a
batch of N samples), so one acquisition of the output coherent receivers gives the whole complex matrix
M = diag(g_out) U diag(g_in). Heaters are swept in groups, in equal steps of POWER from 0 to 98 % of the
group's smallest limit, over a fixed background of the other heaters (the caller puts the theta heaters
near pi/2, so that every MZI mixes and every phi shifter is seen; several backgrounds may be given, but a
second one biasing the phi heaters slowed the fit without improving the crosstalk). Two heaters share a
group only if they have no designed crosstalk neighbour in common (and are not neighbours), so every
victim feels at most one swept aggressor per group and each crosstalk coefficient is identifiable; groups
of far-apart heaters are swept in parallel (the number of groups hardly grows with N).

Fit (float64, Levenberg-Marquardt with analytic Jacobians, lightloop.calibration.mesh_model): every
heater's phi0 and P_pi, the crosstalk coefficients of the designed pattern, both coupler errors of every
MZI, the receivers' complex gains and the injectors' gains - one model for all acquisitions. The phases
follow phase = phi0 + (C P) / P_pi with P = V^2 / R_nominal. A continuation over the sweep range (one
more power step per stage, crosstalk held at design x one common fitted scale until 40 % of the span,
then everything on the whole sweep) keeps the start inside the basin; if the normalised residual stays
above the threshold the fit restarts from jittered guesses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.mesh_model import MeshModel, jacobians, propagate

_TRACE = False

__all__ = ["heater_groups", "SweepData", "measure_sweeps", "MeshFit", "fit_mesh"]


def heater_groups(pattern: Any, n: int, max_size: int | None = None, kinds: Any = None) -> list[list[int]]:
    """Greedy colouring: heaters (0..n-1) in groups whose members are neither neighbours nor share one in
    the (symmetric) coupling pattern; max_size caps a group; with kinds (n labels) a group holds one kind."""
    from scipy import sparse

    s = sparse.csr_matrix(pattern, dtype=np.float64) if pattern is not None else sparse.identity(n, format="csr")
    s = (abs(s) + abs(s).T + sparse.identity(n)).astype(bool).astype(np.float64)
    s2 = (s @ s).tocsr()
    groups: list[list[int]] = []
    banned: list[set[int]] = []
    kind = np.zeros(n, np.intp) if kinds is None else np.asarray(kinds)
    for h in range(n):
        near = set(s2[h].indices.tolist())
        for g, b in zip(groups, banned):
            if h not in b and kind[g[0]] == kind[h] and (max_size is None or len(g) < max_size):
                g.append(h)
                b |= near
                break
        else:
            groups.append([h])
            banned.append(set(near))
    return groups


@dataclass
class SweepData:
    """Heater powers P (S, H) in W (nominal R), measured matrices M (S, N, N), group and step of each setting."""

    powers: NDArray[np.float64]
    m: NDArray[np.complex128]
    group: NDArray[np.intp]
    frac: NDArray[np.float64]
    groups: list[list[int]]
    acquisitions: int = 0
    writes: int = 0


def measure_sweeps(lay: Any, groups: list[list[int]], steps: int, ctx: Any, desc: str,
                   backgrounds: list[NDArray] | None = None) -> SweepData:
    """Sweep each group in equal power steps over each fixed background of the other heaters (W); one
    receiver acquisition (all N inputs as a batch) per step. A group's settings are contiguous."""
    bank, n = lay.bank, lay.n_ports
    r_nom = bank.cal.resistance_ohm
    bgs = [np.zeros(bank.n_channels)] if not backgrounds else [np.asarray(b, np.float64) for b in backgrounds]
    v_bgs = [np.minimum(np.sqrt(b * r_nom), bank.v_max) for b in bgs]
    lay.injector.inject(np.eye(n, dtype=np.complex64))
    pw, ms, gs, fr = [], [], [], []
    writes = 0
    for gi, grp in enumerate(ctx.bar(groups, desc=desc, total=len(groups))):
        grp = np.asarray(grp, np.intp)
        p_top = 0.98 * float(np.min(bank.p_max_w[grp]))
        for v_bg in v_bgs:
            for si, p in enumerate(np.linspace(0.0, p_top, steps)):
                v = v_bg.copy()
                v[grp] = np.minimum(np.sqrt(p * r_nom[grp]), bank.v_max[grp])
                bank.set_voltages(v)
                writes += 1
                y = np.asarray(lay.out_receiver.acquire(), np.complex128)
                ms.append(y.T)
                pw.append(v * v / r_nom)
                gs.append(gi)
                fr.append(si / max(steps - 1, 1))
    lay.injector.off()
    bank.set_voltages(np.zeros(bank.n_channels))
    writes += 1
    return SweepData(np.array(pw), np.array(ms), np.array(gs, np.intp), np.array(fr),
                     [list(map(int, g)) for g in groups], acquisitions=len(ms), writes=writes)


@dataclass
class MeshFit:
    """Fitted layer: heater phi0 (rad), P_pi (W/rad, nominal R), crosstalk entries, couplers, gains, quality."""

    phi0: NDArray[np.float64]
    p_pi_w: NDArray[np.float64]
    xt_rows: NDArray[np.intp]
    xt_cols: NDArray[np.intp]
    xt_vals: NDArray[np.float64]
    model: MeshModel
    g_out: NDArray[np.complex128]
    g_in: NDArray[np.float64]
    nrms: float
    group_nrms: NDArray[np.float64]
    sigma_phi0: NDArray[np.float64]
    sigma_p_pi_rel: NDArray[np.float64]
    sigma_xt: NDArray[np.float64]
    restarts: int = 0
    iterations: int = 0
    info: dict[str, Any] = field(default_factory=dict)


class _Problem:
    """Parameter layout, residuals and normal equations of the joint fit."""

    def __init__(self, model: MeshModel, data: SweepData, xt_rows: NDArray, xt_cols: NDArray):
        self.model, self.d = model, data
        lay = model.layout
        self.k, self.n, self.h = lay.n_mzi, lay.n, model.n_channels
        self.rows, self.cols = np.asarray(xt_rows, np.intp), np.asarray(xt_cols, np.intp)
        self.nx = self.rows.size
        h, k, n = self.h, self.k, self.n
        self.n_arg = 0 if model.screen else n          # with a screen the receivers are the phase reference
        self.sl_phi, self.sl_lp = slice(0, h), slice(h, 2 * h)
        self.sl_a = slice(2 * h, 2 * h + 2 * k)
        o = 2 * h + 2 * k
        self.sl_gabs, self.sl_garg = slice(o, o + n), slice(o + n, o + n + self.n_arg)
        o += n + self.n_arg
        self.sl_gin = slice(o, o + n - 1)
        self.i_xs = o + n - 1                            # log of a common crosstalk scale
        self.n_dense = o + n
        self.sl_xt = slice(self.n_dense, self.n_dense + self.nx)
        self.n_par = self.n_dense + self.nx
        grp_of_heater = np.full(h, -1)
        for g, members in enumerate(data.groups):
            grp_of_heater[members] = g
        self.q_group = grp_of_heater[self.cols] if self.nx else np.zeros(0, np.intp)

    def pack(self, phi0: NDArray, p_pi: NDArray, xt: NDArray) -> NDArray:
        """Start vector."""
        x = np.zeros(self.n_par)
        x[self.sl_phi], x[self.sl_lp], x[self.sl_xt] = phi0, np.log(p_pi), xt
        return x

    def unpack(self, x: NDArray) -> dict[str, NDArray]:
        """Named parameters."""
        gin = np.concatenate([x[self.sl_gin], [-np.sum(x[self.sl_gin])]])
        arg = x[self.sl_garg] if self.n_arg else np.zeros(self.n)
        return {"phi0": x[self.sl_phi], "p_pi": np.exp(x[self.sl_lp]), "xt": np.exp(x[self.i_xs]) * x[self.sl_xt],
                "xs": np.exp(x[self.i_xs]),
                "alpha1": x[self.sl_a][: self.k], "alpha2": x[self.sl_a][self.k:],
                "g_out": np.exp(x[self.sl_gabs] + 1j * arg), "g_in": np.exp(gin)}

    def phases(self, p: dict[str, NDArray], sel: NDArray) -> tuple[NDArray, NDArray, NDArray]:
        """Heater phases (S, H), their thermal part (C P) / P_pi and its crosstalk part."""
        pw = self.d.powers[sel]
        xp = np.zeros_like(pw)
        if self.nx:
            np.add.at(xp.T, self.rows, (p["xt"][:, None] * pw[:, self.cols].T))
        th = (pw + xp) / p["p_pi"]
        return p["phi0"] + th, th, xp / p["p_pi"]

    def _model(self, p: dict[str, NDArray]) -> MeshModel:
        m = self.model
        return MeshModel(m.layout, p["alpha1"], p["alpha2"], m.eta, m.screen)

    def residual(self, x: NDArray, sel: NDArray) -> NDArray:
        """Complex residual M_model - M_measured (S, N, N)."""
        p = self.unpack(x)
        ph, _, _ = self.phases(p, sel)
        u, _, _ = propagate(self._model(p), ph)
        return p["g_out"][None, :, None] * u * p["g_in"][None, None, :] - self.d.m[sel]

    def normal(self, x: NDArray, sel: NDArray) -> tuple[NDArray, NDArray, NDArray]:
        """J^T J, J^T r (real parameters, complex residuals) and the residual."""
        p = self.unpack(x)
        ph, th, thx = self.phases(p, sel)
        u, dph, dal = jacobians(self._model(p), ph)
        go, gi = p["g_out"][None, :, None], p["g_in"][None, None, :]
        mm = go * u * gi
        r = mm - self.d.m[sel]
        s, n = mm.shape[0], self.n
        dph = go[:, None] * dph * gi[:, None]                                # (S, H, N, N)
        jt = np.zeros((self.n_dense, s, n, n), np.complex128)              # parameter-major Jacobian
        jt[self.sl_phi] = np.moveaxis(dph, 1, 0)
        jt[self.sl_lp] = np.moveaxis(dph * (-th)[:, :, None, None], 1, 0)
        jt[self.sl_a] = np.moveaxis(go[:, None] * dal * gi[:, None], 1, 0)
        idx = np.arange(n)
        jt[self.sl_gabs.start + idx, :, idx, :] = np.moveaxis(mm, 1, 0)
        if self.n_arg:
            jt[self.sl_garg.start + idx, :, idx, :] = 1j * np.moveaxis(mm, 1, 0)
        o = self.sl_gin.start
        for j in range(n - 1):
            jt[o + j, :, :, j] += mm[:, :, j]
            jt[o + j, :, :, n - 1] -= mm[:, :, n - 1]
        jt[self.i_xs] = np.einsum("shij,sh->sij", dph, thx)
        jt = jt.reshape(self.n_dense, s * n * n)
        jc = jt.conj()
        rf = r.reshape(-1)
        nm = np.zeros((self.n_par, self.n_par))
        g = np.zeros(self.n_par)
        nm[: self.n_dense, : self.n_dense] = (jc @ jt.T).real
        g[: self.n_dense] = (jc @ rf).real
        if self.nx:
            grp = self.d.group[sel]
            pw = self.d.powers[sel]
            for gidx in np.unique(grp):
                rows_s = np.flatnonzero(grp == gidx)
                q = np.flatnonzero(self.q_group == gidx)
                if q.size == 0:
                    continue
                fac = p["xs"] * pw[rows_s][:, self.cols[q]] / p["p_pi"][self.rows[q]]   # (Sg, Q)
                jx = dph[rows_s][:, self.rows[q]] * fac[:, :, None, None]            # (Sg, Q, N, N)
                jx = np.moveaxis(jx, 1, 0).reshape(q.size, rows_s.size * n * n)
                rr = (rows_s[:, None] * (n * n) + np.arange(n * n)).ravel()
                qi = self.n_dense + q
                b = (jc[:, rr] @ jx.T).real
                nm[: self.n_dense, qi] = b
                nm[qi, : self.n_dense] = b.T
                nm[np.ix_(qi, qi)] = (jx.conj() @ jx.T).real
                g[qi] = (jx.conj() @ rf[rr]).real
        return nm, g, r


def _lm(prob: _Problem, x: NDArray, sel: NDArray, max_iter: int,
        free: NDArray | None = None) -> tuple[NDArray, float, int, NDArray]:
    """Levenberg-Marquardt on the normal equations (only the `free` parameters move); returns x, cost,
    iterations, final normal matrix."""
    with np.errstate(all="ignore"):
        nm, g, r = prob.normal(x, sel)
    cost = float(np.vdot(r, r).real)
    if not (np.isfinite(cost) and np.all(np.isfinite(nm))):
        return x, float("inf"), 0, np.zeros_like(nm)
    free = np.arange(x.size) if free is None else free
    lam = 1e-3
    it = 0
    for it in range(1, max_iter + 1):
        a = nm[np.ix_(free, free)]
        d = np.diag(a).copy()
        d = np.where(d > 0, d, 1.0)
        try:
            sub = np.linalg.solve(a + lam * np.diag(d) + 1e-12 * np.eye(d.size), -g[free])
        except np.linalg.LinAlgError:
            lam *= 10
            continue
        step = np.zeros_like(x)
        step[free] = sub
        xn = x + step
        with np.errstate(all="ignore"):          # a wild trial step (overflow) is simply rejected
            rn = prob.residual(xn, sel)
            cn = float(np.vdot(rn, rn).real)
        if np.isfinite(cn) and cn < cost:
            done = cost - cn < 1e-6 * cost
            x, cost = xn, cn
            lam = max(lam / 4, 1e-9)
            with np.errstate(all="ignore"):
                nm_n, g_n, r_n = prob.normal(x, sel)
            if not np.all(np.isfinite(nm_n)):
                break
            nm, g, r = nm_n, g_n, r_n
            if _TRACE:
                print("  lm accept", it, lam, cost)
            if done:
                break
        else:
            lam *= 5
            if _TRACE:
                print("  lm reject", it, lam, cost, cn)
            if lam > 1e8:
                break
    return x, cost, it, nm


def fit_mesh(model0: MeshModel, data: SweepData, phi0: NDArray, p_pi: NDArray, xt_rows: NDArray, xt_cols: NDArray,
             xt_vals: NDArray, rng: np.random.Generator, threshold: float = 0.02, tries: int = 4,
             stages: tuple[float, ...] | None = None, max_iter: int = 40, xt_from: float = 0.4,
             gains: tuple[NDArray, NDArray] | None = None) -> MeshFit:
    """Joint fit of the layer model to the sweeps (see module docstring); restarts from jittered guesses
    while the normalised rms residual |M_model - M| / rms |M| exceeds threshold. stages: sweep fractions of
    the continuation (default: one more power step per stage up to
    xt_from, then the whole sweep); crosstalk is held at its design value
    until the fraction reaches xt_from. The couplers start at model0's; gains (g_out complex, g_in real) at
    `gains` if given, else 1."""
    if stages is None:
        fr = np.unique(data.frac)
        stages = tuple(float(f) for f in fr[1:] if f < xt_from) + (1.0,)
    prob = _Problem(model0, data, xt_rows, xt_cols)
    x_start = prob.pack(phi0, p_pi, xt_vals)
    x_start[prob.sl_a] = np.concatenate([model0.alpha1, model0.alpha2])
    if gains is not None:
        g_out, g_in = np.asarray(gains[0], np.complex128), np.asarray(gains[1], np.float64)
        x_start[prob.sl_gabs] = np.log(np.abs(g_out))
        if prob.n_arg:
            x_start[prob.sl_garg] = np.angle(g_out)
        lg = np.log(g_in) - np.mean(np.log(g_in))
        x_start[prob.sl_gin] = lg[:-1]
    scale = float(np.sqrt(np.mean(np.abs(data.m) ** 2)))
    best = None
    its = 0
    for t in range(tries):
        x = x_start.copy()
        if t:
            x[prob.sl_phi] += rng.normal(0.0, 0.3, prob.h)
            x[prob.sl_lp] += rng.normal(0.0, 0.05, prob.h)
        dense = np.arange(prob.n_dense)
        fine = np.setdiff1d(np.arange(prob.n_par), [prob.i_xs])     # the common scale is then redundant
        for si, frac in enumerate(stages):
            sel = np.flatnonzero(data.frac <= frac + 1e-9)
            x, cost, it, nm = _lm(prob, x, sel, max_iter, fine if frac >= xt_from else dense)
            its += it
        nrms = float(np.sqrt(cost / data.m.size)) / scale
        if best is None or nrms < best[1]:
            best = (x, nrms, nm, cost, t)
        if nrms <= threshold:
            break
    x, nrms, nm, cost, t = best
    p = prob.unpack(x)
    r = prob.residual(x, np.arange(data.m.shape[0]))
    grp_nrms = np.array([float(np.sqrt(np.mean(np.abs(r[data.group == g]) ** 2))) / scale
                         for g in range(len(data.groups))])
    dof = max(2 * data.m.size - prob.n_par, 1)
    fine = np.setdiff1d(np.arange(prob.n_par), [prob.i_xs])
    sd = np.full(prob.n_par, np.inf)
    try:
        cov = np.linalg.inv(nm[np.ix_(fine, fine)] + 1e-12 * np.eye(fine.size)) * (cost / dof)
        sd[fine] = np.sqrt(np.maximum(np.diag(cov), 0.0))
    except np.linalg.LinAlgError:
        pass
    model = MeshModel(model0.layout, p["alpha1"].copy(), p["alpha2"].copy(), model0.eta, model0.screen)
    return MeshFit(np.mod(p["phi0"], 2 * np.pi), p["p_pi"].copy(), prob.rows, prob.cols, p["xt"].copy(), model,
                   p["g_out"], p["g_in"], nrms, grp_nrms, sd[prob.sl_phi], sd[prob.sl_lp],
                   sd[prob.sl_xt] * float(p["xs"]), restarts=t,
                   iterations=its, info={"parameters": prob.n_par, "residuals": 2 * int(data.m.size)})
