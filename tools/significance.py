"""Is a new result a record? The challenge's one-sided test of a 0.005-nat improvement.

Why: a new record must beat the current one by at least 0.005 nats with p < 0.01, usually
shown over 3 seeds. Two tests are offered, as competitors report them:

- against a number (the default): with per-seed improvements d_i = record - new_i in nats per
  token, a one-sample Student t-test of H0: mean(d) <= 0.005 against H1: mean(d) > 0.005,
  t = (mean(d) - 0.005) / (std(d) / sqrt(n)), p = P(T_{n-1} >= t). The record is a fixed number
  (its val_bpb, its val_loss, or the mean of its logs).
- against another record's logs (`--against FOLDER`): a Welch two-sample t-test of
  H0: mean(record) - mean(new) <= 0.005, t = (mean_r - mean_n - 0.005) / sqrt(s_r^2/n_r + s_n^2/n_n),
  with the Welch-Satterthwaite degrees of freedom; both sides' seed-to-seed noise counts.

Beside it, whenever the record's own runs are given (--against, --record-logs), the progression test the
maintainers apply since #1902 (April 2026) to admit a row to the leaderboard's chronological frontier: a
one-sided Welch test of H1: mean(record) > mean(new), no margin, passed at p < 0.25 (reproductions of
either side may be added as more runs). It has no threshold, so it reads the same in nats or in BPB.

Units: the test is on val_loss, nats per token. val_bpb is bits per byte:
val_loss = val_bpb * ln 2 * (bytes per token). A record given as BPB (as leaderboards show it)
is converted with the bytes-per-token ratio of the new logs (same validation set and tokenizer,
so the same ratio), or with --bytes-per-token. Logs of any dialect are read by
tools/logparse.py (their scored val_loss). The Student t distribution is computed here
(regularized incomplete beta by continued fraction), so scipy is not needed.

Usage:
  python tools/significance.py logs/seed42.txt logs/seed314.txt logs/seed999.txt --record 1.0810
  python tools/significance.py logs/new*.txt --against records/track_10min_16mb/2026-04-09_Name
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
PROGRESSION_ALPHA = 0.25  # #1902: the frontier's progression cutoff, one-sided Welch, no margin


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


def welch_test(new_nats: list[float], record_nats: list[float], threshold: float = THRESHOLD_NATS,
               alpha: float = ALPHA) -> dict:
    """One-sided Welch test of mean(record) - mean(new) > threshold, unequal variances."""
    if len(new_nats) < 2 or len(record_nats) < 2:
        raise ValueError("the Welch test needs at least 2 runs on each side (a standard deviation each)")
    n_new, n_record = len(new_nats), len(record_nats)
    new_var, record_var = statistics.variance(new_nats), statistics.variance(record_nats)
    new_term, record_term = new_var / n_new, record_var / n_record
    difference = statistics.fmean(record_nats) - statistics.fmean(new_nats)
    scale = math.sqrt(new_term + record_term)
    excess = difference - threshold
    if scale == 0.0:
        t, df = (math.inf if excess > 0 else -math.inf if excess < 0 else 0.0), float(n_new + n_record - 2)
    else:
        t = excess / scale
        df = (new_term + record_term) ** 2 / (new_term ** 2 / (n_new - 1) + record_term ** 2 / (n_record - 1))
    p = 1.0 - student_t_cdf(t, df) if math.isfinite(t) else (0.0 if t > 0 else 1.0)
    return {"n": n_new, "n_record": n_record, "new_mean": statistics.fmean(new_nats), "new_std": math.sqrt(new_var),
            "record": statistics.fmean(record_nats), "record_std": math.sqrt(record_var),
            "improvement_mean": difference, "improvement_std": scale, "threshold": threshold, "t": t,
            "degrees_of_freedom": df, "p_value": p, "alpha": alpha, "significant": p < alpha, "test": "welch"}


def progression_test(new_nats: list[float], record_nats: list[float], alpha: float = PROGRESSION_ALPHA) -> dict:
    """#1902's progression test: one-sided Welch of mean(record) > mean(new), no margin, p < 0.25."""
    return dict(welch_test(new_nats, record_nats, threshold=0.0, alpha=alpha), test="progression")


def log_values(paths: list[Path]) -> tuple[list[float], list[float]]:
    """Scored (val_loss, val_bpb) of each log, any dialect; a clear error for one without them."""
    losses, bpbs = [], []
    for path in paths:
        run = logparse.read_run(path)
        if not run["finished"]:
            raise ValueError(f"{path}: {run['unfinished_reason']} (did the run finish?)")
        if not isinstance(run["val_loss"], (int, float)):
            raise ValueError(f"{path}: its scored line ({run['final_eval']}) has no val_loss; the test needs nats")
        losses.append(float(run["val_loss"]))
        bpbs.append(float(run["val_bpb"]))
    return losses, bpbs


def record_folder_logs(folder: Path) -> list[Path]:
    """The scored training logs of a record folder, found as check_record.py finds them."""
    from tools import check_record

    if not folder.is_dir():
        raise ValueError(f"--against {folder}: not a folder")
    record = check_record.read_record(folder)
    paths = [Path(run["path"]) for run in record.runs if run["finished"]]
    if not paths:
        raise ValueError(f"--against {folder}: no finished training log in the folder")
    return paths


def comparable_losses(losses: list[float], bpbs: list[float], new_ratio: float | None) -> list[float]:
    """The record's losses in the new run's nats: the same when both used one tokenizer; when the
    bytes per token differ (another tokenizer), the record's BPB converted with the new ratio."""
    if new_ratio is None or abs(nats_per_bpb(losses, bpbs) / new_ratio - 1.0) < 0.005:
        return losses
    print("significance.py: note: the record's logs have another bytes-per-token ratio (another tokenizer?): "
          "their val_bpb is converted to nats with the new run's ratio", file=sys.stderr)
    return [bpb * new_ratio for bpb in bpbs]


def nats_per_bpb(losses: list[float], bpbs: list[float]) -> float:
    """val_loss / val_bpb = ln 2 * bytes per token, averaged over the logs."""
    return statistics.fmean(loss / bpb for loss, bpb in zip(losses, bpbs))


def new_values(args) -> tuple[list[float], float | None]:
    """The new run's per-seed val_loss and, from its logs, the nats-per-BPB ratio."""
    ratio = args.bytes_per_token * math.log(2) if args.bytes_per_token else None
    paths = list(args.logs or []) + list(args.positional_logs or [])
    if paths and args.values:
        raise ValueError("give the new run as logs or as --values, not both")
    if paths:
        losses, bpbs = log_values(paths)
        return losses, ratio or nats_per_bpb(losses, bpbs)
    if args.values:
        return list(args.values), ratio
    raise ValueError("no new result: give its logs (positional or --logs) or --values")


def resolve_inputs(args) -> tuple[list[float], float | list[float], float | None, list[float] | None]:
    """(new values in nats, record in nats (a number, or per-run values for --against), nats per BPB, the
    record's per-run values when its runs are known)."""
    new, ratio = new_values(args)
    record_logs = record_folder_logs(args.against) if args.against else args.record_logs
    if record_logs:
        losses, bpbs = log_values(record_logs)
        losses = comparable_losses(losses, bpbs, ratio)
        ratio = ratio or nats_per_bpb(losses, bpbs)
        return new, (losses if args.against else statistics.fmean(losses)), ratio, losses
    if args.record_nats is not None:
        return new, args.record_nats, ratio, None
    if ratio is None:
        raise ValueError("a BPB record needs a BPB-to-nats ratio: give logs (their val_loss/val_bpb) or --bytes-per-token")
    return new, args.record_bpb * ratio, ratio, None


def progression_report(result: dict) -> str:
    verdict = "YES" if result["significant"] else "NO"
    return "\n".join([
        f"progression (#1902): one-sided Welch, record mean {result['record']:.6f} vs new {result['new_mean']:.6f}, "
        f"difference {result['improvement_mean']:.6f} nats, t:{result['t']:.4f} df:{result['degrees_of_freedom']:.4g} "
        f"p_value:{result['p_value']:.6g}",
        f"progression over the record at p < {result['alpha']}: {verdict}",
    ])


def report(result: dict, ratio: float | None) -> str:
    def bpb(nats: float) -> str:
        return f" ({nats / ratio:.6f} BPB)" if ratio else ""

    verdict = "YES" if result["significant"] else "NO"
    record_line = f"record_val_loss:{result['record']:.6f}{bpb(result['record'])}"
    if result.get("test") == "welch":
        record_line += f" std:{result['record_std']:.6f} runs:{result['n_record']} test:welch"
    return "\n".join([
        f"seeds:{result['n']} new_val_loss_mean:{result['new_mean']:.6f}{bpb(result['new_mean'])} "
        f"std:{result['new_std']:.6f}",
        record_line,
        f"improvement_mean:{result['improvement_mean']:.6f} nats{bpb(result['improvement_mean'])} "
        f"std:{result['improvement_std']:.6f} threshold:{result['threshold']} nats",
        f"t:{result['t']:.4f} df:{result['degrees_of_freedom']:.4g} p_value:{result['p_value']:.6g} alpha:{result['alpha']}",
        f"record beaten by more than {result['threshold']} nats at p < {result['alpha']}: {verdict}",
    ])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("positional_logs", nargs="*", type=Path, metavar="LOG", help="the new run's seed logs")
    parser.add_argument("--logs", nargs="+", type=Path, help="the new run's seed logs (same as positional)")
    parser.add_argument("--values", nargs="+", type=float, help="the new run's per-seed val_loss values (nats/token)")
    record = parser.add_mutually_exclusive_group(required=True)
    record.add_argument("--record", "--record-bpb", dest="record_bpb", type=float,
                        help="the current record's val_bpb, as leaderboards show it (converted to nats)")
    record.add_argument("--record-nats", type=float, help="the current record's val_loss (nats/token)")
    record.add_argument("--record-logs", nargs="+", type=Path, help="the current record's logs (their mean val_loss)")
    record.add_argument("--against", type=Path, metavar="FOLDER",
                        help="another record's folder: Welch two-sample test against its logs")
    parser.add_argument("--bytes-per-token", type=float, help="for BPB <-> nats without logs")
    parser.add_argument("--threshold", type=float, default=THRESHOLD_NATS, help="nats (default 0.005)")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="significance level (default 0.01)")
    parser.add_argument("--check", action="store_true", help="exit 1 when the improvement is not significant")
    parser.add_argument("--check-progression", action="store_true",
                        help="exit 1 when the #1902 progression test (p < 0.25) fails or cannot be made")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.alpha < 1:
        parser.error("--alpha must be between 0 and 1")
    if args.bytes_per_token is not None and args.bytes_per_token <= 0:
        parser.error("--bytes-per-token must be positive")
    try:
        new, record, ratio, record_runs = resolve_inputs(args)
        if isinstance(record, list):
            result = welch_test(new, record, args.threshold, args.alpha)
        else:
            result = improvement_test(new, record, args.threshold, args.alpha)
        progression = progression_test(new, record_runs) if record_runs and len(record_runs) >= 2 else None
    except (ValueError, OSError) as error:
        print(f"significance.py: error: {error}", file=sys.stderr)
        return 2
    print(report(result, ratio))
    print(progression_report(progression) if progression else
          "progression (#1902): not tested (it needs two or more of the record's runs: --against or --record-logs)")
    if args.check and not result["significant"]:
        return 1
    return 1 if args.check_progression and not (progression and progression["significant"]) else 0


if __name__ == "__main__":
    sys.exit(main())
