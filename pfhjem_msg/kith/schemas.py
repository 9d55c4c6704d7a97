"""Schema validation against a directory of XSD files: the project's own (shipped inside the
package, ``pfhjem_msg/xsd/``, the default) or the official set an operator downloads from
Helsedirektoratet.

Every ``.xsd`` in the directory is read for its target namespace and compiled once into a
single bundle, so a MsgHead is validated together with its payload (its ``Content`` is a
strict wildcard). Imports, whatever location they name (``http://www.kith.no/...``,
``../../felleskomponenter/kith.xsd``), resolve to the file of the same name in the directory;
nothing is ever fetched from the network.
"""

from __future__ import annotations

import copy
import re
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from lxml import etree

from pfhjem_msg.errors import ConfigError
from pfhjem_msg.kith.issues import ID_LIKE, TRUNCATED, Issue, error
from pfhjem_msg.kith.parse import path_of


def default_schema_dir() -> Path:
    """The product's own schemas, found through the package so that a wheel install has them
    as well as a checkout. libxml2 reads files, so the package must be on a file system."""
    found = resources.files("pfhjem_msg") / "xsd"
    if not isinstance(found, Path):
        raise ConfigError(
            "the product's schemas are inside an archive, not on a file system; install the "
            "package unpacked (pip does) or set [kith] schemas to a directory of .xsd files"
        )
    return found


_EMPTY_SCHEMA = '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"/>'


class _LocalOnly(etree.Resolver):  # type: ignore[misc]
    """Maps every schema location to the file of the same base name in one directory."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.missing: list[str] = []

    def resolve(self, system_url: str, public_id: str, context: object) -> object:
        name = (system_url or "").replace("\\", "/").rsplit("/", 1)[-1]
        candidate = self.directory / name
        if name and candidate.is_file():
            return self.resolve_filename(str(candidate), context)
        if name.endswith(".xsd"):
            self.missing.append(name)
            return self.resolve_string(_EMPTY_SCHEMA, context)
        return self.resolve_string("", context)  # a DTD or anything else: nothing


def _schema_parser(directory: Path) -> tuple[etree.XMLParser, _LocalOnly]:
    # Schema files are the operator's own choice, not message input, but they still never
    # reach the network; some official files use internal entities, which are allowed here.
    parser = etree.XMLParser(load_dtd=False, no_network=True, resolve_entities=True)
    resolver = _LocalOnly(directory)
    parser.resolvers.add(resolver)
    return parser, resolver


@dataclass
class SchemaSet:
    directory: Path
    namespaces: dict[str, Path]
    schema: etree.XMLSchema
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def covers(self, ns: str) -> bool:
        return ns in self.namespaces

    def validate(self, kith_root: etree._Element, most: int = 200) -> list[Issue]:
        """Schema issues for one KITH root element (a wrapper around it is not validated); at
        most ``most`` of them rendered, the rest counted."""
        target = kith_root
        if kith_root.getparent() is not None:
            target = copy.deepcopy(kith_root)  # keeps source line numbers
        with self.lock:  # an XMLSchema object keeps its error log: one validation at a time
            ok = self.schema.validate(target)
            log = self.schema.error_log if not ok else None
            count = len(log) if log is not None else 0
            entries = [log[i] for i in range(min(count, most))] if log is not None else []
        issues = [
            error(
                "XSD_INVALID",
                describe(entry.type_name, entry.message),
                line=entry.line or None,
                path=_readable_path(target, entry.path),
                apprec_code="T02",
            )
            for entry in entries
        ]
        if count > most:
            issues.append(
                Issue(
                    "info", TRUNCATED, f"{count - most} more schema errors are not shown; fix the first ones"
                )
            )
        return issues


_NS_IN_MESSAGE = re.compile(r"\{[^}]*\}")
_NAME = re.compile(r"^[\w.:-]{1,80}$")
_SUBJECT = re.compile(r"^Element '([^']*)'(?:, attribute '([^']*)')?: ")
_EXPECTED = re.compile(r"Expected is (?:one of )?\( ([^()]*) \)")
_FACET = re.compile(r"^\[facet '([A-Za-z]{1,30})'\]")
_REQUIRED_ATTRIBUTE = re.compile(r"^The attribute '([^']*)' is required")
_TYPE_AT_END = re.compile(r"of the (?:atomic|union|list) type '([^']*)'\.$")
_FIXED_AT_END = re.compile(r"fixed value constraint '([^']*)'\.$")
_FIXED_VALUE = re.compile(r"^[\w .:/-]{1,64}$")
_STRUCTURE = {
    "SCHEMAV_CVC_COMPLEX_TYPE_2_1": "must be empty",
    "SCHEMAV_CVC_COMPLEX_TYPE_2_2": "must hold text only, not elements",
    "SCHEMAV_CVC_TYPE_3_1_2": "must hold text only, not elements",
    "SCHEMAV_CVC_COMPLEX_TYPE_2_3": "must hold elements only, not text",
    "SCHEMAV_CVC_ELT_1": "is not declared by any schema in the schema directory",
    "SCHEMAV_CVC_ELT_2": "is declared abstract and cannot be used",
    "SCHEMAV_CVC_ELT_3_1": "must not be nil",
    "SCHEMAV_CVC_ELT_3_2_1": "is nil but has content",
    "SCHEMAV_CVC_ELT_4_1": "names an xsi:type that is not a type",
    "SCHEMAV_CVC_ELT_4_2": "names an xsi:type that cannot be used here",
    "SCHEMAV_CVC_ELT_4_3": "names an xsi:type that is not derived from its declared type",
    "SCHEMAV_CVC_WILDCARD": "is not allowed by the wildcard here",
}
_ATTRIBUTE_NOT_ALLOWED = frozenset(
    {"SCHEMAV_CVC_COMPLEX_TYPE_3_2_1", "SCHEMAV_CVC_COMPLEX_TYPE_3_2_2", "SCHEMAV_CVC_TYPE_3_1_1"}
)
_FIXED = frozenset({"SCHEMAV_CVC_ELT_5_2_2_2_1", "SCHEMAV_CVC_ELT_5_2_2_2_2", "SCHEMAV_CVC_AU"})
_DATATYPE = frozenset(
    {
        "SCHEMAV_CVC_DATATYPE_VALID_1_2_1",
        "SCHEMAV_CVC_DATATYPE_VALID_1_2_2",
        "SCHEMAV_CVC_DATATYPE_VALID_1_2_3",
        "SCHEMAV_CVC_ATTRIBUTE_3",
        "SCHEMAV_CVC_ELT_5_2_1",
        "SCHEMAV_CVC_SIMPLE_TYPE",
    }
)


def _name(raw: str | None) -> str | None:
    if raw is None:
        return None
    bare = _NS_IN_MESSAGE.sub("", raw)
    return bare if _NAME.match(bare) and not ID_LIKE.search(bare) else "(unnamed)"


def describe(type_name: str, message: str) -> str:
    """A libxml2 schema error in words built only from its error type and the names of
    elements, attributes, types and facets; never from the text around them, which quotes
    the sender's values (a birth date, a name, a national id), and a value with a quote in
    it would defeat any attempt to cut the value out.

    Names are read only at fixed positions (the start of the message; its very end for a
    type or a fixed value), which a quoted value cannot reach.
    """
    subject = _SUBJECT.match(message)
    element = _name(subject.group(1)) if subject else None
    attribute = _name(subject.group(2)) if subject else None
    rest = message[subject.end() :] if subject else ""
    what = f"attribute {attribute} of element {element}" if attribute else f"element {element or '(unnamed)'}"
    if type_name in ("SCHEMAV_ELEMENT_CONTENT", "SCHEMAV_CVC_COMPLEX_TYPE_2_4"):
        expected = _EXPECTED.search(rest)
        names = [_name(n.strip()) for n in expected.group(1).split(",")][:10] if expected else []
        hint = f"; expected: {', '.join(n for n in names if n)}" if names else ""
        if rest.startswith("Missing child element"):
            return f"element {element} lacks a required child element{hint}"
        return f"element {element} is not expected here{hint}"
    if type_name in _ATTRIBUTE_NOT_ALLOWED:
        return f"attribute {attribute} is not allowed on element {element}"
    if type_name == "SCHEMAV_CVC_COMPLEX_TYPE_4":
        required = _REQUIRED_ATTRIBUTE.match(rest)
        name = _name(required.group(1)) if required else None
        return f"element {element} lacks a required attribute" + (f" ({name})" if name else "")
    if type_name in _STRUCTURE:
        return f"{what} {_STRUCTURE[type_name]}"
    if type_name in _FIXED:
        fixed = _FIXED_AT_END.search(rest)
        if fixed and _FIXED_VALUE.match(fixed.group(1)):
            return f"the value of {what} must be '{fixed.group(1)}'"
        return f"the value of {what} is not the fixed value its schema requires"
    facet = _FACET.match(rest)
    if facet:
        return f"the value of {what} breaks the {facet.group(1)} rule of its type"
    if type_name in _DATATYPE:
        found = _TYPE_AT_END.search(rest)
        type_label = _name(found.group(1)) if found else None
        return f"the value of {what} is not a valid {type_label or 'value of its type'}"
    return f"{what} does not satisfy the schema ({type_name})"


def _readable_path(target: etree._Element, path: str | None) -> str | None:
    """libxml2 reports positional paths (/*/*[3]/*); turn them into element names."""
    if not path:
        return None
    try:
        found = target.getroottree().xpath(path)
    except etree.XPathError:
        return None
    if isinstance(found, list) and found and isinstance(found[0], etree._Element):
        return path_of(found[0])
    return None


_CACHE: dict[Path, SchemaSet] = {}
_CACHE_LOCK = threading.Lock()


def load_schema_set(directory: Path | None = None) -> SchemaSet:
    """Compile (once per process) the schemas in ``directory``; raise ConfigError if the
    directory is missing, has no schemas, or a schema or one of its imports is unusable."""
    directory = (directory or default_schema_dir()).resolve()
    with _CACHE_LOCK:
        cached = _CACHE.get(directory)
        if cached is not None:
            return cached
        result = _compile(directory)
        _CACHE[directory] = result
        return result


def _compile(directory: Path) -> SchemaSet:
    if not directory.is_dir():
        raise ConfigError(
            f"schema directory {directory} does not exist; point --schemas or "
            "[kith] schemas at a directory of .xsd files"
        )
    parser, resolver = _schema_parser(directory)
    namespaces: dict[str, Path] = {}
    for path in sorted(directory.glob("*.xsd")):
        try:
            tree = etree.parse(str(path), parser)
        except etree.XMLSyntaxError as exc:
            raise ConfigError(f"schema {path} is not readable XML ({exc}); replace the file") from exc
        tns = tree.getroot().get("targetNamespace")
        if tns and tns not in namespaces:
            namespaces[tns] = path
    if not namespaces:
        raise ConfigError(f"schema directory {directory} holds no .xsd file with a target namespace")
    imports = "".join(
        f'<xs:import namespace="{ns}" schemaLocation="{path.name}"/>' for ns, path in namespaces.items()
    )
    bundle = (
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" '
        'targetNamespace="urn:pfhjem-msg:schema-bundle">' + imports + "</xs:schema>"
    )
    doc = etree.fromstring(bundle.encode(), parser, base_url=str(directory / "bundle.xsd"))
    try:
        schema = etree.XMLSchema(doc)
    except etree.XMLSchemaParseError as exc:
        raise ConfigError(f"the schemas in {directory} do not compile: {exc}") from exc
    if resolver.missing:
        raise ConfigError(
            f"the schemas in {directory} import files that are not there: "
            f"{', '.join(sorted(set(resolver.missing)))}; add them to the directory"
        )
    return SchemaSet(directory, namespaces, schema)
