"""Small numerical pieces shared by the calibrators (numpy only, deterministic)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..errors import InvalidRequestError

EPS = 1e-12

# What a single-score calibrator reads from a strategy's output.
#   score            the raw score (verbalizer: log-probability; pointwise: log-odds; listwise: rank score)
#   log_probability  log of the model's own probability
#   logit            log-odds of the model's own probability, log(p / (1 - p))
SOURCES = ("score", "log_probability", "logit")
Source = Literal["score", "log_probability", "logit"]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    return source


def calibrator_input(source: str, scores: Any, probabilities: Any | None) -> np.ndarray:
    """The 1-D input a single-score calibrator reads, per ``source``."""
    if source == "score":
        return np.asarray(scores, dtype=float).reshape(-1)
    if probabilities is None:
        raise InvalidRequestError(f"calibrator input {source!r} needs the probabilities", param="probabilities")
    p = np.clip(np.asarray(probabilities, dtype=float).reshape(-1), EPS, 1.0 - EPS)
    if source == "log_probability":
        return np.log(p)
    return np.log(p) - np.log1p(-p)


def check_labels(labels: Any, n: int) -> np.ndarray:
    y = np.asarray(labels, dtype=float).reshape(-1)
    if y.shape[0] != n:
        raise InvalidRequestError(f"{y.shape[0]} labels for {n} scores", param="labels")
    if n == 0:
        raise InvalidRequestError("cannot fit a calibrator on zero examples", param="labels")
    if not np.all((y == 0) | (y == 1)):
        raise InvalidRequestError("labels must be 0 or 1", param="labels")
    return y


def check_finite(x: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(x)):
        raise InvalidRequestError(f"{what} contain non-finite values", param=what)
    return x


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, EPS, 1.0 - EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def fit_logistic(
    X: np.ndarray,
    y: np.ndarray,
    *,
    l2: float = 0.0,
    sample_weight: np.ndarray | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression by Newton's method (the bias is not penalised).

    Minimises ``sum_i w_i * BCE_i + l2/2 * ||theta||^2``. A tiny ridge keeps the Hessian
    invertible on separable data; the line search keeps every step a descent step.
    """
    n, d = X.shape
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    A = np.concatenate([X, np.ones((n, 1))], axis=1)
    penalty = np.full(d + 1, float(l2))
    penalty[-1] = 0.0
    ridge = penalty + 1e-8

    def objective(beta: np.ndarray) -> float:
        z = A @ beta
        # log(1 + e^z) - y z, computed stably
        return float(np.sum(w * (np.logaddexp(0.0, z) - y * z)) + 0.5 * np.sum(penalty * beta**2))

    beta = np.zeros(d + 1)
    pos = float(np.sum(w * y)) / float(np.sum(w))
    beta[-1] = np.log(np.clip(pos, 1e-6, 1 - 1e-6) / np.clip(1 - pos, 1e-6, 1 - 1e-6))
    current = objective(beta)
    for _ in range(max_iter):
        p = sigmoid(A @ beta)
        grad = A.T @ (w * (p - y)) + penalty * beta
        H = (A * (w * p * (1 - p))[:, None]).T @ A + np.diag(ridge)
        try:
            step = np.linalg.solve(H, grad)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(H, grad, rcond=None)[0]
        t = 1.0
        while t > 1e-8:
            candidate = beta - t * step
            value = objective(candidate)
            if value <= current:
                break
            t *= 0.5
        else:
            break
        beta, previous, current = candidate, current, value
        if previous - current <= tol * max(1.0, abs(current)):
            break
    return beta[:-1], float(beta[-1])
