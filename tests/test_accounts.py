"""Patient accounts (R21, R20, CONTRACT §1–§3) over HTTP: the real app with the DMP rules, real
tokens, a real SMTP server on loopback from which the login codes are read, and a clock the
tests move instead of sleeping."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import replace
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from authz.authserver.accounts import LOCK_SECONDS
from authz.authserver.creation_codes import CODE_LIFETIME, CONSUMED_KIND
from authz.authserver.issuer import RefreshRefused
from authz.authserver.sms import OUTBOX_FILE_NAME
from authz.terms import EMERGENCY_ACCESS, REPRESENTATIVE
from authz.tokens import TokenVerifier
from fhir_server.app import create_app
from fhir_server.cli import main as cli
from fhir_server.dmp.accounts.login import CODE_LIFETIME as LOGIN_CODE_LIFETIME
from fhir_server.dmp.accounts.service import AccountService
from storage.query import OPEN_SCOPE, Query, ReferenceIdentifier, Token
from tests.conftest import LiveServer
from tests.dmp import INS_SYSTEM, EpochClock, World
from tests.smtp_sink import SmtpSink

#: scrypt cost in these tests (fast); the default cost runs in the live-server test.
COST = 2**4
INS_A = "180017512345660"
INS_B = "285027512345771"
INS_NEW = "177037512345843"
INS_REP = "170047512345913"
INS_MINOR = "215057512345064"
DR = "810002673899"
EMAIL = "patient.a@example.org"
PASSWORD = "un mot de passe assez long"


@pytest.fixture
def clock() -> EpochClock:
    return EpochClock()


@pytest.fixture
def world(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[World]:
    w = World(tmp_path, smtp_host=smtp_sink.host, smtp_port=smtp_sink.port, password_kdf_cost=COST)
    yield w
    w.close()


@pytest.fixture
def client(world: World, clock: EpochClock) -> FlaskClient:
    return create_app(service=world.service, clock=clock).test_client()


class Mailbox:
    """Login codes as the patient reads them: from the mail received by the SMTP sink."""

    def __init__(self, sink: SmtpSink):
        self.sink = sink
        self.read: dict[str, int] = {}

    def code(self, address: str) -> str:
        count = self.read.get(address, 0) + 1
        message = self.sink.wait_for(address, count)[count - 1]
        self.read[address] = count
        return _code_in(message)

    def unread(self, address: str) -> int:
        return len(self.sink.to(address)) - self.read.get(address, 0)


def _code_in(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    found = re.search(r"\b([0-9]{6})\b", payload.decode("utf-8"))
    assert found, payload
    return found.group(1)


@pytest.fixture
def mailbox(smtp_sink: SmtpSink) -> Mailbox:
    return Mailbox(smtp_sink)


def post(client: FlaskClient, path: str, body: Any, token: str | None = None) -> TestResponse:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(f"/fhir/auth/{path}", json=body, headers=headers)


def ok(response: TestResponse, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.get_json()
    return body


def refused(response: TestResponse, status: int = 401, error: str = "invalid_grant") -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    assert body["error"] == error and body["error_description"], body
    return body


def new_account(client: FlaskClient, world: World, ins: str = INS_A, **body: Any) -> str:
    """An account made by the administration; its temporary password."""
    body.setdefault("email", EMAIL)
    created = ok(post(client, "accounts", {"ins": ins, **body}, world.token("ADM")), 201)
    assert created["identifier"] == ins and created["temporary_password"]
    return str(created["temporary_password"])


def start(client: FlaskClient, ins: str, password: str, **extra: Any) -> TestResponse:
    return post(client, "login", {"identifier": ins, "password": password, **extra})


def log_in(client: FlaskClient, mailbox: Mailbox, ins: str, password: str, address: str = EMAIL) -> dict[str, Any]:
    """Both steps; the step-2 answer."""
    challenge = ok(start(client, ins, password))["challenge"]
    return ok(post(client, "login/code", {"challenge": challenge, "code": mailbox.code(address)}))


def ready_account(client: FlaskClient, world: World, mailbox: Mailbox, ins: str = INS_A) -> None:
    """An account whose temporary password was replaced by PASSWORD."""
    temporary = new_account(client, world, ins)
    change = log_in(client, mailbox, ins, temporary)["password_change_token"]
    ok(post(client, "password", {"password_change_token": change, "new_password": PASSWORD}))


@pytest.fixture
def ready(client: FlaskClient, world: World, mailbox: Mailbox) -> str:
    """Patient A's DMP, and their account with PASSWORD set; the identifier to log in with."""
    world.seed_patient(INS_A)
    ready_account(client, world, mailbox)
    return INS_A


def accounts_of(client: FlaskClient) -> AccountService:
    service = client.application.extensions["accounts"]
    assert isinstance(service, AccountService)
    return service


def fhir_get(client: FlaskClient, path: str, token: str) -> TestResponse:
    return client.get(f"/fhir/{path}", headers={"Authorization": f"Bearer {token}"})


def patients_with(world: World, ins: str) -> list[dict[str, Any]]:
    found = world.store.search(Query("Patient", Token("identifier", INS_SYSTEM, ins)), OPEN_SCOPE)
    return [stored.json() for stored in found.matches]


def stored_about(world: World, rtype: str, ins: str) -> list[dict[str, Any]]:
    where = ReferenceIdentifier("patient", INS_SYSTEM, ins)
    return [s.json() for s in world.store.search(Query(rtype, where, count=100), OPEN_SCOPE).matches]


# -- the whole login -----------------------------------------------------------------------------


def test_account_login_password_change_token_and_fhir_request(
    client: FlaskClient, world: World, mailbox: Mailbox
) -> None:
    pid = world.seed_patient(INS_A)
    temporary = new_account(client, world)

    first = ok(start(client, INS_A, temporary))
    assert first["channel"] == "email" and first["sent_to"] == "p***@example.org"
    assert first["expires_in"] == LOGIN_CODE_LIFETIME
    change = ok(post(client, "login/code", {"challenge": first["challenge"], "code": mailbox.code(EMAIL)}))
    assert change["password_change_required"] is True and "access_token" not in change

    refused(
        post(client, "password", {"password_change_token": change["password_change_token"], "new_password": "short"}),
        400,
        "invalid_request",
    )
    changed = post(
        client, "password", {"password_change_token": change["password_change_token"], "new_password": PASSWORD}
    )
    assert ok(changed) == {"password_changed": True}
    refused(
        post(
            client,
            "password",
            {"password_change_token": change["password_change_token"], "new_password": PASSWORD + "!"},
        )
    )
    refused(start(client, INS_A, temporary))

    tokens = log_in(client, mailbox, INS_A, PASSWORD)
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "patient/*.cruds" and tokens["refresh_token"]
    found = fhir_get(client, f"Patient?identifier={INS_SYSTEM}|{INS_A}", tokens["access_token"])
    assert found.status_code == 200, found.get_data(as_text=True)
    assert [e["resource"]["id"] for e in found.get_json()["entry"]] == [pid]

    # The refresh token works at the token endpoint (RFC 6749 §6), once.
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    answer = client.post("/fhir/auth/token", data=refresh)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    renewed = answer.get_json()
    assert fhir_get(client, f"Patient/{pid}", renewed["access_token"]).status_code == 200
    replay = client.post("/fhir/auth/token", data=refresh)
    assert replay.status_code == 400 and replay.get_json()["error"] == "invalid_grant"


def test_a_representative_logs_in_for_the_patient_they_represent(
    client: FlaskClient, world: World, mailbox: Mailbox
) -> None:
    minor = world.seed_patient(INS_MINOR, birth_date=f"{time.gmtime().tm_year - 10}-01-01")
    world.seed_consent(REPRESENTATIVE, INS_MINOR, (INS_SYSTEM, INS_REP))
    other = world.seed_patient(INS_B)
    address = "parent@example.org"
    temporary = new_account(client, world, INS_REP, role="LEGREP", email=address)
    refused(start(client, INS_REP, temporary), 400, "invalid_request")  # whose record?
    assert mailbox.unread(address) == 0
    change = ok(start(client, INS_REP, temporary, patient=INS_MINOR))
    credential = ok(post(client, "login/code", {"challenge": change["challenge"], "code": mailbox.code(address)}))
    ok(
        post(
            client, "password", {"password_change_token": credential["password_change_token"], "new_password": PASSWORD}
        )
    )

    challenge = ok(start(client, INS_REP, PASSWORD, patient=INS_MINOR))["challenge"]
    tokens = ok(post(client, "login/code", {"challenge": challenge, "code": mailbox.code(address)}))
    assert fhir_get(client, f"Patient/{minor}", tokens["access_token"]).status_code == 200
    challenge = ok(start(client, INS_REP, PASSWORD, patient=INS_B))["challenge"]
    elsewhere = ok(post(client, "login/code", {"challenge": challenge, "code": mailbox.code(address)}))
    assert fhir_get(client, f"Patient/{other}", elsewhere["access_token"]).status_code == 403  # the policy decides (R8)


def test_a_patient_chooses_to_change_their_password_and_their_sessions_end(
    client: FlaskClient, world: World, mailbox: Mailbox, ready: str
) -> None:
    session = log_in(client, mailbox, INS_A, PASSWORD)
    challenge = ok(start(client, INS_A, PASSWORD, change_password=True))["challenge"]
    change = ok(post(client, "login/code", {"challenge": challenge, "code": mailbox.code(EMAIL)}))
    assert change["password_change_required"] is False and "access_token" not in change
    refused(
        post(client, "password", {"password_change_token": change["password_change_token"], "new_password": PASSWORD}),
        400,
        "invalid_request",
    )
    ok(
        post(
            client,
            "password",
            {"password_change_token": change["password_change_token"], "new_password": "encore un autre secret"},
        )
    )
    with pytest.raises(RefreshRefused):
        accounts_of(client).issuer.refresh(session["refresh_token"])
    assert log_in(client, mailbox, INS_A, "encore un autre secret")["access_token"]


# -- R21 lockout ---------------------------------------------------------------------------------


def test_three_failures_lock_the_account_for_15_minutes_even_across_a_restart(
    client: FlaskClient, world: World, mailbox: Mailbox, clock: EpochClock, ready: str
) -> None:
    refused(start(client, INS_A, "pas le bon mot de passe"))  # 1
    pending = ok(start(client, INS_A, PASSWORD))["challenge"]
    code = mailbox.code(EMAIL)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    refused(post(client, "login/code", {"challenge": pending, "code": wrong}))  # 2
    refused(start(client, INS_A, "toujours pas le bon"))  # 3: locked

    refused(post(client, "login/code", {"challenge": pending, "code": code}))  # the right code, too late
    refused(start(client, INS_A, PASSWORD))  # the right password, locked
    restarted = create_app(world.config, clock=clock).test_client()  # a new process on the same data
    refused(start(restarted, INS_A, PASSWORD))
    clock.now += LOCK_SECONDS - 1
    refused(start(restarted, INS_A, PASSWORD))
    assert mailbox.unread(EMAIL) == 0  # no code ever left for a locked account

    clock.now += 1
    tokens = log_in(restarted, mailbox, INS_A, PASSWORD)
    verifier = TokenVerifier.with_server_key(
        world.key, f"{world.config.base_url}/auth", [], world.config.base_url, clock=clock
    )
    assert verifier.verify(tokens["access_token"])["sub"] == INS_A


def test_every_login_refusal_is_the_same_401(client: FlaskClient, world: World, mailbox: Mailbox, ready: str) -> None:
    unknown = start(client, INS_B, PASSWORD)
    wrong_password = start(client, INS_A, "pas le bon mot de passe")
    challenge = ok(start(client, INS_A, PASSWORD))["challenge"]
    code = mailbox.code(EMAIL)
    wrong_code = post(client, "login/code", {"challenge": challenge, "code": f"{(int(code) + 1) % 10**6:06d}"})
    no_challenge = post(client, "login/code", {"challenge": "pas-un-challenge", "code": code})
    start(client, INS_A, "encore faux")  # the third failure
    locked = start(client, INS_A, PASSWORD)
    answers = [unknown, wrong_password, wrong_code, no_challenge, locked]
    assert {r.status_code for r in answers} == {401}
    assert len({r.get_data() for r in answers}) == 1
    assert refused(locked) == {
        "error": "invalid_grant",
        "error_description": "the identifier, password or code was not accepted",
    }


def test_expired_reused_and_foreign_codes_are_refused(
    client: FlaskClient, world: World, mailbox: Mailbox, clock: EpochClock, ready: str
) -> None:
    expiring = ok(start(client, INS_A, PASSWORD))["challenge"]
    clock.now += LOGIN_CODE_LIFETIME
    refused(post(client, "login/code", {"challenge": expiring, "code": mailbox.code(EMAIL)}))

    used = ok(start(client, INS_A, PASSWORD))["challenge"]
    code = mailbox.code(EMAIL)
    ok(post(client, "login/code", {"challenge": used, "code": code}))
    refused(post(client, "login/code", {"challenge": used, "code": code}))

    mine = ok(start(client, INS_A, PASSWORD))["challenge"]
    my_code = mailbox.code(EMAIL)
    other = ok(start(client, INS_A, PASSWORD))["challenge"]
    other_code = mailbox.code(EMAIL)
    if other_code != my_code:  # one chance in a million that both challenges got the same code
        refused(post(client, "login/code", {"challenge": other, "code": my_code}))
    assert ok(post(client, "login/code", {"challenge": mine, "code": my_code}))["access_token"]


def test_codes_by_sms_go_to_the_outbox_file(client: FlaskClient, world: World, mailbox: Mailbox) -> None:
    world.seed_patient(INS_A)
    temporary = new_account(client, world, email=None, phone="06 12 34 56 78")
    sent = ok(start(client, INS_A, temporary))
    assert sent["channel"] == "sms" and sent["sent_to"] == "+336******78"
    outbox = world.config.data_dir / OUTBOX_FILE_NAME
    assert stat.S_IMODE(os.stat(outbox).st_mode) == 0o600
    [line] = [json.loads(raw) for raw in outbox.read_text().splitlines()]
    assert line["to"] == "+33612345678"
    code = re.search(r"\b([0-9]{6})\b", line["text"])
    assert code is not None
    answer = ok(post(client, "login/code", {"challenge": sent["challenge"], "code": code.group(1)}))
    assert answer["password_change_required"] is True
    assert mailbox.sink.received == []


# -- administration ------------------------------------------------------------------------------


def test_the_administration_resets_a_locked_account_over_the_api(
    client: FlaskClient, world: World, mailbox: Mailbox, ready: str
) -> None:
    session = log_in(client, mailbox, INS_A, PASSWORD)
    for _ in range(3):
        refused(start(client, INS_A, "pas le bon mot de passe"))
    refused(start(client, INS_A, PASSWORD))

    new_address = "nouvelle.adresse@example.org"
    reset = ok(post(client, f"accounts/{INS_A}/reset", {"email": new_address}, world.token("ADM")))
    assert reset["identifier"] == INS_A and reset["channel"] == "email"
    refused(start(client, INS_A, PASSWORD))  # the old password is gone
    with pytest.raises(RefreshRefused):
        accounts_of(client).issuer.refresh(session["refresh_token"])
    change = log_in(client, mailbox, INS_A, reset["temporary_password"], new_address)  # unlocked at once
    assert change["password_change_required"] is True
    refused(post(client, "accounts/199999999999995/reset", {}, world.token("ADM")), 404, "not_found")


def test_the_cli_creates_and_resets_accounts(
    client: FlaskClient,
    world: World,
    mailbox: Mailbox,
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world.seed_patient(INS_A)
    for name, value in {
        "DMP_DATA_DIR": str(world.config.data_dir),
        "DMP_SMTP_HOST": smtp_sink.host,
        "DMP_SMTP_PORT": str(smtp_sink.port),
        "DMP_PASSWORD_KDF_COST": str(COST),
    }.items():
        monkeypatch.setenv(name, value)

    def temporary_password_printed(argv: list[str]) -> str:
        assert cli(argv) == 0
        printed = re.search(r"temporary password \(shown once\): (\S+)", capsys.readouterr().out)
        assert printed is not None
        return printed.group(1)

    created = temporary_password_printed(["account", "create", "--ins", INS_A, "--email", EMAIL])
    assert log_in(client, mailbox, INS_A, created)["password_change_required"] is True
    assert cli(["account", "create", "--ins", INS_A, "--email", EMAIL]) == 1
    assert "already has an account" in capsys.readouterr().err
    reset = temporary_password_printed(["account", "reset", "--ins", INS_A])
    refused(start(client, INS_A, created))
    assert log_in(client, mailbox, INS_A, reset)["password_change_required"] is True
    assert [(who, why) for who, _, why in credential_changes(world, INS_A)] == [
        ("operator (dmp-server account)", "PAT account created, temporary password"),
        ("operator (dmp-server account)", "account reset: new temporary password, sessions ended"),
    ]


def test_only_the_administration_manages_accounts(client: FlaskClient, world: World) -> None:
    world.seed_patient(INS_A)
    body = {"ins": INS_A, "email": EMAIL}
    for token in (world.token("PAT", patient=INS_A), world.token("HCP", patient=INS_A, idnatps=DR, profession="10")):
        refused(post(client, "accounts", body, token), 403, "access_denied")
        refused(post(client, f"accounts/{INS_A}/reset", {}, token), 403, "access_denied")
    anonymous = post(client, "accounts", body)
    refused(anonymous, 401, "invalid_token")
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    refused(post(client, "accounts", body, "not.a.token"), 401, "invalid_token")
    assert world.store.record_keys("account") == []
    refused(
        post(client, "accounts", {"ins": INS_B, "email": EMAIL}, world.token("ADM")), 422, "invalid_request"
    )  # no DMP


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("login", {"password": PASSWORD}, "'identifier' is required"),
        ("login", {"identifier": "12 34", "password": PASSWORD}, "not an INS"),
        ("login", {"identifier": INS_A, "password": 12}, "must be a string"),
        ("login", [INS_A, PASSWORD], "JSON object"),
        ("login/code", {"challenge": "x"}, "'code' is required"),
        ("password", {"password_change_token": "x"}, "'new_password' is required"),
        ("accounts", {"ins": INS_A, "email": "pas une adresse"}, "not an e-mail address"),
        ("accounts", {"ins": INS_A, "phone": "12"}, "not a phone number"),
        ("accounts", {"ins": INS_A, "email": EMAIL, "role": "HCP"}, "'role' is one of"),
        ("accounts", {"ins": INS_A, "email": EMAIL, "channel": "sms"}, "phone number"),
        ("accounts", {"ins": INS_A}, "needs an 'email' or a 'phone'"),
        ("dmp", {"ins": INS_NEW, "creation_code": "X", "password": "court"}, "at least 12"),
        ("dmp", {"ins": INS_NEW, "creation_code": "X", "password": PASSWORD, "email": EMAIL}, "'family'"),
        (
            "dmp",
            {"ins": INS_NEW, "creation_code": "X", "password": PASSWORD, "email": EMAIL, "family": " "},
            "'family'",
        ),
        (
            "dmp",
            {
                "ins": INS_NEW,
                "creation_code": "X",
                "password": PASSWORD,
                "email": EMAIL,
                "family": "A",
                "birth_date": "2999-01-01",
            },
            "'birth_date'",
        ),
    ],
)
def test_bad_input_is_a_400_that_says_what_is_wrong(
    client: FlaskClient, world: World, path: str, body: Any, words: str
) -> None:
    world.seed_patient(INS_A)
    answer = refused(post(client, path, body, world.token("ADM")), 400, "invalid_request")
    assert words in answer["error_description"]


def test_a_form_is_accepted_and_other_bodies_are_400(client: FlaskClient, world: World) -> None:
    form = client.post("/fhir/auth/login", data={"identifier": INS_A, "password": PASSWORD})
    refused(form)  # read, checked, refused like any unknown account
    text = client.post("/fhir/auth/login", data=b"identifier", content_type="text/plain")
    assert "send JSON" in refused(text, 400, "invalid_request")["error_description"]
    broken = client.post("/fhir/auth/login", data=b"{", content_type="application/json")
    refused(broken, 400, "invalid_request")


# -- passwords and codes at rest -----------------------------------------------------------------


def test_no_password_or_code_is_stored_in_clear(
    client: FlaskClient, world: World, mailbox: Mailbox, clock: EpochClock
) -> None:
    world.seed_patient(INS_A)
    temporary = new_account(client, world)
    pending = ok(start(client, INS_A, temporary))["challenge"]
    code = mailbox.code(EMAIL)
    change = ok(post(client, "login/code", {"challenge": pending, "code": code}))
    live = ok(start(client, INS_A, temporary))["challenge"]  # a challenge still held
    live_code = mailbox.code(EMAIL)
    issued = ok(post(client, "creation-codes", {"ins": INS_NEW}, world.token("HCP", patient=INS_NEW, idnatps=DR)), 201)
    ok(post(client, "password", {"password_change_token": change["password_change_token"], "new_password": PASSWORD}))

    record = world.store.get_record("account", f"{INS_SYSTEM}|{INS_A}")
    assert record is not None
    assert json.loads(record[0])["password"].startswith(f"scrypt${COST}$8$1$")
    kinds = ("account", "login-challenge", "password-change", "dmp-creation-code", "refresh-token")
    held = [(key, world.store.get_record(kind, key)) for kind in kinds for key in world.store.record_keys(kind)]
    assert {key for key, _ in held} >= {f"{INS_SYSTEM}|{INS_A}", f"{INS_SYSTEM}|{INS_NEW}"}
    world.store.close()  # everything on disk
    secrets = [
        temporary,
        PASSWORD,
        code,
        live_code,
        live,
        pending,
        change["password_change_token"],
        issued["creation_code"],
        issued["creation_code"].replace("-", ""),
    ]
    for key, value in held:  # the records as the server reads them, unsealed
        assert value is not None
        for secret in secrets:
            assert secret not in key and secret.encode() not in value[0], (key, secret)
    for path in world.config.data_dir.glob("dmp.sqlite3*"):  # and the files as a thief reads them
        content = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, (path.name, secret)


def test_old_hashes_are_raised_to_the_configured_cost_at_login(
    client: FlaskClient, world: World, mailbox: Mailbox, clock: EpochClock, ready: str
) -> None:
    stronger = replace(world.config, password_kdf_cost=COST * 4)  # the same data, a higher cost
    stronger_client = create_app(stronger, clock=clock).test_client()
    log_in(stronger_client, mailbox, INS_A, PASSWORD)
    record = world.store.get_record("account", f"{INS_SYSTEM}|{INS_A}")
    assert record is not None and json.loads(record[0])["password"].startswith(f"scrypt${COST * 4}$")
    assert log_in(client, mailbox, INS_A, PASSWORD)["access_token"]


# -- DMP creation by the patient with a creation code (R20) ---------------------------------------


def creation(code: str, ins: str = INS_NEW, **extra: Any) -> dict[str, Any]:
    return {
        "ins": ins,
        "creation_code": code,
        "password": PASSWORD,
        "email": EMAIL,
        "family": "Nouveau",
        "given": "Patient",
        "birth_date": "1977-01-01",
        **extra,
    }


def issue(client: FlaskClient, world: World, ins: str = INS_NEW, role: str = "HCP") -> str:
    token = world.token(role, patient=ins, idnatps=DR, profession="10") if role == "HCP" else world.token(role)
    issued = ok(post(client, "creation-codes", {"ins": ins}, token), 201)
    assert issued["ins"] == ins and issued["expires_in"] == CODE_LIFETIME
    return str(issued["creation_code"])


def test_a_patient_creates_their_dmp_with_a_creation_code(client: FlaskClient, world: World, mailbox: Mailbox) -> None:
    code = issue(client, world)
    created = ok(post(client, "dmp", creation(code.lower().replace("-", " "))), 201)
    [patient] = patients_with(world, INS_NEW)
    assert created == {"patient": f"Patient/{patient['id']}", "identifier": INS_NEW, "role": "PAT", "channel": "email"}
    assert patient["birthDate"] == "1977-01-01" and patient["name"] == [{"family": "Nouveau", "given": ["Patient"]}]
    consents = stored_about(world, "Consent", INS_NEW)
    emergency = [c for c in consents if c["category"][0]["coding"][0]["code"] == EMERGENCY_ACCESS]
    assert len(emergency) == 2 and len(consents) == 2  # no professional's grant: no professional created it
    issued, event = sorted(stored_about(world, "AuditEvent", INS_NEW), key=lambda e: e["recorded"])
    assert issued["outcomeDesc"] == "DMP creation code issued" and issued["subtype"][0]["code"] == "110137"
    assert issued["agent"][0]["who"]["identifier"]["value"] == DR  # the professional who issued it
    assert event["outcome"] == "0" and event["subtype"][0]["code"] == "create"
    assert event["agent"][0]["role"][0]["coding"][0]["code"] == "PAT"
    assert event["agent"][1]["who"]["display"] == "dmp-server/creation-code"
    assert world.store.record_keys(CONSUMED_KIND) == []  # the marker never outlives its transaction

    refused(post(client, "dmp", creation(code)))  # used
    tokens = log_in(client, mailbox, INS_NEW, PASSWORD)  # the chosen password is not temporary
    assert fhir_get(client, f"Patient/{patient['id']}", tokens["access_token"]).status_code == 200


def test_creation_codes_expire_belong_to_one_ins_and_take_few_guesses(
    client: FlaskClient, world: World, clock: EpochClock
) -> None:
    other = issue(client, world, INS_B, role="ADM")
    refused(post(client, "dmp", creation(other, INS_NEW)))  # a code for another INS
    code = issue(client, world)
    clock.now += CODE_LIFETIME
    refused(post(client, "dmp", creation(code)))
    guessed = issue(client, world)
    for _ in range(5):
        refused(post(client, "dmp", creation("AAAA-AAAA-AAAA")))
    refused(post(client, "dmp", creation(guessed)))
    assert patients_with(world, INS_NEW) == [] and world.store.record_keys("account") == []


def test_a_minors_dmp_is_not_created_with_a_creation_code(client: FlaskClient, world: World) -> None:
    code = issue(client, world, INS_MINOR)
    minor = creation(code, INS_MINOR, birth_date=f"{time.gmtime().tm_year - 10}-06-01")
    answer = refused(post(client, "dmp", minor), 422, "invalid_request")
    assert "minor" in answer["error_description"] and "R20" in answer["error_description"]
    assert patients_with(world, INS_MINOR) == [] and world.store.record_keys("account") == []


def test_a_refused_creation_keeps_the_code_and_its_audit_event(client: FlaskClient, world: World) -> None:
    code = issue(client, world)
    world.seed_patient(INS_NEW)  # created meanwhile by someone else
    answer = refused(post(client, "dmp", creation(code)), 409, "invalid_request")
    assert answer["outcome"]["resourceType"] == "OperationOutcome"
    events = sorted(stored_about(world, "AuditEvent", INS_NEW), key=lambda e: e["recorded"])
    assert [(e["outcome"], e["subtype"][0]["code"]) for e in events] == [("0", "110137"), ("4", "create")]
    assert world.store.record_keys("dmp-creation-code") == [f"{INS_SYSTEM}|{INS_NEW}"]
    assert world.store.record_keys("account") == [] and world.store.record_keys(CONSUMED_KIND) == []
    refused(post(client, "creation-codes", {"ins": INS_NEW}, world.token("ADM")), 409, "invalid_request")


def test_creation_codes_are_issued_by_professionals_and_the_administration_only(
    client: FlaskClient, world: World
) -> None:
    for role in ("PAT", "ASS", "TCU"):
        refused(
            post(client, "creation-codes", {"ins": INS_NEW}, world.token(role, patient=INS_NEW)), 403, "access_denied"
        )
    doctor = world.token("HCP", patient=INS_B, idnatps=DR, profession="10")
    refused(post(client, "creation-codes", {"ins": INS_NEW}, doctor), 403, "access_denied")  # about another patient
    assert ok(post(client, "creation-codes", {}, doctor), 201)["ins"] == INS_B  # the token's patient


def test_a_patient_token_alone_still_cannot_create_a_dmp(client: FlaskClient, world: World) -> None:
    issue(client, world)  # a code exists, but nobody presented it
    answer = world.patient(INS_NEW).post("Patient", creation_resource(INS_NEW))
    assert answer.status_code == 403, answer.get_data(as_text=True)
    assert patients_with(world, INS_NEW) == []


def creation_resource(ins: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": INS_SYSTEM, "value": ins}],
        "name": [{"family": "Nouveau"}],
        "birthDate": "1977-01-01",
    }


# -- a real server process -----------------------------------------------------------------------


def test_login_against_the_real_server_process(live_server: LiveServer) -> None:
    import urllib.error
    import urllib.request

    def call(path: str, body: Any, token: str | None = None, method: str = "POST") -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{live_server.base_url}/{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    ins, address = "166067512345155", "live.patient@example.org"
    doctor = live_server.token("HCP", idnatps=DR, profession="10", person_id=ins)
    status, _ = call("Patient", creation_resource(ins), doctor)
    assert status == 201
    status, created = call("auth/accounts", {"ins": ins, "email": address}, live_server.token("ADM"))
    assert status == 201, created
    mailbox = Mailbox(live_server.mail)

    def both_steps(password: str) -> dict[str, Any]:
        status, first = call("auth/login", {"identifier": ins, "password": password})
        assert status == 200, first
        status, second = call("auth/login/code", {"challenge": first["challenge"], "code": mailbox.code(address)})
        assert status == 200, second
        return second

    change = both_steps(created["temporary_password"])
    status, _ = call(
        "auth/password", {"password_change_token": change["password_change_token"], "new_password": PASSWORD}
    )
    assert status == 200
    tokens = both_steps(PASSWORD)
    status, bundle = call(f"Patient?identifier={INS_SYSTEM}|{ins}", None, tokens["access_token"], method="GET")
    assert status == 200 and bundle["total"] == 1


def logins_in_trail(client: FlaskClient, world: World, ins: str) -> list[tuple[str, str, str]]:
    """The login events of the trail of ``ins``'s DMP as its patient reads it: (who, outcome, why)."""
    found = world.patient(ins).get(f"AuditEvent?patient.identifier={INS_SYSTEM}|{ins}&_count=100&_sort=date")
    assert found.status_code == 200, found.get_data(as_text=True)
    events = [e["resource"] for e in found.get_json().get("entry") or []]
    return [
        (e["agent"][0]["who"]["identifier"]["value"], e["outcome"], e["outcomeDesc"])
        for e in events
        if e["type"]["code"] == "110114"
    ]


def test_logins_and_failed_attempts_are_in_the_trail_of_the_record(
    client: FlaskClient, world: World, mailbox: Mailbox, ready: str
) -> None:
    before = logins_in_trail(client, world, INS_A)
    assert [outcome for _, outcome, _ in before] == ["0"]  # the login that replaced the temporary password
    refused(start(client, INS_A, "not the password at all"))
    challenge = ok(start(client, INS_A, PASSWORD))["challenge"]
    refused(post(client, "login/code", {"challenge": challenge, "code": "000000"}))
    mailbox.code(EMAIL)  # the code of the challenge just failed
    log_in(client, mailbox, INS_A, PASSWORD)
    refused(start(client, "299017512345154", PASSWORD))  # no such account: nothing to trace anywhere
    assert logins_in_trail(client, world, INS_A)[len(before) :] == [
        (INS_A, "4", "login refused: wrong password"),
        (INS_A, "4", "login refused: wrong one-time code"),
        (INS_A, "0", "login by email code"),
    ]


def test_a_representatives_login_is_in_the_trail_of_the_record_they_act_on(
    client: FlaskClient, world: World, mailbox: Mailbox
) -> None:
    world.seed_patient(INS_MINOR, birth_date=f"{time.gmtime().tm_year - 10}-01-01")
    world.seed_consent(REPRESENTATIVE, INS_MINOR, (INS_SYSTEM, INS_REP))
    address = "parent@example.org"
    temporary = new_account(client, world, INS_REP, role="LEGREP", email=address)
    challenge = ok(start(client, INS_REP, temporary, patient=INS_MINOR))["challenge"]
    ok(post(client, "login/code", {"challenge": challenge, "code": mailbox.code(address)}))
    about_minor = world.store.search(
        Query("AuditEvent", Token("entity-identifier", INS_SYSTEM, INS_MINOR), count=50), OPEN_SCOPE
    ).matches
    logins = [e.json() for e in about_minor if e.json()["type"]["code"] == "110114"]
    agents = [e["agent"][0] for e in logins]
    who = [(a["who"]["identifier"]["value"], a["role"][0]["coding"][0]["code"]) for a in agents]
    assert who == [(INS_REP, "LEGREP")]


def credential_changes(world: World, ins: str) -> list[tuple[str, str, str]]:
    """The account creations and resets in the trail of ``ins``'s DMP, as its patient reads it:
    (who, role, why)."""
    found = world.patient(ins).get(f"AuditEvent?patient.identifier={INS_SYSTEM}|{ins}&_count=100&_sort=date")
    assert found.status_code == 200, found.get_data(as_text=True)
    events = [e["resource"] for e in found.get_json().get("entry") or []]
    return [
        (
            e["agent"][0]["who"].get("display") or e["agent"][0]["who"]["identifier"]["value"],
            e["agent"][0]["role"][0]["coding"][0]["code"],
            e["outcomeDesc"],
        )
        for e in events
        if e["subtype"][0]["code"] == "110137"
    ]


def test_the_administrations_changes_to_an_account_are_in_the_patients_trail(
    client: FlaskClient, world: World, mailbox: Mailbox
) -> None:
    world.seed_patient(INS_A)
    new_account(client, world, INS_A)
    ok(post(client, f"accounts/{INS_A}/reset", {}, world.token("ADM", sub="support-agent-7")))
    assert credential_changes(world, INS_A) == [
        ("ADM-user", "ADM", "PAT account created, temporary password"),
        ("support-agent-7", "ADM", "account reset: new temporary password, sessions ended"),
    ]
