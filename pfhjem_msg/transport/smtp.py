"""Delivery by e-mail (aiosmtplib). 4xx replies and connection problems are transient; 5xx
replies are permanent. STARTTLS and authentication as configured."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage

from pfhjem_msg.errors import PermanentDeliveryError, TransientDeliveryError


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    sender: str = "pfhjem-msg@localhost"
    timeout: float = 30.0


def build_mail(settings: SmtpSettings, to: str, filename: str, data: bytes, subject: str) -> EmailMessage:
    """A KITH message as an attachment; a text (a follow-up reminder) as the body. The subject
    carries ids only, never patient data."""
    mail = EmailMessage()
    mail["From"] = settings.sender
    mail["To"] = to
    mail["Subject"] = subject
    if filename.endswith(".txt"):
        mail.set_content(data.decode("utf-8"))
        return mail
    mail.set_content("KITH-melding vedlagt.\n")
    mail.add_attachment(data, maintype="application", subtype="xml", filename=filename)
    return mail


async def send(settings: SmtpSettings, to: str, filename: str, data: bytes, subject: str) -> None:
    import aiosmtplib  # here: processes that never send mail start faster without it

    mail = build_mail(settings, to, filename, data, subject)
    try:
        await aiosmtplib.send(
            mail,
            hostname=settings.host,
            port=settings.port,
            start_tls=settings.starttls,
            username=settings.username,
            password=settings.password,
            timeout=settings.timeout,
        )
    except aiosmtplib.SMTPResponseException as exc:
        text = f"{settings.host}:{settings.port} answered {exc.code} {exc.message}"[:300]
        if 500 <= exc.code < 600:
            raise PermanentDeliveryError(text + "; the address or the message is refused") from exc
        raise TransientDeliveryError(text) from exc
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
        raise TransientDeliveryError(
            f"cannot reach {settings.host}:{settings.port} ({type(exc).__name__})"
        ) from exc


def send_sync(settings: SmtpSettings, to: str, filename: str, data: bytes, subject: str) -> None:
    """For the pipeline's worker thread, which has no event loop of its own."""
    import asyncio

    asyncio.run(send(settings, to, filename, data, subject))
