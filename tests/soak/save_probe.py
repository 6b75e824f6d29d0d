"""Memory probe behind the README's soak table: train steps with one action between "epochs".

    python tests/soak/save_probe.py save_weights      # Keras's .weights.h5 writer (grows)
    python tests/soak/save_probe.py backup_writer     # ResumableBackup's writer (flat)
    python tests/soak/save_probe.py none|numpy|h5py|npz [--epochs 800]

Builds the MoCo digits model of configs/moco.flags, runs 4 compiled train steps per
"epoch", then the action, and prints the process's resident memory (VmRSS, MiB) every
100 epochs. Not a test (nothing asserts); the soak test is tests/soak/test_soak.py.
"""

import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACTIONS = ("none", "save_weights", "backup_writer", "numpy", "h5py", "npz")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--epochs", type=int, default=800)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.join(ROOT, "tests")]
    from conftest import load_train_tool  # the tests' loader of tools/train.py
    from test_soak import _memory_mib  # the soak test's /proc reader

    train = load_train_tool()
    import h5py
    import numpy as np
    import tensorflow as tf

    import keras_ebm
    from keras_ebm.callbacks import _WeightsFileWriter

    train.FLAGS(["train.py", f"--flagfile={ROOT}/configs/moco.flags", "--noevaluate",
                 "--epochs=1000000"])
    dataset = keras_ebm.data.load("digits")
    model = train.build_method(dataset.image_shape, num_train=len(dataset.x_train))
    model.compile(optimizer=train.build_optimizer(4))
    batches = train.epoch_ordered_batches(dataset, 4, 0)
    model.fit(batches, epochs=1, steps_per_epoch=4, shuffle=False, verbose=0)  # builds everything
    step, iterator = tf.function(model.train_step), iter(batches)
    writer = _WeightsFileWriter(model)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "probe.weights.h5")
        for epoch in range(args.epochs + 1):
            for _ in range(4):
                step(next(iterator))
            if args.action == "save_weights":
                model.save_weights(path)
            elif args.action == "backup_writer":
                writer.write(path)
            elif args.action == "numpy":
                [v.numpy() for v in model.weights]
            elif args.action == "h5py":
                with h5py.File(path, "w") as f:
                    for i, v in enumerate(model.weights):
                        group = f.create_group(f"layers/{i}").create_group("vars")
                        group.attrs["path"] = v.path
                        group.create_dataset("0", data=np.asarray(v))
            elif args.action == "npz":
                np.savez(path + ".npz", *[np.asarray(v) for v in model.weights])
            if epoch % 100 == 0:
                rss = _memory_mib(os.getpid())["VmRSS"]
                print(f"{args.action} epoch {epoch}: VmRSS {rss:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
