"""What a profiled resource must carry, read from the StructureDefinitions in ``profiles/``.

Why: the IHE MHD and ANS PDSm profiles say which metadata an ITI-65 submission needs (minimal,
comprehensive, unContained, PDSm) through the cardinalities, fixed/pattern values and slices of
their StructureDefinitions. Reading the rules from the published definitions rather than restating
them in code keeps the server in step with the profiles (a new PDSm release is a file change) and
lets every refusal name the element and the profile that requires it.

What is read: the ``differential`` of a profile merged over those of its ``baseDefinition`` chain
(the base R4 cardinalities are the resource validator's job): ``min``/``max`` and ``fixed[x]`` /
``pattern[x]``; the types a choice element (``value[x]``) is narrowed to; slices on ``extension``
(told apart by url: the extension profile's, or for the sub-extensions of a complex extension the
``fixedUri`` of their ``url``) and on ``identifier`` (by the type their Identifier profile fixes);
and, for Bundle profiles, the entry slices, for the ITI-65 code to sort entries with. An extension
profile (type ``Extension``) is checked on an extension object itself. Not evaluated: invariants
(FHIRPath constraints), bindings, datatype profiles, and rules under any other slice (their members
cannot be told apart without those).

``profiles/overlay.json`` adds the few requirements the profiles' text states but their
StructureDefinitions do not carry, each with its source.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_server.runtime.config import PROJECT_ROOT

PROFILES_DIR = PROJECT_ROOT / "profiles"
OVERLAY_FILE = "overlay.json"
#: MHD ≤ 4.2.0 told a List's or DocumentReference's uniqueId and entryUUID identifiers apart by
#: ``Identifier.use`` (usual / official: MHD Rev. 3.2 Folder, IHE/ITI.MHD issue #13); 4.2.2 added
#: the ``type`` the slices discriminate on. Sources written to 4.2.0 (the NIST MHDv420 tests) still
#: use only ``use``, so an untyped identifier belongs to the slice its ``use`` names.
_LEGACY_IDENTIFIER_USE = {"uniqueId": "usual", "entryUUID": "official"}


@dataclass(frozen=True)
class Slice:
    """A named slice of a repeating element and how to tell its members."""

    name: str
    url: str | None = None  # an extension slice: the extension's url
    identifier_type: tuple[str, str] | None = None  # an identifier slice: the (system, code) of its type

    def holds(self, item: Any) -> bool:
        """Whether ``item`` (an extension or an identifier) belongs to this slice."""
        if not isinstance(item, dict):
            return False
        if self.url is not None:
            return item.get("url") == self.url
        if self.identifier_type is not None:
            codings = (item.get("type") or {}).get("coding") or [] if isinstance(item.get("type"), dict) else []
            if codings:
                return any((c.get("system"), c.get("code")) == self.identifier_type for c in codings)
            return item.get("use") == _LEGACY_IDENTIFIER_USE.get(self.identifier_type[1])
        return False


@dataclass(frozen=True)
class Step:
    """One step of an element path: the JSON name (``value[x]`` for a choice) and its slice."""

    name: str
    slice: Slice | None = None


@dataclass(frozen=True)
class Rule:
    """A cardinality or value constraint on one element, and the profile that states it."""

    element: str  # the ElementDefinition id: "List.extension:sourceId"
    steps: tuple[Step, ...]  # the path below the resource
    min: int
    max: int | None  # None: unbounded
    pattern: Any  # a fixed[x] or pattern[x] value, or None
    profile: str  # the name of the profile that set the rule
    types: tuple[str, ...] = ()  # for a choice element (value[x]): the types it is narrowed to

    @property
    def path(self) -> str:
        """The element path without slice names, as messages show it."""
        return ".".join(step.name for step in self.steps)


@dataclass(frozen=True)
class EntrySlice:
    """A slice of ``Bundle.entry`` in a Bundle profile: which resources, how many, by which method."""

    name: str
    min: int
    max: int | None
    resource_type: str | None
    resource_profile: str | None
    method: str | None  # the request.method pattern, None when any


@dataclass(frozen=True)
class Profile:
    url: str
    name: str
    type: str
    chain: tuple[str, ...]  # this profile's url and those of the profiles it derives from
    rules: tuple[Rule, ...]
    entry_slices: tuple[EntrySlice, ...] = ()
    entry_slicing_closed: bool = False

    def derives_from(self, url: str) -> bool:
        return url in self.chain

    def pattern(self, element: str) -> Any:
        """The fixed or pattern value this profile gives an element (``List.code``), if any."""
        return next((rule.pattern for rule in self.rules if rule.element == element), None)


@dataclass
class ProfileSet:
    """The profiles the server knows, by canonical url."""

    definitions: dict[str, dict[str, Any]]
    overlay: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _built: dict[str, Profile] = field(default_factory=dict)

    def get(self, url: str) -> Profile | None:
        """The profile named ``url`` (a ``|version`` suffix is ignored), None when unknown."""
        url = url.split("|")[0]
        if url not in self.definitions:
            return None
        if url not in self._built:
            self._built[url] = self._build(url)
        return self._built[url]

    def _chain(self, url: str) -> list[dict[str, Any]]:
        """The definitions from the most basic known one down to ``url``."""
        chain: list[dict[str, Any]] = []
        current: str | None = url
        while current in self.definitions and len(chain) < 32:
            definition = self.definitions[current]
            chain.insert(0, definition)
            current = str(definition.get("baseDefinition") or "").split("|")[0] or None
        return chain

    def _build(self, url: str) -> Profile:
        chain = self._chain(url)
        merged: dict[str, dict[str, Any]] = {}
        setter: dict[str, str] = {}
        for definition in chain:
            extra = [e["element"] for e in self.overlay.get(definition["url"], [])]
            for element in [*definition.get("differential", {}).get("element", []), *extra]:
                target = merged.setdefault(element["id"], {})
                target.update({k: v for k, v in element.items() if k not in ("id", "path")})
                if _constrains(element):
                    setter[element["id"]] = definition.get("id") or definition["url"]
        root = chain[-1]
        rules = tuple(self._rules(root["type"], merged, setter))
        slices, closed = _entry_slices(merged) if root["type"] == "Bundle" else ((), False)
        return Profile(
            url=url,
            name=str(root.get("id") or root.get("name") or url),
            type=root["type"],
            chain=tuple(d["url"] for d in reversed(chain)),
            rules=rules,
            entry_slices=slices,
            entry_slicing_closed=closed,
        )

    def _rules(self, root_type: str, merged: dict[str, dict[str, Any]], setter: dict[str, str]) -> Iterator[Rule]:
        for element_id, element in merged.items():
            if element_id not in setter:
                continue
            steps = self._steps(root_type, element_id, merged)
            if steps is None or not steps:
                continue
            yield Rule(
                element=element_id,
                steps=steps,
                min=int(element.get("min", 0)),
                max=_max(element.get("max")),
                pattern=_pattern(element),
                profile=setter[element_id],
                types=_choice_types(element_id, element),
            )

    def _steps(self, root_type: str, element_id: str, merged: dict[str, dict[str, Any]]) -> tuple[Step, ...] | None:
        """The path of an element id below the resource; None for rules this module cannot place
        (under a slice other than an extension or identifier one, or re-sliced)."""
        head, *parts = element_id.split(".")
        if head != root_type:
            return None
        steps: list[Step] = []
        for index, part in enumerate(parts):
            name, _, slice_name = part.partition(":")
            if not slice_name:
                steps.append(Step(name))
                continue
            if "/" in slice_name or name not in ("extension", "identifier"):
                return None
            slice_id = ".".join([head, *parts[:index], part])
            member = self._slice(name, slice_name, merged.get(slice_id, {}), merged.get(f"{slice_id}.url", {}))
            if member is None:
                return None
            steps.append(Step(name, member))
        return tuple(steps)

    def _slice(self, name: str, slice_name: str, element: dict[str, Any], url: dict[str, Any]) -> Slice | None:
        profiles = [p for t in element.get("type") or [] for p in t.get("profile") or []]
        if name == "extension" and not profiles and isinstance(url.get("fixedUri"), str):
            return Slice(slice_name, url=url["fixedUri"])  # a sub-extension defined inline
        if not profiles:
            return None
        if name == "extension":
            return Slice(slice_name, url=profiles[0])
        identifier_profile = self.get(profiles[0])
        pattern = identifier_profile.pattern("Identifier.type") if identifier_profile else None
        codings = (pattern or {}).get("coding") or []
        if not codings:
            return None
        return Slice(slice_name, identifier_type=(codings[0].get("system"), codings[0].get("code")))


def _constrains(element: dict[str, Any]) -> bool:
    return "min" in element or "max" in element or _pattern(element) is not None or "type" in element


def _choice_types(element_id: str, element: dict[str, Any]) -> tuple[str, ...]:
    """The types a choice element is narrowed to (``value[x]`` of ``dateTime`` only), else ()."""
    if not element_id.endswith("[x]"):
        return ()
    return tuple(str(t["code"]) for t in element.get("type") or [] if isinstance(t, dict) and t.get("code"))


def _max(value: Any) -> int | None:
    if value is None or value == "*":
        return None
    return int(value)


def _pattern(element: dict[str, Any]) -> Any:
    for key, value in element.items():
        if key.startswith(("fixed", "pattern")) and key not in ("fixed", "pattern"):
            return value
    return None


def _entry_slices(merged: dict[str, dict[str, Any]]) -> tuple[tuple[EntrySlice, ...], bool]:
    """The slices of ``Bundle.entry`` and whether the slicing is closed."""
    closed = (merged.get("Bundle.entry", {}).get("slicing") or {}).get("rules") == "closed"
    slices = []
    for element_id, element in merged.items():
        head, _, name = element_id.partition(":")
        if head != "Bundle.entry" or not name or "." in name:
            continue
        resource = merged.get(f"{element_id}.resource", {})
        types = resource.get("type") or [{}]
        method = merged.get(f"{element_id}.request.method", {}).get("patternCode")
        slices.append(
            EntrySlice(
                name=name,
                min=int(element.get("min", 0)),
                max=_max(element.get("max")),
                resource_type=types[0].get("code"),
                resource_profile=(types[0].get("profile") or [None])[0],
                method=method,
            )
        )
    return tuple(slices), closed


@dataclass(frozen=True)
class Violation:
    """A place where a resource breaks a profile rule; ``location`` is relative to the resource
    (``content[0].attachment.url``), ``message`` says what the profile wants."""

    location: str
    message: str


def violations(profile: Profile, resource: dict[str, Any]) -> list[Violation]:
    """Every rule of ``profile`` that ``resource`` breaks, in the profile's element order."""
    found: list[Violation] = []
    for rule in profile.rules:
        *parents, last = rule.steps
        for where, node in _nodes(resource, parents, ""):
            children = [(f"{where}{suffix}", item) for suffix, item in _indexed(last, node)]
            found.extend(_broken(rule, f"{where}{_step_label(last)}".lstrip("."), children))
    return found


def _broken(rule: Rule, label: str, children: list[tuple[str, Any]]) -> Iterator[Violation]:
    shown = label + _slice_detail(rule.steps[-1])
    if len(children) < rule.min:
        wanted = "is required" if rule.min == 1 else f"needs at least {rule.min} values"
        yield Violation(label, f"{shown} {wanted} by {rule.profile} (found {len(children)})")
    if rule.max is not None and len(children) > rule.max:
        allowed = "is not allowed" if rule.max == 0 else f"allows at most {rule.max} value(s)"
        yield Violation(label, f"{shown}: {rule.profile} {allowed} (found {len(children)})")
    if rule.pattern is not None:
        for where, item in children:
            if not matches_pattern(item, rule.pattern):
                shown = json.dumps(rule.pattern, ensure_ascii=False)
                yield Violation(where.lstrip("."), f"{where.lstrip('.')}: {rule.profile} requires {shown}")
    if rule.types:
        stem = rule.steps[-1].name[:-3]
        keys = {f"{stem}{t[0].upper()}{t[1:]}" for t in rule.types}
        for where, _item in children:
            key = where.rsplit(".", 1)[-1].split("[")[0]
            if key not in keys:
                wanted = " or ".join(sorted(keys))
                yield Violation(where.lstrip("."), f"{where.lstrip('.')}: {rule.profile} allows only {wanted}")


def _nodes(node: Any, steps: list[Step], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The objects at the end of ``steps`` below ``node``, with their locations."""
    if not isinstance(node, dict):
        return
    if not steps:
        yield where, node
        return
    for suffix, child in _indexed(steps[0], node):
        yield from _nodes(child, steps[1:], f"{where}{suffix}")


def _indexed(step: Step, node: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(".name[i]", item)`` for what ``step`` selects in ``node`` (the index is the one in the
    JSON array, slice members keeping their place among the other items)."""
    out: list[tuple[str, Any]] = []
    for key, value in node.items():
        if not _step_matches(step, key):
            continue
        if isinstance(value, list):
            out.extend((f".{key}[{i}]", item) for i, item in enumerate(value) if _in_slice(step, item))
        elif _in_slice(step, value):
            out.append((f".{key}", value))
    return out


def _step_matches(step: Step, key: str) -> bool:
    if step.name.endswith("[x]"):
        prefix = step.name[:-3]
        return key.startswith(prefix) and key[len(prefix) : len(prefix) + 1].isupper()
    return key == step.name


def _in_slice(step: Step, item: Any) -> bool:
    return step.slice is None or step.slice.holds(item)


def _step_label(step: Step) -> str:
    """``.name``, or ``.name:slice`` for a slice (ElementDefinition id style)."""
    return f".{step.name}" if step.slice is None else f".{step.name}:{step.slice.name}"


def _slice_detail(step: Step) -> str:
    """How a slice's members are told, for messages: the extension url, the identifier type."""
    if step.slice is None:
        return ""
    if step.slice.url:
        return f" (url {step.slice.url})"
    kind = step.slice.identifier_type
    return f" (type {kind[0]}|{kind[1]}, or use '{_LEGACY_IDENTIFIER_USE.get(kind[1])}')" if kind else ""


def matches_pattern(value: Any, pattern: Any) -> bool:
    """FHIR pattern semantics: every element the pattern gives is in the value (lists: each pattern
    item is matched by some value item); primitives are equal."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(k in value and matches_pattern(value[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(matches_pattern(item, p) for item in items) for p in pattern)
    return bool(value == pattern)


@functools.cache
def load_profiles(directory: Path = PROFILES_DIR) -> ProfileSet:
    """Every StructureDefinition in ``directory`` (read once), with the overlay."""
    definitions: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("StructureDefinition-*.json")):
        definition = json.loads(path.read_text(encoding="utf-8"))
        definitions[definition["url"]] = definition
    overlay: dict[str, list[dict[str, Any]]] = {}
    overlay_path = directory / OVERLAY_FILE
    if overlay_path.is_file():
        for item in json.loads(overlay_path.read_text(encoding="utf-8")).get("rules", []):
            overlay.setdefault(item["profile"], []).append(item)
    return ProfileSet(definitions, overlay)
