"""The mailer against a real SMTP server on loopback."""

from __future__ import annotations

import logging

import pytest

from fhir_server.runtime.config import Config
from fhir_server.runtime.mail import DisabledMailer, Mail, MailError, SmtpMailer, mailer_from
from tests.smtp_sink import SmtpSink, free_port


def test_mail_reaches_the_smtp_server(smtp_sink: SmtpSink) -> None:
    mailer = mailer_from(Config(smtp_host=smtp_sink.host, smtp_port=smtp_sink.port, mail_from="dmp@example.org"))
    mailer.send(Mail("patient@example.org", "Votre code", "Code : 123456"))
    [received] = smtp_sink.wait_for("patient@example.org")
    assert received["From"] == "dmp@example.org" and received["Subject"] == "Votre code"
    assert "Code : 123456" in received.get_payload()


def test_unreachable_server_is_a_mail_error() -> None:
    with pytest.raises(MailError, match=r"patient@example\.org"):
        SmtpMailer("127.0.0.1", free_port(), "dmp@localhost", timeout=2).send(Mail("patient@example.org", "s", "b"))


def test_without_a_server_mail_is_logged_without_its_body(caplog: pytest.LogCaptureFixture) -> None:
    mailer = mailer_from(Config())
    assert isinstance(mailer, DisabledMailer)
    with caplog.at_level(logging.WARNING):
        mailer.send(Mail("patient@example.org", "Votre code", "Code : 654321"))
    assert "patient@example.org" in caplog.text and "654321" not in caplog.text
