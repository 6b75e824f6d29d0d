r"""The README's table of the eight self-supervised methods on digits, and its figure.

    python tools/ssl_table.py                      # 8 configs x 3 seeds + the ablation
    python tools/ssl_table.py --seeds=0 --methods=simclr,byol --out=/tmp/ssl

Runs `tools/train.py --flagfile=configs/<method>.flags --seed=<seed>` for every
method and seed, one run after another (each run uses both cores), plus
SimSiam without its stop-gradient (`--nosimsiam_stop_gradient`, the paper's
collapse ablation), which the collapse monitor must stop. Then it writes:

- `<out>/ssl_digits.json`: every run's figures (probes, kNN, ranks per epoch,
  seconds, exit status);
- `<out>/ssl_digits.md`: the table, mean ± std over the seeds;
- `<out>/ssl_digits_rank.png`: the effective rank of the projections and of the
  encoder's embeddings over epochs, every healthy run beside the ablation;
- with `--readme`, the table between the README's `ssl-table` markers.

Runs are kept under `runs/ssl_table/<method>/seed<seed>` (`--runs`) and reused when their
config, seed and extra flags are unchanged (a changed config file reruns its
method only), so an interrupted table resumes where it stopped.
"""

import json
import os
import sys

import kept_runs
import numpy as np
from absl import app
from absl import flags
from kept_runs import REPO

CONTRASTIVE = ("simclr", "moco", "pirl", "contrastive_embedding")
NON_CONTRASTIVE = ("byol", "simsiam", "barlow_twins", "vicreg")
NAMES = {"simclr": "SimCLR", "moco": "MoCo v2", "pirl": "PIRL",
         "contrastive_embedding": "ContrastiveEmbedding (cosine)", "byol": "BYOL",
         "simsiam": "SimSiam", "barlow_twins": "Barlow Twins", "vicreg": "VICReg"}
ABLATION = "simsiam_no_stop_gradient"
MARKERS = ("<!-- ssl-table: begin (python tools/ssl_table.py --readme) -->",
           "<!-- ssl-table: end -->")

flags.DEFINE_list("methods", list(CONTRASTIVE + NON_CONTRASTIVE),
                  "Configs to run (configs/<method>.flags).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of each config.")
flags.DEFINE_bool("ablation", True, "Also run SimSiam with --nosimsiam_stop_gradient.")
kept_runs.define_flags("ssl_table", "a config")
FLAGS = flags.FLAGS


def run_one(name, method, seed, extra, runs):
    """One CLI run (or its kept result): a dict with the run's figures."""
    flagfile = os.path.join(REPO, "configs", f"{method}.flags")
    with open(flagfile, "rb") as f:
        key = kept_runs.content_key(f.read(), seed, *extra)
    label = f"{name} seed {seed}"

    def read_result(workdir, returncode, stderr):
        entry = {"name": name, "method": method, "seed": int(seed)}
        if returncode == 0:
            with open(os.path.join(workdir, "metrics.json")) as f:
                metrics = json.load(f)
            entry.update({k: metrics.get(k) for k in (
                "train_seconds", "epochs", "effective_rank", "embedding_std", "projection_rank",
                "projection_std", "knn_accuracy", "evaluation")})
            entry["rank_epochs"] = list(range(1, len(metrics["effective_rank"]) + 1))
            return entry
        record = os.path.join(workdir, "collapse.json")
        if not os.path.exists(record):  # not a collapse (the monitor writes collapse.json)
            raise kept_runs.failed("ssl_table.py", label, returncode, stderr)
        with open(record) as f:
            history = json.load(f)["history"]
        for key_name in ("effective_rank", "projection_rank"):
            entry[key_name] = [row[key_name] for row in history]
        entry["rank_epochs"] = [row["epoch"] for row in history]
        return entry

    return kept_runs.run(label, os.path.join(runs, name, f"seed{seed}"),
                         [f"--flagfile={flagfile}", f"--seed={seed}", *extra], key, read_result)


def mean_std(values, scale=100.0, digits=1):
    values = np.asarray(values, float) * scale
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def table(entries, seeds):
    """The markdown table (mean ± std over seeds) of the runs that finished."""
    header = ("| method | class | probe, 1 label/class | probe, 10 labels/class | "
              "probe, all labels | kNN (k = 20) | final effective rank, projections / encoder "
              "| training time | stopped by the monitor |\n|---|---|---|---|---|---|---|---|---|")
    rows = [header]
    healthy = [e for e in entries if e["name"] != ABLATION and e["status"] == 0]
    for reference in ("raw pixels", "encoder at init"):
        values = [e["evaluation"][reference] for e in healthy]
        if values:
            rows.append(f"| {reference} | – | " + " | ".join(
                mean_std([v[k] for v in values]) + "%"
                for k in ("probe_1", "probe_10", "probe_all", "knn")) + " | – | – | – |")
    for method in FLAGS.methods:
        runs = [e for e in entries if e["name"] == method]
        done = [e for e in runs if e["status"] == 0]
        kind = "contrastive" if method in CONTRASTIVE else "non-contrastive"
        stopped = sum(e["status"] != 0 for e in runs)
        if not done:
            rows.append(f"| {NAMES[method]} | {kind} |" + " – |" * 6
                        + f" {stopped}/{len(runs)} |")
            continue
        scores = [e["evaluation"][f"{method} (trained)"] for e in done]
        ranks = (mean_std([e["projection_rank"][-1] for e in done], 1.0) + " / "
                 + mean_std([e["effective_rank"][-1] for e in done], 1.0))
        rows.append(f"| **{NAMES[method]}** | {kind} | " + " | ".join(
            mean_std([s[k] for s in scores]) + "%"
            for k in ("probe_1", "probe_10", "probe_all", "knn"))
            + f" | {ranks} | {mean_std([e['train_seconds'] for e in done], 1.0, 0)} s"
            + f" | {stopped}/{len(runs)} |")
    ablation = [e for e in entries if e["name"] == ABLATION]
    if ablation:
        stopped = [e for e in ablation if e["status"] == 1]
        at = ", ".join(f"{(e.get('rank_epochs') or [0])[-1]}" for e in stopped)
        rows.append(
            "| SimSiam, `--nosimsiam_stop_gradient` (the paper's collapse ablation) | "
            "non-contrastive |" + " – |" * 4 + " "
            + (mean_std([e["projection_rank"][-1] for e in stopped], 1.0) + " / "
               + mean_std([e["effective_rank"][-1] for e in stopped], 1.0)
               + f" at the stop (epoch {at})" if stopped else "–")
            + f" | – | {len(stopped)}/{len(ablation)}, status 1 |")
    return "\n".join(rows) + (
        f"\n\nMean ± std over seeds {', '.join(map(str, seeds))}, one run after another on this "
        "machine, each `python tools/train.py --flagfile=configs/<method>.flags --seed=<seed>`; "
        "table, `docs/ssl_digits.json` and `docs/ssl_digits_rank.png` by "
        "`python tools/ssl_table.py --readme`.\n")


def figure(entries, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_ebm.presets import COLLAPSE_MIN_RANK_RATIO as ratio

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharex=True)
    colours = plt.get_cmap("tab10")
    for index, method in enumerate(FLAGS.methods):
        for e in (e for e in entries if e["name"] == method and e["status"] == 0):
            label = NAMES[method] if e["seed"] == min(
                x["seed"] for x in entries if x["name"] == method) else None
            for axis, key in zip(axes, ("projection_rank", "effective_rank")):
                axis.plot(e["rank_epochs"], e[key], color=colours(index), lw=1, alpha=0.8,
                          label=label)
    for e in (e for e in entries if e["name"] == ABLATION):
        for axis, key in zip(axes, ("projection_rank", "effective_rank")):
            values, epochs = e.get(key) or [], e.get("rank_epochs") or []
            axis.plot(epochs, values, color="black", lw=2.2, ls="--",
                      label="SimSiam without stop-gradient" if e["seed"] == 0 else None)
            if e["status"] == 1 and values:
                axis.plot(epochs[-1], values[-1], "kx", ms=10, mew=2,
                          label="stopped by the collapse monitor" if key == "effective_rank"
                          and e["seed"] == 0 else None)
            if values:  # the monitor's threshold for this run: a fraction of its peak rank
                axis.plot(epochs, ratio * np.maximum.accumulate(values), color="red", lw=1,
                          ls=":", label=f"threshold: {ratio:g} x the run's peak"
                          if key == "effective_rank" and e["seed"] == 0 else None)
    fig.suptitle("Effective rank (RankMe) of 512 held digits, each epoch: the collapse monitor's "
                 "view", fontsize=10)
    for axis, title in zip(axes, ("projections z = g(f(x)), what the loss sees",
                                  "encoder embeddings h = f(x), the representation kept")):
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("epoch")
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("effective rank")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.methods) - set(NAMES))
    if unknown:
        print(f"ssl_table.py: error: --methods: unknown {', '.join(unknown)}; choose from "
              f"{', '.join(NAMES)}", file=sys.stderr)
        sys.exit(2)
    runs = os.path.abspath(FLAGS.runs)
    os.makedirs(FLAGS.out, exist_ok=True)
    entries = []
    for method in FLAGS.methods:
        for seed in FLAGS.seeds:
            entries.append(run_one(method, method, seed, FLAGS.extra, runs))
    if FLAGS.ablation:
        for seed in FLAGS.seeds:
            entries.append(run_one(ABLATION, "simsiam", seed,
                                   ["--nosimsiam_stop_gradient", *FLAGS.extra], runs))
    figure(entries, os.path.join(FLAGS.out, "ssl_digits_rank.png"))
    kept_runs.publish(FLAGS.out, "ssl_digits", entries, table(entries, FLAGS.seeds), MARKERS,
                      "ssl_table.py", FLAGS.readme, runs)


if __name__ == "__main__":
    app.run(main)
