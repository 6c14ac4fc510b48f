"""« Mon DMP » end to end: headless Chromium (Debian's) against a real ``dmp-server serve`` process.

A patient signs in with the one-time code read from the mail the real SMTP sink received, changes
the temporary password, opens a CDA, hides it — and a professional's search, with a real token, no
longer finds it —, grants and revokes a professional, opposes emergency access, reads the trail
entry of a professional's access, downloads the ZIP; a legal representative acts for a minor; a
form without its CSRF token and an expired session are refused. Every page is saved as a
screenshot under build/screenshots/portal/ (git-ignored).
"""

from __future__ import annotations

import base64
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from tests.browser import PHONE, button, chromium, fresh_directory, screenshot, text_of, wait_for
from tests.conftest import LiveServer, running_server
from tests.portal_support import PASSWORD, Mailbox
from tests.smtp_sink import SmtpSink
from tests.test_cda import make_cda
from tests.test_e2e import _call as http_call

INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
IDNATPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
PROFESSION_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
CLASS_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
CANON = "https://dmp.example.org/fhir"
HL7 = "http://terminology.hl7.org/CodeSystem"
PATIENT = "185067512345491"
PARENT = "170047512345913"
CHILD = "215057512345064"
LATE = "176017512345167"
DR = "810002673899"  # Dr Jean Dupont, who created the DMP
GP = "810000000099"  # Dr Anne Bernard, in the directory
ER = "810000000123"  # an emergency physician


def api(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """One FHIR (or account) request over real HTTP; the status and the JSON answer."""
    status, _, raw = http_call(method, url, body, token=token)
    return status, json.loads(raw) if raw else None


def cda_of(ins: str, title: str) -> bytes:
    """A CDA by Dr Dupont about ``ins`` (the server checks the document says what its metadata say)."""
    return make_cda(
        title=title,
        code='code="11488-4" codeSystem="2.16.840.1.113883.6.1" displayName="CR de consultation"',
        patient_id=f'<id root="1.2.250.1.213.1.4.8" extension="{ins}"/>',
        author_id=f'<id root="1.2.250.1.71.4.2.1" extension="{DR}"/>',
    ).encode()


class Scene:
    """The record, directory and accounts of the browser tests, written through the API."""

    def __init__(self, server: LiveServer):
        self.server = server
        self.base = server.base_url
        self.admin = server.token("ADM")

    def doctor(self, idnatps: str, ins: str, **claims: Any) -> str:
        return self.server.token("HCP", idnatps=idnatps, profession="10", person_id=ins, **claims)

    def practitioner(self, idnatps: str, given: str, family: str) -> None:
        status, _ = api(
            "POST",
            f"{self.base}/Practitioner",
            {
                "resourceType": "Practitioner",
                "identifier": [{"system": IDNATPS_SYSTEM, "value": idnatps}],
                "name": [{"prefix": ["Dr"], "given": [given], "family": family}],
                "qualification": [{"code": {"coding": [{"system": PROFESSION_SYSTEM, "code": "10"}]}}],
            },
            self.admin,
        )
        assert status == 201

    def record(self, ins: str, given: str, family: str, birth: str, *consents: dict[str, Any]) -> str:
        """A DMP created by Dr Dupont (who is granted access, R16), with ``consents`` (a minor's
        legal representative, R20) in the same transaction; its Patient id."""
        patient = {
            "resourceType": "Patient",
            "identifier": [{"system": INS_SYSTEM, "value": ins}],
            "name": [{"family": family, "given": [given]}],
            "birthDate": birth,
        }
        entries = [
            {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}} for r in (patient, *consents)
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        status, answer = api("POST", f"{self.base}/", bundle, self.doctor(DR, ins))
        assert status == 200, answer
        return str(answer["entry"][0]["response"]["location"].split("Patient/")[1].split("/")[0])

    def document(self, pid: str, ins: str, title: str, content: bytes, media_type: str, date: str) -> str:
        doc = {
            "resourceType": "DocumentReference",
            "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
            "category": [{"coding": [{"system": CLASS_SYSTEM, "code": "10"}]}],
            "subject": {"reference": f"Patient/{pid}"},
            "date": date,
            "author": [{"identifier": {"system": IDNATPS_SYSTEM, "value": DR}, "display": "Dr Jean Dupont"}],
            "custodian": {"display": "Centre hospitalier de Bordeaux"},
            "description": title,
            "content": [
                {"attachment": {"contentType": media_type, "title": title, "data": base64.b64encode(content).decode()}}
            ],
        }
        status, created = api("POST", f"{self.base}/DocumentReference", doc, self.doctor(DR, ins))
        assert status == 201, created
        return str(created["id"])

    def account(self, ins: str, email: str, role: str = "PAT") -> str:
        status, created = api(
            "POST", f"{self.base}/auth/accounts", {"ins": ins, "email": email, "role": role}, self.admin
        )
        assert status == 201, created
        return str(created["temporary_password"])

    def documents_seen_by(self, token: str, pid: str) -> set[str]:
        status, bundle = api("GET", f"{self.base}/DocumentReference?patient={pid}", token=token)
        assert status == 200, bundle
        return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    yield from chromium(tmp_path_factory.mktemp("chromium-profile"), downloads_dir(tmp_path_factory))


def downloads_dir(factory: pytest.TempPathFactory) -> Path:
    return factory.getbasetemp() / "chromium-downloads"


@pytest.fixture
def browser(driver: webdriver.Chrome) -> webdriver.Chrome:
    """The module's browser with no cookie left from the test before."""
    driver.delete_all_cookies()
    return driver


def portal_url(server: LiveServer, path: str = "/") -> str:
    return f"{server.base_url}/mon-dmp{path}"


def submit_sign_in(driver: webdriver.Chrome, ins: str, password: str, patient: str | None = None) -> None:
    driver.find_element(By.ID, "identifier").send_keys(ins)
    driver.find_element(By.ID, "password").send_keys(password)
    if patient:
        driver.find_element(By.TAG_NAME, "summary").click()
        driver.find_element(By.ID, "patient").send_keys(patient)
    button(driver, "Recevoir mon code").click()
    wait_for(
        lambda: driver.find_elements(By.ID, "code") or driver.find_elements(By.CLASS_NAME, "error"), "the code page"
    )


def enter_code(driver: webdriver.Chrome, mailbox: Mailbox) -> None:
    driver.find_element(By.ID, "code").send_keys(mailbox.next_code())
    button(driver, "Valider").click()


def first_sign_in(
    driver: webdriver.Chrome,
    server: LiveServer,
    ins: str,
    temporary: str,
    email: str,
    patient: str | None = None,
    shots: bool = False,
) -> None:
    """Sign-in with a temporary password: code, forced change, then sign-in with the new one."""
    mailbox = Mailbox(server.mail, email)
    driver.get(portal_url(server, "/connexion"))
    if shots:
        screenshot(driver, "01-connexion")
    submit_sign_in(driver, ins, temporary, patient)
    if shots:
        screenshot(driver, "02-code")
    enter_code(driver, mailbox)
    wait_for(lambda: driver.find_elements(By.ID, "new_password"), "the password page")
    if shots:
        screenshot(driver, "03-nouveau-mot-de-passe")
    driver.find_element(By.ID, "new_password").send_keys(PASSWORD)
    driver.find_element(By.ID, "confirmation").send_keys(PASSWORD)
    button(driver, "Enregistrer").click()
    wait_for(lambda: "Mot de passe changé" in text_of(driver), "the password change")
    submit_sign_in(driver, ins, PASSWORD, patient)
    enter_code(driver, mailbox)
    wait_for(lambda: "Se déconnecter" in text_of(driver) or "refusé" in text_of(driver), "the home page")


def test_a_patient_controls_the_dmp_in_a_browser(
    live_server: LiveServer, browser: webdriver.Chrome, tmp_path_factory: pytest.TempPathFactory
) -> None:
    scene = Scene(live_server)
    scene.practitioner(DR, "Jean", "Dupont")
    scene.practitioner(GP, "Anne", "Bernard")
    pid = scene.record(PATIENT, "Claire", "Martin", "1985-06-12")
    cda = scene.document(
        pid,
        PATIENT,
        "Compte rendu de consultation",
        cda_of(PATIENT, "Consultation du 3 mars"),
        "text/xml",
        "2024-03-03T10:00:00Z",
    )
    other = scene.document(pid, PATIENT, "Résultats", b"Glycemie : 0,95 g/l", "text/plain", "2024-02-01T09:00:00Z")
    email = "claire.martin@example.org"
    first_sign_in(browser, live_server, PATIENT, scene.account(PATIENT, email), email, shots=True)
    assert "Claire Martin" in text_of(browser)
    screenshot(browser, "04-accueil")

    # My documents: the list, then the CDA, rendered by the server inside a sandboxed frame
    browser.get(portal_url(live_server, "/documents"))
    assert "2 documents." in text_of(browser) and "Centre hospitalier de Bordeaux" in text_of(browser)
    screenshot(browser, "05-documents")
    screenshot(browser, "05-documents-telephone", PHONE)
    browser.find_element(By.CSS_SELECTOR, f"a[href$='/documents/{cda}']").click()
    frame = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "iframe.viewer"), "the document frame")[0]
    assert frame.get_attribute("sandbox") == ""
    browser.switch_to.frame(frame)
    wait_for(lambda: "Consultation du 3 mars" in text_of(browser), "the rendered CDA")
    browser.switch_to.default_content()
    screenshot(browser, "06-document")

    # Who may see my DMP: Dr Bernard, found in the directory, is granted access
    bernard = scene.doctor(GP, PATIENT)
    assert api("GET", f"{scene.base}/DocumentReference?patient={pid}", token=bernard)[0] == 403
    browser.get(portal_url(live_server, "/acces"))
    browser.find_element(By.ID, "recherche").send_keys("Bernard")
    button(browser, "Rechercher dans l'annuaire").click()
    wait_for(lambda: browser.find_elements(By.ID, "annuaire"), "the directory")
    screenshot(browser, "07-annuaire")
    button(browser, "Autoriser Dr Anne Bernard").click()
    wait_for(lambda: "Dr Anne Bernard : autorisé(e)" in text_of(browser), "the grant")
    assert cda in scene.documents_seen_by(bernard, pid)
    screenshot(browser, "08-acces")

    # Hidden from professionals (R11): Dr Bernard's search, with his real token, no longer finds it
    browser.get(portal_url(live_server, f"/documents/{cda}"))
    button(browser, "Masquer aux professionnels").click()
    wait_for(lambda: "Document masqué aux professionnels" in text_of(browser), "the masking")
    assert scene.documents_seen_by(bernard, pid) == {other}

    # ... and revoked: refused again
    browser.get(portal_url(live_server, "/acces"))
    button(browser, "Retirer l'autorisation de Dr Anne Bernard").click()
    wait_for(lambda: "Décision retirée" in text_of(browser), "the revocation")
    assert api("GET", f"{scene.base}/DocumentReference?patient={pid}", token=bernard)[0] == 403

    # Emergency access opposed (R5): a break-the-glass read by an emergency physician is refused
    emergency = scene.server.token("HCP", idnatps=ER, profession="10", person_id=PATIENT, purpose="bris_de_glace")
    browser.find_element(By.ID, "urgence-bris_de_glace").click()
    wait_for(lambda: "opposition enregistrée" in text_of(browser), "the opposition")
    assert api("GET", f"{scene.base}/DocumentReference?patient={pid}", token=emergency)[0] == 403

    # The trail: Dr Dupont's search is there, with his name, profession and purpose
    assert scene.documents_seen_by(scene.doctor(DR, PATIENT, name="Dr Jean Dupont"), pid)
    browser.get(portal_url(live_server, f"/historique?professionnel={DR}"))
    rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#historique tbody tr")]
    assert any("Dr Jean Dupont" in row and "DocumentReference" in row and "Médecin" in row for row in rows), rows
    browser.get(portal_url(live_server, "/historique"))
    screenshot(browser, "09-historique")

    # Alerts, then the download: a ZIP with the parts chosen
    browser.get(portal_url(live_server, "/alertes"))
    button(browser, "Activer l'alerte").click()
    wait_for(lambda: "Alerte activée" in text_of(browser), "the alert")
    screenshot(browser, "10-alertes")
    downloads = fresh_directory(downloads_dir(tmp_path_factory))
    browser.get(portal_url(live_server, "/telechargement"))
    screenshot(browser, "11-telechargement")
    browser.find_element(By.CSS_SELECTOR, "input[value=authorisations]").click()  # left out
    button(browser, "Télécharger l'archive").click()
    archive = wait_for(lambda: [p for p in downloads.glob("*.zip")], "the ZIP download")[0]
    names = zipfile.ZipFile(archive).namelist()
    assert "manifest.json" in names and "trail/AuditEvent.ndjson" in names
    assert any(n.startswith("documents/") for n in names) and not any(n.startswith("authorisations/") for n in names)

    # My own document (class 90), uploaded from the computer
    upload = downloads / "vaccins.pdf"
    upload.write_bytes(b"%PDF-1.4 carnet de vaccination")
    browser.get(portal_url(live_server, "/documents/ajouter"))
    Select(browser.find_element(By.ID, "type")).select_by_index(1)
    browser.find_element(By.ID, "titre").send_keys("Mes vaccinations")
    browser.find_element(By.ID, "fichier").send_keys(str(upload))
    screenshot(browser, "12-ajouter-un-document")
    button(browser, "Ajouter").click()
    wait_for(lambda: "Document ajouté à votre DMP" in text_of(browser), "the new document")
    assert "Vous (patient)" in text_of(browser) and "Mes vaccinations" in text_of(browser)

    browser.get(portal_url(live_server, "/fermeture"))
    screenshot(browser, "13-fermeture")
    button(browser, "Se déconnecter").click()
    wait_for(lambda: "Vous êtes déconnecté" in text_of(browser), "the sign-out")
    browser.get(portal_url(live_server, "/documents"))
    assert browser.find_elements(By.ID, "identifier"), "signed out: back to the sign-in page"


def test_a_representative_acts_for_a_minor(live_server: LiveServer, browser: webdriver.Chrome) -> None:
    scene = Scene(live_server)
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": f"{CANON}/CodeSystem/dmp-consent-type", "code": "legal-representative"}]}],
        "patient": {"identifier": {"system": INS_SYSTEM, "value": CHILD}},
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:5b0e8a64-3f0e-4c39-9d3c-7e0e3a7c0a01"}],
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            "period": {"end": f"{time.gmtime().tm_year + 9}-04-02"},
            "actor": [
                {
                    "role": {"coding": [{"system": f"{HL7}/v3-ParticipationType", "code": "IRCP"}]},
                    "reference": {"identifier": {"system": INS_SYSTEM, "value": PARENT}, "display": "Marc Petit"},
                }
            ],
        },
    }
    child = scene.record(CHILD, "Léo", "Petit", f"{time.gmtime().tm_year - 9}-04-02", consent)
    scene.document(child, CHILD, "Carnet de vaccination", b"BCG, DTP", "text/plain", "2024-01-10T10:00:00Z")
    email = "marc.petit@example.org"
    first_sign_in(browser, live_server, PARENT, scene.account(PARENT, email, "LEGREP"), email, patient=CHILD)
    assert "Représentant légal, pour Léo Petit" in text_of(browser)
    screenshot(browser, "14-representant-accueil")
    browser.get(portal_url(live_server, "/documents"))
    assert "1 document." in text_of(browser)
    browser.get(portal_url(live_server, "/acces"))
    assert "Marc Petit" in text_of(browser)


def test_a_form_without_its_csrf_token_is_refused(live_server: LiveServer, browser: webdriver.Chrome) -> None:
    scene = Scene(live_server)
    ins = "292027512345224"
    pid = scene.record(ins, "Julie", "Roux", "1992-02-20")
    doc = scene.document(pid, ins, "Bilan", b"RAS", "text/plain", "2024-05-05T10:00:00Z")
    email = "julie.roux@example.org"
    first_sign_in(browser, live_server, ins, scene.account(ins, email), email)
    browser.get(portal_url(live_server, f"/documents/{doc}"))
    browser.execute_script("document.querySelectorAll('input[name=csrf]').forEach(function (e) { e.remove(); })")
    button(browser, "Masquer aux professionnels").click()
    wait_for(lambda: "Demande refusée" in text_of(browser), "the refusal")
    assert "jeton de sécurité" in text_of(browser)
    screenshot(browser, "15-csrf-refuse")
    assert doc in scene.documents_seen_by(scene.doctor(DR, ins), pid), "nothing was masked"


def test_an_expired_session_is_refused(tmp_path: Path, session_smtp_sink: SmtpSink, browser: webdriver.Chrome) -> None:
    """A server whose sessions end after 8 idle seconds: a form sent later does nothing."""
    with running_server(tmp_path / "data", session_smtp_sink, DMP_PORTAL_IDLE_SECONDS="8") as server:
        scene = Scene(server)
        pid = scene.record(LATE, "Paul", "Durand", "1976-01-30")
        doc = scene.document(pid, LATE, "Bilan", b"RAS", "text/plain", "2024-05-05T10:00:00Z")
        email = "paul.durand@example.org"
        first_sign_in(browser, server, LATE, scene.account(LATE, email), email)
        browser.get(portal_url(server, f"/documents/{doc}"))
        time.sleep(9)  # idle past the timeout (a wait, not a measurement)
        button(browser, "Masquer aux professionnels").click()
        wait_for(lambda: browser.find_elements(By.ID, "identifier"), "the sign-in page")
        assert "Votre session a expiré" in text_of(browser)
        screenshot(browser, "16-session-expiree")
        assert doc in scene.documents_seen_by(scene.doctor(DR, LATE), pid), "nothing was masked"
