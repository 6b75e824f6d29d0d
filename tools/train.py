r"""Trains a keras_ebm method, evaluates it and exports it for TF Serving.

    python tools/train.py --flagfile=configs/moco.flags
    python tools/train.py --method=simclr --dataset=digits --epochs=100
    python tools/train.py --flagfile=configs/pcd_rbm.flags

Flags -> `keras_ebm.experiment.RunConfig` -> `keras_ebm.experiment.run` (data,
`keras_ebm.presets.build`, `keras_ebm.training.fit`, evaluation, export). Each
flag is the field or preset setting of the same name; a setting flag left unset
takes the method's preset value (`keras_ebm.presets.defaults(method)`). Writes
into --workdir: TensorBoard logs (tb/), checkpoints (checkpoints/, a rerun
resumes there), model.keras and metrics.json; exports a SavedModel to
<export_dir>/<version>/.

Bad input prints one line naming the flag or file, exits with status 2 and
writes no export; a diverged run, or a collapsed one (--collapse_monitor: the
effective rank of 512 training images' embeddings, each epoch), exits with
status 1 and exports nothing; SIGTERM saves a checkpoint and exits with 143.
"""

import contextlib
import dataclasses
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ebm_recipes  # noqa: E402, F401  (the EBM flags)
import train_flags  # noqa: E402  (the other flags)
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from keras_ebm import experiment  # noqa: E402
from keras_ebm import presets  # noqa: E402

REPO = train_flags.REPO
FLAGS = flags.FLAGS
EXTRA_CALLBACKS = []  # appended to every fit (tests simulate crashes with it)
FIELDS = [field.name for field in dataclasses.fields(experiment.RunConfig)]
SETTINGS = sorted(set().union(*(presets.defaults(method, kind) for method in presets.METHODS
                                for kind in (None, "toy"))) - set(FIELDS))
STOP_STATUS = {"preempted": 143}  # the others: 1


class UsageError(Exception):
    """Bad input: one line, exit status 2."""


def fail(message, status=2, hard=False):
    """Prints one line and exits; `hard` skips the interpreter's shutdown (a lost worker)."""
    print(f"train.py: {'error: ' if status == 2 else ''}{message}", file=sys.stderr)
    if hard:
        with contextlib.suppress(OSError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        fail(str(error).splitlines()[0])


def as_flag(message):
    """A library message that starts with a field or setting name, as a flag: `--name...`."""
    name = re.match(r"[a-z_0-9]+", message)
    return f"--{message}" if name and name.group() in FLAGS else message


def run_config():
    """The flags as a `keras_ebm.experiment.RunConfig`, checked; prints the ignored flags.

    Raises `UsageError` naming the first bad flag.
    """
    fields = {name: FLAGS[name].value for name in FIELDS if name in FLAGS}
    settings = {name: FLAGS[name].value for name in SETTINGS
                if name in FLAGS and FLAGS[name].value is not None}
    config = experiment.RunConfig(**{
        **fields, "export_dir": FLAGS.export_dir or os.path.join(REPO, "saved_models",
                                                                 FLAGS.method),
        "settings": settings, "callbacks": list(EXTRA_CALLBACKS),
        "warn": lambda line: print(f"train.py: {line}", file=sys.stderr, flush=True)})
    try:
        ignored = config.validate()
    except presets.SettingError as error:
        raise UsageError(as_flag(str(error))) from None
    for name in ignored:
        print(f"train.py: warning: --{name} is ignored by --method={FLAGS.method}",
              file=sys.stderr)
    return dataclasses.replace(config, settings={
        k: v for k, v in settings.items() if k not in ignored})


def validate_flags():
    """Checks every flag before anything is built or written."""
    run_config()


def use_xla():  # an explicit --jit_compile, or auto for SSL methods: XLA on GPUs and TPUs
    from keras_ebm.distribute import default_jit_compile

    return default_jit_compile(FLAGS.jit_compile, FLAGS.strategy)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        experiment.run(run_config())
    except UsageError as error:
        fail(str(error))
    except presets.SettingError as error:
        fail(as_flag(str(error)))
    except experiment.RunStopped as error:
        fail(as_flag(str(error)), status=STOP_STATUS.get(error.reason, 1),
             hard=error.reason == "lost_worker")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
