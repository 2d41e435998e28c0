"""The textbook lifetime-value model: BG/NBD purchase counts times Gamma-Gamma order values.

For a prediction of an event's value (or count) summed over a window after the anchor, this is
what an analyst builds instead of a gradient-boosted model: BG/NBD (Fader, Hardie and Lee, "Counting
Your Customers the Easy Way", 2005) for the number of purchase occasions in the window from each
entity's frequency, recency and tenure, and the Gamma-Gamma model (Fader and Hardie, 2013) for the
value of each. leadscore fits it on the same rows as CatBoost, reports it as a baseline, and blends
it with CatBoost when that lowers the validation loss: its structure (a purchase rate that decays
with time since the last purchase, values shrunk towards the population's) extrapolates to the
heaviest buyers, where trees with few examples per leaf cannot.

Inputs are the model's own point-in-time features of the label's event: distinct days with the
event over all history (frequency = days - 1), days since the first and the last (tenure and
recency) and the value sum (the mean value per purchase day). The likelihoods and the conditional
expectation follow the papers and the ``lifetimes`` package (``BetaGeoFitter``,
``GammaGammaFitter``), which is not a dependency. Parameters are JSON numbers; nothing is pickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import gammaln, hyp2f1

# The L2 penalty on the parameters, as lifetimes' ``penalizer_coef``: it keeps the fit finite on
# data with little repeat behaviour.
PENALTY = 0.001
# Rows with repeat purchases needed before the value model is fitted (otherwise the mean value).
MIN_REPEAT_ROWS = 20
# The likelihoods are fitted on at most this many rows with history (a seeded sample): seven
# population parameters, and each of the optimiser's ~1,000 steps costs a pass over the rows.
FIT_ROWS = 50_000


def input_columns(event: str) -> dict[str, str]:
    """The feature columns the model reads for an event, by role.

    Args:
        event: the label's event.

    Returns:
        ``days`` (distinct days with the event), ``first`` and ``last`` (days since), ``value``
        (value sum), each over all history before the anchor.
    """
    return {
        "days": f"{event}_active_days_all",
        "first": f"{event}_days_since_first",
        "last": f"{event}_days_since_last",
        "value": f"{event}_value_sum_all",
    }


def applies(frame_columns: list[str] | pd.Index, event: str) -> bool:
    """Whether a frame has the columns the model reads for this event.

    Args:
        frame_columns: the feature frame's columns.
        event: the label's event.

    Returns:
        True when every input column is there.
    """
    have = set(frame_columns)
    return all(c in have for c in input_columns(event).values())


def _summary(frame: pd.DataFrame, event: str) -> pd.DataFrame:
    """Frequency, recency, tenure and mean value per purchase day of each row (NaN: no history)."""
    c = input_columns(event)
    days = frame[c["days"]].to_numpy(dtype=float)
    first = frame[c["first"]].to_numpy(dtype=float)
    last = frame[c["last"]].to_numpy(dtype=float)
    value = np.nan_to_num(frame[c["value"]].to_numpy(dtype=float), nan=0.0)
    has = (days > 0) & np.isfinite(first) & np.isfinite(last)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame(
            {
                "has": has,
                "x": np.where(has, days - 1, np.nan),
                # BG/NBD's recency is 0 without a repeat purchase day (several purchases on the
                # first day are one occasion)
                "t_x": np.where(
                    has & (days > 1), np.maximum(first - last, 0.0), np.where(has, 0.0, np.nan)
                ),
                "T": np.where(has, np.maximum(first, 1e-3), np.nan),
                "m": np.where(has, value / np.maximum(days, 1), np.nan),
            }
        )


def _bgnbd_nll(params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> float:
    r, alpha, a, b = params
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    a4 = np.where(
        repeat,
        np.log(a) - np.log(np.where(repeat, b + x - 1, 1.0)) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    ll = a1 + a2 + np.logaddexp(a3, a4)
    return float(-ll.mean() + PENALTY * np.sum(params**2))


def _gamma_gamma_nll(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> float:
    p, q, v = params
    ll = (
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(v)
        + (p * x - 1) * np.log(m)
        + p * x * np.log(x)
        - (p * x + q) * np.log(x * m + v)
    )
    return float(-ll.mean() + PENALTY * np.sum(params**2))


def _fit(nll: Any, start: np.ndarray, args: tuple[np.ndarray, ...]) -> np.ndarray | None:
    """Minimise a negative log-likelihood of the parameters over their logarithms."""

    def objective(log_params: np.ndarray, *data: np.ndarray) -> float:
        # the optimiser wanders through parameters where a term over- or underflows: no step
        # there
        with np.errstate(all="ignore"):
            value = nll(np.exp(log_params), *data)
        return value if np.isfinite(value) else np.inf

    result = minimize(objective, start, args=args, method="Nelder-Mead", options={"maxiter": 4000})
    if not np.all(np.isfinite(result.x)) or not np.isfinite(result.fun):
        return None
    return np.exp(result.x)


@dataclass
class RepeatPurchaseModel:
    """BG/NBD x Gamma-Gamma for one event's value (or count) over a window, as JSON numbers.

    Attributes:
        event: the label's event (its RFM feature columns are the inputs).
        horizon_days: the label window.
        value: predict the value sum (True) or the number of purchase occasions (False).
        bgnbd: ``r``, ``alpha``, ``a``, ``b``.
        gamma_gamma: ``p``, ``q``, ``v``, or None (then every row gets ``mean_value``).
        mean_value: mean value per purchase day of the rows it was fitted on.
        no_history: prediction for rows without the event before the anchor (their mean label).
    """

    event: str
    horizon_days: float
    value: bool
    bgnbd: dict[str, float]
    gamma_gamma: dict[str, float] | None
    mean_value: float
    no_history: float

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, y: np.ndarray, *, event: str, horizon_days: float, value: bool
    ) -> RepeatPurchaseModel | None:
        """Fit on training rows by maximum likelihood.

        Args:
            frame: feature rows (the event's RFM columns).
            y: their labels (only the rows without history use them: their mean).
            event: the label's event.
            horizon_days: the label window.
            value: the label is the value sum (else the count).

        Returns:
            The model, or None when it cannot be fitted (too few rows with history, no
            convergence).
        """
        s = _summary(frame, event)
        y = np.asarray(y, dtype=float)
        has = s["has"].to_numpy()
        if has.sum() < MIN_REPEAT_ROWS or (s.loc[has, "x"] > 0).sum() < MIN_REPEAT_ROWS:
            return None
        fit_rows = np.flatnonzero(has)
        if len(fit_rows) > FIT_ROWS:
            fit_rows = np.sort(np.random.default_rng(0).choice(fit_rows, FIT_ROWS, replace=False))
        x, t_x, T = (s[k].to_numpy()[fit_rows] for k in ("x", "t_x", "T"))
        # as lifetimes does, fit on times scaled to a longest tenure of 10 (so that the penalty
        # weighs alpha alike whatever the unit), starting from all ones, then scale alpha back
        scale = 10.0 / float(T.max())
        bg = _fit(_bgnbd_nll, np.zeros(4), (x, t_x * scale, T * scale))
        if bg is None:
            return None
        bg[1] /= scale
        m = s["m"].to_numpy()[fit_rows]
        repeat = (x > 0) & (m > 0)
        mean_value = float(m[m > 0].mean()) if (m > 0).any() else 0.0
        gg = None
        if value and repeat.sum() >= MIN_REPEAT_ROWS:
            found = _fit(
                _gamma_gamma_nll, np.log([1.0, 1.0, max(mean_value, 1e-3)]), (x[repeat], m[repeat])
            )
            # q <= 1 leaves the population's mean value undefined, but not a repeat buyer's
            # conditional one (p x + q - 1 > 0 for x >= 1 when p > 1 - q), the only one used
            if found is not None and found[0] + found[1] > 1:
                gg = dict(zip(("p", "q", "v"), map(float, found), strict=True))
        return cls(
            event,
            float(horizon_days),
            value,
            dict(zip(("r", "alpha", "a", "b"), map(float, bg), strict=True)),
            gg,
            mean_value,
            float(y[~has].mean()) if (~has).any() else 0.0,
        )

    def expected_purchases(self, s: pd.DataFrame) -> np.ndarray:
        """BG/NBD: expected purchase occasions in the window, given each row's history."""
        r, alpha, a, b = (self.bgnbd[k] for k in ("r", "alpha", "a", "b"))
        x, t_x, T = (s[k].to_numpy() for k in ("x", "t_x", "T"))
        t = self.horizon_days
        with np.errstate(all="ignore"):
            hyp = hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
            numerator = ((a + b + x - 1) / (a - 1)) * (
                1 - hyp * ((alpha + T) / (alpha + T + t)) ** (r + x)
            )
            denominator = 1 + (x > 0) * (a / np.maximum(b + x - 1, 1e-12)) * (
                (alpha + T) / (alpha + t_x)
            ) ** (r + x)
            expected = numerator / denominator
            # where the series does not converge (a near 1), the limit without drop-out (NBD)
            nbd = (r + x) / (alpha + T) * t
        return np.where(np.isfinite(expected) & (expected >= 0), expected, nbd)

    def expected_value(self, s: pd.DataFrame) -> np.ndarray:
        """Gamma-Gamma: expected value per purchase occasion, shrunk towards the population's.

        Rows without a repeat purchase get the mean value per purchase day of the rows the model
        was fitted on: Gamma-Gamma's own population mean ``p v / (q - 1)`` is unstable when the
        fitted ``q`` is near 1.
        """
        x = s["x"].to_numpy()
        if self.gamma_gamma is None:
            return np.full(len(s), self.mean_value)
        p, q, v = (self.gamma_gamma[k] for k in ("p", "q", "v"))
        m = np.nan_to_num(s["m"].to_numpy(), nan=0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            shrunk = (p * (v + x * m)) / (p * x + q - 1)
        return np.where((x > 0) & np.isfinite(shrunk), shrunk, self.mean_value)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Expected value (or count) in the window for each row.

        Args:
            frame: feature rows.

        Returns:
            One prediction per row.
        """
        s = _summary(frame, self.event)
        out = self.expected_purchases(s)
        if self.value:
            out = out * self.expected_value(s)
        return np.where(s["has"].to_numpy(), out, self.no_history)

    def to_json(self) -> dict[str, Any]:
        """The model as JSON-able numbers."""
        return {
            "kind": "bg_nbd_gamma_gamma",
            "event": self.event,
            "horizon_days": self.horizon_days,
            "value": self.value,
            "bgnbd": self.bgnbd,
            "gamma_gamma": self.gamma_gamma,
            "mean_value": self.mean_value,
            "no_history": self.no_history,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RepeatPurchaseModel:
        """The model from :meth:`to_json`'s output."""
        return cls(
            data["event"],
            float(data["horizon_days"]),
            bool(data["value"]),
            {k: float(v) for k, v in data["bgnbd"].items()},
            {k: float(v) for k, v in data["gamma_gamma"].items()}
            if data.get("gamma_gamma")
            else None,
            float(data["mean_value"]),
            float(data["no_history"]),
        )
