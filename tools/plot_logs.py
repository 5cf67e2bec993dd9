"""Plot training loss and validation BPB against time for one or more runs, as a PNG.

Why: comparing runs (seeds, sweeps, a change against the baseline) is quicker on one picture
than in log files. Left panel: training loss against training time. Right panel: validation
BPB against wall time since training started; evaluations after training (quantized,
sliding, ttt, ...) follow the end of training, each at the time it finished, and are
labelled. Curves come from tools/logparse.py (`train_points`, `val_points`), so logs of every
dialect plot: this project's and those of real challenge records (in-training lines without a
time are placed by step between the lines that have one).

matplotlib is an optional dependency of this tool only (pip install matplotlib).
Usage: python tools/plot_logs.py logs/run_a.txt logs/run_b.txt -o curves.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import logparse  # noqa: E402


class PlotError(RuntimeError):
    pass


def load_curves(paths: list[Path], labels: list[str] | None = None) -> list[dict]:
    """[{'label', 'train', 'val'}] per log; a log with neither curve is an error."""
    if labels is not None and len(labels) != len(paths):
        raise PlotError(f"{len(labels)} labels for {len(paths)} logs")
    curves = []
    for index, path in enumerate(paths):
        run = logparse.read_run(path)
        curve = {"label": labels[index] if labels else Path(path).stem,
                 "train": logparse.train_points(run), "val": logparse.val_points(run)}
        if not curve["train"] and not curve["val"]:
            raise PlotError(f"{path}: no training loss or validation lines to plot")
        curves.append(curve)
    return curves


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotError("matplotlib is needed for plotting: pip install matplotlib") from None
    matplotlib.use("Agg")  # files only: never open a window
    import matplotlib.pyplot as plt

    return plt


def plot(curves: list[dict], output: Path, title: str | None = None) -> Path:
    plt = pyplot()
    figure, (loss_axes, bpb_axes) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, curve in enumerate(curves):
        color = f"C{index % 10}"
        if curve["train"]:
            loss_axes.plot([p["time_s"] for p in curve["train"]], [p["train_loss"] for p in curve["train"]],
                           color=color, label=curve["label"], linewidth=1.2)
        if curve["val"]:
            bpb_axes.plot([p["time_s"] for p in curve["val"]], [p["val_bpb"] for p in curve["val"]],
                          color=color, marker="o", markersize=4, label=curve["label"], linewidth=1)
            for point in curve["val"]:
                if point["name"] != "train":
                    bpb_axes.annotate(point["name"], (point["time_s"], point["val_bpb"]), fontsize=7,
                                      textcoords="offset points", xytext=(3, 3), color=color)
    loss_axes.set(xlabel="training time (s)", ylabel="training loss (nats/token)", title="Training loss")
    bpb_axes.set(xlabel="time since training started (s)", ylabel="val_bpb", title="Validation BPB")
    for axes in (loss_axes, bpb_axes):
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=120)
    plt.close(figure)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path, help="run logs of any dialect")
    parser.add_argument("-o", "--output", type=Path, default=Path("curves.png"), help="PNG path (default curves.png)")
    parser.add_argument("--labels", help="comma-separated legend labels, one per log (default: file names)")
    parser.add_argument("--title", help="figure title")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.logs if not p.is_file()]
    if missing:
        parser.error(f"no such log: {', '.join(missing)}")
    if args.output.suffix.lower() != ".png":
        parser.error(f"--output {args.output} must end in .png")
    try:
        curves = load_curves(args.logs, args.labels.split(",") if args.labels else None)
        plot(curves, args.output, args.title)
    except PlotError as error:
        print(f"plot_logs.py: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote:{args.output} runs:{len(curves)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
