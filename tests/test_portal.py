"""« Mon DMP », page by page and action by action, through the Flask test client: the real app with
the DMP rules, real accounts whose login codes are read from a real SMTP server on loopback, the
real store, and a clock the tests move (session idle timeout) instead of sleeping. What each
action did is checked through the FHIR API with other people's real tokens, and in the trail."""

from __future__ import annotations

import io
import re
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from authz.terms import (
    BREAK_THE_GLASS,
    IDNATPS_SYSTEM,
    INVISIBLE_TO_PATIENT,
    INVISIBLE_TO_REPRESENTATIVES,
    MASKED_FROM_PROFESSIONALS,
    REPRESENTATIVE,
)
from fhir_server.app import create_app
from fhir_server.dmp.portal.sessions import COOKIE_NAME
from storage.query import OPEN_SCOPE
from tests.dmp import INS_SYSTEM, SYNTHESE, EpochClock, World
from tests.portal_support import PASSWORD, Mailbox, csrf_of
from tests.smtp_sink import SmtpSink
from tests.test_cda import make_cda

COST = 2**4
INS = "180017512345660"
INS_REP = "170047512345913"
INS_MINOR = "215057512345064"
DR = "810002673899"
OTHER_DR = "810000000099"
EMAIL = "patient@example.org"
REP_EMAIL = "parent@example.org"
PORTAL = "/fhir/mon-dmp"
CLASS_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"


class Visitor:
    """A browser as the test client plays it: cookies kept, each form sent with the CSRF token of
    the last page shown."""

    def __init__(self, client: FlaskClient):
        self.client = client
        self.csrf = ""

    def get(self, path: str, status: int = 200) -> str:
        response = self.client.get(f"{PORTAL}{path}")
        assert response.status_code == status, response.get_data(as_text=True)
        return self._seen(response)

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kwargs: Any) -> TestResponse:
        form = {**(data or {}), **({"csrf": self.csrf} if csrf else {})}
        return self.client.post(f"{PORTAL}{path}", data=form, **kwargs)

    def follow(self, response: TestResponse, status: int = 200) -> str:
        """The page a form's answer leads to (a redirect is followed once)."""
        if response.status_code in (302, 303):
            return self.get(response.headers["Location"].removeprefix(PORTAL), status)
        assert response.status_code == status, response.get_data(as_text=True)
        return self._seen(response)

    def _seen(self, response: TestResponse) -> str:
        html = response.get_data(as_text=True)
        if 'name="csrf"' in html:
            self.csrf = csrf_of(html)
        return html


class Portal:
    """The portal world: a DMP, a patient with an account, professionals in the directory."""

    def __init__(self, world: World, clock: EpochClock, sink: SmtpSink):
        self.world = world
        self.clock = clock
        self.sink = sink
        self.app = create_app(service=world.service, clock=clock)
        self.accounts = self.app.extensions["accounts"]
        # The portal dates its Consents by the wall clock, as the server would: the rules read it too.
        world.service.gatekeeper.clock = lambda: datetime.now(UTC)  # type: ignore[attr-defined]
        self.pid = world.seed_patient(INS, name=[{"family": "Martin", "given": ["Claire"]}])
        world.seed_practitioner(DR, "10")
        world.seed_practitioner(OTHER_DR, "10")
        self._name_practitioners()

    def _name_practitioners(self) -> None:
        for idnatps, family in ((DR, "Dupont"), (OTHER_DR, "Bernard")):
            practitioner = self.world.store.read("Practitioner", f"prat-{idnatps}", OPEN_SCOPE)
            assert practitioner is not None
            resource = practitioner.json()
            resource["name"] = [{"family": family, "given": ["Jean"], "prefix": ["Dr"]}]
            self.world.store.update(resource)

    def account(self, ins: str, email: str, role: str = "PAT") -> str:
        created = self.accounts.admin.create({"ins": ins, "email": email, "role": role})
        return str(created["temporary_password"])

    def visitor(self) -> Visitor:
        return Visitor(self.app.test_client())

    def signed_in(self, ins: str = INS, email: str = EMAIL, role: str = "PAT", patient: str | None = None) -> Visitor:
        """A visitor signed in: the temporary password changed on the way, as the first login does."""
        visitor, html = self.sign_in(ins, email, role, patient)
        assert "Se déconnecter" in html, html
        return visitor

    def sign_in(self, ins: str, email: str, role: str, patient: str | None) -> tuple[Visitor, str]:
        """A first login (code, new password), then a login: the page it ends on."""
        mailbox = Mailbox(self.sink, email)
        temporary = self.account(ins, email, role)
        visitor = self.visitor()
        visitor.get("/connexion")
        extra = {"patient": patient} if patient else {}
        html = visitor.follow(visitor.post("/connexion", {"identifier": ins, "password": temporary, **extra}))
        assert "Un code à 6 chiffres a été envoyé" in html
        html = visitor.follow(visitor.post("/connexion/code", {"code": mailbox.next_code()}))
        assert "Choisissez un nouveau mot de passe" in html
        form = {"new_password": PASSWORD, "confirmation": PASSWORD}
        html = visitor.follow(visitor.post("/mot-de-passe", form))
        assert "Mot de passe changé" in html
        visitor.follow(visitor.post("/connexion", {"identifier": ins, "password": PASSWORD, **extra}))
        return visitor, visitor.follow(visitor.post("/connexion/code", {"code": mailbox.next_code()}))

    def doctor(self, idnatps: str = DR, **claims: Any) -> Any:
        return self.world.doctor(idnatps, INS, **claims)

    def trail(self) -> list[dict[str, Any]]:
        response = self.world.patient(INS).get(f"AuditEvent?patient.identifier={INS_SYSTEM}|{INS}&_count=500")
        assert response.status_code == 200
        return [e["resource"] for e in response.get_json().get("entry", [])]


@pytest.fixture
def portal(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[Portal]:
    """The portal on a fresh store, its mail to the SMTP sink, on a clock the test moves."""
    world = World(tmp_path, smtp_host=smtp_sink.host, smtp_port=smtp_sink.port, password_kdf_cost=COST)
    try:
        yield Portal(world, EpochClock(), smtp_sink)
    finally:
        world.close()


# -- sign-in, session, security ------------------------------------------------------------------


def test_sign_in_with_a_temporary_password_forces_its_change(portal: Portal) -> None:
    visitor = portal.signed_in()
    home = visitor.get("/")
    assert "Claire Martin" in home and "Mes documents" in home
    # the new password works and the temporary one no longer does
    visitor.follow(visitor.post("/deconnexion"))
    again = portal.visitor()
    again.get("/connexion")
    assert again.post("/connexion", {"identifier": INS, "password": PASSWORD}).status_code == 302


def test_pages_are_protected_by_headers_and_cookie_flags(portal: Portal) -> None:
    visitor = portal.visitor()
    response = visitor.client.get(f"{PORTAL}/connexion")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    assert response.headers["Cache-Control"] == "no-store" and response.headers["X-Frame-Options"] == "DENY"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/fhir/mon-dmp" in cookie
    html = response.get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "no inline script"
    assert ' style="' not in html and "onclick" not in html
    for asset in re.findall(r'(?:href|src)="(/fhir/mon-dmp/static/[^"]+)"', html):
        assert visitor.client.get(asset).status_code == 200, asset
    assert 'href="/fhir/mon-dmp/static/portal/portal.css"' in html


def test_an_https_base_makes_the_cookie_secure(tmp_path: Path) -> None:
    world = World(tmp_path, base_url="https://dmp.example.org/fhir")
    try:
        response = create_app(service=world.service).test_client().get(f"{PORTAL}/connexion")
        assert "Secure" in response.headers["Set-Cookie"]
    finally:
        world.close()


def test_a_page_without_a_session_goes_to_sign_in(portal: Portal) -> None:
    for path in ("/", "/documents", "/acces", "/historique", "/alertes", "/telechargement", "/fermeture"):
        response = portal.visitor().client.get(f"{PORTAL}{path}")
        assert response.status_code == 302 and response.headers["Location"].endswith("/mon-dmp/connexion")
        assert "Set-Cookie" not in response.headers  # no session is kept for a visitor sent away


def test_wrong_passwords_lock_the_account_with_one_message(portal: Portal) -> None:
    portal.account(INS, EMAIL)
    visitor = portal.visitor()
    visitor.get("/connexion")
    for _ in range(3):
        response = visitor.post("/connexion", {"identifier": INS, "password": "pas le bon mot de passe"})
        assert response.status_code == 401
        assert "bloqué pendant 15 minutes" in response.get_data(as_text=True)
    # locked: even the right temporary password is refused, with the same message, and no code is sent
    locked = visitor.post("/connexion", {"identifier": INS, "password": PASSWORD})
    assert locked.status_code == 401 and "bloqué pendant 15 minutes" in locked.get_data(as_text=True)
    assert portal.sink.to(EMAIL) == []


def test_a_wrong_code_is_refused(portal: Portal) -> None:
    temporary = portal.account(INS, EMAIL)
    visitor = portal.visitor()
    visitor.get("/connexion")
    visitor.follow(visitor.post("/connexion", {"identifier": INS, "password": temporary}))
    refused = visitor.post("/connexion/code", {"code": "000000"})
    assert refused.status_code == 401 and "non reconnu" in refused.get_data(as_text=True)


def test_a_form_without_its_csrf_token_is_refused_and_does_nothing(portal: Portal) -> None:
    doc = portal.world.seed_document(portal.pid)
    visitor = portal.signed_in()
    visitor.get(f"/documents/{doc}")
    for form in ({"masquer": "1"}, {"masquer": "1", "csrf": "forged"}):
        response = visitor.client.post(f"{PORTAL}/documents/{doc}/masquage", data=form)
        assert response.status_code == 403 and "jeton de sécurité" in response.get_data(as_text=True)
    stored = portal.world.store.read("DocumentReference", doc, OPEN_SCOPE)
    assert stored is not None and MASKED_FROM_PROFESSIONALS not in str(stored.json())


def test_the_login_form_needs_its_csrf_token_too(portal: Portal) -> None:
    visitor = portal.visitor()
    visitor.get("/connexion")
    response = visitor.post("/connexion", {"identifier": INS, "password": PASSWORD}, csrf=False)
    assert response.status_code == 403
    assert portal.visitor().client.post(f"{PORTAL}/connexion", data={"identifier": INS}).status_code == 403


def test_an_idle_session_expires_and_its_forms_do_nothing(portal: Portal) -> None:
    doc = portal.world.seed_document(portal.pid)
    visitor = portal.signed_in()
    visitor.get(f"/documents/{doc}")
    portal.clock.now += portal.world.config.portal_idle_seconds + 1
    response = visitor.post(f"/documents/{doc}/masquage", {"masquer": "1"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/mon-dmp/connexion")
    assert "Votre session a expiré" in visitor.follow(response)
    stored = portal.world.store.read("DocumentReference", doc, OPEN_SCOPE)
    assert stored is not None and MASKED_FROM_PROFESSIONALS not in str(stored.json())
    # and a page is no longer shown
    assert visitor.client.get(f"{PORTAL}/documents").status_code == 302


def test_activity_keeps_the_session_alive(portal: Portal) -> None:
    visitor = portal.signed_in()
    for _ in range(3):
        portal.clock.now += portal.world.config.portal_idle_seconds - 60
        visitor.get("/documents")


def test_sign_out_ends_the_session(portal: Portal) -> None:
    visitor = portal.signed_in()
    cookie = visitor.client.get_cookie(COOKIE_NAME, path="/fhir/mon-dmp")
    assert cookie is not None
    html = visitor.follow(visitor.post("/deconnexion"))
    assert "Vous êtes déconnecté" in html
    replay = portal.visitor()
    replay.client.set_cookie(COOKIE_NAME, cookie.value, path="/fhir/mon-dmp")
    assert replay.client.get(f"{PORTAL}/documents").status_code == 302


def test_a_session_cookie_planted_before_login_is_not_the_signed_in_one(portal: Portal) -> None:
    visitor = portal.visitor()
    visitor.get("/connexion")
    before = visitor.client.get_cookie(COOKIE_NAME, path="/fhir/mon-dmp")
    assert before is not None
    signed = portal.signed_in()
    after = signed.client.get_cookie(COOKIE_NAME, path="/fhir/mon-dmp")
    assert after is not None and after.value != before.value


# -- documents -------------------------------------------------------------------------------------


def test_documents_are_listed_filtered_and_paged_without_what_is_hidden_from_me(portal: Portal) -> None:
    world = portal.world
    for day in range(1, 13):
        world.seed_document(portal.pid, date=f"2024-01-{day:02d}T10:00:00Z")
    synthesis_class = [{"coding": [{"system": CLASS_SYSTEM, "code": "11"}]}]
    world.seed_document(portal.pid, SYNTHESE, date="2023-06-01T10:00:00Z", doc_id="synthese", category=synthesis_class)
    world.seed_document(portal.pid, labels=(INVISIBLE_TO_PATIENT,), doc_id="secret", date="2024-02-01T10:00:00Z")
    visitor = portal.signed_in()
    html = visitor.get("/documents")
    assert "13 documents." in html and "secret" not in html
    assert html.count('href="/fhir/mon-dmp/documents/doc-') == 10
    following = re.search(r'href="([^"]+)" rel="next"', html)
    assert following
    second = visitor.get(following.group(1).replace("&amp;", "&").removeprefix(PORTAL))
    assert "synthese" in second and "secret" not in second
    synthesis = visitor.get(f"/documents?categorie={CLASS_SYSTEM}%7C11")
    assert "1 document." in synthesis and "Synthèse" in synthesis
    dated = visitor.get("/documents?du=2024-01-05&au=2024-01-06")
    assert "2 documents." in dated
    assert visitor.client.get(f"{PORTAL}/documents/secret").status_code == 404


def test_a_cda_opens_rendered_in_a_sandboxed_frame_and_the_read_is_in_the_trail(portal: Portal) -> None:
    cda = make_cda(title="Compte rendu de consultation").encode()
    doc = portal.world.seed_document(portal.pid, content=cda, content_type="text/xml", with_binary=True)
    visitor = portal.signed_in()
    page = visitor.get(f"/documents/{doc}")
    assert f'<iframe class="viewer" sandbox src="/fhir/mon-dmp/documents/{doc}/contenu"' in page
    content = visitor.client.get(f"{PORTAL}/documents/{doc}/contenu")
    assert content.status_code == 200 and content.mimetype == "text/html"
    assert content.headers["Content-Security-Policy"].startswith("sandbox;")
    assert "frame-ancestors 'self'" in content.headers["Content-Security-Policy"]
    assert "Compte rendu de consultation" in content.get_data(as_text=True)
    read = [
        e
        for e in portal.trail()
        if any((x.get("what") or {}).get("reference", "").startswith(f"Binary/bin-{doc}") for x in e.get("entity", []))
    ]
    assert read and read[0]["agent"][0]["altId"] == INS


def test_a_pdf_is_sent_as_it_is(portal: Portal) -> None:
    pdf = b"%PDF-1.4 a tiny pdf"
    doc = portal.world.seed_document(portal.pid, content=pdf, content_type="application/pdf")
    visitor = portal.signed_in()
    assert "(PDF)" in visitor.get(f"/documents/{doc}")
    content = visitor.client.get(f"{PORTAL}/documents/{doc}/contenu")
    assert content.status_code == 200 and content.mimetype == "application/pdf" and content.data == pdf


def test_masking_hides_a_document_from_professionals_and_unmasking_shows_it(portal: Portal) -> None:
    world = portal.world
    world.seed_consent("access", INS, (IDNATPS_SYSTEM, DR))
    doc = world.seed_document(portal.pid)
    visitor = portal.signed_in()
    assert portal.doctor().ids(f"DocumentReference?patient={portal.pid}") == {doc}
    visitor.get(f"/documents/{doc}")
    html = visitor.follow(visitor.post(f"/documents/{doc}/masquage", {"masquer": "1"}))
    assert "Document masqué aux professionnels" in html and "Rendre visible aux professionnels" in html
    assert portal.doctor().ids(f"DocumentReference?patient={portal.pid}") == set()
    visitor.follow(visitor.post(f"/documents/{doc}/masquage", {"masquer": "0"}))
    assert portal.doctor().ids(f"DocumentReference?patient={portal.pid}") == {doc}


def test_archiving_and_unarchiving(portal: Portal) -> None:
    doc = portal.world.seed_document(portal.pid)
    visitor = portal.signed_in()
    visitor.get(f"/documents/{doc}")
    assert "Document archivé" in visitor.follow(visitor.post(f"/documents/{doc}/archivage", {"archiver": "1"}))
    assert "0 documents." in visitor.get("/documents?archives=exclure")
    assert "Archivé</span>" in visitor.get("/documents")
    visitor.get(f"/documents/{doc}")
    visitor.follow(visitor.post(f"/documents/{doc}/archivage", {"archiver": "0"}))
    assert "1 document." in visitor.get("/documents?archives=exclure")


def test_adding_my_own_document(portal: Portal) -> None:
    visitor = portal.signed_in()
    form_page = visitor.get("/documents/ajouter")
    types = re.findall(r'<option value="([^"]+)">', form_page)
    assert types, "the class-90 types are offered"
    refused = visitor.post("/documents/ajouter", {"type": types[0], "titre": ""})
    assert refused.status_code == 422
    visitor.get("/documents/ajouter")
    upload = (io.BytesIO(b"%PDF-1.4 mine"), "v.pdf", "application/pdf")
    data = {"type": types[0], "titre": "Mes vaccins", "fichier": upload}
    html = visitor.follow(visitor.post("/documents/ajouter", data, content_type="multipart/form-data"))
    assert "Document ajouté" in html and "Vous (patient)" in html and "Mes vaccins" in html
    found = portal.world.patient(INS).get(f"DocumentReference?patient={portal.pid}").get_json()
    doc = found["entry"][0]["resource"]
    assert doc["author"] == [{"reference": f"Patient/{portal.pid}"}]
    assert doc["category"][0]["coding"][0]["code"] == "90"


def test_adding_a_file_of_another_type_is_refused(portal: Portal) -> None:
    visitor = portal.signed_in()
    types = re.findall(r'<option value="([^"]+)">', visitor.get("/documents/ajouter"))
    data = {"type": types[0], "titre": "page", "fichier": (io.BytesIO(b"<script>"), "x.html", "text/html")}
    response = visitor.post("/documents/ajouter", data, content_type="multipart/form-data")
    assert response.status_code == 422 and "pas accepté" in response.get_data(as_text=True)


# -- who may see my DMP ----------------------------------------------------------------------------


def test_granting_renewing_and_revoking_a_professional_found_in_the_directory(portal: Portal) -> None:
    visitor = portal.signed_in()
    by_name = visitor.get("/acces?recherche=Dupont")
    assert "Dr Jean Dupont" in by_name and DR in by_name and OTHER_DR not in by_name
    assert "Dr Jean Bernard" in visitor.get(f"/acces?recherche={OTHER_DR}")
    assert portal.doctor().get(f"DocumentReference?patient={portal.pid}").status_code == 403
    visitor.get("/acces?recherche=Dupont")
    html = visitor.follow(visitor.post("/acces/autoriser", {"idnatps": DR}))
    assert "Dr Jean Dupont : autorisé(e)" in html, re.findall(r'class="notice"[^<]*', html)
    assert portal.doctor().get(f"DocumentReference?patient={portal.pid}").status_code == 200
    consent_id = re.search(r'/acces/([^/"]+)/renouveler', html)
    assert consent_id
    html = visitor.follow(visitor.post(f"/acces/{consent_id.group(1)}/renouveler"))
    assert "Autorisation renouvelée" in html
    html = visitor.follow(visitor.post(f"/acces/{consent_id.group(1)}/retirer"))
    assert "Décision retirée" in html and "Aucun professionnel autorisé" in html
    assert portal.doctor().get(f"DocumentReference?patient={portal.pid}").status_code == 403


def test_a_professional_outside_the_directory_is_not_granted(portal: Portal) -> None:
    visitor = portal.signed_in()
    visitor.get("/acces")
    html = visitor.follow(visitor.post("/acces/autoriser", {"idnatps": "899999999999"}))
    assert "pas dans l&#39;annuaire" in html


def test_blocking_a_professional_denies_even_an_emergency(portal: Portal) -> None:
    visitor = portal.signed_in()
    visitor.get("/acces")
    html = visitor.follow(visitor.post("/acces/bloquer", {"idnatps": OTHER_DR}))
    assert "bloqué(e)" in html and "Débloquer" in html
    emergency = portal.doctor(OTHER_DR, purpose=BREAK_THE_GLASS)
    assert emergency.get(f"DocumentReference?patient={portal.pid}").status_code == 403


def test_designating_and_changing_the_medecin_traitant(portal: Portal) -> None:
    world = portal.world
    world.seed_consent("access", INS, (IDNATPS_SYSTEM, DR))
    world.seed_consent("access", INS, (IDNATPS_SYSTEM, OTHER_DR))
    visitor = portal.signed_in()
    granted = visitor.get("/acces")  # Consents naming them by idNatPs only: named from the directory
    assert "<strong>Dr Jean Dupont</strong>" in granted and "<strong>Dr Jean Bernard</strong>" in granted
    html = visitor.follow(visitor.post("/acces/medecin-traitant", {"idnatps": DR}))
    assert "Dr Jean Dupont est désormais votre médecin traitant" in html
    html = visitor.follow(visitor.post("/acces/medecin-traitant", {"idnatps": OTHER_DR}))
    assert re.search(r'id="medecin-traitant"><strong>Dr Jean Bernard', html)
    consents = world.patient(INS).get(f"Consent?patient:identifier={INS_SYSTEM}|{INS}&category=medecin-traitant")
    assert consents.get_json()["total"] == 1


def test_opposing_and_allowing_emergency_access(portal: Portal) -> None:
    visitor = portal.signed_in()
    visitor.get("/acces")
    html = visitor.follow(visitor.post("/acces/urgence", {"motif": BREAK_THE_GLASS, "autoriser": "0"}))
    assert "opposition enregistrée" in html
    emergency = portal.doctor(purpose=BREAK_THE_GLASS)
    assert emergency.get(f"DocumentReference?patient={portal.pid}").status_code == 403
    visitor.follow(visitor.post("/acces/urgence", {"motif": BREAK_THE_GLASS, "autoriser": "1"}))
    assert emergency.get(f"DocumentReference?patient={portal.pid}").status_code == 200


def test_representatives_are_shown_read_only(portal: Portal) -> None:
    portal.world.seed_consent(REPRESENTATIVE, INS, (INS_SYSTEM, INS_REP))
    html = portal.signed_in().get("/acces")
    assert INS_REP in html and "ne se modifient pas ici" in html


# -- history, alerts, download, closure ------------------------------------------------------------


def test_the_history_shows_who_read_what_and_flags_emergencies(portal: Portal) -> None:
    portal.world.seed_consent("access", INS, (IDNATPS_SYSTEM, DR))
    doc = portal.world.seed_document(portal.pid)
    assert portal.doctor(name="Dr Jean Dupont").get(f"DocumentReference/{doc}").status_code == 200
    assert portal.doctor(OTHER_DR, purpose=BREAK_THE_GLASS).get(f"DocumentReference/{doc}").status_code == 200
    visitor = portal.signed_in()
    html = visitor.get("/historique")
    assert "Dr Jean Dupont" in html and f"DocumentReference/{doc}" in html and "Médecin" in html
    assert 'class="emergency"' in html and "Accès en urgence" in html
    mine = visitor.get(f"/historique?professionnel={DR}")
    assert "Dr Jean Dupont" in mine and 'class="emergency"' not in mine
    logins = visitor.get("/historique?connexions=1")
    assert "connexion</span>" in logins and "Dr Jean Dupont" not in logins
    assert "0 événement" in visitor.get("/historique?au=2000-01-01")


def test_alerts_on_and_off(portal: Portal) -> None:
    visitor = portal.signed_in()
    assert EMAIL in visitor.get("/alertes")  # suggested from the account
    html = visitor.follow(visitor.post("/alertes", {"adresse": EMAIL}))
    assert "Alerte activée" in html, re.findall(r'class="notice"[^<]*', html)
    subscription = re.search(r'/alertes/([^"]+)"', html)
    assert subscription
    html = visitor.follow(visitor.post(f"/alertes/{subscription.group(1)}", {"action": "desactiver"}))
    stored = portal.world.store.read("Subscription", subscription.group(1), OPEN_SCOPE)
    assert stored is not None and stored.json()["status"] == "off" and "désactivée" in html
    visitor.follow(visitor.post(f"/alertes/{subscription.group(1)}", {"action": "activer"}))
    stored = portal.world.store.read("Subscription", subscription.group(1), OPEN_SCOPE)
    assert stored is not None and stored.json()["status"] == "active"
    html = visitor.follow(visitor.post(f"/alertes/{subscription.group(1)}", {"action": "supprimer"}))
    assert "Aucune alerte" in html
    gone = visitor.follow(visitor.post(f"/alertes/{subscription.group(1)}", {"action": "activer"}))
    assert "La modification a été refusée : ce que vous demandez a été supprimé (détail : " in gone  # in French


def test_download_the_chosen_parts_as_a_zip(portal: Portal) -> None:
    portal.world.seed_document(portal.pid, content=b"bonjour")
    visitor = portal.signed_in()
    visitor.get("/telechargement")
    assert visitor.post("/telechargement", {}).status_code == 422
    response = visitor.post("/telechargement", {"part": ["documents", "trail"]})
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    names = zipfile.ZipFile(io.BytesIO(response.data)).namelist()
    assert "manifest.json" in names and "trail/AuditEvent.ndjson" in names
    assert any(n.startswith("documents/") for n in names) and not any(n.startswith("authorisations/") for n in names)


def test_closing_needs_a_confirmation_then_reopening(portal: Portal) -> None:
    portal.world.seed_consent("access", INS, (IDNATPS_SYSTEM, DR))
    visitor = portal.signed_in()
    assert "Fermer mon DMP" in visitor.get("/fermeture")
    assert visitor.post("/fermeture", {"motif": "test"}).status_code == 422
    assert portal.world.service.store.read("Patient", portal.pid, OPEN_SCOPE).json()["active"] is True  # type: ignore[union-attr]
    html = visitor.follow(visitor.post("/fermeture", {"motif": "je déménage", "confirmation": "oui"}))
    assert "Votre DMP est fermé" in html and "Rouvrir mon DMP" in html
    assert portal.doctor().get(f"DocumentReference?patient={portal.pid}").status_code == 403
    html = visitor.follow(visitor.post("/fermeture", {"confirmation": "oui"}))
    assert "Votre DMP est rouvert" in html
    assert portal.doctor().get(f"DocumentReference?patient={portal.pid}").status_code == 200


# -- a legal representative ------------------------------------------------------------------------


def test_a_representative_acts_for_the_minor_they_name(portal: Portal) -> None:
    world = portal.world
    minor = world.seed_patient(
        INS_MINOR, birth_date=f"{time.gmtime().tm_year - 10}-01-01", name=[{"family": "Martin", "given": ["Léo"]}]
    )
    world.seed_consent(REPRESENTATIVE, INS_MINOR, (INS_SYSTEM, INS_REP))
    shown = world.seed_document(minor, doc_id="carnet")
    world.seed_document(minor, labels=(INVISIBLE_TO_REPRESENTATIVES,), doc_id="confidentiel")
    visitor = portal.signed_in(INS_REP, REP_EMAIL, role="LEGREP", patient=INS_MINOR)
    home = visitor.get("/")
    assert "Représentant légal, pour <strong>Léo Martin</strong>" in home
    documents = visitor.get("/documents")
    assert shown in documents and "confidentiel" not in documents


def test_a_representative_must_name_the_minor(portal: Portal) -> None:
    temporary = portal.account(INS_REP, REP_EMAIL, role="LEGREP")
    visitor = portal.visitor()
    visitor.get("/connexion")
    response = visitor.post("/connexion", {"identifier": INS_REP, "password": temporary})
    assert response.status_code == 400 and "names the patient they act for" in response.get_data(as_text=True)


def test_a_representative_of_someone_else_is_refused_after_the_code(portal: Portal) -> None:
    portal.world.seed_patient(INS_MINOR, birth_date=f"{time.gmtime().tm_year - 10}-01-01")
    visitor, html = portal.sign_in(INS_REP, REP_EMAIL, "LEGREP", INS_MINOR)  # no Consent names them (R8)
    assert "L&#39;accès de ce patient est refusé" in html and "Se déconnecter" not in html
    assert visitor.client.get(f"{PORTAL}/documents").status_code == 302
