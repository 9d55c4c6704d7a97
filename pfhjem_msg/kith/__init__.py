"""The KITH standards: hardened parsing, schema validation, the typed message model, code-list
checks, XML signatures and the application receipt (AppRec)."""
