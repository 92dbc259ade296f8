"""A benchmark's result: one row per method, a breakdown per category/set/sequence, and the settings.

Scores are fractions in [0, 1] in :class:`BenchmarkResult` and in the files;
the printed tables show them in percent, as the papers do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence


@dataclass(frozen=True)
class Column:
    """A table column: the row key, its header and how to show it (``pct``: x100, ``int``, ``float``)."""

    key: str
    header: str
    kind: str = "pct"

    def format(self, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if self.kind == "pct":
            return f"{100.0 * float(value):.1f}"
        if self.kind == "int":
            return str(int(value))
        if self.kind == "float":
            return f"{float(value):.3f}"
        return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], first_left: bool = True) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned, a rule under the header."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, (c, w) in enumerate(zip(cells, widths)):
            parts.append(str(c).ljust(w) if (i == 0 and first_left) else str(c).rjust(w))
        return "  ".join(parts).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


@dataclass
class BenchmarkResult:
    """Scores of a benchmark run.

    ``rows``: one dict per method (``method`` id, ``label`` shown in the
    table, then the ``columns`` keys); ``group_rows``: one dict per (group,
    method) with the ``group_columns`` keys, the group named by
    ``group_name``; ``details``: per method, the full metric breakdown;
    ``info``: settings, model, software, dataset and counts.
    """

    benchmark: str
    dataset: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    group_name: str
    group_columns: list[Column]
    group_rows: list[dict[str, Any]]
    details: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def row(self, method: str) -> dict[str, Any]:
        """The main-table row of ``method`` (``KeyError`` if it was not run)."""
        for r in self.rows:
            if r["method"] == method:
                return r
        raise KeyError(f"no method {method!r}; have {[r['method'] for r in self.rows]}")

    def table(self) -> str:
        """The main table: one line per method."""
        headers = ["method"] + [c.header for c in self.columns]
        body = [[r["label"]] + [c.format(r.get(c.key)) for c in self.columns] for r in self.rows]
        return format_table(headers, body)

    def group_table(self) -> str:
        """Per group (category, set, sequence): the group columns of every method side by side."""
        methods = [(r["method"], r.get("short", r["label"])) for r in self.rows]
        groups: list[str] = []
        by_key: dict[tuple[str, str], dict[str, Any]] = {}
        for r in self.group_rows:
            if r[self.group_name] not in groups:
                groups.append(r[self.group_name])
            by_key[(r[self.group_name], r["method"])] = r
        headers = [self.group_name]
        for _, short in methods:
            headers += [f"{short} {c.header}" if len(self.group_columns) > 1 or len(methods) > 1 else c.header
                        for c in self.group_columns]
        body = []
        for g in groups:
            cells = [g]
            for m, _ in methods:
                r = by_key.get((g, m), {})
                cells += [c.format(r.get(c.key)) for c in self.group_columns]
            body.append(cells)
        return format_table(headers, body)

    def report(self, max_groups: int = 40) -> str:
        """Title, main table, per-group table (up to ``max_groups`` rows) and notes, as ``dinokit benchmark``
        prints them."""
        parts = [self.title, "", self.table()]
        n_groups = len({r[self.group_name] for r in self.group_rows})
        if 0 < n_groups <= max_groups:
            parts += ["", self.group_table()]
        elif n_groups:
            parts += ["", f"({n_groups} {self.group_name} rows in results_per_{self.group_name}.csv)"]
        if self.notes:
            parts += [""] + self.notes
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "dataset": self.dataset,
            "title": self.title,
            "units": "scores are fractions in [0, 1] (the printed tables show percent)",
            "results": self.rows,
            "per_" + self.group_name: self.group_rows,
            "details": self.details,
            "notes": self.notes,
            **self.info,
        }

    def write(self, folder: Any) -> list[Any]:
        """Write ``results.json``, ``results.csv`` and ``results_per_<group>.csv`` into a :class:`RunFolder`."""
        main_cols = _keys(self.rows, ["method", "label"])
        group_cols = _keys(self.group_rows, [self.group_name, "method"])
        return [
            folder.write_csv("results.csv", self.rows, main_cols),
            folder.write_csv(f"results_per_{self.group_name}.csv", self.group_rows, group_cols),
            folder.write_json("results.json", self.to_dict()),
        ]


def mean(values: Sequence[Optional[float]]) -> float:
    """Mean of the non-NaN, non-None values (NaN when there are none)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(vals) / len(vals) if vals else float("nan")


def _keys(rows: Sequence[dict[str, Any]], first: list[str]) -> list[str]:
    """Column names for a CSV: ``first``, then every other key in order of first appearance."""
    out = list(first)
    for r in rows:
        out += [k for k in r if k not in out]
    return out


def plural(n: int, word: str, many: Optional[str] = None) -> str:
    """``"1 set"``, ``"3 sets"``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
