"""The DMP gatekeeper: from a request's bearer token to its guard.

Token → verified claims → actor → the patient's access state → the policy's decision. What the
guard then does for the request — the query filter, read and write checks, output shaping and
the trail — is the policy's decision applied; nothing here is a rule of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from authz.actor import Actor, ActorError, Known, actor_from_claims
from authz.audit import AuditRecord, audit_event, for_patient_view, who
from authz.authserver.creation_codes import creation_code_consumed
from authz.authserver.revocation import DenyList
from authz.binding import foreign_patient
from authz.consents import DEFAULT_GRANT, new_consent
from authz.keys import load_or_create_server_key
from authz.lifecycle import CLOSED_EVENT, REOPENED_EVENT, Change, change_of
from authz.lru import Lru
from authz.matrix import AuthorisationMatrix
from authz.outbox import SUBSCRIPTION_TOPIC, DocumentEvent, EmergencyEvent
from authz.policy import DmpPolicy
from authz.policy.access import DIRECTORY_TYPES, Access, Denied
from authz.policy.writes import WriteFacts
from authz.request import RequestFacts
from authz.scopes import INTERACTION_PERMISSION
from authz.settings import AccessSettings
from authz.smart_scopes import READING_OPERATION, Criteria, letters_for, scope_condition
from authz.state import PatientState, decision_of
from authz.state_cache import STATES, AccessStates
from authz.subscribers import forget, recall, remember
from authz.terms import (
    ACCESS,
    BREAK_THE_GLASS,
    EMERGENCY_ACCESS,
    IDNATPS_SYSTEM,
    INS_SYSTEMS,
    MEDECIN_TRAITANT,
    PROFESSION_SYSTEM,
    PROFESSIONAL,
    REGULATION_CENTRE,
)
from authz.tokens import (
    VERIFIED_TOKENS,
    InvalidToken,
    MissingToken,
    TokenVerifier,
    bearer_token,
    load_trusted_issuers,
    own_issuer,
)
from authz.trail_writer import TrailWriter
from fhirmodel.dates import instant_now
from fhirmodel.errors import FhirError
from fhirmodel.ins import malformed_ins
from fhirmodel.rawjson import RawJson
from fhirmodel.terminology import Terminology
from storage.interface import Gone, NotFound, Store, Stored
from storage.query import (
    ANY_SYSTEM,
    NOTHING,
    OPEN_SCOPE,
    AccessScope,
    Expr,
    Query,
    Reference,
    Token,
    all_of,
    any_of,
)

#: SMART 2.2: ``c`` creates, ``u`` updates and patches — an update that creates included — ``d`` deletes.
_WRITE_PERMISSION = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}
#: Documents sharing one content resource: a handful at most (versions of a submission).
MAX_ATTACHING = 100
#: Subscriptions one DMP may hold: each new document queues a message per active one.
MAX_SUBSCRIPTIONS = 20


def _denied(exc: Denied) -> FhirError:
    default = {404: "not-found", 422: "business-rule"}.get(exc.status, "forbidden")
    return FhirError(exc.status, str(exc), exc.code or default, expression=list(exc.expression) or None)


class DmpScope:
    """The per-type filters for one request, computed once per type: the policy's, and — for a
    request that returns what it reads — the token's SMART scopes for the ``letters`` it needs
    (:mod:`authz.smart_scopes`; ``None``: a write, whose own look-ups return nothing)."""

    def __init__(self, policy: DmpPolicy, access: Access, letters: str | None = "rs", criteria: Criteria | None = None):
        self._policy = policy
        self._access = access
        self._letters = letters
        self._criteria = criteria
        self._cache: dict[str, Expr] = {}

    def filter(self, resource_type: str) -> Expr:
        expr = self._cache.get(resource_type)
        if expr is None:
            expr = self._policy.filter(self._access, resource_type)
            if self._letters is not None:
                scopes = self._access.actor.scopes
                expr = all_of(expr, scope_condition(scopes, resource_type, self._letters, self._criteria))
            self._cache[resource_type] = expr
        return expr


class DmpGuard:
    def __init__(self, gate: DmpGatekeeper, access: Access, moment: datetime, interaction: str = ""):
        self._gate = gate
        self._moment = moment
        self._letters = letters_for(interaction)
        self._created_patients: list[dict[str, Any]] = []
        self._lifecycle: str | None = None  # the ISO 21089 event of a closure or reopening, for the trail
        self._decide(access)

    def _decide(self, access: Access) -> None:
        self.access = access
        self.principal = access.actor.principal
        self.scope = DmpScope(self._gate.policy, access, self._letters, self._gate.criteria)

    @property
    def actor(self) -> Actor:
        return self.access.actor

    def _allowed_by_scopes(self, resource_type: str, permission: str) -> None:
        if not self.actor.scopes.allows(resource_type, permission):
            raise FhirError(403, f"the token's scopes do not allow this on {resource_type}", "forbidden")

    def _narrow(self, letters: str | None) -> None:
        """The scope filter for what the request (or a Bundle's entry) now does."""
        if letters != self._letters:
            self._letters = letters
            self.scope = DmpScope(self._gate.policy, self.access, letters, self._gate.criteria)

    def check_read(self, resource_type: str, interaction: str) -> None:
        self._allowed_by_scopes(resource_type, INTERACTION_PERMISSION.get(interaction, "r"))
        self._narrow(letters_for(interaction) or "r")
        try:
            self._gate.policy.check_read(self.access, resource_type)
        except Denied as exc:
            raise _denied(exc) from None

    def check_operation(self, resource_type: str, name: str, reads: tuple[str, ...]) -> None:
        """An operation reading its own type needs ``r`` on it (``$everything`` reads the Patient);
        what an operation that reads returns is filtered by the scopes granting ``r`` or ``s``
        (:class:`DmpScope`), as a read or search would be. One that reads nothing of the record
        (``$generate-metadata``, a creation) keeps the filter of a write."""
        if resource_type in reads:
            self._allowed_by_scopes(resource_type, "r")
        self._narrow(READING_OPERATION if reads else None)
        try:
            self._gate.policy.check_operation(self.access, resource_type, name)
        except Denied as exc:
            raise _denied(exc) from None

    @property
    def requester(self) -> dict[str, Any]:
        return {"role": self.actor.role, "who": who(self.actor)}

    def check_search(self, resource_type: str, params: list[tuple[str, str]]) -> None:
        try:
            self._gate.policy.check_search(resource_type, [name for name, _ in params])
        except Denied as exc:
            raise FhirError(400, str(exc), "required") from None
        other = foreign_patient(resource_type, params, self.access.ins, self.access.state)
        if other is not None:
            raise FhirError(403, f"this token is about another patient than {other} (R1)", "forbidden")

    def check_write(
        self, method: str, resource_type: str, new: dict[str, Any] | None, old: dict[str, Any] | None
    ) -> None:
        self._allowed_by_scopes(resource_type, _WRITE_PERMISSION[method])
        self._narrow(None)
        for where, problem in malformed_ins(new, INS_SYSTEMS):  # CONTRACT §3, whoever writes it
            raise FhirError(422, f"{where}: {problem}", "value", expression=[where])
        facts = WriteFacts(
            dmp_created_here=bool(self._created_patients),
            professions_of=self._gate.professions_of,
            read=self._gate.stored,
            visible=self._visible,
            attaching=self._gate.documents_attaching,
            creation_code_consumed=lambda ins: creation_code_consumed(self._gate.store, ins),
        )
        try:
            self._gate.policy.check_write(self.access, method, resource_type, new, old, facts)
        except Denied as exc:
            raise _denied(exc) from None

    def _visible(self, resource_type: str, resource_id: str) -> bool:
        """Whether this caller may read the stored resource: the read filter decides, as for a read."""
        try:
            self._gate.store.read(resource_type, resource_id, self.scope)
        except (NotFound, Gone):
            return False
        return True

    def after_write(self, method: str, stored: Stored, old: dict[str, Any] | None) -> None:
        """A new DMP starts with its emergency settings and its creator's grant (R5, R16); a new
        médecin traitant ends the previous one's designation (R6); a Subscription remembers who
        wrote it, and a document that becomes current is announced to the DMP's Subscriptions (R22)."""
        store, actor = self._gate.store, self.actor
        if stored.resource_type == "Subscription":
            self._subscribed(stored)
        elif stored.resource_type == "DocumentReference" and stored.content is not None:
            self._announce(stored, old)
        elif stored.resource_type == "Patient" and old is None and actor.patient is not None:
            self._created_patients.append(stored.json())
            for purpose in (BREAK_THE_GLASS, REGULATION_CENTRE):
                store.create(new_consent(EMERGENCY_ACCESS, actor.patient, self._moment, purpose=purpose))
            if actor.role == PROFESSIONAL and actor.idnatps:
                grant = new_consent(
                    ACCESS,
                    actor.patient,
                    self._moment,
                    actor=(IDNATPS_SYSTEM, actor.idnatps),
                    until=self._moment + DEFAULT_GRANT,
                )
                store.create(grant)
            self._decide(self._gate.decide(actor, self._moment))
        elif stored.resource_type == "Patient" and old is not None and stored.content is not None:
            change = change_of(old, stored.json())
            if change in (Change.CLOSE, Change.REOPEN):
                self._lifecycle = CLOSED_EVENT if change == Change.CLOSE else REOPENED_EVENT
                self._redecide()
        elif stored.resource_type == "Consent" and stored.content is not None:
            decision = decision_of(stored.json())
            if decision and decision.category == MEDECIN_TRAITANT and decision.permit and self.access.state:
                self._end_previous_designations(stored.id)
            self._decide(self._gate.decide(actor, self._moment))

    def _subscribed(self, stored: Stored) -> None:
        """Keep the subscriber out of clients' reach (:mod:`authz.subscribers`), and bound how many
        Subscriptions a DMP holds (each new document queues one message per active one)."""
        store, state = self._gate.store, self.access.state
        if stored.deleted:
            forget(store, stored.id)
            return
        remember(store, stored.id, self.actor)
        if state is not None and len(self._gate.subscriptions(state, limit=MAX_SUBSCRIPTIONS + 1)) > MAX_SUBSCRIPTIONS:
            message = f"a DMP holds at most {MAX_SUBSCRIPTIONS} Subscriptions"
            raise FhirError(422, f"{message} (R22)", "business-rule", expression=["Subscription"])

    def _announce(self, stored: Stored, old: dict[str, Any] | None) -> None:
        """R22: a document that becomes current — created, or turned current by an update — is
        announced to each active Subscription of its DMP, by a message queued in this request's
        transaction (it is sent if and only if the document is stored). Whether the subscriber may
        see the document is judged at delivery, as things stand then."""
        state = self.access.state
        becomes_current = stored.json().get("status") == "current" and (old or {}).get("status") != "current"
        if state is None or not becomes_current:
            return
        at = self._moment.isoformat()
        for subscription_id in self._gate.subscriptions(state, limit=MAX_SUBSCRIPTIONS, active=True):
            event = DocumentEvent(subscription_id, stored.id, created=old is None, at=at)
            self._gate.store.enqueue(SUBSCRIPTION_TOPIC, event.dumps())

    def _redecide(self) -> None:
        """The rest of the request sees the DMP as it now is: once closed, a professional who
        closed it reaches nothing more of it (R2), as their next request would."""
        actor = self.actor
        state = self._gate.states.load(actor.patient) if actor.patient else None
        try:
            self._decide(self._gate.policy.access(actor, state, self._moment))
        except Denied:
            self._decide(Access(actor, state, self.access.now, False, False, False))

    def _end_previous_designations(self, current_id: str) -> None:
        store = self._gate.store
        assert self.access.state is not None
        for decision in self.access.state.decisions:
            if decision.category == MEDECIN_TRAITANT and decision.consent_id != current_id:
                previous = store.read("Consent", decision.consent_id, OPEN_SCOPE).json()
                store.update({**previous, "status": "inactive"})

    def finish(self) -> None:
        """R20: a minor's DMP is created with a legal representative, in the same request."""
        state = self.access.state
        minor = state is not None and self._created_patients and state.is_minor(self._moment.date())
        if minor and state is not None and not state.has_representative(self.access.now):
            message = "the DMP of a minor is created with a legal-representative Consent in the same request"
            raise FhirError(422, f"{message} (R20)", "business-rule")

    def present(self, stored: Stored) -> RawJson | dict[str, Any]:
        assert stored.content is not None
        if stored.resource_type == "List":
            return self._list_without_hidden(stored.json())
        if stored.resource_type == "AuditEvent":
            return for_patient_view(stored.json(), self.actor.role)
        return RawJson(stored.content)

    def _list_without_hidden(self, folder: dict[str, Any]) -> dict[str, Any]:
        """A List never names a document hidden from its reader (CONTRACT §8)."""
        entries = folder.get("entry") or []
        named = {
            ref.split("/")[-1]
            for e in entries
            if isinstance(ref := (e.get("item") or {}).get("reference"), str) and "DocumentReference/" in ref
        }
        if not named:
            return folder
        where = any_of(*(Token("_id", ANY_SYSTEM, rid) for rid in sorted(named)))
        seen = self._gate.store.search(Query("DocumentReference", where, count=len(named), total=False), self.scope)
        visible = {s.id for s in seen.matches}
        kept = [
            e
            for e in entries
            if not (
                isinstance(ref := (e.get("item") or {}).get("reference"), str)
                and "DocumentReference/" in ref
                and ref.split("/")[-1] not in visible
            )
        ]
        shown = dict(folder)
        if kept:
            shown["entry"] = kept
        else:
            shown.pop("entry", None)
        return shown

    def record(self, req: RequestFacts, interaction: str, status: int, reason: str | None) -> None:
        """One AuditEvent per request about a record; an alert for every emergency access (R5)."""
        patient = self.actor.patient
        segments = [s for s in req.path.split("/") if s]
        if patient is None or (segments and segments[0] in DIRECTORY_TYPES):
            return
        state = self.access.state
        rtype = segments[0] if segments else None
        rid = segments[1] if len(segments) > 1 and not segments[1].startswith(("_", "$")) else None
        query = "&".join(f"{k}={v}" for k, v in req.params) if interaction == "search-type" else None
        record = AuditRecord(
            interaction=interaction,
            outcome_status=status,
            resource_type=rtype,
            resource_id=rid,
            query=query,
            reason=reason,
            emergency=self.access.emergency,
            source_address=req.client_address,
            lifecycle=self._lifecycle if status < 400 else None,
        )
        event = audit_event(
            self.actor,
            patient,
            state.patient_ids[0] if state and state.patient_ids else None,
            record,
            instant_now(),
            self._gate.server_name,
        )
        alert = EmergencyEvent(patient, event["id"]).dumps() if self.access.emergency and status < 400 else None
        self._gate.trail.write(event, alert)


#: The actors a gatekeeper remembers, by the SHA-256 of their token (see :func:`caller`).
Actors = Lru[bytes, Actor]


class DmpGatekeeper:
    def __init__(
        self,
        store: Store,
        verifier: TokenVerifier,
        policy: DmpPolicy,
        known: Known,
        server_name: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        token_cache: int = VERIFIED_TOKENS,
        state_cache: int = STATES,
    ):
        self.store = store
        self.trail = TrailWriter(store)  # one per gatekeeper, shared by its request threads
        self.verifier = verifier
        self.policy = policy
        self.known = known
        self.server_name = server_name
        self.clock = clock
        self.criteria: Criteria | None = None  # granular SMART scopes grant nothing until set
        self.states = AccessStates(store, state_cache)
        self.actors: Actors = Lru(token_cache)  # one per token the verifier keeps

    def use_criteria(self, criteria: Criteria) -> None:
        """How the FHIR layer turns search parameters into a store condition: granular SMART
        scopes are search parameters. A query it refuses (unknown parameter, bad value) grants
        nothing."""

        def granular(resource_type: str, params: list[tuple[str, str]]) -> Expr:
            try:
                return criteria(resource_type, params)
            except FhirError:
                return NOTHING

        self.criteria = granular

    def guard(self, req: RequestFacts, interaction: str) -> DmpGuard:
        actor = caller(self.verifier, self.known, req.header("Authorization"), self.actors)
        moment = self.clock()
        state = self.states.load(actor.patient) if actor.patient else None
        try:
            access = self.policy.access(actor, state, moment)
        except Denied as exc:
            refused = DmpGuard(self, Access(actor, state, 0, False, False, False), moment, interaction)
            error = _denied(exc)
            refused.record(req, interaction, error.status, str(exc))
            raise error from None
        return DmpGuard(self, access, moment, interaction)

    def decide(self, actor: Actor, moment: datetime) -> Access:
        """The policy's decision for ``actor`` on the DMP their token is about, as it stands now."""
        state = self.states.load(actor.patient) if actor.patient else None
        return self.policy.access(actor, state, moment)

    def subscriptions(self, state: PatientState, *, limit: int, active: bool = False) -> list[str]:
        """The ids of a DMP's Subscriptions (only the active ones if ``active``), oldest first."""
        where = self.policy.subscriptions(state)
        if active:
            where = all_of(where, Token("status", ANY_SYSTEM, "active"))
        found = self.store.search(Query("Subscription", where, count=limit, total=False), OPEN_SCOPE)
        return [stored.id for stored in found.matches]

    def subscriber_scope(self, subscription_id: str, moment: datetime) -> AccessScope | None:
        """What the person who set up a Subscription may see of their DMP at ``moment``, as the
        filter of their own searches (R12, R13); None when they no longer reach it (a
        representative whose term ended, R8; a closed DMP, R2) or the subscriber is unknown."""
        subscriber = recall(self.store, subscription_id)
        if subscriber is None:
            return None
        try:
            access = self.decide(subscriber.as_actor(), moment)
        except Denied:
            return None
        return DmpScope(self.policy, access, criteria=self.criteria) if access.reads_record else None

    def stored(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        """A resource as stored, for the rules' own look-ups (the document a new one replaces, the
        directory entry an author names); never shown to the caller."""
        try:
            return self.store.read(resource_type, resource_id, OPEN_SCOPE).json()
        except (NotFound, Gone):
            return None

    def documents_attaching(self, resource_type: str, resource_id: str) -> list[dict[str, Any]]:
        """Every document whose content is ``resource_type/resource_id`` (R1 checks whose it is)."""
        where = Reference("attachment", resource_type, resource_id)
        found = self.store.search(Query("DocumentReference", where, count=MAX_ATTACHING, total=False), OPEN_SCOPE)
        return [stored.json() for stored in found.matches]

    def professions_of(self, idnatps: str) -> frozenset[str] | None:
        """The TRE_G15 professions the directory records for a professional (R6 checks "doctor");
        None when the directory has no Practitioner with this idNatPs."""
        found = self.store.search(
            Query("Practitioner", Token("identifier", IDNATPS_SYSTEM, idnatps), count=10, total=False), OPEN_SCOPE
        ).matches
        if not found:
            return None
        return frozenset(
            coding["code"]
            for practitioner in found
            for qualification in practitioner.json().get("qualification") or []
            for coding in (qualification.get("code") or {}).get("coding") or []
            if coding.get("system") == PROFESSION_SYSTEM and "code" in coding
        )


def caller(verifier: TokenVerifier, known: Known, authorization: str | None, actors: Actors | None = None) -> Actor:
    """The actor of an ``Authorization`` header: 401 without a valid token (RFC 6750 challenge),
    403 when its claims describe no actor the server can act for. Every endpoint that takes a
    bearer token identifies its caller through here.

    With ``actors``, the actor of a token seen before is reused once the token is verified again
    (times, revocation: every request): a token's claims never change, and the actor follows from
    them alone — building it again was about 30 µs of every request."""
    try:
        token = bearer_token(authorization)
        claims = verifier.verify(token)
    except MissingToken:
        raise FhirError(
            401, "an access token is required", "login", headers={"WWW-Authenticate": 'Bearer realm="dmp"'}
        ) from None
    except InvalidToken as exc:
        challenge = f'Bearer realm="dmp", error="invalid_token", error_description="{exc.message}"'
        raise FhirError(
            401, f"invalid access token: {exc.message}", "login", headers={"WWW-Authenticate": challenge}
        ) from None
    if actors is None:
        return _actor(claims, known)
    digest = hashlib.sha256(token.encode("ascii")).digest()  # ASCII: the verifier accepted it
    actor = actors.get(digest)
    if actor is None:
        actor = _actor(claims, known)
        actors.put(digest, actor)
    return actor


def _actor(claims: dict[str, Any], known: Known) -> Actor:
    try:
        return actor_from_claims(claims, known)
    except ActorError as exc:
        raise FhirError(403, f"no access: {exc}", "forbidden") from None


def server_verifier(settings: AccessSettings, store: Store) -> TokenVerifier:
    """The verifier of a server's bearer tokens: its own key (created on first start) and the
    trusted issuers; a token revoked at the server's revocation endpoint fails until it expires."""
    key = load_or_create_server_key(settings.data_dir)
    issuers = load_trusted_issuers(settings.trusted_issuers)
    revoked = DenyList(store).revoked
    return TokenVerifier.with_server_key(
        key, own_issuer(settings.base_url), issuers, settings.base_url, revoked=revoked, cache_size=settings.token_cache
    )


def build_gatekeeper(settings: AccessSettings, store: Store, terminology: Terminology) -> DmpGatekeeper:
    """The DMP gatekeeper of a server: its verifier, the authorisation matrix from ``ig/``."""
    policy = DmpPolicy(AuthorisationMatrix.load(settings.ig_dir), settings.retention_years)
    return DmpGatekeeper(
        store,
        server_verifier(settings, store),
        policy,
        terminology.has_code,
        settings.base_url,
        token_cache=settings.token_cache,
        state_cache=settings.state_cache,
    )
