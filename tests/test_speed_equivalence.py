"""Fast paths of issue 15 against the slow paths they replaced, on random inputs (physics must not change).

* flow network: the banded / in-place sparse factorisation vs the old per-write CSR assembly + SuperLU;
* phase shifters: volts_for with the cached crosstalk factorisation vs the old Neumann iteration to 1e-14;
* mesh: the mode-major stacked 2 x 2 pass vs the old per-column loop (fields and taps, both directions);
* chip twin: tap intensities from the QR rows of the batch vs the per-sample sum of |tap|^2;
* `import lightloop.hal...` without scipy.optimize.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from lightloop.errors import ConfigError
from lightloop.hal.phase_shifters import PhaseShifterBank, ThermoOpticCalibration
from lightloop.physics.mesh import MeshErrors, MeshLayer, MZIColumns, _coupler
from lightloop.physics.mzi import mesh_layout
from lightloop.simulators.chip import _gram_rows
from lightloop.simulators.flow_factor import ReducedLaplacian
from lightloop.simulators.flow_lattice import perturbed_square_lattice
from lightloop.simulators.flow_network import (
    FlowNetwork,
    _factor_spd,
    chemical_signaling_update,
)


# --- HAL import -------------------------------------------------------------------------------------------
def test_hal_import_does_not_pull_scipy_optimize() -> None:
    code = ("import sys, pkgutil, importlib, lightloop.hal\n"
            "for m in pkgutil.iter_modules(lightloop.hal.__path__):\n"
            "    importlib.import_module('lightloop.hal.' + m.name)\n"
            "print('scipy.optimize' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_vapor_cell_inversion_still_works_with_the_lazy_import() -> None:
    from lightloop.physics.vapor_cell import VaporCellPhysics

    cell = VaporCellPhysics()
    t = cell.temperature_for(cell.optical_depth(373.15))
    assert t == pytest.approx(373.15, abs=1e-6)


# --- flow network -----------------------------------------------------------------------------------------
def _old_solve(net: FlowNetwork, I: np.ndarray) -> np.ndarray:
    """The replaced path: rebuild the CSR Laplacian, drop the ground, SuperLU in symmetric mode, solve."""
    lu = _factor_spd(net._reduce(net.laplacian_sparse()))
    v = np.zeros_like(I)
    v[:, net._free] = lu.solve(np.ascontiguousarray(I[:, net._free].T)).T
    return v


def _random_graph(rng: np.random.Generator, kind: str) -> tuple[int, np.ndarray]:
    if kind in ("lattice", "knn"):
        pos, edges = perturbed_square_lattice(7, rng, 0.25, kind)  # type: ignore[arg-type]
        return len(pos), edges
    n = 40                                  # random connected graph with a parallel edge
    tree = np.stack([np.arange(1, n), rng.integers(0, np.arange(1, n))], 1)
    extra = rng.integers(0, n, (60, 2))
    extra = extra[extra[:, 0] != extra[:, 1]]
    return n, np.concatenate([tree, extra, tree[:1]])


@pytest.mark.parametrize("kind", ["lattice", "knn", "random"])
@pytest.mark.parametrize("method", ["banded", "sparse"])
def test_flow_solve_matches_the_old_assembly(kind: str, method: str) -> None:
    rng = np.random.default_rng(hash((kind, method)) % 2**32)
    n, edges = _random_graph(rng, kind)
    net = FlowNetwork(n, edges, rng.uniform(0.05, 0.2, len(edges)), ground=int(rng.integers(n)), w_min=1e-3)
    net._lap = ReducedLaplacian(n, net.edges, net.ground, method)
    net._refactor()
    assert net._lap.method == method
    I = rng.standard_normal((5, n))
    for _ in range(4):                     # writes change the values on the fixed pattern
        np.testing.assert_allclose(net.solve(I), _old_solve(net, I), rtol=1e-10, atol=1e-12)
        net.apply_update(0.02 * rng.standard_normal(net.n_edges))


def test_flow_learning_step_matches_the_old_assembly() -> None:
    rng = np.random.default_rng(3)
    n, edges = _random_graph(rng, "lattice")
    net = FlowNetwork(n, edges, rng.uniform(0.05, 0.2, len(edges)), ground=0)
    I, out = rng.standard_normal((4, n)), np.array([[3, 4], [10, 11]])
    t = rng.standard_normal((4, 2))
    dw = chemical_signaling_update(net, I, out, t, alpha=0.1)
    v, P = _old_solve(net, I), np.zeros((2, n))
    P[[0, 1], out[:, 0]], P[[0, 1], out[:, 1]] = 1.0, -1.0
    u = _old_solve(net, -((v @ P.T - t) @ P))
    ref = -0.1 * np.mean(net.edge_drops(u) * net.edge_drops(v), axis=0)
    np.testing.assert_allclose(dw, ref, rtol=1e-9, atol=1e-14)


def test_flow_factor_rejects_a_disconnected_graph_and_a_bad_method() -> None:
    with pytest.raises(ConfigError, match="Laplacian is singular"):
        ReducedLaplacian(4, np.array([[0, 1], [2, 3]]), 0)
    with pytest.raises(ConfigError, match="factor method"):
        ReducedLaplacian(3, np.array([[0, 1], [1, 2]]), 0, "dense")


# --- phase shifters ---------------------------------------------------------------------------------------
class _Port:
    def __init__(self, n: int) -> None:
        self.n_channels, self.v = n, np.zeros(n)

    def set_voltages(self, v: np.ndarray) -> None:
        self.v = np.asarray(v, float).copy()

    def get_voltages(self) -> np.ndarray:
        return self.v.copy()


def _old_volts_for(bank: PhaseShifterBank, c: sp.csr_matrix, phases: np.ndarray) -> tuple[np.ndarray, int]:
    """The replaced path: every solve a Neumann series p <- target - E p to 1e-14 (LU if it does not contract)."""
    cal, off = bank.cal, (c - sp.identity(c.shape[0], format="csr")).tocsr()
    lu = None if abs(off).sum(axis=1).max() < 0.9 else spla.splu(c.tocsc())

    def powers(delta: np.ndarray) -> np.ndarray:
        target = cal.p_pi_w * delta
        if lu is not None:
            return lu.solve(target)
        p, scale = target.copy(), float(np.max(np.abs(target), initial=0.0)) or 1.0
        for _ in range(200):
            nxt = target - off @ p
            if np.max(np.abs(nxt - p)) <= 1e-14 * scale:
                return nxt
            p = nxt
        return p

    delta = np.mod(phases - cal.phi0, 2 * np.pi)
    p = powers(delta)
    for _ in range(16):
        neg = p < 0
        if not neg.any():
            break
        delta = delta + 2 * np.pi * neg
        p = powers(delta)
    clipped = int(np.count_nonzero((p < 0) | (p > bank.p_max_w)))
    p = np.clip(p, 0.0, bank.p_max_w)
    return np.minimum(np.sqrt(p * cal.resistance_ohm), bank.v_max), clipped


def _crosstalk(rng: np.random.Generator, n: int, strength: float, symmetric: bool) -> sp.csr_matrix:
    """Thermal-crosstalk-like C = I + E on a line of heaters: E_ij = strength * decay^|i-j|, |i-j| <= 4."""
    rows, cols, vals = [], [], []
    for d in range(1, 5):
        i = np.arange(n - d)
        for a, b in ((i, i + d), (i + d, i)):
            rows.append(a), cols.append(b)
            vals.append(strength * 0.5 ** d * (1 + 0.2 * rng.standard_normal(n - d)) if not symmetric else
                        np.full(n - d, strength * 0.5 ** d))
    e = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return (sp.identity(n, format="csr") + e).tocsr()


@pytest.mark.parametrize("n,strength,symmetric", [(40, 0.04, True), (700, 0.06, True), (60, 0.05, False),
                                                  (600, 0.05, False), (50, 0.5, True)])
def test_volts_for_matches_the_old_iterative_solution(n: int, strength: float, symmetric: bool) -> None:
    rng = np.random.default_rng(n)
    c = _crosstalk(rng, n, strength, symmetric)
    cal = ThermoOpticCalibration(rng.normal(0, 0.3, n), 0.008 * (1 + 0.05 * rng.standard_normal(n)),
                                 1000 * (1 + 0.03 * rng.standard_normal(n)), c)
    bank = PhaseShifterBank(_Port(n), cal, 9.0 if strength < 0.3 else 20.0)
    for _ in range(3):
        phases = rng.uniform(-20, 20, n)
        v_new, clip_new = bank.volts_for(phases)
        v_old, clip_old = _old_volts_for(bank, c, phases)
        assert clip_new == clip_old
        np.testing.assert_allclose(v_new, v_old, rtol=1e-9, atol=1e-12)


def test_calibration_with_a_cached_factorisation_pickles_and_copies() -> None:
    import copy
    import pickle

    n = 600
    c = _crosstalk(np.random.default_rng(1), n, 0.05, True)
    cal = ThermoOpticCalibration(np.zeros(n), np.full(n, 0.008), np.full(n, 1000.0), c)
    p = cal.powers_for(np.linspace(0, 6, n))
    for clone in (copy.deepcopy(cal), pickle.loads(pickle.dumps(cal))):
        np.testing.assert_allclose(clone.powers_for(np.linspace(0, 6, n)), p, rtol=1e-12)


# --- mesh -------------------------------------------------------------------------------------------------
def _old_pass(m: MZIColumns, phases: np.ndarray, x: np.ndarray, forward: bool) -> tuple[np.ndarray, np.ndarray]:
    """The replaced per-column loop (batch-first, strided pairs), fields and taps [theta..., phi...]."""
    cd, rd, k = m.cdtype, m.rdtype, m.n_mzi
    e, lay = m.errors, m.layout
    c1, s1 = _coupler(e.alpha1)
    c2, s2 = _coupler(e.alpha2)
    k1c, k1s, k2c, k2s = c1.astype(rd), (1j * s1).astype(cd), c2.astype(rd), (1j * s2).astype(cd)
    eta_t, eta_b = e.eta[lay.col, lay.mode].astype(rd), e.eta[lay.col, lay.mode + 1].astype(rd)
    et, ep = np.exp(1j * phases[:k]).astype(cd), np.exp(1j * phases[k:]).astype(cd)
    a1, a2 = (et * k1c).astype(cd), (et * k1s).astype(cd)
    cc1, cc2, cc3, cc4 = ((k2c * eta_t).astype(cd), (k2s * eta_b).astype(cd), (k2s * eta_t).astype(cd),
                          (k2c * eta_b).astype(cd))
    x = np.array(x, dtype=cd, copy=True)
    taps = np.empty((x.shape[0], 2 * k), cd)
    cols = range(lay.n_columns) if forward else range(lay.n_columns - 1, -1, -1)
    for c in cols:
        mm = lay.columns[c]
        fl = slice(int(lay.offsets[c]), int(lay.offsets[c + 1]))
        unpaired = np.ones(m.n, bool)
        unpaired[mm] = unpaired[mm + 1] = False
        if forward:
            x[:, unpaired] *= e.eta[c].astype(rd)[unpaired]
        if mm.size:
            top, bot = x[:, mm], x[:, mm + 1]
            if forward:
                a = ep[fl] * top
                cc = a1[fl] * a + a2[fl] * bot
                dd = k1s[fl] * a + k1c[fl] * bot
                taps[:, k + fl.start: k + fl.stop], taps[:, fl] = a, cc
                x[:, mm], x[:, mm + 1] = cc1[fl] * cc + cc2[fl] * dd, cc3[fl] * cc + cc4[fl] * dd
            else:
                p = cc1[fl] * top + cc3[fl] * bot
                q = cc2[fl] * top + cc4[fl] * bot
                a = a1[fl] * p + k1s[fl] * q
                taps[:, fl], taps[:, k + fl.start: k + fl.stop] = p, a
                x[:, mm], x[:, mm + 1] = ep[fl] * a, a2[fl] * p + k1c[fl] * q
        if not forward:
            x[:, unpaired] *= e.eta[c].astype(rd)[unpaired]
    return x, taps


@pytest.mark.parametrize("n,kind", [(2, "rectangular"), (5, "rectangular"), (8, "rectangular"),
                                    (6, "triangular"), (9, "triangular")])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_mesh_pass_matches_the_old_column_loop(n: int, kind: str, dtype: type) -> None:
    rng = np.random.default_rng(n)
    lay = mesh_layout(n, kind)
    err = MeshErrors(rng.normal(0, 0.05, lay.n_mzi), rng.normal(0, 0.05, lay.n_mzi),
                     rng.uniform(0.9, 1.0, (lay.n_columns, n)))
    m = MZIColumns(lay, err, dtype)
    phases = rng.uniform(-7, 7, m.n_shifters)
    m.set_phases(phases)
    x = rng.standard_normal((6, n)) + 1j * rng.standard_normal((6, n))
    tol = 2e-5 if dtype == np.complex64 else 1e-12
    for forward in (True, False):
        y_old, t_old = _old_pass(m, phases, x, forward)
        taps = np.empty((6, m.n_shifters), dtype)
        y_new = m.forward(x, taps) if forward else m.backward(x, taps)
        np.testing.assert_allclose(y_new, y_old, atol=tol * np.abs(y_old).max())
        np.testing.assert_allclose(taps, t_old, atol=tol * np.abs(t_old).max())
        y2 = m.forward(x) if forward else m.backward(x)
        np.testing.assert_allclose(y2, y_old, atol=tol * np.abs(y_old).max())
        _, pw = m.tap_powers(x, forward)
        np.testing.assert_allclose(pw, np.sum(np.abs(t_old.astype(np.complex128)) ** 2, 0), rtol=10 * tol)


def test_layer_tap_powers_match_per_sample_taps_for_every_stage() -> None:
    rng = np.random.default_rng(5)
    lay = MeshLayer.build("svd", 6, gain=1.5, dtype=np.complex128)
    lay.set_phases(rng.uniform(0, 2 * np.pi, lay.n_shifters))
    x = rng.standard_normal((9, 6)) + 1j * rng.standard_normal((9, 6))
    for forward in (True, False):
        y, taps = lay.forward(x, record=True) if forward else lay.backward(x, record=True)
        y2, pw = lay.tap_powers(x, forward)
        np.testing.assert_allclose(y2, y, atol=1e-12)
        np.testing.assert_allclose(pw, np.sum(np.abs(taps) ** 2, 0), rtol=1e-11)


@pytest.mark.parametrize("batch", [3, 40])
def test_gram_rows_reproduce_the_batch_tap_intensities(batch: int) -> None:
    rng = np.random.default_rng(batch)
    lay = MeshLayer.build("unitary", 8, screen=False)
    lay.set_phases(rng.uniform(0, 2 * np.pi, lay.n_shifters))
    x = (rng.standard_normal((batch, 8)) + 1j * rng.standard_normal((batch, 8))).astype(np.complex64)
    x[:, 6:] = 0.0                                        # dark ports: a rank-deficient batch
    _, taps = lay.forward(x, record=True)
    v = _gram_rows(x)
    assert v is not None and v.shape[0] <= 8
    _, pw = lay.tap_powers(v.astype(np.complex64), True)
    np.testing.assert_allclose(pw, np.sum(np.abs(taps.astype(np.complex128)) ** 2, 0), rtol=2e-5, atol=1e-6)
    assert _gram_rows(np.zeros((batch, 8), np.complex64)) is None


# --- issue 15, chip step: heater solves, twin tap records ---------------------------------------------------
def _mesh_crosstalk(n_ports: int, nearest: float = 0.04) -> sp.csr_matrix:
    """The designed crosstalk of a Clements mesh's heater grid (what the chip builder gives the bank)."""
    from lightloop.physics.mzi import thermal_crosstalk

    return thermal_crosstalk(MeshLayer.build("unitary", n_ports, screen=False).heater_positions(), nearest, 1.0)


def _sequential_volts_for(bank: PhaseShifterBank, c: sp.spmatrix, phases: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The phase policy written out: solve (a general sparse LU), lift every negative channel by 2 pi, solve again
    (<= 16 times); also returns how many solves it took."""
    cal, lu = bank.cal, spla.splu(sp.csc_matrix(c))
    delta = np.mod(phases - cal.phi0, 2 * np.pi)
    p, solves = lu.solve(cal.p_pi_w * delta), 1
    for _ in range(16):
        neg = p < 0
        if not neg.any():
            break
        delta = delta + 2 * np.pi * neg
        p, solves = lu.solve(cal.p_pi_w * delta), solves + 1
    clipped = int(np.count_nonzero((p < 0) | (p > bank.p_max_w)))
    return np.minimum(np.sqrt(np.clip(p, 0, bank.p_max_w) * cal.resistance_ohm), bank.v_max), clipped, solves


@pytest.mark.parametrize("ports,nearest", [(12, 0.04), (24, 0.04), (40, 0.12)])
def test_volts_for_on_a_mesh_heater_grid_matches_the_sequential_rule(ports: int, nearest: float) -> None:
    """Mesh heater grids up to 1,560 channels: the dense inverse (<= 512) and the banded Cholesky on the RCM
    order (> 512) give the sequential rule's voltages and clip counts, through several lifting rounds."""
    rng = np.random.default_rng(ports)
    c = _mesh_crosstalk(ports, nearest)
    n = c.shape[0]
    cal = ThermoOpticCalibration(rng.normal(0, 0.3, n), 0.008 * (1 + 0.05 * rng.standard_normal(n)),
                                 1000 * (1 + 0.03 * rng.standard_normal(n)), c)
    bank = PhaseShifterBank(_Port(n), cal, 9.0)
    rounds = []
    for _ in range(3):
        phases = rng.uniform(-20, 20, n)
        v_new, clip_new = bank.volts_for(phases)
        v_old, clip_old, solves = _sequential_volts_for(bank, c, phases)
        rounds.append(solves)
        assert clip_new == clip_old
        np.testing.assert_allclose(v_new, v_old, rtol=1e-9, atol=1e-12)
    assert cal._solver[0] == ("banded" if n > 512 else "dense")
    assert max(rounds) >= 3          # the rule's cascade really ran (channels lifted in turn)


def test_volts_for_skips_the_solves_only_for_an_unchanged_write() -> None:
    rng = np.random.default_rng(3)
    c = _mesh_crosstalk(24)
    n = c.shape[0]
    cal = ThermoOpticCalibration(rng.normal(0, 0.3, n), np.full(n, 0.008), np.full(n, 1000.0), c)
    bank = PhaseShifterBank(_Port(n), cal, 9.0)
    calls = []
    solve = cal.powers_for
    cal.powers_for = lambda d: calls.append(1) or solve(d)          # type: ignore[method-assign]
    phases = rng.uniform(0, 6, n)
    v1, _ = bank.volts_for(phases)
    first = len(calls)
    v2, _ = bank.volts_for(phases.copy())
    assert len(calls) == first and np.array_equal(v1, v2)            # same phases: no solve, same volts
    v2[0] = -1.0
    assert bank.volts_for(phases)[0][0] == v1[0]                     # the cache hands out copies
    phases[5] += 1e-9
    bank.volts_for(phases)
    assert len(calls) > first                                        # any change solves again
    cal.phi0[7] += 0.5                                               # a calibration edited in place
    n_calls = len(calls)
    v3, _ = bank.volts_for(phases)
    assert len(calls) > n_calls
    np.testing.assert_allclose(v3, _sequential_volts_for(bank, c, phases)[0], rtol=1e-9, atol=1e-12)
    bank.cal = ThermoOpticCalibration(cal.phi0 + 0.1, cal.p_pi_w, cal.resistance_ohm, c)   # a new calibration
    np.testing.assert_allclose(bank.volts_for(phases)[0], _sequential_volts_for(bank, c, phases)[0], rtol=1e-9,
                               atol=1e-12)


def _slow_tap_intensities(emu, layer: int) -> np.ndarray:
    """The per-sample definition: sum_b |forward tap|^2 + |backward tap|^2 from each exposure's fields (complex128)."""
    fp = emu._forward(layer)
    lay = MeshLayer.build(emu.design.layer_kind, emu.layers[layer].n, emu.design.mesh,
                          emu.truth.layers[layer].mesh_errors, None, dtype=np.complex128, screen=emu.design.screen)
    lay.set_phases(emu.layers[layer].phases)
    _, taps = lay.forward(fp.x_in[layer].astype(np.complex128), record=True)
    out = np.sum(np.abs(taps) ** 2, 0)
    if emu.adjoint[layer] is not None:
        _, taps = lay.backward(emu.adjoint[layer].astype(np.complex128), record=True)
        out = out + np.sum(np.abs(taps) ** 2, 0)
    return out


@pytest.mark.parametrize("ports,batch", [(6, 4), (6, 40), (12, 16), (24, 30), (24, 40), (24, 80), (40, 40)])
def test_chip_step_matches_the_per_sample_twin(ports: int, batch: int) -> None:
    """One adjoint step (program, forward, phase gradients, backward errors) on a realistic random chip (noise on,
    same noise draws): the twin's tap records / QR rows and lazy forward chain give the per-sample exposures'
    result within float32 rounding, for dense tap records (N^3 batch <= 2^20: 6/4 ... 24/40), column-pass records
    (40/40) and QR rows (24/80) alike."""
    import copy

    import yaml as _yaml

    from lightloop.bench import BuildOverrides, build_processor
    from lightloop.config import parse_config

    raw = _yaml.safe_load(open("lightloop/lab_configs/integrated_chip.yaml"))
    raw["processor"]["hidden"] = [ports]
    raw["processor"]["encoder"]["bias_ports"] = 0
    rng = np.random.default_rng(ports + batch)
    x = rng.uniform(0, 1, (batch, ports)).astype(np.float32)
    delta = rng.standard_normal((batch, 3)).astype(np.float32)
    out = []
    for slow in (False, True):
        proc = build_processor(parse_config(copy.deepcopy(raw), "t.yaml"), ports, 3,
                               BuildOverrides(extra={"chip_seed": 2, "noise_seed": 5}))
        if slow:
            emu = proc.emulator
            emu.tap_intensities = lambda layer, emu=emu: _slow_tap_intensities(emu, layer)
        params = proc.init_parameters(np.random.default_rng(1), 1.0)
        grads = []
        for step in range(2):                         # the second step reuses caches across a new write
            proc.program([p + 0.05 * step for p in params])
            taps = proc.forward(x)
            grads.append(proc.measure_phase_gradients(delta))
        out.append((taps.output, grads, proc.backward(delta)))
        if not slow:
            assert (proc.emulator.layers[0]._taps is not None) == (ports ** 3 * batch <= 1 << 20)
    (y1, g1, e1), (y2, g2, e2) = out
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-6)
    for a, b in zip(g1, g2):
        for ga, gb in zip(a, b):
            assert np.max(np.abs(ga - gb)) <= 2e-4 * np.max(np.abs(gb)) + 1e-6
    for a, b in zip(e1, e2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.max(np.abs(b)))


# --- issue 15, chip step at small N: dense tap matrices, one noise draw, cheap finite checks ----------------
def _pass_records(lay: MeshLayer, x: np.ndarray) -> list[np.ndarray]:
    """Tap records by the column pass (the path dense tap matrices replace for small work)."""
    import lightloop.physics.mesh as mesh_mod

    keep = mesh_mod.DENSE_WORK
    mesh_mod.DENSE_WORK = 0
    try:
        return lay.tap_record(x)
    finally:
        mesh_mod.DENSE_WORK = keep


@pytest.mark.parametrize("kind,n,mesh", [("unitary", 5, "rectangular"), ("unitary", 16, "rectangular"),
                                         ("unitary", 7, "triangular"), ("svd", 6, "rectangular")])
def test_dense_tap_records_match_the_column_pass(kind: str, n: int, mesh: str) -> None:
    """Small layers (lossy couplers and waveguides, every stage kind): the record of a batch as one product with the
    identity's recorded pass equals the column pass within float32 rounding, records still add like fields, and the
    transfer matrix recorded on the way equals the plain pass's."""
    rng = np.random.default_rng(n)
    lay_m = mesh_layout(n, mesh)
    errs = [MeshErrors(rng.normal(0, 0.05, lay_m.n_mzi), rng.normal(0, 0.05, lay_m.n_mzi),
                       rng.uniform(0.8, 1.0, (lay_m.n_columns, n))) for _ in range(2)]
    lay = MeshLayer.build(kind, n, mesh, errs, gain=1.3)
    lay.set_phases(rng.uniform(-7, 7, lay.n_shifters))
    x1, x2 = [(rng.standard_normal((9, n)) + 1j * rng.standard_normal((9, n))).astype(np.complex64) for _ in range(2)]
    assert lay._taps is None
    dense = lay.tap_record(x1)
    assert lay._taps is not None                                         # the dense path was taken
    slow = _pass_records(lay, x1)
    assert len(dense) == len(slow) == len(lay.stages)
    for d, s in zip(dense, slow):
        assert d.shape == s.shape
        if s.size:
            np.testing.assert_allclose(d, s, atol=3e-6 * max(1.0, float(np.abs(s).max())))
    both = [a + b for a, b in zip(lay.tap_record(x1), lay.tap_record(x2))]
    np.testing.assert_allclose(lay.record_powers(both), lay.record_powers(_pass_records(lay, x1 + x2)), rtol=2e-5)
    ref = MeshLayer.build(kind, n, mesh, errs, gain=1.3)
    ref.set_phases(lay.phases)
    y = np.eye(n, dtype=np.complex64)                                  # the plain pass of the identity
    for s in ref.stages:
        y = s.forward(y)
    np.testing.assert_allclose(lay.matrix(), y.T, atol=2e-6)
    lay.set_phases(lay.phases + 0.3)                                     # a new write drops the cached matrices
    assert lay._taps is None and lay._matrix is None


def test_dense_taps_only_for_small_work() -> None:
    """The column pass stays for large batches / meshes (the dense product costs n^3 batch)."""
    import lightloop.physics.mesh as mesh_mod

    lay = MeshLayer.build("unitary", 32, screen=False)
    lay.set_phases(np.random.default_rng(0).uniform(0, 6, lay.n_shifters))
    lay.tap_record(np.ones((mesh_mod.DENSE_WORK // 32 ** 3 + 1, 32), np.complex64))
    assert lay._taps is None
    lay.forward(np.ones((64, 32), np.complex64))                        # a large batch: the plain identity pass
    assert lay._taps is None and lay._matrix is not None
    lay.set_phases(lay.phases + 0.1)
    lay.forward(np.ones((8, 32), np.complex64))                         # a small one records it on the way
    assert lay._taps is not None
    big = MeshLayer.build("unitary", 40, screen=False)
    big.forward(np.ones((1, 40), np.complex64))
    assert big._taps is None


def test_chip_twin_receiver_noise_is_the_two_draw_stream() -> None:
    """One draw of 2 x shape gives the same complex noise as the two draws (real, then imaginary) it replaced."""
    from lightloop.simulators.chip import ChipEmulator

    emu = ChipEmulator.__new__(ChipEmulator)
    emu.rng, emu.rdtype = np.random.default_rng(11), np.float32
    new = emu._cnoise((5, 3), 0.2)
    rng = np.random.default_rng(11)
    old = (0.2 / np.sqrt(2)) * (rng.standard_normal((5, 3), dtype=np.float32)
                                + 1j * rng.standard_normal((5, 3), dtype=np.float32))
    assert new.dtype == old.dtype and np.array_equal(new, old)
    assert emu._cnoise((2,), 0.0) == 0.0


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_acquisition_finite_check_is_exact() -> None:
    """The sum shortcut of the acquisition check: NaN / inf always refused, huge finite readings (a float32 sum that
    overflows) still accepted."""
    from lightloop.errors import InstrumentError
    from lightloop.hal.chip_roles import _finite

    ok = np.full(8, 3e38, np.float32)                                    # sum overflows float32, values finite
    assert _finite(ok, "t") is ok
    _finite(np.array([1 + 2j, 3e38 + 3e38j], np.complex64), "t")
    for bad in (np.array([1.0, np.nan], np.float32), np.array([np.inf, -np.inf]), np.array([1, 1j * np.inf]),
                np.array([[2.0, 1.0], [np.nan, 0.0]])):
        with pytest.raises(InstrumentError, match="NaN or inf"):
            _finite(bad, "t")
