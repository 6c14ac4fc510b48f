"""Sending a one-time login code where the account says: e-mail (the server's mailer) or SMS."""

from __future__ import annotations

from dataclasses import dataclass

from authz.authserver.accounts import Contact
from authz.authserver.sms import Sms, SmsError, SmsGateway
from fhir_server.runtime.mail import Mail, Mailer, MailError

SUBJECT = "Votre code de connexion au DMP"


class DeliveryError(Exception):
    """Neither mail nor SMS could be handed over: the login is reported as unavailable."""


@dataclass(frozen=True)
class CodeSender:
    mailer: Mailer
    sms: SmsGateway

    def send(self, contact: Contact, code: str, lifetime: int) -> None:
        minutes = max(1, lifetime // 60)
        try:
            if contact.channel == "email":
                body = (
                    f"Votre code de connexion à votre DMP : {code}\n\n"
                    f"Il est valable {minutes} minutes et ne sert qu'une fois.\n"
                    "Si vous n'avez pas demandé ce code, quelqu'un connaît peut-être votre mot de passe : "
                    "changez-le.\n"
                )
                self.mailer.send(Mail(contact.address(), SUBJECT, body))
            else:
                self.sms.send(Sms(contact.address(), f"DMP : votre code de connexion est {code} ({minutes} min)."))
        except (MailError, SmsError, OSError) as exc:  # the code did not leave
            raise DeliveryError(str(exc)) from exc


def masked(contact: Contact) -> str:
    """Where the code went, recognisable by its owner only: ``p***@example.org``, ``+336******78``."""
    address = contact.address()
    if contact.channel == "email":
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}"
    return f"{address[:4]}{'*' * (len(address) - 6)}{address[-2:]}"
