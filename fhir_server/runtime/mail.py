"""Outgoing e-mail: one-time login codes, new-document alerts, majority notices.

SMTP to the server of ``DMP_SMTP_HOST``/``DMP_SMTP_PORT``; without one, mail is disabled and each
message is logged by recipient and subject only (never its body: it may hold a login code).
Senders hand a :class:`Mail` to a :class:`Mailer` and never build SMTP sessions themselves, so a
test points the server at a real SMTP sink on loopback and reads what was sent.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

from fhir_server.runtime.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


class MailError(Exception):
    """The mail server refused or could not be reached: the caller decides whether to retry."""


class Mailer(Protocol):
    def send(self, mail: Mail) -> None: ...


@dataclass(frozen=True)
class SmtpMailer:
    host: str
    port: int
    sender: str
    timeout: float = 10.0

    def send(self, mail: Mail) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message.set_content(mail.body)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"mail to {mail.to} not sent: {exc}") from exc


class DisabledMailer:
    """No mail server configured: say what would have been sent, without its content."""

    def send(self, mail: Mail) -> None:
        log.warning("mail disabled (no DMP_SMTP_HOST): not sent to %s: %s", mail.to, mail.subject)


def mailer_from(config: Config) -> Mailer:
    if not config.smtp_host:
        return DisabledMailer()
    return SmtpMailer(config.smtp_host, config.smtp_port, config.mail_from)
