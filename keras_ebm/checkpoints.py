"""Checkpoint files you can trust: one commit point, a fingerprint, one owner per workdir.

- **One commit point.** A checkpoint is one `.weights.h5` file (what
  `model.save_weights` writes, so `model.load_weights` reads it) that also
  carries its own record: the epochs done, the step within the next epoch,
  a fingerprint of the settings that shape the state, the variables' paths
  and shapes, and the library version. It is written under a unique
  temporary name, fsynced and renamed into place: whatever file a reader
  finds is whole and says by itself where it stands.
- **Fallback.** `select_checkpoint` takes the newest file (by epoch, then
  step) that reads back completely and matches the digest of its arrays; a
  truncated or corrupt file is skipped with a warning line, whatever the
  error. When files exist but none reads back, it raises instead of letting
  a fresh run overwrite them.
- **Fingerprint.** `check_fingerprint` raises `CheckpointMismatch` naming the
  first state-shaping setting that differs (resuming a MoCo queue of 100 keys
  with `queue_size=200`) and returns warning lines for settings that do not
  shape state (learning rate, temperature).
- **One owner.** `WorkdirLock` holds an exclusive `flock` on `<workdir>/.lock`
  for the whole run; a second run gets `WorkdirBusy` naming the holder's pid.
  The kernel releases the lock when the holder dies, even by `kill -9`.
- **Preemption.** `on_sigterm(fn)` calls `fn` on SIGTERM instead of dying, so
  a training run can save at the current step and stop.
- **Divergence.** `mark_diverged` leaves `DIVERGED.json` in the checkpoint
  folder; `diverged_message` reads it back on the next run.

Example:

>>> path, info = select_checkpoint("runs/moco/checkpoints")
>>> info["epoch"], info["step"]
(12, 0)
"""

import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import threading
import uuid

import h5py

LATEST = "latest.weights.h5"
PREVIOUS = "previous.weights.h5"
SNAPSHOT = re.compile(r"epoch-(\d{5,})\.weights\.h5")
RECORD = "keras_ebm_checkpoint"  # the root attribute holding the record (JSON)
LOCK_FILE = ".lock"
DIVERGED_FILE = "DIVERGED.json"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read back completely."""


class CheckpointMismatch(ValueError):
    """A checkpoint written with another state-shaping setting; the message starts with its name.

    Attributes:
        name: the setting ("queue_size"), or "model" when the variables differ.
        saved: its value in the checkpoint.
        given: its value now.
        path: the checkpoint file.
    """

    def __init__(self, name, saved, given, path, detail=None):
        self.name, self.saved, self.given, self.path = name, saved, given, path
        super().__init__(detail or (
            f"{name}={_show(given)} differs from the checkpoint's {name}={_show(saved)} "
            f"({path}); resume with the same {name}, or train in another workdir"))


class WorkdirBusy(RuntimeError):
    """Another process holds the workdir's lock. Attributes: workdir, pid (None if unknown)."""

    def __init__(self, workdir, pid):
        self.workdir, self.pid = workdir, pid
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"{workdir} is in use by {holder} (lock file "
                         f"{os.path.join(workdir, LOCK_FILE)}); wait for it to finish or use "
                         "another workdir")


def _show(value):
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _plain(value):
    """JSON-normal form (tuples become lists), so saved and given values compare equal."""
    return json.loads(json.dumps(value, default=str))


def _fsync(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def staging_name(path):
    """A temporary name beside `path`, unique to this process and call."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def commit(staging, path):
    """fsyncs `staging`, renames it to `path` (atomic) and fsyncs the folder."""
    _fsync(staging)
    os.replace(staging, path)
    _fsync(os.path.dirname(os.path.abspath(path)), directory=True)


def prepare_checkpoint(writer, staging, record):
    """Writes the model's variables (`writer.write`) and `record` to `staging`, fsynced.

    Rename it into place with `commit`; on failure the staging file is removed.
    """
    try:
        writer.write(staging)
        with h5py.File(staging, "r+") as f:
            f.attrs[RECORD] = json.dumps({"format": FORMAT, **_plain(record),
                                          "digest": _digest(f)})
        _fsync(staging)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(staging)
        raise
    return staging


def write_checkpoint(writer, path, record):
    """Writes the model's variables and `record` as one file at `path`, atomically.

    The file is written under a unique temporary name, its record added,
    fsynced, and renamed into place (the commit point). Returns `path`.
    """
    commit(prepare_checkpoint(writer, staging_name(path), record), path)
    return path


def _digest(h5file):
    """sha256 over every array's name, dtype, shape and bytes (HDF5 keeps no checksum)."""
    digest = hashlib.sha256()

    def add(name, obj):
        if isinstance(obj, h5py.Dataset):
            value = obj[()]
            digest.update(f"{name}:{obj.dtype}:{obj.shape};".encode())
            digest.update(value.tobytes() if hasattr(value, "tobytes") else bytes(str(value),
                                                                                   "utf-8"))

    h5file.visititems(add)
    return digest.hexdigest()


def read_record(path, verify=True):
    """The record of checkpoint `path`; with `verify`, every array is read back and checked
    against the record's digest (a flipped byte in the weights is caught too).

    Raises:
        CheckpointError: on any failure to read the file or its record.
    """
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get(RECORD)
            if raw is None:
                raise CheckpointError(f"{path}: no keras_ebm checkpoint record")
            record = json.loads(raw)
            epoch, step = int(record["epoch"]), int(record["step"])
            if epoch < 0 or step < 0:
                raise ValueError(f"negative epoch {epoch} or step {step}")
            if verify and "digest" in record and _digest(f) != record["digest"]:
                raise CheckpointError(f"{path}: corrupt (its arrays differ from their digest)")
            elif verify:
                f.visititems(lambda _, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001  (any failure means: not this file)
        reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise CheckpointError(f"{path}: unreadable ({reason})") from None
    return record


def candidates(directory):
    """The checkpoint files in `directory`: latest, its previous copy, the per-epoch snapshots."""
    if not os.path.isdir(directory):
        return []
    names = [LATEST, PREVIOUS] + sorted((n for n in os.listdir(directory) if SNAPSHOT.fullmatch(n)),
                                        reverse=True)
    return [os.path.join(directory, n) for n in names if os.path.isfile(os.path.join(directory, n))]


def select_checkpoint(directory, warn=None):
    """`(path, record)` of the newest checkpoint in `directory` that reads back whole.

    Newest means the largest (epoch, step). Files that cannot be read are
    skipped, each with one line to `warn` (default: stderr). Returns
    `(None, None)` when there is none.

    Raises:
        CheckpointError: there are checkpoint files but none reads back whole
            (training from scratch would overwrite them: move them away first).
    """
    warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
    headers = []
    for path in candidates(directory):
        try:
            record = read_record(path, verify=False)
        except CheckpointError as error:
            warn(f"warning: skipping checkpoint {error}")
            continue
        headers.append(((int(record["epoch"]), int(record["step"])), path))
    for _, path in sorted(headers, reverse=True):
        try:
            return path, read_record(path)
        except CheckpointError as error:
            warn(f"warning: skipping checkpoint {error}")
    found = candidates(directory)
    if found:
        raise CheckpointError(
            f"{directory}: none of its {len(found)} checkpoint files reads back whole; "
            "move the folder away (or delete it) to train from scratch")
    return None, None


def checkpoint_position(directory):
    """`(epoch, step)` of the checkpoint a rerun resumes from ((0, 0) if none readable)."""
    try:
        _, record = select_checkpoint(directory, warn=lambda line: None)
    except CheckpointError:
        return 0, 0
    return (int(record["epoch"]), int(record["step"])) if record else (0, 0)


def variable_shapes(model):
    """[[path, shape], ...] of the model's variables: the structure a checkpoint must match."""
    return [[getattr(v, "path", v.name), list(v.shape)] for v in model.weights]


def check_fingerprint(record, path, fingerprint=None, settings=None, variables=None):
    """Compares a checkpoint's record with the run about to resume from it.

    Args:
        record: the checkpoint's record (`read_record`).
        path: the checkpoint file (for the messages).
        fingerprint: dict of settings that shape the state; any difference
            raises `CheckpointMismatch` naming the setting.
        settings: dict of other settings; differences come back as warnings.
        variables: `variable_shapes(model)`; a difference raises
            `CheckpointMismatch` with name "model".

    Returns:
        A list of warning lines (settings that differ).
    """
    saved = record.get("fingerprint") or {}
    for name, given in (fingerprint or {}).items():
        if name in saved and saved[name] != _plain(given):
            raise CheckpointMismatch(name, saved[name], given, path)
    saved_variables = record.get("variables")
    if variables is not None and saved_variables is not None:
        # Shapes, in order (paths carry Keras's per-process unique names: only for the message).
        given_variables = _plain(variables)
        saved_shapes = [shape for _, shape in saved_variables]
        if saved_shapes != [shape for _, shape in given_variables]:
            detail = (f"{len(saved_variables)} variables there, {len(given_variables)} here"
                      if len(saved_variables) != len(given_variables) else next(
                          f"variable {b[0]} has shape {a[1]} there, {b[1]} here"
                          for a, b in zip(saved_variables, given_variables) if a[1] != b[1]))
            raise CheckpointMismatch("model", None, None, path, detail=(
                f"model: the checkpoint {path} was written by another model ({detail}); "
                "resume with the same model, or train in another workdir"))
    warnings = []
    saved_settings = record.get("settings") or {}
    for name, given in (settings or {}).items():
        if name in saved_settings and saved_settings[name] != _plain(given):
            warnings.append(f"{name}={_show(given)} differs from the checkpoint's "
                            f"{_show(saved_settings[name])}; resuming with {_show(given)}")
    return warnings


def remove_stale_staging(directory):
    """Deletes temporary files left by killed writers (call it while holding the workdir lock)."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if name.startswith(".") and name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, name))


# -- divergence ------------------------------------------------------------------------
def write_json(path, value):
    """Writes `value` as JSON at `path` atomically (unique staging name, fsync, rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    staging = staging_name(path)
    with open(staging, "w") as f:
        json.dump(value, f, indent=2)
    commit(staging, path)


def mark_diverged(directory, message):
    """Marks the run in `directory` as diverged: reruns refuse to go on (or roll back)."""
    write_json(os.path.join(directory, DIVERGED_FILE), {"message": message})


def diverged_message(directory):
    """The divergence message left in `directory`, or None. An unreadable mark still counts."""
    path = os.path.join(directory, DIVERGED_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return str(json.load(f)["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"the run diverged ({path} is unreadable)"


def clear_diverged(directory):
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(directory, DIVERGED_FILE))


# -- one owner per workdir ---------------------------------------------------------------
_HELD = {}  # realpath of a lock file -> [fd, depth]: re-entrant within a process


class WorkdirLock:
    """An exclusive lock on a workdir for as long as it is held (re-entrant in one process).

    Args:
        workdir: the folder; created if missing.

    Raises (on enter):
        WorkdirBusy: another process holds it; the message names its pid.

    Example:

    >>> with WorkdirLock("runs/moco"):
    ...     keras_ebm.training.fit(model, x, workdir="runs/moco", epochs=10, batch_size=256)
    """

    def __init__(self, workdir):
        self.workdir = os.fspath(workdir)
        self.path = os.path.join(self.workdir, LOCK_FILE)

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        os.makedirs(self.workdir, exist_ok=True)
        key = os.path.realpath(self.path)
        if key in _HELD:
            _HELD[key][1] += 1
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise WorkdirBusy(self.workdir, int(pid) if pid.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[key] = [fd, 1]
        return self

    def __exit__(self, *exc_info):
        key = os.path.realpath(self.path)
        if key not in _HELD:
            return
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            fd = _HELD.pop(key)[0]
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # releases the flock


# -- preemption ------------------------------------------------------------------------------
@contextlib.contextmanager
def on_sigterm(fn):
    """Within the block, SIGTERM calls `fn()` instead of ending the process (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: fn())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
