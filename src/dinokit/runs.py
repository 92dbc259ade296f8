"""One rule for output folders: reruns, resumption, bad inputs.

Every command writes into an output folder that records, in
``.dinokit-run.json``, the command, the settings and the model that made its
results and which items (images, pairs, sets) are finished. The rule, for
every command:

- a rerun with the same settings and model skips the finished items and does
  the rest (so an interrupted run resumes);
- a rerun with different ones refuses, listing the differences, unless
  ``overwrite`` is given, which redoes every item (a folder whose earlier run
  finished nothing, e.g. because its weights were missing, takes the new run);
- the folder is checked before any model is loaded: it must be a folder (or
  creatable) and writable, and the message names it;
- dinokit never reads its own outputs back as inputs: folders holding a
  record are skipped when inputs are listed (:func:`is_output_folder`).

Bad inputs follow one rule too (:class:`ItemFailures`): the other items are
processed, each bad one gets a one-line reason, a summary lists them and the
exit code says that some failed; ``fail_fast`` stops at the first.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from .errors import DinokitError

RECORD_NAME = ".dinokit-run.json"
PathLike = Union[str, "os.PathLike[str]"]


def is_output_folder(path: PathLike) -> bool:
    """True for a folder that dinokit wrote results into (it holds a run record)."""
    return (Path(path) / RECORD_NAME).is_file()


def check_output_folder(path: PathLike) -> Path:
    """Make sure ``path`` is, or can become, a writable folder; a one-line :class:`DinokitError` otherwise."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise DinokitError(f"{out}: exists and is not a folder; give a folder for the outputs (-o)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DinokitError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".dinokit-write-test.", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DinokitError(f"{out}: the output folder is not writable ({exc.strerror or exc})") from None
    return out


def record_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``name: old -> new`` for every leaf that differs between two JSON-like records (nested names dotted,
    the top level of ``settings``/``model`` left out: ``layer: 9 -> 11``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            name = "" if not prefix and k in ("settings", "model") else f"{prefix}{k}."
            out += record_differences(old.get(k), new.get(k), name)
        return out
    if old != new:
        return [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]
    return []


def refuse_other_run(path: PathLike, differences: list[str]) -> None:
    """The one refusal of a rerun with other settings, listing (at most five of) the differences."""
    shown = "; ".join(differences[:5]) + (f" (+{len(differences) - 5} more)" if len(differences) > 5 else "")
    raise DinokitError(f"{path}: holds results of another run ({shown}); pass --overwrite to redo them, or choose "
                       "another output folder")


class OutputFolder:
    """An output folder and its run record; see the module docstring for the rule.

    ``record`` holds what made the results (``settings``, ``model`` and any
    other inputs that change them, such as query points); two runs whose
    records are equal share results.
    """

    def __init__(self, path: PathLike, command: str, record: dict[str, Any], overwrite: bool = False,
                 write_record: bool = True) -> None:
        self.write_record = write_record
        """False in the helper processes of a ``torchrun`` group: the record is read, never written (rank 0 does)."""
        self.path = check_output_folder(path)
        self.command = command
        self.record = json.loads(json.dumps(record, default=str))
        previous = self._read()
        self.may_replace = overwrite or previous is not None
        """Whether unfinished items may replace files already there (this folder's own partial outputs)."""
        self.finished: dict[str, None] = {}
        """The finished items in the order they finished (a dict: ordered, and looked up in constant time)."""
        if previous is not None and not overwrite and previous.get("finished"):  # results to protect
            diffs = self._differences(previous)
            if diffs:
                refuse_other_run(self.path, diffs)
            self.finished = dict.fromkeys(previous["finished"])
        self._write()

    def _read(self) -> Optional[dict]:
        file = self.path / RECORD_NAME
        if not file.is_file():
            return None
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise DinokitError(f"{file}: unreadable run record ({exc}); delete it or pass --overwrite") from None
        return data if isinstance(data, dict) else None

    def _differences(self, previous: dict) -> list[str]:
        if previous.get("command") != self.command:
            return [f"command: {previous.get('command')!r} -> {self.command!r}"]
        return record_differences(previous.get("record", {}), self.record)

    def _write(self) -> None:
        from .io import save_json

        if not self.write_record:
            return
        save_json(self.path / RECORD_NAME, {"command": self.command, "record": self.record,
                                            "finished": list(self.finished)})

    def is_finished(self, item: str) -> bool:
        """Whether ``item`` was finished by a run with this record."""
        return item in self.finished

    def pending(self, items: Iterable[str]) -> list[str]:
        """The items still to do, in order."""
        return [i for i in items if i not in self.finished]

    def finish(self, item: str) -> None:
        """Record ``item`` as finished (after its outputs are written)."""
        self.finish_many([item])

    def finish_many(self, items: Iterable[str]) -> None:
        """Record several items as finished with one write of the record."""
        new = [i for i in dict.fromkeys(items) if i not in self.finished]
        if new:
            self.finished.update(dict.fromkeys(new))
            self._write()


class ItemFailures:
    """Collects the items (images, pairs, sets) that failed, each with a one-line reason.

    ``run(name, fn)`` calls ``fn()``; a :class:`DinokitError` (a bad file, an
    unusable image) is reported on stderr and remembered, unless
    ``fail_fast``, when it propagates and stops the run.
    """

    def __init__(self, fail_fast: bool = False, what: str = "image") -> None:
        self.fail_fast = fail_fast
        self.what = what
        self.failed: dict[str, str] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> bool:
        """Call ``fn()``; True when it finished, False when it failed with a reported :class:`DinokitError`."""
        try:
            fn()
            return True
        except DinokitError as exc:
            if self.fail_fast:
                raise
            self.failed[name] = str(exc)
            print(f"dinokit: error: {exc}", file=sys.stderr)
            return False

    def summary(self, total: int) -> Optional[str]:
        """``2 of 6 images failed: a.jpg, b.jpg`` (None when nothing failed)."""
        if not self.failed:
            return None
        names = ", ".join(self.failed)
        return f"{len(self.failed)} of {total} {self.what}(s) failed: {names}"

    @property
    def exit_code(self) -> int:
        """1 when some item failed, else 0."""
        return 1 if self.failed else 0


def process_items(items: Sequence[tuple[str, Any]], folder: OutputFolder, work: Callable[[str, Any], Any],
                  failures: ItemFailures, desc: str, unit: str = "img", progress: bool = True) -> tuple[int, int]:
    """Run ``work(name, item)`` for every item not yet finished in ``folder``, recording each that finishes.

    Returns ``(done, skipped)``; failures are collected in ``failures``.
    """
    from tqdm.auto import tqdm

    todo = [(n, it) for n, it in items if not folder.is_finished(n)]
    done = 0
    for name, item in tqdm(todo, desc=desc, unit=unit, disable=not progress or len(todo) < 2, dynamic_ncols=True):
        if failures.run(name, lambda: work(name, item)):
            folder.finish(name)
            done += 1
    return done, len(items) - len(todo)


def summarize(what: str, out: PathLike, done: int, skipped: int, failures: ItemFailures) -> int:
    """Print the closing lines of a run (always, also with ``--quiet``) and return the exit code."""
    msg = f"dinokit: wrote {what} of {done} {failures.what}(s) to {out}"
    if skipped:
        msg += f", skipped {skipped} already done with these settings (--overwrite to redo)"
    print(msg, file=sys.stderr)
    line = failures.summary(done + skipped + len(failures.failed))
    if line:
        print(f"dinokit: {line}", file=sys.stderr)
    return failures.exit_code


__all__ = ["RECORD_NAME", "OutputFolder", "ItemFailures", "check_output_folder", "is_output_folder", "process_items",
           "record_differences", "refuse_other_run", "summarize"]
