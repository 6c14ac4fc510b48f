"""Where the server writes to a person on its own (majority notices, emergency alerts)."""

from __future__ import annotations

from authz.authserver.accounts import Account, AccountBook, Contact
from authz.contacts import contact_email
from tests.dmp import INS_SYSTEM, World

INS = "180017512345660"
PARENT = "160017512349927"


def test_the_login_account_comes_first_then_the_patient_then_relatives(world: World) -> None:
    assert contact_email(world.store, (INS_SYSTEM, INS)) is None
    pid = world.seed_patient(INS, email="from-the-record@example.org")
    assert contact_email(world.store, (INS_SYSTEM, INS)) == "from-the-record@example.org"
    AccountBook(world.store).put(
        Account((INS_SYSTEM, INS), "PAT", "scrypt$hash", False, Contact("login@example.org", None, "email"))
    )
    assert contact_email(world.store, (INS_SYSTEM, INS)) == "login@example.org"
    world.store.create(
        {
            "resourceType": "RelatedPerson",
            "id": "parent",
            "patient": {"reference": f"Patient/{pid}"},
            "identifier": [{"system": INS_SYSTEM, "value": PARENT}],
            "telecom": [
                {"system": "email", "value": "old@example.org", "use": "old"},
                {"system": "email", "value": "parent@example.org"},
            ],
        }
    )
    assert contact_email(world.store, (INS_SYSTEM, PARENT)) == "parent@example.org"
    AccountBook(world.store).put(
        Account((INS_SYSTEM, PARENT), "LEGREP", "scrypt$hash", False, Contact(None, "+33612345678", "sms"))
    )
    assert contact_email(world.store, (INS_SYSTEM, PARENT)) == "parent@example.org"  # no address in the account
