"""``dmp-server app``: register, list and remove the patient apps of SMART App Launch.

Registering an app is the operator's act, out of band as SMART allows: it fixes the app's id, the
name patients see on the approval page, its exact redirect URIs and the scopes it may be granted.
The apps are kept in the store of ``DMP_DATA_DIR`` / ``DMP_STORE``, so a running server sees them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from authz.authserver.apps import AppRegistry, new_app
from authz.authserver.clients import ClientError
from fhir_server.runtime.config import Config


def add_app_command(subparsers: Any) -> None:
    """Register ``dmp-server app`` and its actions on the CLI's ``add_subparsers()`` object."""
    parser = subparsers.add_parser("app", help="manage the patient apps of SMART App Launch (public clients)")
    actions = parser.add_subparsers(dest="action", required=True)
    register = actions.add_parser("register", help="register a patient app (redirect URIs and scopes)")
    register.add_argument("--client-id", required=True, help="the app's client_id")
    register.add_argument("--name", required=True, help="the name patients see when they approve it")
    register.add_argument(
        "--redirect-uri", required=True, action="append", metavar="URI", help="an exact redirect URI (repeatable)"
    )
    register.add_argument(
        "--scope",
        default="launch/patient patient/*.rs offline_access",
        help="scopes it may be granted: patient/ scopes, launch/patient, offline_access, online_access",
    )
    register.add_argument("--replace", action="store_true", help="replace an app already registered")
    register.set_defaults(func=_register)
    listing = actions.add_parser("list", help="list the registered apps")
    listing.set_defaults(func=_list)
    remove = actions.add_parser("remove", help="remove an app: it gets no new authorisation")
    remove.add_argument("--client-id", required=True)
    remove.set_defaults(func=_remove)


@contextmanager
def _apps() -> Iterator[AppRegistry]:
    """The app registry of the configured store, closed after use."""
    from fhir_server.app import create_service

    store = create_service(Config.from_env()).store
    try:
        yield AppRegistry(store)
    finally:
        store.close()


def _register(args: argparse.Namespace) -> int:
    now = int(time.time())
    try:
        app = new_app(
            args.client_id, name=args.name, redirect_uris=args.redirect_uri, scope=args.scope, registered_at=now
        )
        with _apps() as registry:
            registry.register(app, replace=args.replace, now=now)
    except ClientError as exc:
        print(f"dmp-server app register: {exc}", file=sys.stderr)
        return 2
    print(f"registered app {app.client_id} ({app.name}): {app.scope}")
    return 0


def _list(args: argparse.Namespace) -> int:
    with _apps() as registry:
        for app in registry.all():
            print("\t".join((app.client_id, app.name, " ".join(app.redirect_uris), app.scope)))
    return 0


def _remove(args: argparse.Namespace) -> int:
    with _apps() as registry:
        if not registry.remove(args.client_id):
            print(f"dmp-server app remove: no app {args.client_id}", file=sys.stderr)
            return 1
    print(f"removed app {args.client_id}")
    return 0
