"""Report writers: per-image JSONL, summary JSON, CSV, PNG plots and a terminal table.

A run writes one JSONL row per image as soon as the image is done (append + flush), so a crash
or Ctrl-C keeps every completed row; :class:`RunRecorder` then writes a summary marked
``"complete": false``. NaN and infinities are written as JSON ``null`` (an invalid energy
reading is NaN, never a number that could be mistaken for a measurement).

Example::

    >>> from pathlib import Path
    >>> from athe.pi_runner.report import RunRecorder, plot_latency_cdf
    >>> with RunRecorder(Path("out"), summarize=lambda rows: {"images": len(rows)}) as rec:
    ...     for image in images:
    ...         rec.add_row({"image": image.name, "level": "simple", "total_s": 0.012})
    ...     rec.finish(rec.summarize(rec.read_rows()))  # Ctrl-C before this: complete=false
    >>> plot_latency_cdf({"simple": [0.010, 0.012]}, Path("out/latency_cdf.png"))
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from athe.pi_runner.meters import PerImageEnergy
from athe.pi_runner.stats import LatencySummary

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.console import Console

PER_IMAGE_JSONL = "per_image.jsonl"
PER_IMAGE_CSV = "per_image.csv"
SUMMARY_JSON = "summary.json"
LATENCY_CDF_PNG = "latency_cdf.png"
ROUTED_FRACTION_PNG = "routed_fraction.png"
ENERGY_PNG = "energy_per_image.png"


def to_jsonable(value: Any) -> Any:
    """Convert dataclasses, numpy values, paths and tuples to JSON types; NaN/inf → None.

    Raises:
        TypeError: a value with no JSON form (convert it before reporting).
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        data = to_dict() if callable(to_dict) else {
            f.name: getattr(value, f.name) for f in dataclasses.fields(value)
        }
        return to_jsonable(data)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to a report: convert it to "
                    "a number, string, list or dict first")


#: Distributions whose versions go into every summary (absent ones are reported as None).
REPORTED_PACKAGES = ("athe", "numpy", "pillow", "ai-edge-litert", "executorch", "torch",
                     "matplotlib", "rich", "smbus2")


def environment_info(packages: Sequence[str] = REPORTED_PACKAGES) -> dict[str, Any]:
    """Python, platform and installed package versions for the summary's ``environment``.

    The caller adds what only it knows: bundle manifest hash, backend, threads, affinity.
    """
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": versions,
    }


def random_weights(manifest: Any) -> bool:
    """Whether a bundle's weights are random (seeded, untrained): accuracy is then meaningless.

    The one rule the runner and ``athe eval`` share: the manifest's ``random_weights``, or its
    ``checkpoint`` record's (``athe convert --random-weights`` sets both).
    """
    return bool(manifest.random_weights) or bool((manifest.checkpoint or {}).get("random_weights"))


def _dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), allow_nan=False, ensure_ascii=False)


class JsonlWriter:
    """Append rows to a JSONL file, flushing after each so a crash loses no completed row.

    Args:
        path: the file; created with its folder, appended to when it exists.
        fsync: also ``os.fsync`` each row (survives power loss; slower on an SD card).
    """

    def __init__(self, path: Path, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.rows_written = 0
        self._handle: IO[str] | None = open(self.path, "a", encoding="utf-8")

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row and flush it to the OS."""
        if self._handle is None:
            raise RuntimeError(f"{self.path} is closed: create a new JsonlWriter to append")
        line = _dumps(row)  # serialise first: a bad value must not leave half a line
        self._handle.write(line + "\n")
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())
        self.rows_written += 1

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL report back.

    A final line cut off by a crash (no newline, not valid JSON) is dropped with a warning;
    a bad line anywhere else raises.

    Raises:
        ValueError: a malformed line before the last one.
    """
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines) and not text.endswith("\n"):
                warnings.warn(f"{path}:{number}: dropped a row cut off mid-write", stacklevel=2)
                continue
            raise ValueError(f"{path}:{number}: not a JSON row ({exc})") from exc
    return rows


def write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically (temp file + rename): a crash leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(data), indent=2, allow_nan=False, ensure_ascii=False)
                   + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_summary(path: Path, summary: Mapping[str, Any], complete: bool,
                  incomplete_reason: str | None = None) -> Path:
    """Write the summary JSON with ``complete`` (and why not) and the time written."""
    if complete and incomplete_reason is not None:
        raise ValueError("a complete summary has no incomplete_reason")
    data = {"complete": complete, "incomplete_reason": incomplete_reason,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **summary}
    return write_json(path, data)


def flatten_row(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted columns: ``{"stages": {"infer_s": 1}}`` → ``stages.infer_s``."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_row(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def _csv_cell(value: Any) -> Any:
    value = to_jsonable(value)
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows as CSV; columns are the union of (flattened) keys in first-seen order."""
    flat = [flatten_row(r) for r in rows]
    columns = list(dict.fromkeys(k for r in flat for k in r))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in flat:
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    return path


class RunRecorder:
    """The files of one run in ``out_dir``: rows as they come, the summary at the end.

    Used as a context manager, an exception (Ctrl-C included) inside the block writes a
    partial summary marked ``"complete": false`` and the CSV of the rows so far, then
    re-raises.

    Args:
        out_dir: the ``--out`` folder (created).
        summarize: rows → summary dict, used for the partial summary after an interruption.
        fsync: see :class:`JsonlWriter`.
    """

    def __init__(self, out_dir: Path,
                 summarize: Callable[[list[dict[str, Any]]], Mapping[str, Any]] | None = None,
                 fsync: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.summarize = summarize or (lambda rows: {})
        self.rows_path = self.out_dir / PER_IMAGE_JSONL
        self.summary_path = self.out_dir / SUMMARY_JSON
        self.csv_path = self.out_dir / PER_IMAGE_CSV
        if self.rows_path.exists():
            raise FileExistsError(
                f"{self.rows_path} exists: pick a new --out folder (rows of two runs must not mix)"
            )
        self._writer = JsonlWriter(self.rows_path, fsync=fsync)
        self.finished = False

    def add_row(self, row: Mapping[str, Any]) -> None:
        """Append one per-image row (flushed at once)."""
        self._writer.write(row)

    def read_rows(self) -> list[dict[str, Any]]:
        """The rows written so far, read back from disk."""
        return read_jsonl(self.rows_path)

    def finish(self, summary: Mapping[str, Any], complete: bool = True,
               incomplete_reason: str | None = None) -> dict[str, Path]:
        """Close the rows, write the summary JSON and the per-image CSV.

        Returns:
            ``{"jsonl", "summary", "csv"}`` → path.
        """
        self._writer.close()
        rows = self.read_rows()
        write_summary(self.summary_path, {"rows": len(rows), **summary}, complete,
                      incomplete_reason)
        write_csv(self.csv_path, rows)
        self.finished = True
        return {"jsonl": self.rows_path, "summary": self.summary_path, "csv": self.csv_path}

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None and not self.finished:
            self._writer.close()
            reason = f"{exc_type.__name__ if exc_type else 'error'}: {exc}".rstrip(": ")
            self.finish(self.summarize(self.read_rows()), complete=False, incomplete_reason=reason)
        self._writer.close()


# --------------------------------------------------------------------------------------------
# Plots (matplotlib's Agg canvas directly: no pyplot, no global backend change)


def new_figure(width: float = 6.4, height: float = 4.0) -> Figure:
    """A matplotlib figure on an Agg canvas (no pyplot state); says how to install matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "PNG plots need matplotlib: pip install matplotlib (or pip install 'athe[pi]')"
        ) from exc
    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (folders created); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_latency_cdf(latencies_by_level: Mapping[str, Sequence[float]], path: Path,
                     title: str = "Latency CDF per level") -> Path:
    """Empirical CDF of per-image latency, one line per level.

    Args:
        latencies_by_level: level → latencies in seconds (e.g. also ``"overall"``).
        path: PNG to write.
    """
    fig = new_figure()
    ax = fig.add_subplot()
    for level, values in latencies_by_level.items():
        ms = np.sort(np.asarray(values, dtype=np.float64)) * 1e3
        if ms.size == 0:
            continue
        fraction = np.arange(1, ms.size + 1) / ms.size
        ax.step(ms, fraction, where="post",
                label=f"{level} (n={ms.size}, p50 {np.percentile(ms, 50):.2f} ms)")
    ax.set_xlabel("latency per image (ms)")
    ax.set_ylabel("fraction of images ≤ latency")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_routed_fraction(fractions: Mapping[str, float], path: Path,
                         title: str = "Routed fraction per level") -> Path:
    """Bar chart of the fraction of images dispatched to each level."""
    fig = new_figure()
    ax = fig.add_subplot()
    names, values = list(fractions), [fractions[n] for n in fractions]
    bars = ax.bar(names, values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.1%}" for v in values], padding=2)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("fraction of images")
    ax.set_xlabel("level")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_energy_per_image(energy_by_level: Mapping[str, PerImageEnergy], path: Path,
                          kind: str = "net", title: str = "Energy per image per level",
                          xlabel: str = "level") -> Path:
    """Bars of mean J/image per level with ±1 std over repeats, each repeat as a dot.

    Args:
        energy_by_level: level → :class:`~athe.pi_runner.meters.PerImageEnergy`.
        path: PNG to write.
        kind: ``net`` (idle subtracted) or ``gross``.
        xlabel: what the bars are (``athe run compare``: the candidates).

    Levels without a valid figure get an "invalid" label instead of a bar; an estimate is
    labelled as one in the title.
    """
    if kind not in ("net", "gross"):
        raise ValueError(f"kind must be 'net' or 'gross', got {kind!r}")
    fig = new_figure()
    ax = fig.add_subplot()
    names = list(energy_by_level)
    tops = [0.0]
    for x, name in enumerate(names):
        energy = energy_by_level[name]
        values = energy.net_j_per_image if kind == "net" else energy.gross_j_per_image
        mean = energy.net_mean if kind == "net" else energy.gross_mean
        std = energy.net_std if kind == "net" else energy.gross_std
        if values is None or not math.isfinite(mean):
            ax.text(x, 0, "invalid", ha="center", va="bottom", color="tab:red")
            continue
        spread = std if math.isfinite(std) else 0.0
        ax.bar(x, mean, width=0.6, yerr=spread, capsize=6, color="tab:green", alpha=0.7,
               hatch="//" if energy.is_estimate else None)
        ax.plot([x] * len(values), values, "k.", markersize=5)
        top = max(mean + spread, *values)
        ax.annotate(f"{mean:.3g} J", (x, top), textcoords="offset points", xytext=(0, 4),
                    ha="center", va="bottom")
        tops.append(top)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(min(0.0, *ax.get_ylim()), max(tops) * 1.15 or 1.0)
    ax.set_xticks(range(len(names)), names)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{kind} J per image (mean ± std over repeats)")
    estimate = any(e.is_estimate for e in energy_by_level.values())
    methods = sorted({e.method for e in energy_by_level.values()})
    ax.set_title(f"{title}\n[{', '.join(methods)}]" + (" — MODEL ESTIMATE, not measured"
                                                       if estimate else ""))
    return save_figure(fig, path)


def plot_run(out: Path, rows: Sequence[Mapping[str, Any]], routed: Mapping[str, float],
             energy: Mapping[str, PerImageEnergy], level_names: Sequence[str], policy: str,
             where: str) -> dict[str, Path]:
    """A run's PNGs in ``out``: latency CDF per level (+ overall), routed fraction, and with
    ``energy`` (per pass) the energy bars. ``where`` names variant, backend and threads."""
    by_level: dict[str, list[float]] = {}
    for row in rows:
        by_level.setdefault(row["level"], []).append(row["stages_ms"]["total"] / 1e3)
    ordered = {lv: by_level[lv] for lv in level_names if lv in by_level}
    if len(ordered) > 1:
        ordered["overall"] = [r["stages_ms"]["total"] / 1e3 for r in rows]
    files = {
        "latency_cdf": plot_latency_cdf(ordered, out / LATENCY_CDF_PNG, title=f"Latency CDF per level ({where})"),
        "routed_fraction": plot_routed_fraction(
            routed, out / ROUTED_FRACTION_PNG, title=f"Routed fraction per level\npolicy {policy}, {len(rows)} images"),
    }
    if energy:
        kind = "net" if all(e.net_j_per_image is not None for e in energy.values()) else "gross"
        files["energy"] = plot_energy_per_image(
            energy, out / ENERGY_PNG, kind=kind,
            title=f"Energy per image, policy run and fixed-level passes\n({where})")
    return files


# --------------------------------------------------------------------------------------------
# Terminal tables and progress


def fmt_value(value: float | None, spec: str = ".2f") -> str:
    """``value`` formatted with ``spec``; ``–`` for None, NaN and infinities."""
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


# -- counts and one-line statements (their wording is pinned by tests) --------------------------
def count_text(images: int, repeats: int) -> str:
    """``100 images × 3 repeats`` (or ``100 images`` for one pass): what a row count counts."""
    if repeats == 1:
        return f"{images} image{'s' if images != 1 else ''}"
    return f"{images} image{'s' if images != 1 else ''} × {repeats} repeats"


def accuracy_line(top1: float, images: int, repeats: int) -> str:
    """The run's accuracy, saying how many distinct images it is over."""
    return f"accuracy: {top1:.2%} top-1 over {count_text(images, repeats)} (labelled)"


def rss_line(peak_bytes: int | None) -> str:
    """The one RSS figure of a run: the peak as written to ``summary.json`` (``peak_rss_bytes``)."""
    value = f"{peak_bytes / 2**20:.1f} MiB" if peak_bytes is not None else "unknown"
    return f"peak RSS {value} (summary.json peak_rss_bytes)"


def energy_line(meter_found: bool, message: str) -> str:
    """``energy: …`` — says plainly whether energy is measured, and why not."""
    if meter_found:
        return f"energy: {message}"
    if message.startswith("no energy meter found"):
        return "energy: not measured, latency only: --energy auto found no meter" + message[len("no energy meter found"):]
    return f"energy: not measured, latency only ({message})"


# -- tables that fit the terminal --------------------------------------------------------------
#: Wider than this, the tables show every column however narrow the terminal (``--wide``).
WIDE_COLUMNS = 200


@dataclasses.dataclass
class Column:
    """A table column: header, cells, and how it may shrink.

    Attributes:
        compact: shorter cells used first when the table is too wide (e.g. mean without ± std).
        optional: may be hidden when the table is still too wide (lowest ``drop`` first).
        wrap: the cells may wrap (free text); numbers never wrap or get cut.
    """

    header: str
    cells: list[str]
    justify: str = "right"
    compact: list[str] | None = None
    drop: int | None = None
    wrap: bool = False


def fit_table(console: Any, title: str, columns: Sequence[Column]) -> Any:
    """A rich table of ``columns`` that fits ``console.width`` without cutting a number.

    First the compact forms of cells are used, then optional columns are hidden (lowest
    ``drop`` first) until the table's natural width fits; a caption names what was hidden.
    A console of :data:`WIDE_COLUMNS` or more (``--wide``) shows everything. A title or
    caption wider than the table is printed as its own line above or below it (wrapped at the
    console's width, not the table's).
    """
    from rich.cells import cell_len
    from rich.console import Group
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    width = int(getattr(console, "width", 80) or 80)
    cols = list(columns)
    hidden: list[str] = []

    def build(cols: list[Column], compact: bool) -> Table:
        table = Table(title=title, caption=(f"hidden to fit {width} columns: {', '.join(hidden)} "
                                            "(--wide shows them)") if hidden else None)
        for c in cols:
            table.add_column(c.header, justify=c.justify, no_wrap=not c.wrap,  # type: ignore[arg-type]
                             overflow="fold")
        n = max((len(c.cells) for c in cols), default=0)
        for i in range(n):
            table.add_row(*[((c.compact if compact and c.compact is not None else c.cells)[i]
                             if i < len(c.cells) else "") for c in cols])
        return table

    def natural(table: Table) -> int:  # the natural width, measured without the console's limit
        return Measurement.get(console, console.options.update_width(10_000), table).maximum

    def fits(table: Table) -> bool:
        return natural(table) <= width

    table = build(cols, compact=False)
    if not (width >= WIDE_COLUMNS or fits(table)):
        table = build(cols, compact=True)
        for column in sorted((c for c in cols if c.drop is not None), key=lambda c: c.drop or 0):
            if fits(table):
                break
            cols = [c for c in cols if c is not column]
            hidden.append(column.header)
            table = build(cols, compact=True)
    titled = [table.title, table.caption]
    table.title = table.caption = None
    inner = natural(table)
    above = [Text(str(titled[0]))] if titled[0] and cell_len(str(titled[0])) > inner else []
    below = [Text(str(titled[1]))] if titled[1] and cell_len(str(titled[1])) > inner else []
    table.title = None if above else titled[0]
    table.caption = None if below else titled[1]
    return Group(*above, table, *below) if above or below else table


def print_latency_table(summaries: Mapping[str, LatencySummary],
                        routed: Mapping[str, float] | None = None,
                        energy: Mapping[str, PerImageEnergy] | None = None,
                        console: Console | None = None, title: str = "Latency (ms)") -> None:
    """Print a short rich table: one row per level (and overall), fitted to the terminal.

    Args:
        summaries: from :func:`athe.pi_runner.stats.summarize_by_level`.
        routed: level → routed fraction (adds a column).
        energy: level → per-image energy (adds a net J/image column; estimates marked ``est``).
        console: where to print (default: a new stdout console).

    At 80 columns the J/image cells drop their ± std, then p99, img/s and p90 are hidden.
    """
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()
    levels = list(summaries)
    s = [summaries[lv] for lv in levels]
    columns = [
        Column("level", [escape(lv) for lv in levels], justify="left"),
        Column("n", [str(x.count) for x in s]),
        Column("mean", [fmt_value(x.mean_ms) for x in s]),
        Column("p50", [fmt_value(x.p50_ms) for x in s]),
        Column("p90", [fmt_value(x.p90_ms) for x in s], drop=3),
        Column("p99", [fmt_value(x.p99_ms) for x in s], drop=1),
        Column("img/s", [fmt_value(x.throughput_per_s, ".1f") for x in s], drop=2),
    ]
    if routed is not None:
        columns.append(Column("routed", [f"{routed[lv]:.1%}" if lv in routed else "" for lv in levels]))
    if energy is not None:
        full, short = [], []
        for lv in levels:
            e = energy.get(lv)
            est = " est" if e is not None and e.is_estimate else ""
            if e is None:
                full.append("")
                short.append("")
            elif not e.valid:
                full.append("invalid")
                short.append("invalid")
            else:
                full.append(f"{fmt_value(e.net_mean, '.3g')} ± {fmt_value(e.net_std, '.2g')}{est}")
                short.append(f"{fmt_value(e.net_mean, '.3g')}{est}")
        columns.append(Column("net J/img", full, compact=short))
    console.print(fit_table(console, title, columns))


def print_energy_table(energy: Mapping[str, PerImageEnergy], console: Console,
                       title: str = "Energy (J/image, mean ± std of repeats") -> None:
    """Gross and net J/image per run, idle watts, repeats and validity; estimates say so."""
    from rich.markup import escape

    methods = sorted({e.method for e in energy.values()})
    title += f"; {', '.join(methods)})"
    if any(e.is_estimate for e in energy.values()):
        title += ": MODEL ESTIMATE, not measured"
    runs = list(energy.values())
    columns = [
        Column("run", [escape(name) for name in energy], justify="left"),
        Column("gross J/img", [f"{fmt_value(e.gross_mean, '.3g')} ± {fmt_value(e.gross_std, '.2g')}" for e in runs],
               compact=[fmt_value(e.gross_mean, ".3g") for e in runs]),
        Column("net J/img", [f"{fmt_value(e.net_mean, '.3g')} ± {fmt_value(e.net_std, '.2g')}"
                             if e.net_j_per_image is not None else "–" for e in runs],
               compact=[fmt_value(e.net_mean, ".3g") if e.net_j_per_image is not None else "–" for e in runs]),
        Column("idle W", [fmt_value(e.idle_watts, ".3g") for e in runs], drop=1),
        Column("n", [str(len(e.gross_j_per_image)) for e in runs]),
        Column("valid", ["yes" if e.valid else escape(f"NO: {e.invalid_reason}") for e in runs],
               justify="left", wrap=True),
    ]
    console.print(fit_table(console, title, columns))


class ProgressBar:
    """A rich progress bar (or nothing): ``advance()`` per image, ``label(text)`` per pass."""

    def __init__(self, progress: Any, total: int) -> None:
        self._progress = progress
        self._task = progress.add_task("warm-up", total=total) if progress is not None else None

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def label(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)


@contextmanager
def progress_bar(console: Console, enabled: bool, total: int) -> Iterator[ProgressBar]:
    """A progress bar over ``total`` images, refreshed 4x per second (little CPU next to a run)."""
    if not enabled:
        yield ProgressBar(None, total)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                  refresh_per_second=4) as progress:
        yield ProgressBar(progress, total)
