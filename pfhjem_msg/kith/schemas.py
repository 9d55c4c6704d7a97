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
from pfhjem_msg.kith.issues import Issue, error
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

    def validate(self, kith_root: etree._Element) -> list[Issue]:
        """Schema issues for one KITH root element (a wrapper around it is not validated)."""
        target = kith_root
        if kith_root.getparent() is not None:
            target = copy.deepcopy(kith_root)  # keeps source line numbers
        with self.lock:  # an XMLSchema object keeps its error log: one validation at a time
            ok = self.schema.validate(target)
            log = list(self.schema.error_log) if not ok else []
        return [
            error(
                "XSD_INVALID",
                _clean(entry.message),
                line=entry.line or None,
                path=_readable_path(target, entry.path),
                apprec_code="T02",
            )
            for entry in log
        ]


_NS_IN_MESSAGE = re.compile(r"\{[^}]*\}")
_VALUE_AFTER_ELEMENT = re.compile(r"(Element '[^']*'(?:, attribute '[^']*')?: )'[^']*'")
_THE_VALUE = re.compile(r"The value '[^']*'")


def _clean(message: str) -> str:
    """libxml2 names elements as {namespace}Name; the name alone is what a person reads."""
    text = _NS_IN_MESSAGE.sub("", message)
    # Values may be patient data (a birth date, a name): show the structure, never the value.
    text = _VALUE_AFTER_ELEMENT.sub(r"\1'…'", text)
    text = _THE_VALUE.sub("The value '…'", text)
    return text.strip()


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
