"""Is a new result a record? The challenge's one-sided test of a 0.005-nat improvement.

Why: a new record must beat the current one by at least 0.005 nats with p < 0.01, usually
shown over 3 seeds (SPEC §1). With per-seed improvements d_i = record - new_i (in nats per
token), the test is a one-sample Student t-test of H0: mean(d) <= 0.005 against
H1: mean(d) > 0.005: t = (mean(d) - 0.005) / (std(d) / sqrt(n)), p = P(T_{n-1} >= t).
The current record is taken as a fixed number (the mean of its logs when logs are given).

Units: `val_loss` in the logs is nats per token and is what the test uses. val_bpb is bits
per byte: val_loss = val_bpb * ln 2 * (bytes per token). When the record is given as a BPB
value (as leaderboards show it), it is converted with the bytes-per-token ratio of the new
logs (same validation set and tokenizer, so the same ratio), or with --bytes-per-token.
The Student t distribution is computed here (regularized incomplete beta by continued
fraction), so scipy is not needed.

Usage:
  python tools/significance.py --logs logs/a.txt logs/b.txt logs/c.txt --record-bpb 1.0810
  python tools/significance.py --logs logs/new*.txt --record-logs records/…/*.log
  python tools/significance.py --values 2.780 2.781 2.779 --record-nats 2.790
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import logparse  # noqa: E402

THRESHOLD_NATS = 0.005
ALPHA = 0.01


# -----------------------------------------------------------------------------
# Student t distribution
# -----------------------------------------------------------------------------


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function, by the modified Lentz method."""
    tiny, epsilon = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 1000):
        # Even step: coefficient m(b-m)x / ((a+2m-1)(a+2m)).
        numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + numerator * d
        c = 1.0 + numerator / c
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = c if abs(c) > tiny else tiny
        result *= d * c
        # Odd step: coefficient -(a+m)(a+b+m)x / ((a+2m)(a+2m+1)).
        numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + numerator * d
        c = 1.0 + numerator / c
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = c if abs(c) > tiny else tiny
        delta = d * c
        result *= delta
        if abs(delta - 1.0) < epsilon:
            return result
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x = {x} is outside [0, 1]")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The fraction converges fast for x < (a+1)/(a+b+2); otherwise use I_x(a,b) = 1 - I_{1-x}(b,a).
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_cdf(t: float, degrees_of_freedom: float) -> float:
    """P(T <= t) for Student's t with the given degrees of freedom."""
    if degrees_of_freedom <= 0:
        raise ValueError("degrees of freedom must be positive")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * regularized_beta(degrees_of_freedom / 2.0, 0.5, degrees_of_freedom / (degrees_of_freedom + t * t))
    return 1.0 - tail if t > 0 else tail


# -----------------------------------------------------------------------------
# The test
# -----------------------------------------------------------------------------


def improvement_test(new_nats: list[float], record_nats: float, threshold: float = THRESHOLD_NATS,
                     alpha: float = ALPHA) -> dict:
    """One-sided one-sample t-test of mean(record - new) > threshold."""
    if len(new_nats) < 2:
        raise ValueError("need at least 2 seeds for a standard deviation (the challenge usually asks for 3)")
    improvements = [record_nats - value for value in new_nats]
    n = len(improvements)
    mean, std = statistics.fmean(improvements), statistics.stdev(improvements)
    excess = mean - threshold
    if std == 0.0:
        t = math.inf if excess > 0 else (-math.inf if excess < 0 else 0.0)
    else:
        t = excess / (std / math.sqrt(n))
    p = 1.0 - student_t_cdf(t, n - 1) if math.isfinite(t) else (0.0 if t > 0 else 1.0)
    return {"n": n, "new_mean": statistics.fmean(new_nats), "new_std": statistics.stdev(new_nats),
            "record": record_nats, "improvement_mean": mean, "improvement_std": std, "threshold": threshold,
            "t": t, "degrees_of_freedom": n - 1, "p_value": p, "alpha": alpha, "significant": p < alpha}


def log_values(paths: list[Path]) -> tuple[list[float], list[float]]:
    """Final (val_loss, val_bpb) of each log; a clear error for a log that did not finish."""
    losses, bpbs = [], []
    for path in paths:
        run = logparse.summary(logparse.read_log(path))
        if not isinstance(run.get("val_loss"), (int, float)) or not isinstance(run.get("val_bpb"), (int, float)):
            raise ValueError(f"{path}: no final val_loss/val_bpb (did the run finish?)")
        losses.append(float(run["val_loss"]))
        bpbs.append(float(run["val_bpb"]))
    return losses, bpbs


def nats_per_bpb(losses: list[float], bpbs: list[float]) -> float:
    """val_loss / val_bpb = ln 2 * bytes per token, averaged over the logs."""
    return statistics.fmean(loss / bpb for loss, bpb in zip(losses, bpbs))


def resolve_inputs(args) -> tuple[list[float], float, float | None]:
    """(new values in nats, record in nats, nats per BPB or None) from the command line."""
    ratio = args.bytes_per_token * math.log(2) if args.bytes_per_token else None
    if args.logs:
        new, new_bpb = log_values(args.logs)
        ratio = ratio or nats_per_bpb(new, new_bpb)
    else:
        new = list(args.values)
    if args.record_logs:
        record_losses, record_bpbs = log_values(args.record_logs)
        record = statistics.fmean(record_losses)
        ratio = ratio or nats_per_bpb(record_losses, record_bpbs)
    elif args.record_nats is not None:
        record = args.record_nats
    else:
        if ratio is None:
            raise ValueError("--record-bpb needs a BPB-to-nats ratio: give --logs (their val_loss/val_bpb) "
                             "or --bytes-per-token")
        record = args.record_bpb * ratio
    return new, record, ratio


def report(result: dict, ratio: float | None) -> str:
    def bpb(nats: float) -> str:
        return f" ({nats / ratio:.6f} BPB)" if ratio else ""

    verdict = "YES" if result["significant"] else "NO"
    return "\n".join([
        f"seeds:{result['n']} new_val_loss_mean:{result['new_mean']:.6f}{bpb(result['new_mean'])} "
        f"std:{result['new_std']:.6f}",
        f"record_val_loss:{result['record']:.6f}{bpb(result['record'])}",
        f"improvement_mean:{result['improvement_mean']:.6f} nats{bpb(result['improvement_mean'])} "
        f"std:{result['improvement_std']:.6f} threshold:{result['threshold']} nats",
        f"t:{result['t']:.4f} df:{result['degrees_of_freedom']} p_value:{result['p_value']:.6g} alpha:{result['alpha']}",
        f"record beaten by more than {result['threshold']} nats at p < {result['alpha']}: {verdict}",
    ])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    new = parser.add_mutually_exclusive_group(required=True)
    new.add_argument("--logs", nargs="+", type=Path, help="the new run's seed logs (val_loss is used)")
    new.add_argument("--values", nargs="+", type=float, help="the new run's per-seed val_loss values (nats/token)")
    record = parser.add_mutually_exclusive_group(required=True)
    record.add_argument("--record-bpb", type=float, help="the current record's val_bpb (converted to nats)")
    record.add_argument("--record-nats", type=float, help="the current record's val_loss (nats/token)")
    record.add_argument("--record-logs", nargs="+", type=Path, help="the current record's logs (mean val_loss)")
    parser.add_argument("--bytes-per-token", type=float, help="for BPB <-> nats without logs")
    parser.add_argument("--threshold", type=float, default=THRESHOLD_NATS, help="nats (default 0.005)")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="significance level (default 0.01)")
    parser.add_argument("--check", action="store_true", help="exit 1 when the improvement is not significant")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.alpha < 1:
        parser.error("--alpha must be between 0 and 1")
    if args.bytes_per_token is not None and args.bytes_per_token <= 0:
        parser.error("--bytes-per-token must be positive")
    try:
        new, record, ratio = resolve_inputs(args)
        result = improvement_test(new, record, args.threshold, args.alpha)
    except (ValueError, OSError) as error:
        print(f"significance.py: error: {error}", file=sys.stderr)
        return 2
    print(report(result, ratio))
    return 1 if args.check and not result["significant"] else 0


if __name__ == "__main__":
    sys.exit(main())
