"""Progress bars, stage timing and the end-of-run summary, with rich (or silent for tests)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


class Reporter:
    """What the runner shows the user. ``quiet=True`` prints nothing (tests, library use)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.stages: list[tuple[str, float]] = []
        self._console = None

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

    def summary(self, record: Any, path: Path) -> None:
        if self.quiet:
            return
        from rich.table import Table

        table = Table(title=f"{record.method} on {record.dataset}: {record.teacher} → {record.student}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        rows = [
            ("protocol", str(getattr(record, "protocol", None) or "-")),
            ("student top-1 (last epoch)", f"{record.student_top1:.2f}%"),
            (f"student top-1 (best, epoch {record.student_top1_best_epoch})", f"{record.student_top1_best:.2f}%"),
            ("student top-5 (last)", f"{record.student_top5:.2f}%"),
            ("teacher top-1", f"{record.teacher_top1:.2f}%"),
            (
                "teacher-student agreement",
                "-" if record.teacher_student_agreement is None else f"{record.teacher_student_agreement:.2f}%",
            ),
            ("synthetic images", str(record.num_synthetic_images)),
            ("synthesis time", f"{record.synthesis_seconds:.1f}s"),
            ("distillation time", f"{record.distill_seconds:.1f}s"),
        ]
        rows += [(f"stage: {name}", f"{secs:.1f}s") for name, secs in self.stages]
        for k, v in rows:
            table.add_row(k, v)
        self.console.print(table)
        self.console.print(f"record: {path}")
