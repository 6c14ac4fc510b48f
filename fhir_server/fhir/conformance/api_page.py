"""The API described for people and tools, without a token (like ``/metadata``):
``GET {base}/openapi.json`` (OpenAPI 3, :mod:`.openapi`) and ``GET {base}/api``, a page listing
each type's interactions, search parameters and operations.

The page is built on the server from the CapabilityStatement, every value escaped; it loads
nothing (no script, style or image, no CDN) and its Content-Security-Policy forbids all of it.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from flask import Flask, Response

from fhir_server.fhir.capability import capability_of
from fhir_server.fhir.conformance.openapi import openapi_document
from fhir_server.fhir.service import FhirService

PAGE_POLICY = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
_SAFETY = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": PAGE_POLICY}


def register_api_description_routes(app: Flask, svc: FhirService) -> None:
    base = svc.config.base_path
    capability = capability_of(svc)
    document = json.dumps(openapi_document(capability, svc.extensions.operations), ensure_ascii=False).encode()
    page = api_page(capability).encode("utf-8")

    def openapi() -> Response:
        return Response(document, content_type="application/json", headers=_SAFETY)

    def browsable() -> Response:
        return Response(page, content_type="text/html; charset=utf-8", headers=_SAFETY)

    app.add_url_rule(f"{base}/openapi.json", "openapi", openapi, methods=["GET"])
    app.add_url_rule(f"{base}/api", "api_page", browsable, methods=["GET"])


def api_page(capability: dict[str, Any]) -> str:
    rest = capability["rest"][0]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(capability.get('title', 'FHIR API'))}</title></head><body>",
        f"<h1>{escape(capability.get('title', 'FHIR API'))}</h1>",
        f"<p>FHIR {escape(capability['fhirVersion'])} at <code>{escape(capability['implementation']['url'])}</code>."
        ' Machine-readable: <a href="metadata">CapabilityStatement</a>, <a href="openapi.json">OpenAPI</a>.</p>',
        f"<p>{escape(rest.get('security', {}).get('description', ''))}</p>",
        "<h2>Types</h2><ul>",
        *(f'<li><a href="#{escape(r["type"])}">{escape(r["type"])}</a></li>' for r in rest["resource"]),
        "</ul>",
    ]
    for resource in rest["resource"]:
        parts += _type_section(resource)
    parts.append("</body></html>")
    return "\n".join(parts)


def _type_section(resource: dict[str, Any]) -> list[str]:
    rtype = escape(resource["type"])
    interactions = ", ".join(escape(i["code"]) for i in resource.get("interaction", []))
    rows = [
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['type'])}</td>"
        f"<td>{escape(p.get('definition', ''))}</td></tr>"
        for p in resource.get("searchParam", [])
    ]
    section = [
        f'<section id="{rtype}"><h2>{rtype}</h2>',
        f"<p>Interactions: {interactions or 'none'}</p>",
    ]
    for profile in resource.get("supportedProfile", []):
        section.append(f"<p>Supported profile: <code>{escape(profile)}</code></p>")
    section += [
        "<table><caption>Search parameters</caption>",
        "<tr><th>name</th><th>type</th><th>definition</th></tr>",
        *rows,
        "</table>",
    ]
    operations = resource.get("operation", [])
    if operations:
        section.append("<p>Operations:</p><ul>")
        section += [f"<li><code>${escape(o['name'])}</code> ({escape(o['definition'])})</li>" for o in operations]
        section.append("</ul>")
    section.append("</section>")
    return section
