"""Runs of tools/train.py kept on disk and reused: what the README's generated tables are made of.

`tools/ssl_table.py` and `tools/toy_table.py` run many CLI trainings one after
another. Each run lives in its own workdir with a `summary.json`; a run whose
key (a digest of what determines it: config, seed, flags) is unchanged is
read back instead of trained again, so an interrupted table resumes.
"""

import hashlib
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def content_key(first, *parts):
    """16 hex digits of sha256(first || json(parts)); `first` is bytes (e.g. a flagfile)."""
    digest = hashlib.sha256(first)
    digest.update(json.dumps([str(p) for p in parts]).encode())
    return digest.hexdigest()[:16]


def run(label, workdir, arguments, key, read_result):
    """One `tools/train.py` run in `workdir` (or its kept summary): a dict of its figures.

    Args:
        label: str, names the run in the progress lines ("moco seed 2").
        workdir: str, the run's folder; `<workdir>_export` gets the SavedModel.
        arguments: list of train.py flags (without --workdir and --export_dir).
        key: str, `content_key` of what determines the run.
        read_result: callable(workdir, returncode, stderr) -> dict of the run's
            figures, or raises SystemExit for a failure that must not be kept.

    Returns:
        The summary dict: `read_result`'s entries plus key, status, wall_seconds
        and error (the last `train.py:` line of stderr, or None).
    """
    summary = os.path.join(workdir, "summary.json")
    if os.path.exists(summary):
        with open(summary) as f:
            kept = json.load(f)
        if kept.get("key") == key:
            print(f"{label}: kept ({summary})", flush=True)
            return kept
    subprocess.run(["rm", "-rf", workdir, workdir + "_export"], check=True)
    os.makedirs(os.path.dirname(workdir), exist_ok=True)
    command = [sys.executable, os.path.join(REPO, "tools", "train.py"), *arguments,
               f"--workdir={workdir}", f"--export_dir={workdir}_export"]
    print(f"{label}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = [line for line in result.stderr.splitlines() if line.startswith("train.py:")]
    entry = {"key": key, "status": result.returncode, "wall_seconds": round(wall, 1),
             "error": lines[-1] if lines else None}
    entry.update(read_result(workdir, result.returncode, result.stderr))
    print(f"{label}: status {result.returncode} in {wall:.0f} s"
          + (f" ({entry['error']})" if entry["error"] else ""), flush=True)
    os.makedirs(workdir, exist_ok=True)
    with open(summary, "w") as f:
        json.dump(entry, f, indent=1)
    return entry


def failed(tool, label, returncode, stderr):
    """The SystemExit of a run that failed for a reason a table cannot show."""
    sys.stderr.write(stderr[-3000:])
    return SystemExit(f"{tool}: {label} failed (status {returncode})")


def write_between_markers(path, markers, markdown, tool):
    """Replaces the text between the two `markers` lines of the file at `path`."""
    with open(path) as f:
        text = f.read()
    if markers[0] not in text or markers[1] not in text:
        raise SystemExit(f"{tool}: --readme: {path} has no {markers[0]!r} marker")
    head, rest = text.split(markers[0], 1)
    _, tail = rest.split(markers[1], 1)
    with open(path, "w") as f:
        f.write(f"{head}{markers[0]}\n{markdown}{markers[1]}{tail}")


def publish(out, stem, entries, markdown, markers, tool, readme, runs, readme_markdown=None):
    """Writes `<out>/<stem>.json` (the runs) and `.md` (the tables); with `readme`, the README.

    The runs' folder `runs` (a path on this machine, in the runs' error lines) is
    written as `<runs>`. The README gets `readme_markdown` (default: `markdown`).
    """
    with open(os.path.join(out, f"{stem}.json"), "w") as f:
        f.write(json.dumps(entries, indent=1).replace(runs, "<runs>"))
    with open(os.path.join(out, f"{stem}.md"), "w") as f:
        f.write(markdown)
    if readme:
        write_between_markers(os.path.join(REPO, "README.md"), markers,
                              readme_markdown or markdown, tool)
    print("\n" + markdown)


def define_flags(name, reused_when):
    """The flags every table tool has: --out, --runs (runs/<name>), --extra and --readme."""
    from absl import flags

    flags.DEFINE_string("out", "docs", "Folder of the JSON, tables and figure.")
    flags.DEFINE_string("runs", os.path.join("runs", name), "Folder of the runs (kept, and "
                        f"reused when {reused_when} is unchanged).")
    flags.DEFINE_list("extra", [], "Extra flags for every run, e.g. --extra=--epochs=2.")
    flags.DEFINE_bool("readme", False, "Write the tables into README.md between their markers.")
