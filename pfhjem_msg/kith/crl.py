"""Revocation from certificate revocation lists in a directory (``[kith] crl_dir``).

The daemon never fetches anything: operations refresh the files (e.g. a cron job that
downloads the CAs' published CRLs and renames them into place). A CRL counts for a
certificate only when its issuer name is the certificate's issuer and its signature verifies
with the issuing certificate's key, so a stray or forged file cannot vouch for anyone. A CRL
past its nextUpdate is still used (it is the best knowledge there is) and ``status`` says it
must be refreshed. Delta CRLs, indirect CRLs and issuing-distribution-point scopes are not
read: the Norwegian enterprise CAs publish one full CRL per issuing CA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

from pfhjem_msg.kith.certpath import describe

if TYPE_CHECKING:
    from cryptography import x509

MAX_CRL_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class CrlFile:
    path: Path
    crl: x509.CertificateRevocationList | None
    problem: str | None = None


@dataclass(frozen=True)
class Revocation:
    """The revocation state of a certificate path."""

    code: str | None = None
    """S03 for a revoked certificate, S99 when revocation cannot be checked; None when fine."""
    problem: str | None = None
    warnings: list[str] = field(default_factory=list)


def load(crl_dir: Path) -> tuple[CrlFile, ...]:
    """Every CRL file in the directory, DER or PEM; read again only when a file changes."""
    try:
        entries = sorted(p for p in crl_dir.iterdir() if p.is_file() and not p.name.startswith("."))
        key = tuple((p, p.stat().st_mtime_ns, p.stat().st_size) for p in entries)
    except OSError:
        return ()
    return _load(key)


@lru_cache(maxsize=4)  # a refreshed file replaces the entry; old ones must not pile up
def _load(key: tuple[tuple[Path, int, int], ...]) -> tuple[CrlFile, ...]:
    return tuple(_read(path, size) for path, _, size in key)


def _read(path: Path, size: int) -> CrlFile:
    from cryptography import x509

    if size > MAX_CRL_BYTES:
        return CrlFile(path, None, f"CRL file {path} is larger than {MAX_CRL_BYTES} bytes; it is not read")
    try:
        data = path.read_bytes()
        if data.lstrip().startswith(b"-----BEGIN"):
            return CrlFile(path, x509.load_pem_x509_crl(data))
        return CrlFile(path, x509.load_der_x509_crl(data))
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not a CRL in DER or PEM"
        return CrlFile(path, None, f"CRL file {path} cannot be read ({why}); replace it")


def check(chain: tuple[x509.Certificate, ...], crl_dir: Path, now: datetime) -> Revocation:
    """Every certificate of a validated path but the anchor must be covered by a CRL from its
    issuer, and be on none. Without a CRL its revocation is unknown and the path is refused:
    the operator asked for revocation checking by configuring the directory."""
    files = [f.crl for f in load(crl_dir) if f.crl is not None]
    warnings: list[str] = []
    for cert, issuer in pairwise(chain):
        own = [c for c in files if c.issuer == cert.issuer and _signed_by(c, issuer)]
        if not own:
            return Revocation(
                "S99",
                f"no CRL from the issuer of the {describe(cert)} in {crl_dir}, so its revocation "
                "cannot be checked; operations must add the CA's CRL",
            )
        for c in own:
            entry = c.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None:
                when = entry.revocation_date_utc.date().isoformat()
                return Revocation("S03", f"the {describe(cert)} was revoked on {when}")
        newest = max(own, key=lambda c: c.last_update_utc)
        if newest.next_update_utc is not None and newest.next_update_utc < now:
            warnings.append(
                f"the newest CRL for the {describe(cert)} is past its nextUpdate "
                f"({newest.next_update_utc.isoformat(timespec='minutes')}); refresh {crl_dir}"
            )
    return Revocation(warnings=warnings)


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    try:
        return crl.is_signature_valid(key)  # type: ignore[arg-type]  # X25519/DH keys cannot sign: TypeError
    except (TypeError, ValueError):
        return False


def crl_warnings(crl_dir: Path | None, now: datetime) -> list[str]:
    """What ``status`` shows an operator about the CRL directory: files that cannot be read,
    CRLs past their nextUpdate, a directory with none."""
    if crl_dir is None:
        return []
    files = load(crl_dir)
    if not files:
        return [f"[kith] crl_dir {crl_dir} holds no CRL: signed messages are refused (S99) until it does"]
    out = []
    newest: dict[bytes, CrlFile] = {}
    for f in files:
        if f.crl is None:
            out.append(f.problem or f"CRL file {f.path} cannot be read")
            continue
        issuer = f.crl.issuer.public_bytes()
        seen = newest.get(issuer)
        if seen is None or (seen.crl is not None and f.crl.last_update_utc > seen.crl.last_update_utc):
            newest[issuer] = f
    for f in newest.values():  # an older CRL kept beside a fresh one is no problem
        assert f.crl is not None
        if f.crl.next_update_utc is not None and f.crl.next_update_utc < now:
            out.append(
                f"CRL {f.path.name} is past its nextUpdate "
                f"({f.crl.next_update_utc.isoformat(timespec='minutes')}): refresh it from the CA"
            )
    return out
