"""The `longtask` commands that talk to a server through `longtask.client`:

    longtask submit FILES... [--follow] [--metadata JSON] [--reindex]
    longtask ask QUESTION [--follow] [--documents ID,...] [--max-steps N]
    longtask watch ID | show ID | cancel ID | retry ID
    longtask ls [--status S] [--kind K] [--limit N]
    longtask search QUERY [-k N] [--mode hybrid|vector|text]

`ask` submits an agent run over the documents; with --follow it prints each step as it happens,
the answer as the model writes it, then the citations (`client_ask`).

The server and key come from `--url`/`--key` or `LONGTASK_URL`/`LONGTASK_API_KEY`. Exit codes:
0 done (the task completed), 1 the task failed or was canceled or the server said no,
2 a usage error or bad configuration, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from longtask.client.args import MAX_STEPS, document_ids, json_object, max_steps, question
from longtask.client.display import INTERRUPTED, follow
from longtask.client.errors import ClientError, Unauthorized
from longtask.client.models import Task
from longtask.client.sync import Client
from longtask.core.status import ALL as STATUSES

USAGE = 2


class BadConfig(Exception):
    pass


def add_parsers(sub: Any) -> None:
    """Add the client commands to the `longtask` parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the server (default: $LONGTASK_URL, else "
                                      "http://127.0.0.1:8000)")
    common.add_argument("--key", help="the API key (default: $LONGTASK_API_KEY)")
    submit = sub.add_parser("submit", parents=[common], help="upload PDFs as one ingest task")
    submit.add_argument("files", nargs="+", type=Path, metavar="FILE")
    submit.add_argument("--follow", action="store_true", help="show its progress live")
    submit.add_argument("--metadata", type=json_object, help="a JSON object kept with each file")
    submit.add_argument("--reindex", action="store_true", help="embed unchanged files again")
    ask = sub.add_parser("ask", parents=[common], help="ask the documents a question")
    ask.add_argument("question", type=question, metavar="QUESTION")
    ask.add_argument("--follow", action="store_true", help="show the steps and the answer live")
    ask.add_argument("--documents", type=document_ids, metavar="ID,...",
                     help="only these documents (default: all)")
    ask.add_argument("--max-steps", type=max_steps, metavar="N",
                     help=f"LLM calls at most, 1 to {MAX_STEPS} (default 10)")
    for name, text in (("watch", "follow a task live"), ("show", "a task and its items"),
                       ("cancel", "cancel a task"), ("retry", "run a task's failed items again")):
        sub.add_parser(name, parents=[common], help=text).add_argument("id", metavar="ID")
    ls = sub.add_parser("ls", parents=[common], help="list tasks, newest first")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--kind")
    ls.add_argument("--limit", type=int, default=20)
    search = sub.add_parser("search", parents=[common], help="search the documents")
    search.add_argument("query", metavar="QUERY")
    search.add_argument("-k", type=int, default=5, help="how many chunks (default 5)")
    search.add_argument("--mode", choices=("hybrid", "vector", "text"),
                        help="words and meaning fused (hybrid, the default), or one of them")


def run(args: argparse.Namespace) -> int | None:
    """Run a client command; None if `args.command` is not one of them."""
    command = COMMANDS.get(args.command)
    if command is None:
        return None
    console = Console(highlight=False, soft_wrap=True)  # long lines wrap in the terminal, not in rich
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        with _client(args) as client:
            return command(client, args, console)
    except (BadConfig, Unauthorized) as exc:
        err.print(f"longtask: {exc}", markup=False)
        return USAGE
    except ClientError as exc:
        err.print(f"longtask: {exc}", markup=False)
        return 1
    except KeyboardInterrupt:
        return INTERRUPTED


def _client(args: argparse.Namespace) -> Client:
    if args.url and not args.url.startswith(("http://", "https://")):
        raise BadConfig(f"--url must start with http:// or https://, not {args.url!r}")
    if not (args.key or os.environ.get("LONGTASK_API_KEY")):
        raise BadConfig("no API key: pass --key or set LONGTASK_API_KEY")
    return Client(args.url, args.key, timeout=60)


def _submit(client: Client, args: argparse.Namespace, console: Console) -> int:
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        raise BadConfig(f"no such file: {', '.join(missing)}")
    up = client.upload(args.files, metadata=args.metadata, reindex=args.reindex)
    console.print(f"task {up.task.id}: {len(up.documents)} files uploaded")
    if args.follow:
        return follow(client, up.task.id, console)
    return 0


def _ask(client: Client, args: argparse.Namespace, console: Console) -> int:
    params: dict[str, Any] = {"question": args.question}
    if args.documents is not None:
        params["document_ids"] = args.documents
    if args.max_steps is not None:
        params["max_steps"] = args.max_steps
    task = client.submit("agent", params)
    if args.follow:
        return follow(client, task.id, console)
    console.print(f"task {task.id}: asked; `longtask watch {task.id}` follows it")
    return 0


def _watch(client: Client, args: argparse.Namespace, console: Console) -> int:
    return follow(client, args.id, console)


def _ls(client: Client, args: argparse.Namespace, console: Console) -> int:
    page = client.list(status=args.status, kind=args.kind, limit=args.limit)
    table = _table("id", "kind", "status", "items", "created")
    for task in page.tasks:
        table.add_row(task.id, escape(task.kind), _status(task), _items(task),
                      f"{task.created_at.astimezone():%m-%d %H:%M}" if task.created_at else "")
    console.print(table if page.tasks else "no tasks")
    if page.next_cursor:
        console.print(f"(the newest {len(page.tasks)}; --limit shows more)")
    return 0


def _show(client: Client, args: argparse.Namespace, console: Console) -> int:
    task = client.get(args.id)
    head = Table.grid(padding=(0, 2))
    fields: tuple[tuple[str, Any], ...] = (
        ("task", task.id), ("kind", task.kind), ("status", _status(task)),
        ("progress", f"{task.progress:.0f}%"), ("items", _items(task)), ("retry of", task.retry_of),
        ("created", task.created_at), ("finished", task.finished_at),
        ("error", _error(task.error)))
    for label, value in fields:
        if value:
            head.add_row(label, value if label == "status" else escape(str(value)))
    console.print(head)
    if task.items:
        items = _table("#", "name", "status", "progress", "stage", "error")
        for item in task.items:
            items.add_row(str(item.index), escape(item.name), item.status,
                          f"{item.progress:.0f}%", escape(item.stage or ""), _error(item.error))
        console.print(items)
    if task.result is not None and task.items_total <= 1:
        console.print_json(json.dumps(task.result, default=str))
    return 0


def _cancel(client: Client, args: argparse.Namespace, console: Console) -> int:
    task = client.cancel(args.id)
    console.print(f"task {task.id} {task.status}")
    return 0


def _retry(client: Client, args: argparse.Namespace, console: Console) -> int:
    task = client.retry(args.id)
    console.print(f"task {task.id} retries {task.items_total} failed items of {args.id}")
    return 0


def _search(client: Client, args: argparse.Namespace, console: Console) -> int:
    hits = client.search(args.query, k=args.k, mode=args.mode)
    table = _table("score", "document", "pages", "text")
    for hit in hits:
        pages = f"{hit.page_start}" if hit.page_start == hit.page_end else \
            f"{hit.page_start}-{hit.page_end}"
        table.add_row(f"{hit.score:.3f}", escape(hit.filename), pages,
                      _bold(" ".join((hit.snippet or hit.text).split())[:200]))
    console.print(table if hits else f"nothing found for {args.query!r}")
    return 0


def _bold(snippet: str) -> str:
    """A snippet's `**words**` in bold, the rest escaped for rich."""
    parts = snippet.split("**")
    return "".join(f"[bold]{escape(p)}[/bold]" if n % 2 else escape(p)
                   for n, p in enumerate(parts))


def _table(*columns: str) -> Table:
    """A borderless table whose ids and times are never wrapped (they are copied and pasted)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in columns:
        table.add_column(name, no_wrap=name in ("id", "created", "score", "status", "#"))
    return table


def _status(task: Task) -> str:
    color = {"completed": "green", "failed": "red", "canceled": "yellow"}.get(task.status)
    if color:
        return f"[{color}]{task.status}[/]"
    return f"{task.status} {task.progress:.0f}%" if task.status == "running" else task.status


def _items(task: Task) -> str:
    failed = f", {task.items_failed} failed" if task.items_failed else ""
    return f"{task.items_done}/{task.items_total}{failed}"


def _error(error: Any) -> str:
    if isinstance(error, dict):
        error = f"{error.get('code', 'error')}: {error.get('message', '')}"
    return "" if error is None else escape(str(error))


COMMANDS: dict[str, Callable[[Client, argparse.Namespace, Console], int]] = {
    "submit": _submit, "ask": _ask, "watch": _watch, "ls": _ls, "show": _show, "cancel": _cancel,
    "retry": _retry, "search": _search,
}
