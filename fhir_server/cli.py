"""The ``dmp-server`` command line."""

from __future__ import annotations

import argparse
import sys

from authz.devtoken import add_token_command
from fhir_server.config import Config


def _serve(args: argparse.Namespace) -> int:
    from fhir_server.app import create_app

    config = Config.from_env()
    if args.workers > 1 or args.threads > 1:
        from gunicorn.app.base import BaseApplication

        class _Gunicorn(BaseApplication):  # type: ignore[misc]
            def load_config(self) -> None:
                self.cfg.set("bind", f"{args.host}:{args.port}")
                self.cfg.set("workers", args.workers)
                self.cfg.set("threads", args.threads)
                self.cfg.set("worker_class", "gthread")
                self.cfg.set("accesslog", None)

            def load(self):  # type: ignore[no-untyped-def]
                return create_app(config)

        _Gunicorn().run()
        return 0
    from werkzeug.serving import run_simple

    app = create_app(config)
    print(f"dmp-server: FHIR base {config.base_url} (data in {config.data_dir})", file=sys.stderr)
    run_simple(args.host, args.port, app, threaded=True)
    return 0


def _reindex(args: argparse.Namespace) -> int:
    from fhir_server.app import create_service

    service = create_service(Config.from_env())
    try:
        count = service.store.reindex(args.type)
    finally:
        service.store.close()
    print(f"reindexed {count} resource(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dmp-server", description="DMP FHIR R4 document server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the FHIR server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1, help="gunicorn worker processes (1 = built-in server)")
    serve.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker")
    serve.set_defaults(func=_serve)
    reindex = sub.add_parser("reindex", help="recompute search indexes (after SearchParameters in ig/ change)")
    reindex.add_argument("--type", help="only this resource type")
    reindex.set_defaults(func=_reindex)
    add_token_command(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
