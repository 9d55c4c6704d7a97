"""The effective configuration written back as TOML, for ``config show``: what an operator
reads is a file the daemon would load to the same settings (keys that are not set appear as
comments, since TOML has no "none") once the masked secrets are put back. Until then it does
not load: the loader refuses a secret that is the mask, so the output reused as a file can
never run with ``********`` as a password."""

from __future__ import annotations

import json
from typing import Any

from pfhjem_msg.config import MASK

MASKED_NOTE = "  # masked: put the real secret back before loading this as a configuration"


def to_toml(data: dict[str, Any]) -> str:
    out: list[str] = []
    _table("", data, out, array=False)
    return "\n".join(out).strip() + "\n"


def _table(name: str, data: dict[str, Any], out: list[str], array: bool) -> None:
    if name:
        out += ["", f"[[{name}]]" if array else f"[{name}]"]
    tables: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], dict)):
            tables.append((key, value))
        elif value is None:
            out.append(f"# {key} is not set")
        else:
            note = MASKED_NOTE if isinstance(value, str) and MASK in value else ""
            out.append(f"{key} = {_value(value)}{note}")
    for key, value in tables:
        full = f"{name}.{key}" if name else key
        if isinstance(value, dict):
            _table(full, value, out, array=False)
        else:
            for item in value:
                _table(full, item, out, array=True)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)
