"""E-mail: one message per notice through an SMTP server (STARTTLS and AUTH by
default; implicit TLS with security: ssl; plain only with security: none)."""

from __future__ import annotations

import smtplib
import ssl
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from drorch.errors import DrorchError
from drorch.notify.findings import Notice


# long subjects stay on one line (RFC 5322 allows 998 characters): folded ones reach
# some readers with a leading space
HEADERS_UNFOLDED = email_policy.default.clone(max_line_length=998)


def build_message(model, notice: Notice) -> EmailMessage:
    message = EmailMessage(policy=HEADERS_UNFOLDED)
    message["Subject"] = notice.subject()
    message["From"] = model.from_
    message["To"] = ", ".join(model.to)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=model.from_.rpartition("@")[2] or None)
    message["X-Drorch-Severity"] = notice.severity
    message["X-Drorch-State"] = notice.state
    if notice.key:
        message["X-Drorch-Key"] = notice.key
    message.set_content(notice.body())
    for name, data in notice.attachments.items():
        subtype = "json" if name.endswith(".json") else "markdown" if name.endswith(".md") else "octet-stream"
        maintype = "application" if subtype != "markdown" else "text"
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return message


def tls_context(model) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=model.ca_file) if model.ca_file else ssl.create_default_context()
    return context


def send_mail(model, password: str | None, notice: Notice) -> None:
    host, port = model.host_port
    timeout = model.timeout.total_seconds()
    message = build_message(model, notice)
    try:
        if model.security == "ssl":
            client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=tls_context(model))
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            client.ehlo()
            if model.security == "starttls":
                if not client.has_extn("starttls"):
                    raise DrorchError(f"the SMTP server {host}:{port} does not offer STARTTLS",
                                      "use a server that does, or security: ssl for implicit TLS")
                client.starttls(context=tls_context(model))
                client.ehlo()
            if model.user:
                client.login(model.user, password or "")
            refused = client.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise DrorchError(f"the SMTP server {host}:{port} refused the login of {model.user}: {exc.smtp_code}",
                          "check `user` and the password the reference points to") from None
    except ssl.SSLError as exc:
        raise DrorchError(f"TLS with the SMTP server {host}:{port} failed: {exc.reason or exc}",
                          "check the server's certificate, or give its CA in ca_file") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DrorchError(f"the SMTP server {host}:{port} could not take the message: {exc}",
                          "check smtp: HOST:PORT and the server; the notice is tried again") from None
    if refused:
        raise DrorchError(f"the SMTP server refused recipient(s): {', '.join(sorted(refused))}")
