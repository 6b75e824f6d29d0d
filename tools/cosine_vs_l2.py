r"""Why cosine similarity and not the L2 distance? The lecture's question, measured.

    python tools/cosine_vs_l2.py
    python tools/cosine_vs_l2.py --epochs=100 --l2_margins=1,10 --out=docs/cosine_vs_l2.png

Trains the siamese `ContrastiveEmbedding` (DrLIM margin loss) on the embedded
digits once with the cosine energy 1 - cos(a, b) and once per margin with the
L2 energy |a - b|, everything else equal (the recipe of
configs/contrastive_embedding.flags). Every --eval_every epochs it records the
10-labels-per-class linear probe and the kNN accuracy of the encoder's
features, the mean norm of the projections z the energy sees, and the mean
energies of positive and negative pairs. Writes the curves to --out (PNG) and
the numbers to the same path with .json.

The lecture's answer: with L2, two vectors can be made similar by making them
short and dissimilar by making them long; the cosine energy cannot be
"cheated" through the norms. The plot shows what the norms do.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

flags.DEFINE_integer("epochs", 100, "Training epochs per energy.")
flags.DEFINE_integer("eval_every", 10, "Evaluate every this many epochs.")
flags.DEFINE_float("cosine_margin", 0.5, "Margin of the cosine energy 1 - cos.")
flags.DEFINE_list("l2_margins", ["1.0"], "Margins of the L2 energy, one run each.")
flags.DEFINE_integer("probe_draws", 3, "Label draws of the 10-labels-per-class probe.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("out", "docs/cosine_vs_l2.png", "Where to write the plot (and .json).")
FLAGS = flags.FLAGS


def run(dataset, energy, margin):
    import keras
    import numpy as np

    import keras_ebm
    from keras_ebm.evaluation import evaluate_features

    keras.utils.set_random_seed(FLAGS.seed)
    # configs/contrastive_embedding(_l2).flags's model, optimizer and schedule, via the preset.
    model = keras_ebm.presets.build(
        "contrastive_embedding", dataset.x_train, energy=energy, margin=margin,
        epochs=FLAGS.epochs, batch_size=256, learning_rate=2e-3, warmup_epochs=5,
        augment_strength=0.5, crop_scale_min=0.5, flip=False, grayscale_probability=0.0,
        blur_probability=0.0, seed=FLAGS.seed)
    curve = []

    def record(epoch):
        train = model.encoder.predict(dataset.x_train, batch_size=512, verbose=0)
        test = model.encoder.predict(dataset.x_test, batch_size=512, verbose=0)
        projections = model.projection_head(test, training=False).numpy()
        result = evaluate_features(train, dataset.y_train, test, dataset.y_test,
                                   labels_per_class=(10,), num_draws=FLAGS.probe_draws,
                                   seed=FLAGS.seed, standardize=False)
        curve.append({"epoch": epoch, "probe_10": result["probe_10"], "knn": result["knn"],
                      "projection_norm": float(np.linalg.norm(projections, axis=1).mean()),
                      "feature_norm": float(np.linalg.norm(test, axis=1).mean())})
        print(f"{energy:>6} m={margin:<5g} epoch {epoch:4d}: probe@10 "
              f"{100 * curve[-1]['probe_10']:.1f}%  kNN {100 * curve[-1]['knn']:.1f}%  "
              f"|z| {curve[-1]['projection_norm']:.3g}  |h| {curve[-1]['feature_norm']:.3g}",
              flush=True)

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % FLAGS.eval_every == 0 or epoch + 1 == FLAGS.epochs:
                record(epoch + 1)

    record(0)
    start = time.perf_counter()
    history = model.fit(dataset.train_dataset(256, seed=FLAGS.seed), epochs=FLAGS.epochs,
                        callbacks=[Record()], verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    return {"energy": energy, "margin": margin, "seconds": round(seconds, 1), "curve": curve,
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()}}


def plot(runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for result in runs:
        label = f"{result['energy']} (margin {result['margin']:g})"
        epochs = [point["epoch"] for point in result["curve"]]
        axes[0].plot(epochs, [100 * p["probe_10"] for p in result["curve"]], "o-", label=label)
        axes[1].plot(range(1, len(result["history"]["projection_norm"]) + 1),
                     result["history"]["projection_norm"], label=label)
        axes[2].plot(range(1, len(result["history"]["energy_positive"]) + 1),
                     result["history"]["energy_positive"], label=f"{label}: positive pairs")
        axes[2].plot(range(1, len(result["history"]["energy_negative"]) + 1),
                     result["history"]["energy_negative"], "--", label=f"{label}: negative pairs")
    axes[0].axhline(89.5, color="gray", linestyle=":", label="raw pixels (89.5%)")
    axes[0].set(title="linear probe, 10 labels per class (test %)", xlabel="epoch")
    axes[1].set(title="mean norm |z| of the projections (train batches)", xlabel="epoch",
                yscale="log")
    axes[2].set(title="mean energy of positive / negative pairs", xlabel="epoch", yscale="log")
    for axis in axes:
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    figure.suptitle("ContrastiveEmbedding on digits: cosine energy 1 - cos(a, b) vs L2 |a - b|")
    figure.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=110)


def main(argv):
    del argv
    import keras_ebm

    try:
        margins = [float(m) for m in FLAGS.l2_margins]
    except ValueError:
        print(f"cosine_vs_l2.py: error: --l2_margins={','.join(FLAGS.l2_margins)} must be "
              "numbers", file=sys.stderr)
        sys.exit(2)
    if FLAGS.epochs < 1 or FLAGS.eval_every < 1 or min(margins + [FLAGS.cosine_margin]) <= 0:
        print("cosine_vs_l2.py: error: --epochs and --eval_every must be >= 1 and the margins "
              "> 0", file=sys.stderr)
        sys.exit(2)
    dataset = keras_ebm.data.load("digits")
    runs = [run(dataset, "cosine", FLAGS.cosine_margin)]
    runs += [run(dataset, "l2", margin) for margin in margins]
    plot(runs, FLAGS.out)
    with open(os.path.splitext(FLAGS.out)[0] + ".json", "w") as f:
        json.dump(runs, f, indent=1)
    print(f"\n{'energy':<22}{'probe@10':>10}{'kNN':>8}{'|z| start':>11}{'|z| end':>10}"
          f"{'time':>8}")
    for result in runs:
        first, last = result["curve"][0], result["curve"][-1]
        print(f"{result['energy'] + ' m=' + format(result['margin'], 'g'):<22}"
              f"{100 * last['probe_10']:>9.1f}%{100 * last['knn']:>7.1f}%"
              f"{first['projection_norm']:>11.3g}{last['projection_norm']:>10.3g}"
              f"{result['seconds']:>7.0f}s")
    print(f"\nPlot: {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
