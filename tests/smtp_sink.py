"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for the mail tests."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class SmtpSink:
    """The mail received so far; ``wait_for`` polls because delivery may run on another thread."""

    host: str = "127.0.0.1"
    port: int = 0
    received: list[Message] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self._lock:
            self.received.append(message_from_bytes(content))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        with self._lock:
            return [m for m in self.received if m["To"] == address]

    def wait_for(self, address: str, count: int = 1, timeout: float = 10.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.to(address)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"{count} mail(s) to {address} expected, {len(self.to(address))} received")


def code_in(message: Message) -> str:
    """The 6-digit one-time code a login mail carries."""
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    found = re.search(r"\b([0-9]{6})\b", payload.decode("utf-8"))
    assert found, payload
    return found.group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _running_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink(port=free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    yield from _running_sink()


@pytest.fixture(scope="session")
def session_smtp_sink() -> Iterator[SmtpSink]:
    """One sink for the whole session: the mail server of the ``live_server`` process."""
    yield from _running_sink()
