"""IHE MHD ITI-65 Provide Document Bundle, Document Recipient side (MHD 4.2, ANS PDSm).

Why: a Provide Document Bundle is a FHIR transaction with a meaning the plain transaction code
does not know. The Document Recipient must refuse a submission whose metadata the declared profile
does not allow, whose documents are not in it, whose parts name different patients, or whose
content contradicts its metadata — before anything is stored, since the DMP's access rules are
decided on that metadata (patient, type, author, labels). What a submission entails — a document
that replaces another supersedes it, in the same transaction — is no concern of this module:
every DocumentReference write does it (:mod:`fhir_server.dmp.documents.replacement`).

A transaction is an ITI-65 when its ``meta.profile`` names a Provide Document Bundle profile
(``profiles/``: IHE minimal, comprehensive, unContained comprehensive; ANS PDSm), or when it
carries MHD content (a SubmissionSet or Folder List, a resource declaring an MHD profile) — then a
missing or unknown Bundle profile is refused rather than the submission silently stored as a plain
transaction. Every other transaction is left alone.

The checks come in the order the transaction code can run them:

1. :func:`provide_bundle`, on the Bundle as sent (400, a malformed message): the profile, the
   entries the profile's slices allow and how many, the SubmissionSet listing every document and
   every new Folder of the Bundle, Folder items and attachments pointing at entries of the Bundle
   of the right kind;
2. :meth:`ProvideBundle.validate`, once ``fullUrl`` and conditional references are resolved (422,
   invalid metadata): each resource against R4 and its profiles (rules read from the
   StructureDefinitions, :mod:`fhir_server.fhir.profiles`), one patient known here and open
   (R2) for the whole submission (recorded on a List that names none, and as the literal
   reference of a subject given by identifier), Folder items naming documents of the submission
   or stored ones of its patient, each attachment's content known, its size and SHA-1 hash, a
   CDA against its DocumentReference (CI-SIS checks in :mod:`fhir_server.dmp.documents.cda`; minimal
   metadata completed from the CDA header), each document's uniqueId not registered with other
   content (:mod:`fhir_server.dmp.documents.unique_ids`).

The entries then run as any transaction's: each DocumentReference is written, its codes checked
and what it replaces superseded, by :mod:`fhir_server.fhir.interactions.instance`.

Why one module of ~750 lines: :class:`ProvideBundle` carries one submission's state through
both phases, and its checks read best in the order IHE gives them, side by side; what stands on
its own lives apart (the CDA in :mod:`.cda`, the completion of minimal metadata in
:mod:`.completion`, the profile engine in :mod:`fhir_server.fhir.profiles`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from authz.terms import INS_SYSTEMS
from fhir_server.dmp.documents.cda import (
    CdaDocument,
    CdaError,
    NotClinicalDocument,
    check_against,
    parse_cda,
)
from fhir_server.dmp.documents.completion import complete_from_cda
from fhir_server.dmp.documents.unique_ids import check_unique_ids, submitted
from fhir_server.fhir.interactions.instance import matches
from fhir_server.fhir.messages import FhirRequest
from fhir_server.fhir.profiles import (
    EntrySlice,
    Profile,
    ProfileSet,
    Violation,
    load_profiles,
    matches_pattern,
    violations,
)
from fhir_server.fhir.service import BundleEntry, FhirService
from fhirmodel.errors import FhirError, outcome_issue
from fhirmodel.indexing import patient_id_in
from storage.interface import Gone, NotFound

#: Every ITI-65 profile derives from this one (IHE MHD 4.2 minimal metadata).
PROVIDE_BUNDLE = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Minimal.ProvideBundle"
#: Documents governed by this profile only carry minimal metadata, which a CDA may complete.
MINIMAL_DOCUMENT_REFERENCE = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Minimal.DocumentReference"
#: The CodeSystem of List.code that makes a List a SubmissionSet or a Folder.
LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
#: Media types under which a CDA travels; the content is then read to see whether it is one.
_XML_TYPES = ("text/xml", "application/xml", "application/hl7-v3+xml")
_CONTENT_TYPES = ("Binary", "Bundle")
_INVALID = "invalid"


Entry = BundleEntry  # what this module reads of a transaction entry


@dataclass(frozen=True)
class Problem:
    """One reason to refuse: the element (``Bundle.entry[3].resource.type``) and what is wrong."""

    expression: str
    message: str


def refusal(status: int, code: str, problems: Sequence[Problem]) -> FhirError:
    """A FhirError reporting every problem, each with the element it is about."""
    first = problems[0]
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    issues = [outcome_issue("error", code, p.message, [p.expression]) for p in problems]
    return FhirError(status, f"{first.message}{more}", code, expression=[first.expression], issues=issues)


def _where(entry: Entry) -> str:
    return f"Bundle.entry[{entry.index}].resource"


# -------------------------------------------------------------------------- 1. the message


def provide_bundle(svc: FhirService, bundle: dict[str, Any], entries: Sequence[Entry]) -> ProvideBundle | None:
    """The ITI-65 this transaction is, checked as a message (400); None for a plain transaction."""
    profiles = load_profiles()
    declared = _declared_provide_profiles(profiles, bundle)
    if not declared and not _carries_mhd_content(profiles, entries):
        return None
    if not declared:
        raise refusal(400, _INVALID, _missing_bundle_profile(profiles, bundle))
    problems = _bundle_problems(declared, bundle)
    if problems:
        raise refusal(400, _INVALID, problems)
    submission = ProvideBundle(svc, declared, entries, profiles)
    submission.check_message()
    return submission


def check_batch(bundle: dict[str, Any]) -> None:
    """A batch declaring a Provide Document Bundle profile is refused: the profile wants a
    transaction (its documents, submission set and supersessions land together or not at all)."""
    problems = _bundle_problems(_declared_provide_profiles(load_profiles(), bundle), bundle)
    if problems:
        raise refusal(400, _INVALID, problems)


def _bundle_problems(declared: list[Profile], bundle: dict[str, Any]) -> list[Problem]:
    """The Bundle itself against its profiles (profile declared, type, entries)."""
    return [Problem(f"Bundle.{v.location}", f"Bundle.{v.message}") for p in declared for v in violations(p, bundle)]


def _declared_provide_profiles(profiles: ProfileSet, resource: dict[str, Any]) -> list[Profile]:
    found = [profiles.get(url) for url in _meta_profiles(resource)]
    return [p for p in found if p is not None and p.derives_from(PROVIDE_BUNDLE)]


def _meta_profiles(resource: Any) -> list[str]:
    meta = resource.get("meta") if isinstance(resource, dict) else None
    urls = meta.get("profile") if isinstance(meta, dict) else None
    return [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []


def _carries_mhd_content(profiles: ProfileSet, entries: Sequence[Entry]) -> bool:
    """A SubmissionSet or Folder List, or a resource declaring a profile of ``profiles/``."""
    for entry in entries:
        resource = entry.resource if isinstance(entry.resource, dict) else {}
        codings = (resource.get("code") or {}).get("coding") if isinstance(resource.get("code"), dict) else None
        if resource.get("resourceType") == "List" and any(
            isinstance(c, dict) and c.get("system") == LIST_TYPES for c in codings or []
        ):
            return True
        if any(profiles.get(url) is not None for url in _meta_profiles(resource)):
            return True
    return False


def _missing_bundle_profile(profiles: ProfileSet, bundle: dict[str, Any]) -> list[Problem]:
    """Why an MHD submission without a known Provide Document Bundle profile is refused."""
    named = _meta_profiles(bundle)
    known = ", ".join(sorted(p.name for p in _provide_profiles(profiles)))
    if not named:
        return [
            Problem(
                "Bundle.meta.profile",
                f"Bundle.meta.profile is required by {PROVIDE_BUNDLE.rsplit('/', 1)[-1]}: an ITI-65 Provide "
                f"Document Bundle declares its profile ({known})",
            )
        ]
    return [
        Problem(
            "Bundle.meta.profile",
            f"Bundle.meta.profile: {', '.join(named)} is not a Provide Document Bundle profile known here ({known})",
        )
    ]


def _provide_profiles(profiles: ProfileSet) -> Iterator[Profile]:
    for url in profiles.definitions:
        profile = profiles.get(url)
        if profile is not None and profile.derives_from(PROVIDE_BUNDLE):
            yield profile


@dataclass
class ProvideBundle:
    """One ITI-65 submission being processed by a transaction."""

    svc: FhirService
    bundle_profiles: list[Profile]
    entries: Sequence[Entry]
    profiles: ProfileSet
    slices: dict[int, EntrySlice] = field(default_factory=dict)  # entry index → its slice
    #: Entries whose resource was validated against R4 by :meth:`check_resources` (and again,
    #: completed, by :meth:`_cda`): their creates need not validate them once more.
    vouched: set[int] = field(default_factory=set)
    #: Each content's CDA as parsed before the store transaction (or why it is none), by its bytes.
    parsed: dict[bytes, CdaDocument | CdaError] = field(default_factory=dict)

    @property
    def profile(self) -> Profile:
        """The declared profile that sorts the entries (the first declared one)."""
        return self.bundle_profiles[0]

    def of_slice(self, name: str) -> list[Entry]:
        return [e for e in self.entries if self.slices.get(e.index) and self.slices[e.index].name == name]

    @property
    def submission_set(self) -> Entry:
        return self.of_slice("SubmissionSet")[0]

    @property
    def documents(self) -> list[Entry]:
        return self.of_slice("DocumentRefs")

    @property
    def folders(self) -> list[Entry]:
        return self.of_slice("Folders")

    # -- 1. the message ----------------------------------------------------------------------

    def check_message(self) -> None:
        """The entries the profile's slices allow, their count, and what links them (400)."""
        problems = [p for entry in self.entries for p in self._classify(entry)]
        problems += self._slice_counts()
        if self.of_slice("SubmissionSet"):
            problems += self._submission_set_items()
        problems += self._folder_items()
        problems += self._attachment_targets()
        if problems:
            raise refusal(400, _INVALID, problems)

    def _classify(self, entry: Entry) -> list[Problem]:
        resource = entry.resource if isinstance(entry.resource, dict) else {}
        rtype = resource.get("resourceType")
        for candidate in self.profile.entry_slices:
            if self._fits(candidate, entry, resource):
                self.slices[entry.index] = candidate
                if entry.method == "POST" and entry.path != rtype:
                    return [
                        Problem(
                            f"Bundle.entry[{entry.index}].request.url",
                            f"Bundle.entry[{entry.index}].request.url: a {rtype} is created by a POST to '{rtype}'",
                        )
                    ]
                return []
        if not self.profile.entry_slicing_closed:
            return []
        allowed = "; ".join(
            f"{s.name}: {s.method or 'any method'} {s.resource_type}" for s in self.profile.entry_slices
        )
        what = f"{entry.method} {rtype or 'without a resource'}"
        return [
            Problem(
                f"Bundle.entry[{entry.index}]",
                f"Bundle.entry[{entry.index}]: {what} is no part of a {self.profile.name} ({allowed})",
            )
        ]

    def _fits(self, candidate: EntrySlice, entry: Entry, resource: dict[str, Any]) -> bool:
        if resource.get("resourceType") != candidate.resource_type:
            return False
        if candidate.method is not None and entry.method != candidate.method:
            return False
        if candidate.resource_type == "List":
            slice_profile = self.profiles.get(candidate.resource_profile or "")
            code = slice_profile.pattern("List.code") if slice_profile else None
            return code is None or matches_pattern(resource.get("code"), code)
        return True

    def _slice_counts(self) -> list[Problem]:
        problems = []
        for candidate in self.profile.entry_slices:
            count = sum(1 for s in self.slices.values() if s.name == candidate.name)
            if count < candidate.min or (candidate.max is not None and count > candidate.max):
                bounds = f"{candidate.min}..{'*' if candidate.max is None else candidate.max}"
                problems.append(
                    Problem(
                        f"Bundle.entry:{candidate.name}",
                        f"Bundle.entry:{candidate.name}: {self.profile.name} requires {bounds} "
                        f"{candidate.resource_type} entries of this kind (found {count})",
                    )
                )
        return problems

    def _submission_set_items(self) -> list[Problem]:
        """The SubmissionSet lists the documents and folders of this Bundle, and every document and
        every Folder the Bundle creates (XDS: each is a member of its submission set)."""
        by_url = {e.full_url: e for e in self.entries if e.full_url}
        submission = self.submission_set
        listed: set[int] = set()
        problems = []
        for i, item in enumerate(_listed(submission.resource.get("entry"))):
            reference = _item_reference(item)
            target = by_url.get(reference) if isinstance(reference, str) else None
            kind = self.slices.get(target.index) if target else None
            if target is None or kind is None or kind.name not in ("DocumentRefs", "Folders"):
                where = f"{_where(submission)}.entry[{i}].item"
                problems.append(
                    Problem(
                        where,
                        f"{where}: {reference or 'an item without a reference'} "
                        "is no DocumentReference or Folder of this Bundle",
                    )
                )
            else:
                listed.add(target.index)
        created = [(e, "DocumentReference") for e in self.documents]
        created += [(e, "Folder") for e in self.folders if e.method == "POST"]
        for member, kind_name in created:
            if member.index not in listed:
                problems.append(
                    Problem(
                        f"{_where(submission)}.entry",
                        f"{_where(submission)}.entry: the SubmissionSet does not list the {kind_name} "
                        f"of Bundle.entry[{member.index}]",
                    )
                )
        return problems

    def _folder_items(self) -> list[Problem]:
        """A Folder lists documents: an item naming an entry of this Bundle names one of its
        DocumentReferences (stored documents are checked once references are resolved)."""
        by_url = {e.full_url: e for e in self.entries if e.full_url}
        problems = []
        for where, reference in _folder_references(self.folders):
            target = by_url.get(reference)
            kind = self.slices.get(target.index) if target else None
            if (target is not None or reference.startswith("urn:")) and (kind is None or kind.name != "DocumentRefs"):
                problems.append(Problem(where, f"{where}: {reference} is no DocumentReference of this Bundle"))
        return problems

    def _attachment_targets(self) -> list[Problem]:
        """An attachment url naming a ``urn:`` of the Bundle names one of its documents."""
        by_url = {e.full_url: e for e in self.entries if e.full_url}
        problems = []
        for _document, where, url in _attachment_urls(self.documents):
            if not url.startswith("urn:"):
                continue  # a stored Binary: checked once references are resolved
            target = by_url.get(url)
            kind = self.slices.get(target.index) if target else None
            if kind is None or kind.resource_type not in _CONTENT_TYPES:
                problems.append(Problem(where, f"{where}: {url} is no Binary or Bundle entry of this Bundle"))
        return problems

    # -- 2. the metadata ---------------------------------------------------------------------

    def check_resources(self) -> None:
        """Each resource against R4 and its profiles (422), and the CDA of each content parsed.
        Needs nothing stored, so it runs before the Bundle's store transaction: the writer lock is
        held only for what must be read and written together, and other requests are not queued
        behind this CPU work.

        The R4 pass is the only one a resource gets (its create does not repeat it, problem 12 of
        ``bench/README.md``): references to entries are checked as the ``Type/id`` the
        transaction rewrites them to, and what the transaction changes afterwards is either
        valid by construction (a subject's literal reference to the Patient) or validated again
        (a minimal DocumentReference completed from its CDA, :meth:`_cda`)."""
        types = {e.full_url: e.path.split("/")[0] for e in self.entries if e.full_url and e.method in ("POST", "PUT")}
        problems: list[Problem] = []
        written = [e for e in self.entries if e.method in ("POST", "PUT") and isinstance(e.resource, dict)]
        for entry in written:
            problems += self._r4_problems(entry, types)
        if not problems:
            for entry in self.entries:
                problems += self._profile_problems(entry)
        if problems:
            raise refusal(422, _INVALID, problems)
        self.vouched = {e.index for e in written if e.path.split("/")[0] == e.resource.get("resourceType")}
        self._parse_contents()

    def vouches_for(self, entry: Entry) -> bool:
        return entry.index in self.vouched

    def _parse_contents(self) -> None:
        """Parse each CDA the documents carry in the Bundle now, outside the store transaction
        (what it is checked against, the patient, is known only inside)."""
        by_url = {e.full_url: e for e in self.entries if e.full_url and isinstance(e.resource, dict)}
        for document, where, url in _attachment_urls(self.documents):
            entry = by_url.get(url)
            if entry is None:
                continue
            content = Content(document, where, url, _where(entry), entry.resource)
            data = content.data()
            if data is not None and _may_be_cda(content, data):
                self._parse(data)

    def _parse(self, data: bytes) -> CdaDocument | CdaError:
        """The CDA in ``data``, or why it cannot be used; parsed once per submission."""
        if data not in self.parsed:
            try:
                self.parsed[data] = parse_cda(data)
            except CdaError as exc:  # NotClinicalDocument included: kept, told apart by the caller
                self.parsed[data] = exc
        return self.parsed[data]

    def validate(self, req: FhirRequest) -> None:
        """The submission as a whole, in the store transaction, references resolved (422);
        completes minimal metadata from a CDA."""
        patient = self._patient(req)
        self._check_folder_documents(req, patient)
        contents = self._contents(req)
        self._check_contents(contents, patient)

    def _r4_problems(self, entry: Entry, bundle_types: dict[str, str] | None = None) -> list[Problem]:
        rtype = entry.resource.get("resourceType")
        try:
            self.svc.validator.validate(entry.resource, expected_type=rtype, bundle_types=bundle_types)
        except FhirError as exc:
            return [_moved(issue, str(rtype), _where(entry)) for issue in exc.outcome()["issue"]]
        return []

    def _profile_problems(self, entry: Entry) -> list[Problem]:
        """The resource against its slice's profile and the known profiles it declares."""
        kind = self.slices.get(entry.index)
        resource = entry.resource
        if kind is None or not isinstance(resource, dict) or kind.resource_type == "Parameters":
            return []
        problems = []
        for profile in self._governing(entry):
            if profile.type != resource.get("resourceType"):
                problems.append(
                    Problem(
                        f"{_where(entry)}.meta.profile",
                        f"{_where(entry)}.meta.profile: {profile.name} is a profile of {profile.type}, "
                        f"not of {resource.get('resourceType')}",
                    )
                )
                continue
            problems += [_located(entry, v) for v in violations(profile, resource)]
        return _unique(problems)

    def _governing(self, entry: Entry) -> list[Profile]:
        """The profiles an entry's resource must meet: its slice's, and those it declares."""
        kind = self.slices[entry.index]
        urls = [kind.resource_profile] if kind.resource_profile else []
        urls += [url for url in _meta_profiles(entry.resource) if self.profiles.get(url) is not None]
        found = [self.profiles.get(url) for url in dict.fromkeys(urls)]
        return [p for p in found if p is not None]

    def _patient(self, req: FhirRequest) -> Subject | None:
        """The one patient of the submission: every subject names the same Patient, known here
        (stored, or created by this Bundle) and open (R2)."""
        lists = [self.submission_set, *self.folders]
        subjects = [
            (entry, entry.resource["subject"])
            for entry in [*lists, *self.documents]
            if isinstance(entry.resource, dict) and "subject" in entry.resource
        ]
        created = {e.assigned: e for e in self.entries if e.assigned and e.method in ("POST", "PUT")}
        resolved: list[tuple[Entry, Subject]] = []
        problems = []
        for entry, reference in subjects:
            subject = self._resolve_subject(req, reference, created)
            if isinstance(subject, str):
                problems.append(Problem(f"{_where(entry)}.subject", f"{_where(entry)}.subject: {subject}"))
            else:
                resolved.append((entry, subject))
        if problems:
            raise refusal(422, _INVALID, problems)
        if not resolved:
            return None
        first = resolved[0][1]
        problems = [
            Problem(
                f"{_where(entry)}.subject",
                f"{_where(entry)}.subject: Patient/{subject.id}, but {_where(resolved[0][0])}.subject is "
                f"Patient/{first.id}: a submission is about one patient",
            )
            for entry, subject in resolved[1:]
            if subject.id != first.id
        ]
        if problems:
            raise refusal(422, _INVALID, problems)
        if first.resource.get("active") is False:
            where = f"{_where(resolved[0][0])}.subject"
            raise refusal(403, "forbidden", [Problem(where, f"{where}: the DMP of Patient/{first.id} is closed (R2)")])
        for entry, subject in resolved:
            _name_literally(entry.resource, subject)
        for entry in lists:
            _name_patient(entry.resource, first)
        return first

    def _resolve_subject(self, req: FhirRequest, reference: Any, created: dict[str, Entry]) -> Subject | str:
        """The Patient a subject designates, or why it designates none known here."""
        if not isinstance(reference, dict):
            return "a subject is a Reference to a Patient"
        literal = reference.get("reference")
        if isinstance(literal, str):
            local = _local_reference(self.svc, literal)
            if local is None or local[0] != "Patient":
                return f"{literal} is not a Patient of this server"
            stored = _read(self.svc, req, "Patient", local[1])
            if stored is not None:
                return Subject(local[1], stored)
            if f"Patient/{local[1]}" in created:  # a Patient this Bundle creates
                return Subject(local[1], created[f"Patient/{local[1]}"].resource)
            return f"Patient/{local[1]} is not known here"
        identifier = reference.get("identifier")
        if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
            criteria = [("identifier", f"{identifier['system']}|{identifier['value']}")]
            found = matches(self.svc, req, "Patient", self.svc.parser.criteria("Patient", criteria))
            if len(found) == 1:
                return Subject(found[0].id, found[0].json())
            return f"identifier {identifier['system']}|{identifier['value']} names {len(found)} known patients"
        return "the subject names no Patient (neither reference nor identifier)"

    def _check_folder_documents(self, req: FhirRequest, patient: Subject | None) -> None:
        """Each Folder item names a DocumentReference of this Bundle or a stored one of the
        submission's patient that the submitter sees (one answer for "unknown", "hidden" and
        "another patient's", as for replacements)."""
        ours = {e.assigned for e in self.documents if e.assigned}
        problems = []
        for where, reference in _folder_references(self.folders):
            local = _local_reference(self.svc, reference)
            if local is not None and f"{local[0]}/{local[1]}" in ours:
                continue
            if local is None or local[0] != "DocumentReference":
                problems.append(Problem(where, f"{where}: {reference} is no DocumentReference"))
                continue
            stored = _read(self.svc, req, *local)
            if stored is None or (patient is not None and not _is_about(stored, patient)):
                whose = f"Patient/{patient.id}" if patient else "this server"
                problems.append(Problem(where, f"{where}: DocumentReference/{local[1]} is no document of {whose}"))
        if problems:
            raise refusal(422, _INVALID, problems)

    def _contents(self, req: FhirRequest) -> list[Content]:
        """What each attachment url points at: an entry of this Bundle or a stored resource."""
        by_target = {e.assigned: e for e in self.entries if e.assigned}
        found: list[Content] = []
        problems = []
        for document, where, url in _attachment_urls(self.documents):
            local = _local_reference(self.svc, url)
            if local is None or local[0] not in _CONTENT_TYPES:
                problems.append(Problem(where, f"{where}: {url} is no Binary or Bundle of this Bundle or server"))
                continue
            target = f"{local[0]}/{local[1]}"
            entry = by_target.get(target)
            resource = entry.resource if entry is not None else _read(self.svc, req, *local)
            if not isinstance(resource, dict):
                problems.append(Problem(where, f"{where}: {target} is not known here"))
                continue
            holder = _where(entry) if entry is not None else target
            found.append(Content(document, where, target, holder, resource))
        if problems:
            raise refusal(422, _INVALID, problems)
        return found

    def _check_contents(self, contents: list[Content], patient: Subject | None) -> None:
        problems = []
        unique_ids = []
        for content in contents:
            data = content.data()
            if data is None:
                continue
            mismatches = _size_and_hash(content, data)
            problems += mismatches or self._cda(content, data, patient)
            known = submitted(_where(content.document), content.document.resource, data)
            if known is not None and content.document.method == "POST":
                unique_ids.append(known)
        if problems:
            raise refusal(422, _INVALID, problems)
        check_unique_ids(self.svc.store, unique_ids)

    def _cda(self, content: Content, data: bytes, patient: Subject | None) -> list[Problem]:
        """A CDA must agree with its DocumentReference; minimal metadata is completed from it."""
        if not _may_be_cda(content, data):
            return []
        doc = self._parse(data)
        if isinstance(doc, NotClinicalDocument):
            return []
        if isinstance(doc, CdaError):
            where = f"{content.holder}.data"
            return [Problem(where, f"{where}: the CDA cannot be used: {doc}")]
        reference = content.document.resource
        problems = [_cda_problem(content.document, text) for text in check_against(doc, reference, _ins(patient))]
        if not problems and self._is_minimal(content.document):
            complete_from_cda(reference, doc, content.attachment, data, patient.id if patient else None)
            # Completed after check_resources: the resource as it will be written is validated
            # here, with its references already rewritten.
            problems = self._r4_problems(content.document)
        return problems

    def _is_minimal(self, entry: Entry) -> bool:
        return all(p.url == MINIMAL_DOCUMENT_REFERENCE for p in self._governing(entry))


# -------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Subject:
    """The patient a submission is about: its id and resource."""

    id: str
    resource: dict[str, Any]


@dataclass(frozen=True)
class Content:
    """An attachment and what its url points at."""

    document: Entry  # the DocumentReference entry
    where: str  # Bundle.entry[i].resource.content[j].attachment
    target: str  # Binary/x
    holder: str  # where the content is: Bundle.entry[k].resource, or Binary/x when stored
    resource: dict[str, Any]

    @property
    def attachment(self) -> dict[str, Any]:
        index = int(self.where.rsplit("content[", 1)[1].split("]")[0])
        attachment: dict[str, Any] = self.document.resource["content"][index]["attachment"]
        return attachment

    def data(self) -> bytes | None:
        """The decoded bytes of a Binary (None for a FHIR document Bundle, or no data)."""
        raw = self.resource.get("data") if self.resource.get("resourceType") == "Binary" else None
        if not isinstance(raw, str):
            return None
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return None


def _attachment_urls(documents: list[Entry]) -> Iterator[tuple[Entry, str, str]]:
    """``(entry, "Bundle.entry[i].resource.content[j].attachment.url", url)`` of each document."""
    for entry in documents:
        for j, content in enumerate(entry.resource.get("content") or []):
            attachment = (content or {}).get("attachment") if isinstance(content, dict) else None
            url = attachment.get("url") if isinstance(attachment, dict) else None
            if isinstance(url, str):
                yield entry, f"{_where(entry)}.content[{j}].attachment.url", url


def _name_literally(resource: dict[str, Any], patient: Subject) -> None:
    """A subject given by identifier only gets the literal reference to the Patient it names.

    ITI-65 (2:3.65.4.1.2.2) accepts a logical reference by a national identifier such as the INS;
    but the ``patient`` search parameter ITI-67 and ITI-66 use indexes a literal reference to a
    Patient only, so such a document or List would be found by no MHD search of its patient."""
    subject = resource["subject"]
    if "reference" not in subject:
        resource["subject"] = {"reference": f"Patient/{patient.id}", **subject}


def _name_patient(resource: Any, patient: Subject) -> None:
    """A List of the submission that names no subject gets the submission's patient.

    ITI-65 (2:3.65.4.1.2.1) wants every List.subject populated, but the Minimal profiles (and
    IHE's own minimal example) leave it out, and a recipient may be robust; a List about no patient
    would be found by no ITI-66 search, which always names the patient."""
    if isinstance(resource, dict) and "subject" not in resource:
        resource["subject"] = {"reference": f"Patient/{patient.id}"}


def _folder_references(folders: list[Entry]) -> Iterator[tuple[str, str]]:
    """``("Bundle.entry[i].resource.entry[j].item", reference)`` of each Folder item; an item
    without a literal reference has an empty one (it names no document)."""
    for folder in folders:
        entries = folder.resource.get("entry") if isinstance(folder.resource, dict) else None
        for j, item in enumerate(_listed(entries)):
            yield f"{_where(folder)}.entry[{j}].item", _item_reference(item) or ""


def _listed(value: Any) -> list[Any]:
    """A List's ``entry`` as sent, before any validation: its items if it is an array (anything
    else is reported by the resource's own checks)."""
    return value if isinstance(value, list) else []


def _item_reference(item: Any) -> str | None:
    """The literal reference of a List entry's ``item``, when the entry has that shape at all."""
    inner = item.get("item") if isinstance(item, dict) else None
    reference = inner.get("reference") if isinstance(inner, dict) else None
    return reference if isinstance(reference, str) else None


def _is_about(document: dict[str, Any], patient: Subject) -> bool:
    """Whether a stored document's subject is ``patient``: its literal reference, or its INS."""
    subject = document.get("subject") or {}
    literal = subject.get("reference")
    if isinstance(literal, str):
        return patient_id_in(literal) == patient.id
    ident = subject.get("identifier") or {}
    return (ident.get("system"), ident.get("value")) == _ins(patient)


def _local_reference(svc: FhirService, reference: str) -> tuple[str, str] | None:
    """``(type, id)`` of a reference to this server (relative, or absolute under its base,
    versioned or not); None for anything else."""
    base = svc.config.base_url + "/"
    if reference.startswith(base):
        reference = reference[len(base) :]
    elif urlsplit(reference).scheme:
        return None
    parts = reference.strip("/").split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]


def _read(svc: FhirService, req: FhirRequest, rtype: str, rid: str) -> dict[str, Any] | None:
    """A stored resource the request's caller may see, or None."""
    try:
        return svc.store.read(rtype, rid, req.scope).json()
    except (NotFound, Gone):
        return None


def _size_and_hash(content: Content, data: bytes) -> list[Problem]:
    """The size and SHA-1 (base64, R4 Attachment.hash) the attachment gives, against the data."""
    attachment = content.attachment
    base = content.where.removesuffix(".url")
    problems = []
    size = attachment.get("size")
    if isinstance(size, int) and size != len(data):
        problems.append(Problem(f"{base}.size", f"{base}.size: {size}, but {content.holder} holds {len(data)} bytes"))
    given = attachment.get("hash")
    if isinstance(given, str):
        actual = base64.b64encode(hashlib.sha1(data).digest()).decode()
        if given != actual:
            problems.append(
                Problem(f"{base}.hash", f"{base}.hash: {given}, but the SHA-1 of {content.holder} is {actual}")
            )
    return problems


def _may_be_cda(content: Content, data: bytes) -> bool:
    types = {str(content.attachment.get("contentType", "")), str(content.resource.get("contentType", ""))}
    xml_type = any(t.split(";")[0].strip().lower() in _XML_TYPES for t in types)
    return xml_type or data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def _cda_problem(entry: Entry, text: str) -> Problem:
    """A :func:`check_against` message (``DocumentReference.type: ...``) placed in the Bundle."""
    element, _, rest = text.partition(": ")
    path = element.removeprefix("DocumentReference")
    where = f"{_where(entry)}{path}"
    return Problem(where, f"{where}: {rest}")


def _ins(patient: Subject | None) -> tuple[str, str] | None:
    if patient is None:
        return None
    for identifier in patient.resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") in INS_SYSTEMS and identifier.get("value"):
            return str(identifier["system"]), str(identifier["value"])
    return None


def _located(entry: Entry, violation: Violation) -> Problem:
    where = f"{_where(entry)}.{violation.location}"
    return Problem(where, f"{_where(entry)}.{violation.message}")


def _moved(issue: dict[str, Any], rtype: str, where: str) -> Problem:
    """A validator issue about ``DocumentReference.x`` placed at ``Bundle.entry[i].resource.x``."""
    paths = issue.get("expression") or [rtype]
    path = str(paths[0])
    moved = where + path[len(rtype) :] if path.startswith(rtype) else f"{where}.{path}"
    return Problem(moved, f"{moved}: {issue.get('diagnostics', '')}")


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
