"""The sweep's tables, statistics and figure (``examples/sweep.py``).

``cells.csv`` columns: ``points_*`` is the interaction in test error points, ``odds_*``
on the log-odds of the test error, ``pair_*`` the pair's test error minus the better
single regularizer's (points); ``low``/``high`` are Holm-adjusted 95% intervals and
``p`` Holm-adjusted p-values over the cells with rate > 0 and decay > 0.

Selection uses the validation split only; the test split only reports. Models that
share a seed share their initialisation, data order and dropout keys, so every
comparison is paired over seeds (``_stats.paired``, ddof=1, Student-t intervals), and
the per-cell families (the interaction in nine cells) are Holm-corrected
(``_stats.paired_holm``): an interval that covers zero reads "inconclusive".
"""

from __future__ import annotations

import os

import _common as common
import _stats
import numpy as np

ALPHA = 0.05


def cube(args, rows, column: str) -> np.ndarray:
    """Error (1 - accuracy) from ``column`` as a ``(rates, decays, seeds)`` array."""
    acc = np.array([float(r[column]) for r in rows])
    return (1.0 - acc).reshape(len(args.rates), len(args.decays), args.seeds)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def fmt(r: _stats.Paired, scale: float = 1.0) -> str:
    """``+1.2 [+0.3, +2.1]`` (no interval with one seed)."""
    if not np.isfinite(r.low):
        return f"{scale * r.mean:+.2f} (1 seed: no interval)"
    return f"{scale * r.mean:+.2f} [{scale * r.low:+.2f}, {scale * r.high:+.2f}]"


def write(args, out: str, grid, rows: list[dict], speed: float, num_test: int) -> None:
    """Prints the tables and writes ``heatmap.png`` into ``out``."""
    train, val, test = (
        cube(args, rows, c) for c in ("train_accuracy", "val_accuracy", "test_accuracy")
    )
    mean = test.mean(-1) * 100
    sd = test.std(-1, ddof=1) * 100 if args.seeds > 1 else np.zeros_like(mean)  # ddof=1
    best = np.unravel_index(np.argmin(val.mean(-1)), mean.shape)
    decayed = "kernels and biases" if args.decay_biases else "kernels only, biases not decayed"
    print(
        f"\nMNIST-1D ({args.train_size} training, {args.val_size} validation, "
        f"{num_test} test examples), "
        f"MLP 40-{args.hidden}-{args.hidden}-10, AdamW {args.lr:g} with decoupled decay on "
        f"{decayed}, batch {args.batch}, {args.steps} steps; {grid.size} models; "
        f"{speed:.0f} model-steps/s this run\n"
    )
    table = []
    for i, rate in enumerate(args.rates):
        for j, decay in enumerate(args.decays):
            mark = " **best**" if (i, j) == best else ""
            table.append(
                [
                    f"{rate:g}",
                    f"{decay:g}",
                    _stats.mean_sd(train[i, j] * 100, ".1f"),
                    _stats.mean_sd(val[i, j] * 100, ".1f"),
                    f"{_stats.mean_sd(test[i, j] * 100, '.1f')}{mark}",
                ]
            )
    seeds = plural(args.seeds, "seed")
    print(
        common.markdown_table(
            [
                "dropout rate",
                "weight decay",
                "train error %",
                "val error %",
                f"test error % (mean ± sd, {seeds})",
            ],
            table,
        )
    )
    print(selection_report(args, val, test, best))
    inter = None
    if len(args.rates) > 1 and len(args.decays) > 1 and args.rates[0] == args.decays[0] == 0:
        inter = interactions(args, val, test)
        print(interaction_report(args, inter))
    heatmap(args, out, mean, sd, best, inter)
    write_cells(args, out, train, val, test, best, inter)
    print(
        f"\nwrote {out}/models.csv, curves.csv, cells.csv, heatmap.png (checkpoints in "
        f"{out}/checkpoints)"
    )


def write_cells(args, out: str, train, val, test, best, inter) -> None:
    """``cells.csv``: one row per (rate, decay): errors over seeds and the interaction."""
    by_cell = {c["cell"]: c for c in inter or []}
    rows = []
    for i, rate in enumerate(args.rates):
        for j, decay in enumerate(args.decays):
            row = {"rate": rate, "decay": decay, "chosen_on_validation": (i, j) == best}
            for name, e in (("train", train), ("val", val), ("test", test)):
                sd = e[i, j].std(ddof=1) if args.seeds > 1 else float("nan")
                row[f"{name}_error_mean"] = f"{e[i, j].mean():.6g}"
                row[f"{name}_error_sd"] = f"{sd:.6g}"
            c = by_cell.get((i, j))
            for key in ("points", "odds", "pair"):
                r = c[key] if c else None
                for part in ("mean", "low", "high", "p"):
                    row[f"{key}_{part}"] = "" if r is None else f"{getattr(r, part):.6g}"
            row["verdict"] = c["verdict"] if c else ""
            rows.append(row)
    common.write_csv(os.path.join(out, "cells.csv"), rows)


def selection_report(args, val, test, best) -> str:
    """The validation-chosen cell's test error, paired against the baselines."""
    i, j = best
    lines = [
        f"\n**best** = lowest mean validation error: dropout {args.rates[i]:g}, weight decay "
        f"{args.decays[j]:g}; its test error {_stats.mean_sd(test[i, j] * 100, '.1f')}% "
        f"(the test split chose nothing)."
    ]
    base = (0, 0)
    comparisons = [(f"vs dropout {args.rates[0]:g}, decay {args.decays[0]:g}", base)]
    singles = [(a, 0) for a in range(1, len(args.rates))] + [
        (0, b) for b in range(1, len(args.decays))
    ]
    if singles:
        alone = min(singles, key=lambda c: val[c].mean())
        comparisons.append(
            (
                f"vs the best single regularizer on validation (dropout "
                f"{args.rates[alone[0]]:g}, decay {args.decays[alone[1]]:g})",
                alone,
            )
        )
    for label, cell in comparisons:
        if cell == best:
            continue
        r = _stats.paired(test[best], test[cell])
        lines.append(
            f"  test error difference {label}: {fmt(r, 100)} points (95% interval, p="
            f"{r.p:.2g}): {r.verdict('lower', 'higher')}"
        )
    return "\n".join(lines)


def interactions(args, val, test) -> list[dict]:
    """Per cell (rate > 0, decay > 0): the interaction on two scales and the pair vs the
    better single regularizer (chosen on validation), each Holm-corrected over the cells.
    """
    cells = [(i, j) for i in range(1, len(args.rates)) for j in range(1, len(args.decays))]

    def contrast(e, i, j):
        return e[i, j] - e[i, 0] - e[0, j] + e[0, 0]  # per seed

    logit = _stats.logit(test)
    zero = np.zeros(args.seeds)
    better = [(i, 0) if val[i, 0].mean() <= val[0, j].mean() else (0, j) for i, j in cells]
    points = _stats.paired_holm([(contrast(test, i, j) * 100, zero) for i, j in cells])
    odds = _stats.paired_holm([(contrast(logit, i, j), zero) for i, j in cells])
    pair = _stats.paired_holm(
        [(test[i, j] * 100, test[b] * 100) for (i, j), b in zip(cells, better, strict=True)]
    )
    out = []
    for k, (i, j) in enumerate(cells):
        gains = [100 * (test[0, 0] - test[c]).mean() for c in ((i, 0), (0, j), (i, j))]
        out.append(
            {
                "cell": (i, j),
                "gains": gains,
                "points": points[k],
                "odds": odds[k],
                "pair": pair[k],
                "better": better[k],
                "verdict": verdict(points[k], odds[k], pair[k]),
            }
        )
    return out


def verdict(points: _stats.Paired, odds: _stats.Paired, pair: _stats.Paired) -> str:
    """One word per cell from the Holm-corrected intervals."""
    on_points = points.verdict("super-additive", "diminishing")
    on_odds = odds.verdict("super-additive", "diminishing")
    if pair.verdict() == "higher":
        return "cancelling (pair worse than the better one alone)"
    if on_points == on_odds:
        return on_points if on_points != "inconclusive" else "inconclusive (additive fits)"
    if on_odds == "inconclusive":
        return f"{on_points} on error rate only (inconclusive on log-odds)"
    return f"{on_odds} on log-odds only (inconclusive on error rate)"


def interaction_report(args, inter: list[dict]) -> str:
    m = len(inter)
    head = (
        f"\ninteraction I = E(r,d) - E(r,0) - E(0,d) + E(0,0) per seed, then its mean over "
        f"{plural(args.seeds, 'seed')} with a Holm-adjusted 95% interval over the {m} cells "
        "(0: additive; > 0: diminishing, the pair gains less than the sum; < 0: "
        "super-additive), on test error points and on the log-odds of the test error (where "
        "a floor at low error cannot make a gain shrink by itself); 'pair - better alone': "
        "the pair's test error minus that of the better single regularizer (chosen on "
        "validation), Holm-adjusted; gains are in test error points against no "
        "regularization:"
    )
    table = []
    for c in inter:
        i, j = c["cell"]
        table.append(
            [
                f"{args.rates[i]:g}",
                f"{args.decays[j]:g}",
                *(f"{g:+.1f}" for g in c["gains"]),
                f"{fmt(c['points'])} (p={c['points'].p:.2g})",
                f"{fmt(c['odds'])} (p={c['odds'].p:.2g})",
                f"{fmt(c['pair'])} (p={c['pair'].p:.2g})",
                c["verdict"],
            ]
        )
    headers = [
        "rate",
        "decay",
        "gain dropout",
        "gain decay",
        "gain both",
        "I, error points",
        "I, log-odds",
        "pair - better alone, points",
        "verdict (Holm, 95%)",
    ]
    counts: dict[str, int] = {}
    for c in inter:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    summary = "; ".join(f"{v}: {n}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{head}\n{common.markdown_table(headers, table)}\n\ncells by verdict: {summary}"


def heatmap(args, out: str, mean, sd, best, inter) -> None:
    """Left: mean test error (± sd); right: the interaction on error points."""
    plt = common.matplotlib_pyplot()
    panels = 2 if inter else 1
    width = 1.25 * len(args.decays) + 2.2
    fig, axes = plt.subplots(
        1, panels, figsize=(width * panels, 0.8 * len(args.rates) + 2.4), squeeze=False
    )
    ax = axes[0, 0]
    im = ax.imshow(mean, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(args.decays)), [f"{d:g}" for d in args.decays])
    ax.set_yticks(range(len(args.rates)), [f"{r:g}" for r in args.rates])
    on = "kernels and biases" if args.decay_biases else "kernels only"
    ax.set_xlabel(f"decoupled weight decay λ (per step, {on})")
    ax.set_ylabel("dropout rate (both hidden layers)")
    lo, hi = float(mean.min()), float(mean.max())
    for i in range(mean.shape[0]):
        for j in range(mean.shape[1]):
            dark = (mean[i, j] - lo) > 0.5 * (hi - lo)
            ax.text(j, i, f"{mean[i, j]:.1f}\n± {sd[i, j]:.1f}", ha="center", va="center",
                    fontsize=8, color="white" if dark else "black")  # fmt: skip
    ax.add_patch(plt.Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False, lw=2.5, ec="red"))
    fig.colorbar(im, ax=ax, label="test error (%)")
    ax.set_title(
        f"mean test error (%) ± sd over {plural(args.seeds, 'seed')}\nred: lowest validation error",
        fontsize=9,
    )
    if inter:
        interaction_panel(plt, fig, axes[0, 1], args, inter)
    fig.suptitle(
        f"MNIST-1D, MLP 40-{args.hidden}-{args.hidden}-10, {args.train_size} training "
        f"examples, {args.steps} steps",
        fontsize=10,
    )
    fig.tight_layout()
    common.save_figure(fig, os.path.join(out, "heatmap.png"), dpi=110)
    plt.close(fig)


def interaction_panel(plt, fig, ax, args, inter) -> None:
    rates, decays = args.rates[1:], args.decays[1:]
    grid = np.zeros((len(rates), len(decays)))
    for c in inter:
        i, j = c["cell"]
        grid[i - 1, j - 1] = c["points"].mean
    ends = [abs(v) for c in inter for v in (c["points"].low, c["points"].high, c["points"].mean)]
    bound = max([v for v in ends if np.isfinite(v)] + [1e-9])
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    for c in inter:
        i, j = c["cell"]
        r = c["points"]
        star = "*" if r.verdict() != "inconclusive" else ""
        text = f"{r.mean:+.1f}{star}"
        if np.isfinite(r.low):
            text += f"\n[{r.low:+.1f}, {r.high:+.1f}]"
        dark = abs(r.mean) > 0.6 * bound
        ax.text(j - 1, i - 1, text, ha="center", va="center", fontsize=8,
                color="white" if dark else "black")  # fmt: skip
    ax.set_xticks(range(len(decays)), [f"{d:g}" for d in decays])
    ax.set_yticks(range(len(rates)), [f"{r:g}" for r in rates])
    ax.set_xlabel("decoupled weight decay λ")
    ax.set_ylabel("dropout rate")
    fig.colorbar(im, ax=ax, label="interaction I (test error points)")
    ax.set_title(
        "interaction I, Holm-adjusted 95% interval\n> 0: diminishing; * interval excludes 0",
        fontsize=9,
    )
