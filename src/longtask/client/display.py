"""The CLI's live view of a task: an overall bar and one bar per item (file) with its stage,
drawn by rich from the task's events; item errors are printed as they happen. An agent run is
shown as its steps and answer instead (`client_ask`).
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from longtask.client.ask import AnswerView
from longtask.client.errors import Conflict
from longtask.client.models import Event, Task
from longtask.client.sync import Client

INTERRUPTED = 130  # what a shell reports for a command stopped by Ctrl-C
_COUNTS = (("pages", "pages_total", "pages"), ("chunks", "chunks_total", "chunks"))


def follow(client: Client, task_id: str, console: Console) -> int:
    """Show the task live until it ends: 0 if it completed, 1 if it failed or was canceled.
    Ctrl-C stops following and, asked on a terminal, cancels the task (130)."""
    task = client.get(task_id)
    try:
        console.print(f"task {task.id} ({task.kind}): following; Ctrl-C stops", highlight=False)
        view = AnswerView(console) if task.kind == "agent" else TaskView(console, task)
        with view.live():
            for event in client.follow(task_id):
                view.show(event)
    except KeyboardInterrupt:
        return interrupted(client, task_id, console)
    final = client.get(task_id)
    view.summary(final)
    return 0 if final.status == "completed" else 1


def interrupted(client: Client, task_id: str, console: Console) -> int:
    """After Ctrl-C: ask whether to cancel (only on a terminal; elsewhere leave it running)."""
    console.print(f"\nstopped following task {task_id}", highlight=False)
    answer = ""
    if sys.stdin.isatty():
        try:
            answer = console.input(f"cancel task {task_id}? [y/N] ", markup=False)
        except (EOFError, KeyboardInterrupt):
            answer = ""
    if answer.strip().lower() in ("y", "yes"):
        try:
            client.cancel(task_id)
            console.print(f"task {task_id} canceled", highlight=False)
        except Conflict:
            console.print(f"task {task_id} had already ended", highlight=False)
    else:
        console.print(f"task {task_id} keeps running; `longtask cancel {task_id}` stops it",
                      highlight=False)
    return INTERRUPTED


class TaskView:
    """rich bars for one task, moved by its events."""

    def __init__(self, console: Console, task: Task) -> None:
        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TaskProgressColumn(), TextColumn("{task.fields[stage]}"),
                                 TimeElapsedColumn(), console=console)
        self.overall = self.progress.add_task(f"task {task.id[:8]}", total=100,
                                              completed=int(task.progress), stage=task.status)
        self.items: dict[int, TaskID] = {}
        for item in task.items:
            self._bar(item.index, item.name)

    def live(self) -> Progress:
        """The bars, redrawn in place while the task is followed."""
        return self.progress

    def show(self, event: Event) -> None:
        data = event.data
        if event.type == "status":
            status = str(data.get("status"))
            self.progress.update(self.overall, stage=status)
            if status == "completed":
                self.progress.update(self.overall, completed=100)
            if event.terminal and data.get("error"):
                self._error("task", data["error"])
        elif "item" in data and event.type in ("progress", "item"):
            self._item(event.type, data)

    def summary(self, task: Task) -> None:
        line = f"task {task.id} {task.status}"
        if task.items_total > 1:
            line += (f": {task.items_done - task.items_failed} of {task.items_total} items "
                     f"completed, {task.items_failed} failed")
        self.console.print(line, style="green" if task.status == "completed" else "red",
                           highlight=False)

    def _item(self, type_: str, data: dict[str, Any]) -> None:
        bar = self._bar(int(data["item"]), str(data.get("name") or ""))
        if "task_percent" in data:
            self.progress.update(self.overall, completed=float(data["task_percent"]))
        if type_ == "progress":
            counts = "".join(f" {data[done]}/{data[total]} {label}" for done, total, label in
                             _COUNTS if done in data and total in data)
            self.progress.update(bar, completed=float(data.get("percent") or 0),
                                 stage=f"{data.get('stage') or ''}{counts}")
            return
        status = str(data.get("status"))
        name = escape(str(data.get("name") or f"item {data['item']}"))
        if status == "completed":
            self.progress.update(bar, completed=100, stage="completed")
            self.console.print(f"[green]✓[/] {name} completed", highlight=False)
        elif status in ("failed", "canceled", "retrying"):
            self.progress.update(bar, stage=status)
            if data.get("error"):
                self._error(name, data["error"], status == "retrying")
        else:
            self.progress.update(bar, stage=status)

    def _bar(self, index: int, name: str) -> TaskID:
        if index not in self.items:
            self.items[index] = self.progress.add_task(f"  {escape(name or f'item {index}')}",
                                                       total=100, stage="pending")
        return self.items[index]

    def _error(self, name: str, error: Any, retrying: bool = False) -> None:
        if isinstance(error, dict):
            error = f"{error.get('code', 'error')}: {error.get('message', '')}"
        error = escape(str(error))
        mark = "[yellow]↻ retrying[/]" if retrying else "[red]✗[/]"
        self.console.print(f"{mark} {name}: {error}", highlight=False)
