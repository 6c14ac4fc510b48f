"""The FHIR service: everything a request needs, and the extension points capabilities fill.

Built once by the app factory (or a test) and shared by all requests; it runs a request through
access control, its interaction (found by the router, :mod:`fhir_server.fhir.routing`) and the trail.

The machinery (routing, interactions, HTTP) implements FHIR R4 and nothing of the DMP. What the
DMP adds to it — a document sent inline becomes a Binary, a replaced document is superseded, a
DocumentReference's codes are checked, a Subscription's status is the server's, an ITI-65 Bundle
is checked as a whole, a CDA is shown as a page, operations such as ``$dmp-export`` — reaches it
through the few extension points defined here (:class:`Extensions`), registered by the app factory (as HAPI FHIR's
interceptors and operation providers are). So the machinery never imports a capability, and a
capability is one package that imports the machinery.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from fhir_server.fhir.declarations import Declarations
from fhir_server.fhir.inbound import check_body, check_parameters, check_path
from fhir_server.fhir.messages import Download, FhirRequest, FhirResponse, Gatekeeper
from fhir_server.fhir.search.parser import SearchParser
from fhir_server.fhir.sessions import PagingSessions
from fhir_server.fhir.validation import ResourceValidator
from fhir_server.runtime.config import Config
from fhirmodel.errors import FhirError, bad_request
from fhirmodel.indexing import extract_index
from fhirmodel.searchparams import SearchParamRegistry
from fhirmodel.terminology import Terminology
from storage.interface import Store

#: The resource types this server serves; the CapabilityStatement is generated from this list.
SERVED_TYPES: tuple[str, ...] = (
    "AuditEvent",
    "Binary",
    "Bundle",
    "Consent",
    "Device",
    "DocumentReference",
    "List",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Provenance",
    "RelatedPerson",
    "Subscription",
)

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


#: What a write leaves for once it is stored, in its transaction (e.g. supersede what it replaces).
Then = Callable[[], None]


class WriteRule:
    """Rules a capability adds to every write (create, update, patch; plain, conditional, or as a
    Bundle entry), in the order the interactions call them. Each does nothing unless overridden."""

    def admit(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A valid incoming resource with the elements the server decides set by it."""
        return resource

    def prepare_create(
        self, svc: FhirService, req: FhirRequest, resource: dict[str, Any]
    ) -> tuple[dict[str, Any], Then]:
        """A resource about to be created (its id assigned) as it will be stored, and what must be
        stored with it once access control allowed it (ITI-105: the Binaries of inline content)."""
        return resource, _nothing

    def check(self, new: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Refuse (FhirError) what no caller may write; runs before access control."""

    def plan(self, svc: FhirService, req: FhirRequest, new: dict[str, Any] | None, old: dict[str, Any] | None) -> Then:
        """Checks that need access control's verdict first; what they entail, to run once stored."""
        return _nothing


def _nothing() -> None:
    return None


class Submission(Protocol):
    """A transaction Bundle that a capability checks as a whole (an ITI-65 Provide Document Bundle)."""

    def check_resources(self) -> None:
        """Checks of each resource that need no store: run before the store transaction."""

    def validate(self, req: FhirRequest) -> None:
        """Checks of the whole, with its references resolved: run inside the store transaction."""

    def vouches_for(self, entry: BundleEntry) -> bool:
        """Whether the entry's resource, as it will be written, was validated against R4 by these
        checks (the entry's create or update then does not validate it again)."""


class BundleEntry(Protocol):
    """What a Bundle check reads of each entry of a transaction."""

    @property
    def index(self) -> int: ...
    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def full_url(self) -> str | None: ...
    @property
    def resource(self) -> Any: ...
    @property
    def assigned(self) -> str | None:
        """``Type/id`` the entry's resource will have, once identities are assigned."""


class BundleCheck(Protocol):
    def check_batch(self, bundle: dict[str, Any]) -> None:
        """Refuse (400) a batch this capability's profiles say must be a transaction."""

    def submission(self, svc: FhirService, bundle: dict[str, Any], entries: Sequence[BundleEntry]) -> Submission | None:
        """The transaction as this capability checks it, or None when it is not one of its kind."""


class NotShown(Exception):
    """A content the page renderer does not show, and why (said in the 406)."""


class BinaryPage(Protocol):
    """Shows a Binary's content to a person (``Accept`` preferring ``text/html``)."""

    @property
    def policy(self) -> str:
        """The Content-Security-Policy the pages are sent with."""

    def render(self, content_type: str, data: bytes) -> str:
        """The page; NotShown for content it does not render."""


Level = Literal["type", "instance"]
#: An operation's code: the service, the request, and the id of the resource it is invoked on
#: (None for a type-level operation).
Implementation = Callable[["FhirService", FhirRequest, "str | None"], FhirResponse]


@dataclass(frozen=True)
class Operation:
    """One operation: where it is invoked, its OperationDefinition, and its implementation."""

    resource_type: str  # "Resource": on every served type
    name: str  # without the "$"
    definition: str  # OperationDefinition canonical, for the CapabilityStatement
    run: Implementation
    methods: tuple[str, ...] = ("POST",)
    levels: tuple[Level, ...] = ("type",)


@dataclass(frozen=True)
class Extensions:
    """Everything the capabilities registered; the machinery's own behaviour when empty."""

    write_rules: tuple[WriteRule, ...] = ()
    bundle_checks: tuple[BundleCheck, ...] = ()
    binary_page: BinaryPage | None = None
    operations: tuple[Operation, ...] = ()

    def __add__(self, other: Extensions) -> Extensions:
        if self.binary_page is not None and other.binary_page is not None:
            raise ValueError("two capabilities render Binary pages")
        return Extensions(
            self.write_rules + other.write_rules,
            self.bundle_checks + other.bundle_checks,
            self.binary_page or other.binary_page,
            self.operations + other.operations,
        )


@dataclass(frozen=True)
class Route:
    """A routed request: its FHIR interaction (restful-interaction code) and how to run it."""

    interaction: str
    run: Callable[[], FhirResponse]
    public: bool = False  # answered without credentials (the CapabilityStatement)
    resource_type: str | None = None  # the type searched when it is not the path's first (compartments)
    #: What a write checks without the store (validation, parsing), run before the request's store
    #: transaction so that the writer lock of all workers is not held for it; ``run`` does not
    #: depend on it having run (a Bundle entry is only run).
    prepare: Callable[[], None] | None = None


#: Finds the interaction a request asks for; lives above the interactions it names.
Router = Callable[["FhirService", FhirRequest], Route]


@dataclass
class FhirService:
    config: Config
    store: Store
    registry: SearchParamRegistry
    terminology: Terminology
    parser: SearchParser
    validator: ResourceValidator
    gatekeeper: Gatekeeper
    router: Router  # the interaction a request asks for (fhir_server.fhir.routing.route)
    sessions: PagingSessions  # the state behind paging links (fhir_server.fhir.sessions)
    extensions: Extensions = field(default_factory=Extensions)  # the machinery's operations and what capabilities add
    served_types: tuple[str, ...] = SERVED_TYPES
    declarations: Declarations = field(init=False)  # what each type allows (ig/capability)

    def __post_init__(self) -> None:
        self.declarations = Declarations.load(self.config.ig_dir / "capability" / "capability.json", self.served_types)

    def index(self, resource: dict[str, Any]) -> Any:
        return extract_index(self.registry, resource, self.config.base_url)

    def process(self, req: FhirRequest, admit: Callable[[FhirRequest], None] | None = None) -> FhirResponse:
        """A client's request, end to end: access control, the interaction, the trail.

        Credentials are checked first; then ``admit`` completes the request (the HTTP layer reads
        and parses the body there, and negotiates the format), and what every request must be is
        checked (:mod:`fhir_server.fhir.inbound`). So a malformed body without credentials is a 401,
        and with them a refusal in the trail. A write and its AuditEvent land in one transaction;
        a refused or failed request — a 500 included — still leaves its AuditEvent, written after
        the rollback.
        """
        route = self._routed(req)
        interaction = route.interaction if isinstance(route, Route) else "unknown"
        req.interaction = interaction
        if isinstance(route, Route) and route.public:
            self._admit(req, admit)
            return route.run()
        guard = self.gatekeeper.guard(req, interaction)
        req.guard = guard
        try:
            self._admit(req, admit)
            if admit is not None:  # the body is known now: a POST to the base is a batch or a transaction
                route = self._routed(req)
                interaction = route.interaction if isinstance(route, Route) else "unknown"
                req.interaction = interaction
            if isinstance(route, FhirError):
                raise route
            if req.method.upper() in ("GET", "HEAD"):
                response = route.run()
                guard.record(req, interaction, response.status, None)
                return response
            if route.prepare is not None:
                route.prepare()
            with self.store.transaction():
                response = route.run()
                guard.finish()
                guard.record(req, interaction, response.status, None)
                return response
        except FhirError as exc:
            guard.record(req, interaction, exc.status, exc.message)
            raise
        except Exception:
            try:
                guard.record(req, interaction, 500, "the server failed to carry out the request")
            except Exception:
                log.exception("a failed request could not be recorded in the trail")
            raise

    def _admit(self, req: FhirRequest, admit: Callable[[FhirRequest], None] | None) -> None:
        """Complete the request (``admit``) and check what every request must be."""
        if admit is not None:
            admit(req)
        check_path(req.path)
        check_parameters(req.params, self.config.max_parameters, self.config.max_query_length)
        if req.body is not None:
            check_body(req.body)

    def _routed(self, req: FhirRequest) -> Route | FhirError:
        try:
            return self.router(self, req)
        except FhirError as exc:
            return exc

    def handle(self, req: FhirRequest) -> FhirResponse:
        """Carry out a request whose access control is already in place (Bundle entries).

        A Bundle entry holds a resource, never a file: an operation answering with a download is
        refused here (before any of the file is produced) rather than dropped from the response.
        """
        response = self.router(self, req).run()
        if isinstance(response.body, Download):
            raise bad_request(f"{req.path} answers with a file, which a Bundle entry cannot hold: call it directly")
        return response

    def resource_type(self, name: str) -> str:
        if name not in self.served_types:
            raise FhirError(404, f"resource type '{name}' is not served here", "not-supported")
        return name

    @staticmethod
    def resource_id(value: str) -> str:
        if not _ID_RE.match(value):
            raise bad_request(f"'{value}' is not a valid resource id")
        return value
