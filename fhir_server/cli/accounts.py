"""``dmp-server account create|reset``: account administration from the server's own machine.

The same operations as ``POST {base}/auth/accounts`` and ``…/accounts/{ins}/reset`` (with the
same rules), for an operator who can run the server's command line and thus needs no ADM token.
The temporary password is printed once, on standard output; it is nowhere else in clear.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from authz.authserver.accounts import CHANNELS, ROLES
from authz.authserver.errors import AuthError
from fhir_server.runtime.config import Config


def add_account_command(subparsers: Any) -> None:
    """Register ``dmp-server account`` on the CLI's ``add_subparsers()`` object."""
    parser = subparsers.add_parser("account", help="create a patient's or representative's account, or reset it")
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="new account with a temporary password (printed once)")
    reset = actions.add_parser("reset", help="new temporary password (printed once); unlocks the account")
    for action in (create, reset):
        action.add_argument("--ins", required=True, help="the person's INS (bare INS-NIR, or system|value)")
        action.add_argument("--email", help="e-mail address for login codes")
        action.add_argument("--phone", help="mobile number for login codes (E.164 or 06…)")
        action.add_argument("--channel", choices=CHANNELS, help="where login codes go (default: e-mail if any)")
    create.add_argument("--role", choices=ROLES, default=ROLES[0], help="PAT (default) or LEGREP")
    parser.set_defaults(func=_account_command)


def _account_command(args: argparse.Namespace) -> int:
    from fhir_server.app import create_service
    from fhir_server.dmp.accounts.service import build_account_service

    config = Config.from_env()
    service = create_service(config)
    try:
        accounts = build_account_service(config, service)
        body = {"email": args.email, "phone": args.phone, "channel": args.channel}
        if args.action == "create":
            answer = accounts.admin.create({**body, "ins": args.ins, "role": args.role})
        else:
            answer = accounts.admin.reset(args.ins, body)
    except AuthError as exc:
        print(f"dmp-server account {args.action}: {exc.description}", file=sys.stderr)
        return 1
    finally:
        service.store.close()
    done = "created" if args.action == "create" else "reset"
    print(f"account {done} for {answer['identifier']} ({answer['role']}), login codes by {answer['channel']}")
    print(f"temporary password (shown once): {answer['temporary_password']}")
    return 0
