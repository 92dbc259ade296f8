"""The output folder of a benchmark run: its settings, the per-item log that makes a run resumable, its results.

Layout of ``OUT``:

``run.json``
    the settings of the run, written when it starts. A rerun into the same
    folder must use the same settings (model, weights, hyperparameters,
    dataset); anything else is refused unless ``overwrite``.
``items.jsonl``
    one JSON line per finished item (a pair, a set, a sequence) and method,
    appended and flushed as soon as the item is scored: a rerun reads it and
    skips what is already there.
``cache/``
    per-image descriptors, so images are not passed through the model twice.
``results.json``, ``results.csv``, ``results_per_<group>.csv``
    the final tables, written atomically at the end.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from ...errors import DinokitError
from ...runs import check_output_folder, record_differences, refuse_other_run
from ...io import save_json, write_atomic

RUN_FILE = "run.json"
LOG_FILE = "items.jsonl"
CACHE_DIR = "cache"
RESULT_FILES = ("results.json", "results.csv")


def safe_name(name: str) -> str:
    """``name`` with every character other than letters, digits and ``-_.()`` replaced by ``_`` (a folder name)."""
    return "".join(c if c.isalnum() or c in "-_.()" else "_" for c in name) or "set"


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON so settings compare equal to what a file holds (tuples -> lists, ...)."""
    from ...io import json_default

    return json.loads(json.dumps(obj, default=json_default))


class RunFolder:
    """Open (or create) ``path`` for a run with ``settings``; see the module docstring for the layout.

    ``settings`` must be JSON-serialisable and hold everything that changes
    the results (not limits such as the number of pairs: a rerun with a larger
    limit extends the same run). ``overwrite`` clears the log, the cache and
    the results of an earlier run first.
    """

    def __init__(self, path: Union[str, os.PathLike], settings: dict[str, Any], overwrite: bool = False) -> None:
        self.path = check_output_folder(path)
        self.settings = _jsonable(settings)
        run_file = self.path / RUN_FILE
        if overwrite:
            self.clear()
        elif run_file.is_file():
            try:
                old = json.loads(run_file.read_text())
            except (OSError, ValueError):
                raise DinokitError(f"{run_file}: unreadable; delete it or pass --overwrite") from None
            changes = record_differences(old.get("settings"), self.settings)
            if changes:
                refuse_other_run(self.path, changes)
        elif (self.path / LOG_FILE).exists():
            raise DinokitError(f"{self.path}: has {LOG_FILE} but no {RUN_FILE}; pass --overwrite to start again")
        save_json(run_file, {"settings": self.settings})
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self._read_log()

    @property
    def cache_dir(self) -> Path:
        return self.path / CACHE_DIR

    def set_cache_dir(self, name: str) -> Path:
        """Where the cached features of set (or sequence) ``name`` live: ``cache/sets/<safe name>``."""
        return self.cache_dir / "sets" / safe_name(name)

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    def clear(self) -> None:
        """Delete what a run writes here (and nothing else)."""
        for name in (RUN_FILE, LOG_FILE, *RESULT_FILES):
            (self.path / name).unlink(missing_ok=True)
        for f in self.path.glob("results_per_*.csv"):
            f.unlink()
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    def _read_log(self) -> None:
        if not self.log_file.is_file():
            return
        lines = self.log_file.read_text().splitlines()
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = (str(rec["method"]), str(rec["item"]))
            except (ValueError, KeyError, TypeError):
                if n == len(lines):  # the line being written when a run was killed: drop it, redo that item
                    kept = "".join(l + "\n" for l in lines[:-1] if l.strip())
                    write_atomic(self.log_file, lambda tmp: tmp.write_text(kept))
                    continue
                raise DinokitError(f"{self.log_file}:{n}: not a result record; delete the line or pass --overwrite")
            self.records[key] = rec

    def get(self, method: str, item: str) -> Optional[dict[str, Any]]:
        """The logged record of ``item`` for ``method``, or None if it has not been scored yet."""
        return self.records.get((method, item))

    def log(self, method: str, item: str, record: dict[str, Any]) -> dict[str, Any]:
        """Append a finished item's record to the log (flushed to disk before returning)."""
        rec = _jsonable({"method": method, "item": item, **record})
        line = json.dumps(rec, allow_nan=True)
        with open(self.log_file, "a+b") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:  # a run killed mid-line left no newline: start a fresh line
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write(line.encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.records[(method, item)] = rec
        return rec

    def write_csv(self, name: str, rows: Iterable[dict[str, Any]], columns: list[str]) -> Path:
        """Write ``rows`` (dicts) as CSV with ``columns``, atomically; NaN is written as an empty cell."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_value(r.get(k)) for k in columns})
        return write_atomic(self.path / name, lambda tmp: tmp.write_text(buf.getvalue()))

    def write_json(self, name: str, obj: Any) -> Path:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return save_json(self.path / name, _nan_to_none(_jsonable(obj)))


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if v != v else repr(round(v, 6))
    return "" if v is None else v


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    return obj
