"""Thermo-optic phase-shifter bank: phases in radians <-> heater voltages, per-channel voltage limits,
crosstalk compensation, one batched write per call (a role of the integrated chip, on a
``lightloop.hal.ports.HeaterPort``).

Model (docs/architecture.md): phase = phi0 + (C P) / P_pi with P = V^2 / R; P_pi is the heater power per radian
(W/rad) and C the thermal crosstalk matrix on heater powers (C_ii = 1). The bank only knows its
calibration (nominal until a calibration routine measures the chip).

Phase policy (documented contract):

* Phases are periodic. A requested phase is wrapped into [phi0, phi0 + 2 pi) of its channel and the
  heater powers are solved from C P = P_pi (phase - phi0) with the calibrated crosstalk matrix; a channel
  whose solution needs negative power is moved up by 2 pi and the system solved again.
* Voltage limits are absolute: the bank never sends a voltage outside [0, v_max] of a channel. In
  ``set_phases`` a channel that would need more power than v_max^2 / R allows is CLIPPED to v_max (and
  counted in ``clipped_last`` / ``clipped_total``); a config whose v_max cannot reach 2 pi is rejected
  when the bank is built. ``set_voltages`` is the raw path: any value outside [0, v_max], NaN or inf
  raises SafetyLimitError and nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lightloop.errors import ConfigError, InstrumentError, SafetyLimitError
from lightloop.hal.ports import HeaterPort
from lightloop.physics.mzi import thermo_optic_phase

__all__ = ["ThermoOpticCalibration", "PhaseShifterBank"]

TWO_PI = 2 * np.pi


@dataclass
class ThermoOpticCalibration:
    """The bank's knowledge of its heaters: phi0 (rad), P_pi (W/rad), R (ohm) per channel, crosstalk C."""

    phi0: NDArray[np.float64]
    p_pi_w: NDArray[np.float64]
    resistance_ohm: NDArray[np.float64]
    crosstalk: Any = None   # None (identity), dense array or scipy.sparse matrix
    _solver: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        n = np.asarray(self.phi0).size
        self.phi0 = np.broadcast_to(np.asarray(self.phi0, np.float64), (n,)).copy()
        self.p_pi_w = np.broadcast_to(np.asarray(self.p_pi_w, np.float64), (n,)).copy()
        self.resistance_ohm = np.broadcast_to(np.asarray(self.resistance_ohm, np.float64), (n,)).copy()
        if np.any(self.p_pi_w <= 0) or np.any(self.resistance_ohm <= 0):
            raise ConfigError("phase shifters: P_pi and heater resistance must be > 0")
        if self.crosstalk is not None:
            from scipy import sparse

            c = sparse.csc_matrix(self.crosstalk, dtype=np.float64)
            if c.shape != (n, n):
                raise ConfigError(f"phase shifters: crosstalk matrix must be ({n}, {n}), got {c.shape}")
            off = (c - sparse.identity(n, format="csc")).tocsr()
            if off.count_nonzero() == 0:
                self.crosstalk = None
            else:
                self.crosstalk = c.tocsr()
                # one factorisation of C, made on the first solve and reused by every write (volts_for solves
                # C P = target up to 17 times per write); symmetric, diagonally dominant C (thermal
                # crosstalk) is positive definite: no pivoting, a banded Cholesky when its RCM band is narrow
                rho = float(abs(off).sum(axis=1).max())
                symmetric = (c - c.T).count_nonzero() == 0
                self._solver = ("pending", c, symmetric and rho < 1.0)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle / deepcopy state without the cached factorisation (a SuperLU object cannot be pickled)."""
        state = self.__dict__.copy()
        if self.crosstalk is not None:
            symmetric = (self.crosstalk - self.crosstalk.T).count_nonzero() == 0
            from scipy import sparse

            rho = float(abs(self.crosstalk - sparse.identity(self.n, format="csr")).sum(axis=1).max())
            state["_solver"] = ("pending", self.crosstalk.tocsc(), symmetric and rho < 1.0)
        return state

    @classmethod
    def nominal(cls, n: int, p_pi_w: float, resistance_ohm: float, crosstalk: Any = None) -> "ThermoOpticCalibration":
        """Design values: phi0 = 0, equal P_pi and R, the designed crosstalk matrix (or none)."""
        return cls(np.zeros(n), np.full(n, p_pi_w), np.full(n, resistance_ohm), crosstalk)

    @property
    def n(self) -> int:
        """Number of channels."""
        return int(self.phi0.size)

    def phase(self, volts: ArrayLike) -> NDArray[np.float64]:
        """Predicted phases (rad) for heater voltages (V)."""
        return thermo_optic_phase(volts, self.phi0, self.p_pi_w, self.resistance_ohm, self.crosstalk)

    def _factorise(self) -> None:
        """Dense inverse (n <= 512), banded Cholesky on the RCM order (symmetric positive definite C with a band
        <= 4 sqrt(n) + 16: 1.5x faster solves than the sparse LU on a 64-port mesh's heater grid) or sparse LU."""
        from scipy.sparse.linalg import splu

        _, c, spd = self._solver
        n = c.shape[0]
        if n <= 512:      # small banks: a dense inverse (<= 2 MB) is one matrix-vector product
            self._solver = ("dense", np.linalg.inv(c.toarray()))
            return
        if spd:
            from scipy.linalg import cholesky_banded
            from scipy.sparse.csgraph import reverse_cuthill_mckee

            perm = reverse_cuthill_mckee(c.tocsr(), symmetric_mode=True)
            cp = c.tocsr()[perm][:, perm].tocoo()
            bw = int(np.max(np.abs(cp.row - cp.col)))
            if bw <= 4 * np.sqrt(n) + 16:
                ab = np.zeros((bw + 1, n))           # upper band storage: ab[bw + i - j, j] = C[i, j], i <= j
                up = cp.row <= cp.col
                ab[bw + cp.row[up] - cp.col[up], cp.col[up]] = cp.data[up]
                self._solver = ("banded", (cholesky_banded(ab, check_finite=False), perm))
                return
        self._solver = ("lu", splu(c, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                                   options={"SymmetricMode": True}) if spd else splu(c))

    def powers_for(self, delta: NDArray) -> NDArray[np.float64]:
        """Heater powers (W) giving phase increments delta above phi0: C P = P_pi delta."""
        target = self.p_pi_w * delta
        if self._solver is None:
            return target
        if self._solver[0] == "pending":
            self._factorise()
        kind, op = self._solver
        if kind == "dense":
            return op @ target
        if kind == "banded":
            from scipy.linalg import cho_solve_banded

            cb, perm = op
            out = np.empty_like(target)
            out[perm] = cho_solve_banded((cb, False), target[perm], check_finite=False)
            return out
        return op.solve(target)


class PhaseShifterBank:
    """A bank of thermo-optic phase shifters driven by one heater driver."""

    def __init__(self, port: HeaterPort, calibration: ThermoOpticCalibration, v_max: float | ArrayLike,
                 name: str = "phase shifters"):
        n = calibration.n
        if port.n_channels != n:
            raise ConfigError(f"{name}: driver has {port.n_channels} channels but the calibration has {n}")
        v_max = np.broadcast_to(np.asarray(v_max, np.float64), (n,)).copy()
        if not np.all(np.isfinite(v_max)) or np.any(v_max <= 0):
            raise ConfigError(f"{name}: v_max must be a positive voltage for every channel")
        self.port, self.cal, self.name, self.v_max = port, calibration, name, v_max
        self.p_max_w = v_max**2 / calibration.resistance_ohm
        reach = self.p_max_w / calibration.p_pi_w
        if np.any(reach < TWO_PI):
            k = int(np.argmin(reach))
            need = np.sqrt(TWO_PI * calibration.p_pi_w[k] * calibration.resistance_ohm[k])
            raise ConfigError(f"{name}: v_max = {v_max[k]:.3g} V on channel {k} reaches only {reach[k]:.3g} rad; "
                              f"a full 2 pi needs v_max >= {need:.3g} V")
        self.clipped_last = 0
        self.clipped_total = 0
        self.writes = 0
        self._volts = np.zeros(n)
        self._last: tuple | None = None    # (phases, volts, clipped) of the last solve

    @property
    def n_channels(self) -> int:
        """Number of phase shifters."""
        return self.cal.n

    def phase_range(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per-channel phases reachable without crosstalk: [phi0, phi0 + P_max / P_pi] (rad)."""
        return self.cal.phi0.copy(), self.cal.phi0 + self.p_max_w / self.cal.p_pi_w

    def volts_for(self, phases: ArrayLike) -> tuple[NDArray[np.float64], int]:
        """Voltages realising the phases under the phase policy, and how many channels were clipped."""
        phases = np.asarray(phases, np.float64)
        if phases.shape != (self.n_channels,):
            raise ValueError(f"{self.name}: expected {self.n_channels} phases, got shape {phases.shape}")
        # a finite sum proves every phase finite; a sum that is not finite is checked element by element
        if not np.isfinite(np.add.reduce(phases)) and not np.isfinite(phases).all():
            raise SafetyLimitError(f"{self.name}: phases contain NaN or inf; nothing written")
        key = self._solve_key(phases)
        last = self._last
        if last is not None and all(a is b if not isinstance(a, np.ndarray) else np.array_equal(a, b)
                                    for a, b in zip(last[0], key)):
            return last[1].copy(), last[2]        # same phases, same calibration and limits: no solve
        delta = np.mod(phases - self.cal.phi0, TWO_PI)
        p = self.cal.powers_for(delta)
        for _ in range(16):      # lifting one channel by 2 pi can push a neighbour negative: repeat
            neg = p < 0
            if not neg.any():
                break
            delta = delta + TWO_PI * neg
            p = self.cal.powers_for(delta)
        clipped = int(np.count_nonzero((p < 0) | (p > self.p_max_w)))
        v = np.minimum(np.sqrt(np.minimum(np.maximum(p, 0.0), self.p_max_w) * self.cal.resistance_ohm), self.v_max)
        self._last = (tuple(a.copy() if isinstance(a, np.ndarray) else a for a in key), v.copy(), clipped)
        return v, clipped

    def _solve_key(self, phases: NDArray) -> tuple:
        """What volts_for depends on: the phases (rad), the calibration (by value) and the voltage limits (V)."""
        c = self.cal
        return (phases, c, c.crosstalk, c.phi0, c.p_pi_w, c.resistance_ohm, self.v_max, self.p_max_w)

    def set_phases(self, phases: ArrayLike) -> NDArray[np.float64]:
        """Write phases (rad) in one batched transaction; returns the voltages written."""
        v, clipped = self.volts_for(phases)
        self.clipped_last = clipped
        self.clipped_total += clipped
        self.set_voltages(v)
        return v

    def set_voltages(self, volts: ArrayLike) -> None:
        """Write voltages (V) in one batched transaction after checking every channel's limit."""
        v = np.asarray(volts, np.float64)
        if v.shape != (self.n_channels,):
            raise ValueError(f"{self.name}: expected {self.n_channels} voltages, got shape {v.shape}")
        if not ((v >= 0) & (v <= self.v_max)).all():       # NaN fails both comparisons, inf the upper limit
            bad = ~np.isfinite(v) | (v < 0) | (v > self.v_max)
            k = int(np.flatnonzero(bad)[0])
            raise SafetyLimitError(f"{self.name}: channel {k} voltage {v[k]!r} V outside [0, {self.v_max[k]:.4g}] V "
                                   f"({int(bad.sum())} channel(s) out of range); nothing written")
        self.port.set_voltages(v)
        self._volts = v.copy()
        self.writes += 1

    @property
    def written_volts(self) -> NDArray[np.float64]:
        """The voltages of the last successful write (V); no instrument transaction (read_voltages reads back)."""
        return self._volts.copy()

    def read_voltages(self) -> NDArray[np.float64]:
        """Voltage set-points read back from the driver (V)."""
        v = np.asarray(self.port.get_voltages(), np.float64)
        if v.shape != (self.n_channels,) or not np.all(np.isfinite(v)):
            raise InstrumentError(f"{self.name}: driver returned invalid voltages (shape {v.shape})")
        return v

    def read_phases(self) -> NDArray[np.float64]:
        """Phases (rad) the calibration predicts for the read-back voltages."""
        return self.cal.phase(self.read_voltages())

    def safe_state(self) -> None:
        """All heaters to 0 V."""
        self.port.set_voltages(np.zeros(self.n_channels))
        self._volts = np.zeros(self.n_channels)
