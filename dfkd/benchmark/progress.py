"""Progress, stage timing and the end-of-run summary, with rich on stderr (or silent for tests).

On a terminal, live bars; when stderr is not one (Slurm, nohup, ``2> log``), plain lines at a steady cadence
(``PLAIN_EVERY_S``, and the last item) so a log shows progress while a stage runs, not only when it ends. Results go
to stdout (``bench run`` prints the record's path, or the record with ``--json``); everything here goes to stderr.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PLAIN_EVERY_S = 30.0  # seconds between plain progress lines when stderr is not a terminal
CHANCE_MARGIN = 1.5  # a student below this multiple of chance accuracy is reported as "at chance"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes}m{sec:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class Reporter:
    """What the runner shows the user. ``quiet=True`` prints nothing (tests, library use)."""

    def __init__(self, quiet: bool = False, plain: bool | None = None, every_s: float = PLAIN_EVERY_S):
        self.quiet = quiet
        self.stages: list[tuple[str, float]] = []
        self._console = None
        self._plain = plain  # None: plain lines exactly when stderr is not a terminal
        self.every_s = every_s

    @property
    def plain(self) -> bool:
        return (not self.console.is_terminal) if self._plain is None else self._plain

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)
        return self._console

    def note(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]·[/dim] {message}")

    @contextlib.contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        t0 = time.perf_counter()
        if not self.quiet:
            self.console.print(f"[bold]{name}[/bold] {detail}")
        yield
        self.stages.append((name, time.perf_counter() - t0))

    @contextlib.contextmanager
    def task(
        self, name: str, total: int, completed: int = 0, unit: str = "it"
    ) -> Iterator[Callable[[dict[str, Any]], None]]:
        """A progress bar; the yielded ``tick(logs)`` advances it by one."""
        t0 = time.perf_counter()
        if self.quiet:
            yield lambda logs: None
            self.stages.append((name, time.perf_counter() - t0))
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if completed:
            self.note(f"{name}: resuming, {completed}/{total} {unit}s already done")
        if self.plain:
            yield self._plain_ticks(name, total, completed, unit, t0)
            self.stages.append((name, time.perf_counter() - t0))
            return
        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[logs]}"),
        ]
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(name, total=total, completed=completed, logs="")

            def tick(logs: dict[str, Any]) -> None:
                shown = " ".join(f"{k}={v:.3g}" for k, v in logs.items() if isinstance(v, (int, float)))
                bar.update(task, advance=1, logs=shown)

            yield tick
        self.stages.append((name, time.perf_counter() - t0))

    def _plain_ticks(
        self, name: str, total: int, completed: int, unit: str, t0: float
    ) -> Callable[[dict[str, Any]], None]:
        """``tick(logs)`` printing one plain line every ``every_s`` seconds and at the last item (logs, cron, Slurm)."""
        state = {"done": completed, "last": t0}

        def tick(logs: dict[str, Any]) -> None:
            state["done"] += 1
            now = time.perf_counter()
            if now - state["last"] < self.every_s and state["done"] < total:
                return
            state["last"] = now
            new, elapsed = state["done"] - completed, now - t0
            left = elapsed / new * (total - state["done"]) if new else 0.0
            shown = " ".join(f"{k}={v:.3g}" for k, v in logs.items() if isinstance(v, (int, float)))
            pct = 100.0 * state["done"] / max(1, total)
            self.console.print(
                f"{name}: {state['done']}/{total} {unit}s ({pct:.0f}%), {_duration(elapsed)} elapsed, "
                f"~{_duration(left)} left {shown}".rstrip(),
                soft_wrap=True,
            )

        return tick

    def epoch_line(self, prefix: str) -> Callable[[dict[str, Any]], None]:
        def show(row: dict[str, Any]) -> None:
            if self.quiet:
                return
            parts = [
                f"{prefix} epoch {row['epoch']}",
                f"lr {row['lr']:.3g}",
                f"loss {row.get('loss', float('nan')):.4f}",
            ]
            if "top1" in row:
                parts.append(f"test top-1 {row['top1']:.2f}%")
            parts.append(f"{row['seconds']:.1f}s")
            self.console.print(" · ".join(parts))

        return show

    def summary(self, record: Any, path: Path, *, reported_again: bool = False) -> None:
        """The result table (stderr): what the numbers mean beside them (chance, the teacher), a warning in words when
        the student learnt nothing, and each stage once with one time (synthesis and distillation as recorded, so a
        resumed run shows their totals over every process that worked on them)."""
        if self.quiet:
            return
        from rich.table import Table

        k = _num_classes(record.dataset)
        chance = 100.0 / k if k else float("nan")
        extra = getattr(record, "extra", {}) or {}
        images = str(record.num_synthetic_images)
        if "in_loop/images_seen" in extra:
            images += " seen (fresh from the generator, none stored)"
        table = Table(title=f"{record.method} on {record.dataset}: {record.teacher} → {record.student}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("what it means")
        ratio = record.student_top1 / record.teacher_top1 if record.teacher_top1 else float("nan")
        rows = [
            ("protocol", str(getattr(record, "protocol", None) or "-"), "matched: same recipe and budget for all"),
            ("student top-1 (last epoch)", f"{record.student_top1:.2f}%", "the headline: real test set, last epoch"),
            (
                f"student top-1 (best, epoch {record.student_top1_best_epoch})",
                f"{record.student_top1_best:.2f}%",
                "best over epochs (picked on the test set; what papers report)",
            ),
            ("student / teacher", f"{ratio:.2f}", f"of the teacher's {record.teacher_top1:.2f}%"),
            ("chance level", f"{chance:.2f}%", f"a random guess among {k} classes"),
            ("student top-5 (last)", f"{record.student_top5:.2f}%", ""),
            (
                "teacher-student agreement",
                "-" if record.teacher_student_agreement is None else f"{record.teacher_student_agreement:.2f}%",
                "test images where their argmax agree",
            ),
            ("synthetic images", images, ""),
        ]
        shown = {"synthesize": record.synthesis_seconds, "distill": record.distill_seconds}
        for name, secs in [*self.stages, *((n, s) for n, s in shown.items() if n not in dict(self.stages))]:
            secs = shown.get(name, secs)
            what = "all processes, resumed runs included" if name in shown else "this process"
            rows.append((f"stage: {name}", _duration(secs) if secs >= 60 else f"{secs:.1f}s", what))
        for row in rows:
            table.add_row(*row)
        self.console.print(table)
        if k and record.student_top1 < CHANCE_MARGIN * chance:
            self.console.print(
                f"[bold yellow]warning:[/] the student is at chance level ({record.student_top1:.2f}% against "
                f"{chance:.2f}% for a random guess): it learnt next to nothing from these images"
            )
        if reported_again:
            self.console.print("(a finished run, reported again: `--force` runs it anew)")
        self.console.print(f"record: {path}")


def _num_classes(dataset: str) -> int | None:
    from dfkd.datasets import get_dataset
    from dfkd.errors import UserError

    try:
        return get_dataset(dataset).num_classes
    except UserError:  # a record of a data set not registered here: no chance level rather than no table
        return None
