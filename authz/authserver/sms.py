"""Outgoing SMS: the one-time login codes of patients who chose their phone.

Senders hand an :class:`Sms` to an :class:`SmsGateway`. The server ships with no operator
contract, so the default gateway is a durable outbox file, ``sms-outbox.jsonl`` in the data
directory: one JSON object per line (``{"to": ..., "text": ..., "at": epoch seconds}``), appended
under an exclusive lock and synced, so that a relay (the operator's SMS provider client, a cron
job) can pick the messages up, and nothing is lost if the server stops right after answering.
The file holds live login codes: it is created 0600, and the relay should truncate it once sent.
Another gateway (an HTTP API of an SMS provider) implements the same one-method protocol.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson

OUTBOX_FILE_NAME = "sms-outbox.jsonl"
#: E.164: a plus sign, then 8 to 15 digits (spaces, dots and dashes are dropped first).
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")


@dataclass(frozen=True)
class Sms:
    to: str  # E.164
    text: str


class SmsError(Exception):
    """The message could not be handed over: the caller reports the service as unavailable."""


class SmsGateway(Protocol):
    def send(self, sms: Sms) -> None: ...


def normalise_phone(raw: str) -> str | None:
    """A phone number in E.164 form, or None; a French national number (``06 12 34 56 78``)
    becomes ``+33612345678``."""
    compact = re.sub(r"[\s.\-()]", "", raw)
    if re.fullmatch(r"0[1-9][0-9]{8}", compact):
        compact = "+33" + compact[1:]
    return compact if _E164.fullmatch(compact) else None


@dataclass(frozen=True)
class OutboxSmsGateway:
    """Appends each SMS to a JSON-lines file (see the module's docstring)."""

    path: Path
    clock: Callable[[], float]

    def send(self, sms: Sms) -> None:
        line = orjson.dumps({"to": sms.to, "text": sms.text, "at": int(self.clock())}) + b"\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # several workers append whole lines, never interleaved
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SmsError(f"SMS to {sms.to} not queued: {exc}") from exc
