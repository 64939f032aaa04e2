"""The CLI's view of an agent run (`longtask ask --follow`, `longtask watch` of one): each step as
a line when it happens, the answer as the model writes it, then the citations of the result.

A terminal cannot take back what it printed, so the live text is kept twice: `text`, what the
server says the step's text is now (a `text` event replaces it, a `delta` goes at its offset),
and `shown`, what of it is on the screen. Only the part of `text` beyond `shown` is printed, so
the text a reconnect sends again is not printed twice. A text that no longer extends what is
shown (the step's LLM call was retried and wrote something else) is printed again on a line of
its own. The stored answer is the truth: if it is not what was shown, it is printed whole.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from rich.console import Console

from longtask.client.models import Event, Task

ARGUMENT_CHARS = 60  # a tool argument longer than this is cut in a step's line


class AnswerView:
    """An agent run's steps and answer, printed as its events come."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.step = 0  # the step whose text is on the screen
        self.text = ""  # that step's text, as the server has it now
        self.shown = ""  # what of it is on the screen
        self.open_line = False  # the screen's last line is live text without its newline
        self.answer: str | None = None  # the answer as shown, once its step has ended

    def live(self) -> contextlib.nullcontext[None]:
        """Nothing redraws: lines are printed as they come."""
        return contextlib.nullcontext()

    def show(self, event: Event) -> None:
        data = event.data
        if event.live:
            self._write(event.type, data)
        elif event.type == "step":
            self._step(data)

    def summary(self, task: Task) -> None:
        """The answer (unless it was shown as it is stored), its citations, and the outcome."""
        self._end_line()
        result: dict[str, Any] = task.result if isinstance(task.result, dict) else {}
        answer = result.get("answer")
        if result.get("method") == "retrieval_only":
            self.console.print("retrieval only (no LLM is configured): the passages that match "
                               "best", style="yellow")
        if answer and answer != self.answer:
            if self.answer is not None:
                self.console.print("↻ the stored answer differs from the text above; it is:",
                                   style="yellow")
            self._out(answer)
            self._end_line()
        if result.get("message"):
            self.console.print(str(result["message"]), style="yellow", markup=False)
        citations = result.get("citations") or []
        if citations:
            self.console.print("citations:")
        for cited in citations:
            self.console.print(f"  [{cited.get('filename')}, p. {cited.get('page')}]",
                               markup=False)
        self._outcome(task, result)

    def _write(self, type_: str, data: dict[str, Any]) -> None:
        """Put live text where it belongs: a `text` event is the whole text so far."""
        step = int(data.get("step") or 0)
        if step != self.step:
            self._begin(step)
        offset = 0 if type_ == "text" else int(data.get("offset") or 0)
        if offset <= len(self.text):  # the server never skips text (it resends it whole)
            self.text = self.text[:offset] + str(data.get("text") or "")
        self._draw()

    def _step(self, data: dict[str, Any]) -> None:
        step = int(data.get("step") or 0)
        if data.get("tool") is None:  # the last step: its event carries the whole answer
            if step != self.step:
                self._begin(step)
            self.text = str(data.get("answer") or "")
            self._draw()
            self._end_line()
            self.answer = self.shown
            return
        self._end_line()  # what the model wrote before calling the tool
        self.console.print(f"step {step} · {_call(data)} → {data.get('summary') or ''}",
                           markup=False)

    def _begin(self, step: int) -> None:
        self._end_line()
        self.step, self.text, self.shown = step, "", ""

    def _draw(self) -> None:
        if self.text.startswith(self.shown):
            self._out(self.text[len(self.shown):])
        elif self.shown.startswith(self.text):
            return  # the call restarted and has not caught up with what is shown yet
        else:
            self._end_line()
            self.console.print("↻ the model wrote this step again:", style="yellow")
            self._out(self.text)
        self.shown = self.text

    def _out(self, piece: str) -> None:
        if piece:  # as it is: no markup, no wrapping, no emoji codes
            self.console.out(piece, end="")
            self.open_line = not piece.endswith("\n")

    def _end_line(self) -> None:
        if self.open_line:
            self.console.out("")
            self.open_line = False

    def _outcome(self, task: Task, result: dict[str, Any]) -> None:
        line = f"task {task.id} {task.status}"
        if task.status == "completed":
            steps = int(result.get("steps") or 0)
            line += f": {steps} step{'' if steps == 1 else 's'}, {result.get('tokens') or 0} tokens"
        elif task.error:
            line += f": {task.error.get('code')}: {task.error.get('message')}"
        self.console.print(line, style="green" if task.status == "completed" else "red",
                           highlight=False, markup=False)


def _call(data: dict[str, Any]) -> str:
    """`search("levain")`, `read_pages(document_id="…", first=2)`: a tool call, short."""
    arguments = data.get("arguments")
    if not isinstance(arguments, dict):
        arguments = {}
    values = [_value(v) for v in arguments.values()]
    if len(values) != 1:
        values = [f"{name}={value}" for name, value in zip(arguments, values)]
    return f"{data.get('tool')}({', '.join(values)})"


def _value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= ARGUMENT_CHARS else f"{text[:ARGUMENT_CHARS - 1]}…"

