"""Receivers of notifications for tests, on 127.0.0.1: a webhook (HTTP) server
that keeps every JSON POST, and an SMTP server (aiosmtpd) with STARTTLS — a
certificate signed by a CA made for the test — and AUTH LOGIN/PLAIN."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class WebhookServer:
    """POSTs received (path, headers, body as JSON).  `fail_next(n)` answers 500 n times."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.failing = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    if outer.failing:
                        outer.failing -= 1
                        self.send_response(500)
                        self.end_headers()
                        return
                    outer.posts.append({"path": self.path, "headers": dict(self.headers),
                                        "json": json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, fmt, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook/T0KEN-secret"

    def start(self) -> "WebhookServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, count: int) -> None:
        with self.lock:
            self.failing = count

    def payloads(self) -> list[dict]:
        with self.lock:
            return [p["json"] for p in self.posts]

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "") -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.payloads()
            if predicate(found):
                return found
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; received: {json.dumps(self.payloads(), indent=1)}")


# -- SMTP ------------------------------------------------------------------------------------


def make_ca_and_cert(directory: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for 127.0.0.1 / localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "drorch test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: object  # email.message.EmailMessage
    tls: bool
    login: str | None


@dataclass
class SmtpServer:
    """aiosmtpd on 127.0.0.1 requiring STARTTLS before AUTH, and AUTH before mail."""

    directory: Path
    user: str = "drorch"
    password: str = "s3cret-pw"
    mode: str = "starttls"  # starttls (required before AUTH) | ssl (implicit TLS) | plain (no TLS offered)
    mails: list[Mail] = field(default_factory=list)
    refused_logins: list[str] = field(default_factory=list)

    def start(self) -> "SmtpServer":
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        from tests.s3server import free_port

        self.ca, cert, key = make_ca_and_cert(self.directory)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
                login = session.auth_data
                outer.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos),
                                        message_from_bytes(envelope.original_content, policy=email_policy.default),
                                        session.ssl is not None or
                                        server.transport.get_extra_info("ssl_object") is not None,
                                        login.decode() if isinstance(login, bytes)
                                        else login))
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login == self.user.encode() and auth_data.password == self.password.encode()
            if not ok:
                outer.refused_logins.append(auth_data.login.decode(errors="replace"))
            return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)

        self.port = free_port()
        options = {"starttls": dict(tls_context=context, require_starttls=True, auth_require_tls=True),
                   "ssl": dict(ssl_context=context, auth_require_tls=False),
                   "plain": dict(auth_require_tls=False)}[self.mode]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, auth_required=True,
                                     authenticator=authenticator, ready_timeout=10, **options)
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Mail]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.mails) >= count:
                return list(self.mails)
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {count} mail(s); got {len(self.mails)}")

    def wait_subject(self, part: str, timeout: float = 30.0) -> Mail:
        """The first mail whose subject contains part."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for mail in list(self.mails):
                if part in str(mail.message["Subject"]):
                    return mail
            time.sleep(0.05)
        raise AssertionError(f"no mail with {part!r} in its subject; got "
                             f"{[str(m.message['Subject']) for m in self.mails]}")
