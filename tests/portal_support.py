"""Helpers shared by the portal's tests (Flask client and browser): people with accounts, login
codes read from the mail the real SMTP sink received, and the CSRF token of a page."""

from __future__ import annotations

import re

from tests.smtp_sink import SmtpSink, code_in

PASSWORD = "un mot de passe assez long"
NEW_PASSWORD = "un autre mot de passe solide"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Mailbox:
    """The mail of one address as its owner reads it: each code once, in order."""

    def __init__(self, sink: SmtpSink, address: str):
        self.sink = sink
        self.address = address
        self.read = 0

    def next_code(self) -> str:
        self.read += 1
        return code_in(self.sink.wait_for(self.address, self.read, timeout=30.0)[self.read - 1])


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, html
    return found.group(1)
