"""A CDA rendered for people: ``GET Binary/[id]`` with ``Accept`` preferring ``text/html``.

Over HTTP in a DMP world (tests/dmp.py): the page is served only for a Binary whose content is a
CDA (XML media type and a ``ClinicalDocument`` root), after the same access check as any Binary
read (hidden → 404), with the content-safety headers of raw content and a policy that lets nothing
run; other content gets the next representation the client accepts, or 406. Each read leaves its
AuditEvent.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from werkzeug.test import TestResponse

from authz.terms import IDNATPS_SYSTEM, MASKED_FROM_PROFESSIONALS, VISIBILITY_SYSTEM
from storage.query import OPEN_SCOPE
from tests.dmp import CR_CONSULTATION, LOINC, World
from tests.paths import SHARED_DATA
from tests.test_cda import make_cda

INS = "180017512345660"
DR, DR_2 = "810000000001", "810000000002"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
HTML = {"Accept": "text/html"}
PDF = b"%PDF-1.4\n% compte rendu\n%%EOF\n"


@pytest.fixture
def pid(world: World) -> str:
    return world.seed_granted(INS, DR, DR_2)


def stored_document(world: World, pid: str, data: bytes, content_type: str, *labels: str) -> str:
    """A document by DR whose content is a Binary holding ``data``; returns the Binary's id."""
    bid = f"b{world.store.history(OPEN_SCOPE, 'Binary', count=1).total}"
    world.store.create(
        {
            "resourceType": "Binary",
            "id": bid,
            "contentType": content_type,
            "data": base64.b64encode(data).decode(),
        }
    )
    world.store.create(
        {
            "resourceType": "DocumentReference",
            "id": f"doc-{bid}",
            "status": "current",
            "type": {"coding": [{"system": LOINC, "code": CR_CONSULTATION}]},
            "subject": {"reference": f"Patient/{pid}"},
            "author": [{"identifier": {"system": IDNATPS_SYSTEM, "value": DR}}],
            "securityLabel": [{"coding": [{"system": VISIBILITY_SYSTEM, "code": label}]} for label in labels],
            "content": [{"attachment": {"contentType": content_type, "url": f"{world.config.base_url}/Binary/{bid}"}}],
        }
    )
    return bid


def cda(**parts: Any) -> bytes:
    return make_cda(**parts).encode()


def page_of(response: TestResponse) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    return response.get_data(as_text=True)


def outcome(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    first: dict[str, Any] = body["issue"][0]
    return first


# -------------------------------------------------------------------------- the page


@pytest.mark.parametrize("accept", [BROWSER, "text/html", "text/html, application/fhir+json;q=0.5"])
@pytest.mark.parametrize("content_type", ["text/xml", "application/xml", "application/hl7-v3+xml"])
def test_a_cda_is_rendered_for_a_client_that_prefers_html(
    world: World, pid: str, accept: str, content_type: str
) -> None:
    bid = stored_document(world, pid, cda(title="Synthèse de sortie"), content_type)
    response = world.doctor(DR, INS).get(f"Binary/{bid}", headers={"Accept": accept})
    page = page_of(response)
    assert page.startswith("<!DOCTYPE html>")
    assert "<h1>Synthèse de sortie</h1>" in page and "DURAND" in page and "<p>RAS</p>" in page
    assert response.headers["ETag"] == 'W/"1"' and response.headers["Vary"] == "Accept"


def test_the_page_is_served_so_that_nothing_in_it_runs(world: World, pid: str) -> None:
    hostile = (
        "<section><title>T</title><text><paragraph>avant<script>alert(1)</script>"
        '<content styleCode="Bold" onclick="alert(2)">gras</content>'
        '<linkHtml href="javascript:alert(3)">lien</linkHtml></paragraph></text></section>'
    )
    data = cda(body=hostile).replace(
        b"?>", b'?>\n<?xml-stylesheet type="text/xsl" href="https://evil.example/x.xsl"?>', 1
    )
    response = world.doctor(DR, INS).get(f"Binary/{stored_document(world, pid, data, 'text/xml')}", headers=HTML)
    page = page_of(response)
    for active in ("<script", "onclick", "javascript:", "xml-stylesheet", "evil.example", "<a "):
        assert active not in page
    assert "<strong>gras</strong>" in page and "lien" in page  # the text stays, the behaviour goes
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    policy = [directive.strip() for directive in response.headers["Content-Security-Policy"].split(";")]
    assert {"sandbox", "default-src 'none'", "script-src 'none'", "style-src 'none'", "frame-ancestors 'none'"} <= set(
        policy
    )
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("name", ["VSM_1.4_2022.01.xml", "AVC-SUNV_2022.01.xml", "eP-MED-DM_2022.01_PosoNonStruct.xml"])
def test_the_ci_sis_examples_are_rendered(world: World, pid: str, name: str) -> None:
    data = (SHARED_DATA / "cda" / name).read_bytes()
    page = page_of(world.doctor(DR, INS).get(f"Binary/{stored_document(world, pid, data, 'text/xml')}", headers=HTML))
    assert "<section>" in page or "corps non structuré" in page


def test_the_read_is_in_the_trail(world: World, pid: str) -> None:
    bid = stored_document(world, pid, cda(), "text/xml")
    before = world.store.history(OPEN_SCOPE, "AuditEvent", count=1).total
    page_of(world.doctor(DR, INS).get(f"Binary/{bid}", headers=HTML))
    events = [s.json() for s in world.store.history(OPEN_SCOPE, "AuditEvent", count=1000).entries]
    assert len(events) == before + 1
    about = [e for e in events if f"Binary/{bid}" in {x.get("what", {}).get("reference") for x in e["entity"]}]
    assert len(about) == 1 and [c["code"] for c in about[0]["subtype"]] == ["read"]
    assert about[0]["outcome"] == "0"


def test_a_304_for_a_page_the_client_has(world: World, pid: str) -> None:
    bid = stored_document(world, pid, cda(), "text/xml")
    response = world.doctor(DR, INS).get(f"Binary/{bid}", headers={**HTML, "If-None-Match": 'W/"1"'})
    assert response.status_code == 304 and response.get_data() == b""


# -------------------------------------------------------------------------- what is not rendered


def test_a_hidden_binary_is_not_found_as_a_page_either(world: World, pid: str) -> None:
    bid = stored_document(world, pid, cda(), "text/xml", MASKED_FROM_PROFESSIONALS)
    colleague = world.doctor(DR_2, INS)
    hidden = outcome(colleague.get(f"Binary/{bid}", headers=HTML), 404)
    absent = outcome(colleague.get("Binary/nowhere", headers=HTML), 404)
    assert (hidden["code"], absent["code"]) == ("not-found", "not-found")
    page_of(world.doctor(DR, INS).get(f"Binary/{bid}", headers=HTML))  # its author sees it


@pytest.mark.parametrize(
    ("data", "content_type", "reason"),
    [
        (PDF, "application/pdf", "it is not an XML document"),
        (b"<Bundle xmlns='http://hl7.org/fhir'/>", "application/xml", "not ClinicalDocument"),
        (make_cda().replace("<code ", "<nocode ").encode(), "text/xml", "ClinicalDocument/code"),
        (cda(), "application/octet-stream", "it is not an XML document"),  # a CDA by content, not by type
    ],
    ids=["pdf", "other-xml", "unusable-cda", "cda-as-octet-stream"],
)
def test_what_is_no_cda_is_not_acceptable_as_html(
    world: World, pid: str, data: bytes, content_type: str, reason: str
) -> None:
    bid = stored_document(world, pid, data, content_type)
    first = outcome(world.doctor(DR, INS).get(f"Binary/{bid}", headers=HTML), 406)
    assert first["code"] == "not-supported"
    assert f"Binary/{bid} ({content_type}) cannot be shown as text/html" in first["diagnostics"]
    assert reason in first["diagnostics"]


def test_other_content_gets_the_next_representation_the_client_accepts(world: World, pid: str) -> None:
    """A browser (HTML first, XML and anything next) reading a PDF gets the FHIR XML it accepts, as
    before; a client that takes HTML or the PDF gets the PDF."""
    bid = stored_document(world, pid, PDF, "application/pdf")
    doctor = world.doctor(DR, INS)
    as_xml = doctor.get(f"Binary/{bid}", headers={"Accept": BROWSER})
    assert as_xml.status_code == 200 and as_xml.headers["Content-Type"].startswith("application/fhir+xml")
    raw = doctor.get(f"Binary/{bid}", headers={"Accept": "text/html, application/pdf;q=0.5"})
    assert raw.status_code == 200 and raw.get_data() == PDF and raw.headers["Content-Type"] == "application/pdf"


def test_fhir_is_answered_when_asked_for(world: World, pid: str) -> None:
    bid = stored_document(world, pid, cda(), "text/xml")
    doctor = world.doctor(DR, INS)
    as_json = doctor.get(f"Binary/{bid}?_format=json", headers=HTML)
    assert as_json.status_code == 200 and as_json.get_json()["resourceType"] == "Binary"
    as_xml = doctor.get(f"Binary/{bid}", headers={"Accept": "application/fhir+xml"})
    assert as_xml.headers["Content-Type"].startswith("application/fhir+xml")
    own = doctor.get(f"Binary/{bid}", headers={"Accept": "text/xml"})  # the document's own type: its bytes (ITI-68)
    assert own.get_data() == cda() and own.headers["Content-Type"] == "text/xml"
    bytes_ = doctor.get(f"Binary/{bid}", headers={"Accept": "application/octet-stream"})
    assert bytes_.get_data() == cda() and bytes_.headers["Content-Type"] == "text/xml"


def test_only_a_binary_is_rendered(world: World, pid: str) -> None:
    """A page is a rendering of a document's content: other resources asked as HTML are not."""
    response = world.doctor(DR, INS).get(f"Patient/{pid}", headers=HTML)
    assert outcome(response, 406)["code"] == "not-supported"
