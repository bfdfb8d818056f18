"""Mail for alert actions: the message (pure) and its delivery over SMTP (blocking; run in a thread)."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage


class MailNotConfigured(Exception):
    """No SMTP server is configured: mail actions cannot run."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    username: str = ""
    password: str = ""
    starttls: bool = False
    timeout_s: float = 10.0


def compose(
    sender: str,
    to: Sequence[str],
    alertname: str,
    status: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    starts_at: str,
    portal_url: str = "",
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    subject = annotations.get("summary") or alertname
    msg["Subject"] = f"[OpenPAI alert] {alertname}: {subject}"[:200]
    lines = [f"Alert {alertname} is {status} since {starts_at}.", ""]
    if annotations.get("description"):
        lines += [annotations["description"], ""]
    lines += ["Labels:"] + [f"  {k}: {v}" for k, v in sorted(labels.items())]
    if portal_url and labels.get("job_name"):
        lines += ["", f"Job: {portal_url.rstrip('/')}/api/v2/jobs/{labels['job_name']}"]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def send(config: SmtpConfig | None, msg: EmailMessage) -> None:
    if config is None:
        raise MailNotConfigured("no SMTP server is configured (PAI_SMTP_HOST)")
    with smtplib.SMTP(config.host, config.port, timeout=config.timeout_s) as smtp:
        if config.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if config.username:
            smtp.login(config.username, config.password)
        smtp.send_message(msg)
