"""Build the project's XML schemas in ``pfhjem_msg/xsd/`` from the compact sources in
``pfhjem_msg/xsd/src/``.

The sources say what each KITH standard contains (element, type, how often) in a few
characters a line, which is far easier to check against the standards' documentation than
hand-written XSD. The generated files are committed and shipped inside the package (the
sources are not), so the product needs no build step;
``tests/test_xsd_sources.py`` fails when they drift from the sources.

Source syntax (indentation is significant, two spaces a level)::

    schema NS prefix=p file=name.xsd [variant=TAG]   one output file (repeatable: variants)
    import p NS location                          an imported namespace
    element Name Type                             a global element
    type Name [mixed]                             a named complex type, followed by its body:
      Child Type [occ]                            a local element (occ: ? * + or n..m)
      ref p:Name [occ]                            a reference to a global element
      choice [occ] / seq [occ]                    a nested group, body indented below it
      any [strict|lax|skip] [ns=...] [occ]        a wildcard
      @attr Type [required] [fixed=V]             an attribute
      text Type                                   simple content of the given type
    simple Name base [pattern=RE]                 a named simple type
    union Name member member ...                  a union simple type

A trailing ``{TAG,TAG}`` keeps a line only in the variants named.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "pfhjem_msg" / "xsd"
SRC = OUT / "src"
XS = "http://www.w3.org/2001/XMLSchema"


@dataclass
class Line:
    indent: int
    words: list[str]
    number: int


@dataclass
class Output:
    ns: str
    prefix: str
    file: str
    variant: str | None
    imports: list[tuple[str, str, str]] = field(default_factory=list)


def _occurs(word: str | None) -> str:
    if word is None:
        return ""
    table = {"?": ("0", "1"), "*": ("0", "unbounded"), "+": ("1", "unbounded")}
    if word in table:
        lo, hi = table[word]
    else:
        m = re.fullmatch(r"(\d+)\.\.(\d+|\*)", word)
        if not m:
            raise ValueError(f"bad occurrence {word!r}")
        lo, hi = m.group(1), "unbounded" if m.group(2) == "*" else m.group(2)
    out = ""
    if lo != "1":
        out += f' minOccurs="{lo}"'
    if hi != "1":
        out += f' maxOccurs="{hi}"'
    return out


def _qualify(name: str, prefix: str) -> str:
    return name if ":" in name else f"{prefix}:{name}"


def _read(path: Path) -> list[Line]:
    lines = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not text.strip():
            continue
        indent = (len(text) - len(text.lstrip(" "))) // 2
        lines.append(Line(indent, text.split(), number))
    return lines


def _keep(line: Line, variant: str | None) -> Line | None:
    last = line.words[-1]
    if last.startswith("{") and last.endswith("}"):
        tags = last[1:-1].split(",")
        if variant not in tags:
            return None
        return Line(line.indent, line.words[:-1], line.number)
    return line


def _body(lines: list[Line], start: int, indent: int, out: list[str], o: Output, pad: str) -> int:
    """Emit the particles and attributes nested at ``indent``; return the next line index."""
    i = start
    attrs: list[str] = []
    text_type: str | None = None
    particles: list[str] = []
    while i < len(lines) and lines[i].indent >= indent:
        line = lines[i]
        w = line.words
        if w[0] in ("choice", "seq"):
            tag = "choice" if w[0] == "choice" else "sequence"
            inner: list[str] = []
            i = _body(lines, i + 1, indent + 1, inner, o, pad + "  ")
            particles.append(f"{pad}<xs:{tag}{_occurs(w[1] if len(w) > 1 else None)}>")
            particles.extend(inner)
            particles.append(f"{pad}</xs:{tag}>")
            continue
        if w[0] == "ref":
            particles.append(f'{pad}<xs:element ref="{w[1]}"{_occurs(w[2] if len(w) > 2 else None)}/>')
        elif w[0] == "any":
            pc, ns, occ = "strict", None, None
            for x in w[1:]:
                if x in ("strict", "lax", "skip"):
                    pc = x
                elif x.startswith("ns="):
                    ns = x[3:]
                else:
                    occ = x
            nsattr = f' namespace="{ns}"' if ns else ""
            particles.append(f'{pad}<xs:any{nsattr} processContents="{pc}"{_occurs(occ)}/>')
        elif w[0].startswith("@"):
            extra = ""
            for x in w[2:]:
                if x == "required":
                    extra += ' use="required"'
                elif x.startswith("fixed="):
                    extra += f" fixed={quoteattr(x[6:])}"
            attrs.append(f'{pad}<xs:attribute name="{w[0][1:]}" type="{_qualify(w[1], o.prefix)}"{extra}/>')
        elif w[0] == "text":
            text_type = _qualify(w[1], o.prefix)
        else:
            name, typ = w[0], w[1]
            extra = ""
            rest = w[2:]
            occ = None
            for x in rest:
                if x.startswith("fixed="):
                    extra += f" fixed={quoteattr(x[6:].replace('_', ' '))}"
                elif x.startswith("default="):
                    extra += f" default={quoteattr(x[8:].replace('_', ' '))}"
                else:
                    occ = x
            particles.append(
                f'{pad}<xs:element name="{name}" type="{_qualify(typ, o.prefix)}"{_occurs(occ)}{extra}/>'
            )
        i += 1
    if text_type is not None:
        out.append(f"{pad}<xs:simpleContent>")
        out.append(f'{pad}  <xs:extension base="{text_type}">')
        out.extend("  " + a for a in attrs)
        out.append(f"{pad}  </xs:extension>")
        out.append(f"{pad}</xs:simpleContent>")
        return i
    if particles:
        if indent == 1:
            out.append(f"{pad}<xs:sequence>")
            out.extend("  " + p for p in particles)
            out.append(f"{pad}</xs:sequence>")
        else:
            out.extend(particles)
    out.extend(attrs)
    return i


def render(path: Path) -> dict[str, str]:
    """Return {file name: XSD text} for every output a source declares."""
    raw = _read(path)
    outputs = [
        Output(
            ns=line.words[1],
            prefix=dict(x.split("=", 1) for x in line.words[2:])["prefix"],
            file=dict(x.split("=", 1) for x in line.words[2:])["file"],
            variant=dict(x.split("=", 1) for x in line.words[2:]).get("variant"),
        )
        for line in raw
        if line.words[0] == "schema"
    ]
    result = {}
    for o in outputs:
        lines = [k for k in (_keep(x, o.variant) for x in raw if x.words[0] != "schema") if k]
        body: list[str] = []
        imports: list[str] = []
        i = 0
        while i < len(lines):
            w = lines[i].words
            if w[0] == "import":
                o.imports.append((w[1], w[2], w[3]))
                imports.append(f'  <xs:import namespace="{w[2]}" schemaLocation="{w[3]}"/>')
                i += 1
            elif w[0] == "element":
                body.append(f'  <xs:element name="{w[1]}" type="{_qualify(w[2], o.prefix)}"/>')
                i += 1
            elif w[0] == "type":
                mixed = ' mixed="true"' if "mixed" in w[2:] else ""
                body.append(f'  <xs:complexType name="{w[1]}"{mixed}>')
                i = _body(lines, i + 1, 1, body, o, "    ")
                body.append("  </xs:complexType>")
            elif w[0] == "simple":
                body.append(f'  <xs:simpleType name="{w[1]}">')
                facets = [x for x in w[3:] if x.startswith("pattern=")]
                if facets:
                    body.append(f'    <xs:restriction base="{w[2]}">')
                    for f in facets:
                        body.append(f"      <xs:pattern value={quoteattr(f[8:])}/>")
                    body.append("    </xs:restriction>")
                else:
                    body.append(f'    <xs:restriction base="{w[2]}"/>')
                body.append("  </xs:simpleType>")
                i += 1
            elif w[0] == "union":
                body.append(f'  <xs:simpleType name="{w[1]}">')
                body.append(f'    <xs:union memberTypes="{" ".join(w[2:])}"/>')
                body.append("  </xs:simpleType>")
                i += 1
            else:
                raise ValueError(f"{path.name}:{lines[i].number}: cannot read {' '.join(w)!r}")
        ns_decls = "".join(f'\n    xmlns:{p}="{ns}"' for p, ns, _ in o.imports)
        head = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<!-- pfhjem-msg schema, generated from src/{path.name} by tools/build_xsd.py."
            " Edit the source, not this file. -->\n"
            f'<xs:schema xmlns:xs="{XS}"\n    xmlns:{o.prefix}="{o.ns}"{ns_decls}\n'
            f'    targetNamespace="{o.ns}"\n'
            '    elementFormDefault="qualified" attributeFormDefault="unqualified">\n'
        )
        result[o.file] = head + "\n".join(imports + body) + "\n</xs:schema>\n"
    return result


def build() -> dict[str, str]:
    files: dict[str, str] = {}
    for src in sorted(SRC.glob("*.xsdl")):
        files.update(render(src))
    return files


def main(argv: list[str]) -> int:
    files = build()
    if "--check" in argv:
        stale = [n for n, t in files.items() if not (OUT / n).exists() or (OUT / n).read_text("utf-8") != t]
        for n in stale:
            print(f"pfhjem_msg/xsd/{n} is out of date: run python tools/build_xsd.py")
        return 1 if stale else 0
    for name, text in files.items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote pfhjem_msg/xsd/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
