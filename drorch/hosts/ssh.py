"""One SSH connection per host (paramiko: only this module and its ssh_pipe.py import it).

Safe by default: key authentication only, the host key checked against the
policy's known_hosts before anything is sent (an unknown or changed key is
refused, never added), optional jump host.  The connection is shared by
threads: channels are bounded (sshd's MaxSessions is 10), keepalives run, a
silent channel times out, and a lost connection is made again on the next
use (callers retry what they were doing; see remote.py).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from dataclasses import dataclass
from typing import Callable

import paramiko
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from drorch.errors import HostAuthError, HostError, HostKeyError, HostUnreachableError
from drorch.hosts.ssh_pipe import ChunkPipe

log = logging.getLogger(__name__)
logging.getLogger("paramiko").addHandler(logging.NullHandler())  # its socket errors are ours to report
CONNECT_ATTEMPTS = 3
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")  # ≈ 30 % faster than CTR here
# What we let the host send per channel: bigger packets than paramiko's 32 KiB
# default halve the per-packet Python work of reading (bench/ssh; OpenSSH sends
# up to this, below its own 256 KiB packet limit), and a window that does not
# stall them.  Memory: at most WINDOW per channel, only if drorch falls behind.
MAX_PACKET = 128 << 10
WINDOW = 16 << 20


class Dropped(Exception):
    """The connection (or one channel) went away: the operation may be retried."""


class _Transport(paramiko.Transport):
    """paramiko's Transport, without its key re-exchange deadlock: when the peer
    closes a channel during a re-key, paramiko's own thread waits (30 s, then
    drops the connection) to send the reply that only it could unblock.  Such
    replies are handed to a short-lived thread that sends them after the re-key."""

    REKEY_BYTES = 1 << 32  # re-key every 4 GiB each way (paramiko: 512 MiB; OpenSSH for AES: 64 GiB)

    def __init__(self, sock):
        super().__init__(sock)
        self.packetizer.REKEY_BYTES = self.REKEY_BYTES
        self._later: queue.SimpleQueue = queue.SimpleQueue()  # in order: EOF before CLOSE
        self._later_lock = threading.Lock()
        self._sender: threading.Thread | None = None

    def _send_user_message(self, data):
        if threading.current_thread() is self and not self.clear_to_send.is_set():
            with self._later_lock:
                self._later.put(data)
                if self._sender is None or not self._sender.is_alive():
                    self._sender = threading.Thread(target=self._send_later, name="drorch-ssh-rekey", daemon=True)
                    self._sender.start()
            return
        super()._send_user_message(data)

    def _send_later(self) -> None:
        while True:
            with self._later_lock:
                if self._later.empty():
                    return
                data = self._later.get()
            try:
                super()._send_user_message(data)
            except (paramiko.SSHException, OSError, EOFError):
                return  # the connection died meanwhile: its users see that


@dataclass(frozen=True)
class SshConfig:
    name: str
    address: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    passphrase: Callable[[], str] | None = None
    jump: "SshConfig | None" = None
    become: str | None = None
    connect_timeout: float = 15.0
    io_timeout: float = 600.0
    keepalive: float = 15.0
    max_channels: int = 8

    @property
    def where(self) -> str:
        """`name (address:port)` for messages."""
        via = f" via {self.jump.name}" if self.jump else ""
        return f"{self.name} ({self.address}:{self.port}{via})"

    @property
    def known_hosts_name(self) -> str:
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


class Channel:
    """An exec channel, with paramiko's failures turned into Dropped."""

    def __init__(self, channel, release: Callable[[], None], where: str):
        self._channel = channel
        self._release = release
        self.where = where

    def recv(self, n: int) -> bytes:
        try:
            return self._channel.recv(n)
        except socket.timeout:
            raise Dropped(f"no data from {self.where} for {self._channel.gettimeout():g}s") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise Dropped(f"connection to {self.where} lost: {exc}") from None

    def recv_stderr(self, n: int) -> bytes:
        try:
            return self._channel.recv_stderr(n)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise Dropped(f"connection to {self.where} lost: {exc}") from None

    def stderr_ready(self) -> bool:
        return self._channel.recv_stderr_ready()

    def sendall(self, data: bytes) -> None:
        try:
            self._channel.sendall(data)
        except socket.timeout:
            raise Dropped(f"{self.where} stopped reading for {self._channel.gettimeout():g}s") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise Dropped(f"connection to {self.where} lost: {exc}") from None

    def set_timeout(self, seconds: float) -> None:
        """How long recv() and sendall() wait before the channel counts as lost."""
        self._channel.settimeout(seconds)

    def shutdown_write(self) -> None:
        try:
            self._channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass

    def exit_status(self) -> int:
        status = self._channel.recv_exit_status()
        if status == -1:
            raise Dropped(f"connection to {self.where} lost before the command's exit status came")
        return status

    @property
    def closed(self) -> bool:
        return self._channel.closed or not self.connection_alive

    @property
    def transport(self):
        return self._channel.get_transport()

    @property
    def connection_alive(self) -> bool:
        transport = self._channel.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        release, self._release = self._release, None
        try:
            self._channel.close()
        except Exception:  # noqa: BLE001 - closing a dead channel
            pass
        if release:
            release()


class SshConnection:
    """The one connection to a host, made on first use and again after a drop."""

    def __init__(self, config: SshConfig):
        self.config = config
        self.jump = SshConnection(config.jump) if config.jump else None
        self._lock = threading.Lock()
        self._transport: paramiko.Transport | None = None
        self._slots = threading.Condition()
        self._in_use = 0
        #: called (without locks held) when all channels are taken: each may close an idle one
        self.reclaimers: list[Callable[[], bool]] = []

    # -- the connection ------------------------------------------------------------

    def transport(self) -> paramiko.Transport:
        with self._lock:
            if self._transport is None or not self._transport.is_active():
                self._transport = self._connect_retrying()
            return self._transport

    def connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    def lost(self, transport: paramiko.Transport | None = None) -> None:
        """Forget a broken connection (the next use connects again)."""
        with self._lock:
            if self._transport is not None and (transport is None or transport is self._transport):
                self._transport.close()
                self._transport = None

    def close(self) -> None:
        self.lost()
        if self.jump:
            self.jump.close()

    def _connect_retrying(self) -> paramiko.Transport:
        retrying = Retrying(retry=retry_if_exception_type(Dropped), stop=stop_after_attempt(CONNECT_ATTEMPTS),
                            wait=wait_exponential(multiplier=0.5, max=5), reraise=True)
        try:
            return retrying(self._connect)
        except Dropped as exc:
            raise HostUnreachableError(
                f"cannot connect to host {self.config.where}: {exc} ({CONNECT_ATTEMPTS} attempts)",
                "check that the host is up, that sshd listens on that address and port, and the "
                "network between here and there") from None

    def _connect(self) -> paramiko.Transport:
        cfg = self.config
        sock = self._open_socket()
        transport = _Transport(sock)
        try:
            options = transport.get_security_options()
            options.ciphers = [c for c in FAST_CIPHERS if c in options.ciphers] + [
                c for c in options.ciphers if c not in FAST_CIPHERS]
            known = _known_keys(cfg)
            options.key_types = _prefer(options.key_types, [k.get_name() for k in known])
            try:
                transport.start_client(timeout=cfg.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise Dropped(f"SSH handshake failed: {exc or type(exc).__name__}") from None
            _check_host_key(cfg, transport.get_remote_server_key(), known)
            _authenticate(cfg, transport)
            transport.set_keepalive(max(1, int(cfg.keepalive)))
            log.info("connected to %s as %s", cfg.where, cfg.user)
            return transport
        except BaseException:
            transport.close()
            raise

    def _open_socket(self):
        cfg = self.config
        if self.jump is not None:
            try:
                return self.jump.transport().open_channel(
                    "direct-tcpip", (cfg.address, cfg.port), ("127.0.0.1", 0), timeout=cfg.connect_timeout)
            except paramiko.ChannelException as exc:
                raise HostUnreachableError(
                    f"jump host {self.jump.config.where} refused to forward to {cfg.address}:{cfg.port} "
                    f"for host {cfg.name}: {exc.text}",
                    f"allow it in the jump host's sshd_config (AllowTcpForwarding, PermitOpen "
                    f"{cfg.address}:{cfg.port}), and check that {cfg.address}:{cfg.port} is reachable "
                    "from the jump host") from None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self.jump.lost()
                raise Dropped(f"through jump host {self.jump.config.name}: {exc}") from None
        try:
            sock = socket.create_connection((cfg.address, cfg.port), timeout=cfg.connect_timeout)
        except OSError as exc:
            raise Dropped(exc.strerror or str(exc)) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small requests, no 40 ms stalls
        return sock

    # -- channels ----------------------------------------------------------------------

    def open_exec(self, command: bytes) -> Channel:
        """Run command (text for the login shell) on a new channel; Dropped if the
        connection fails (after connecting again has been tried)."""
        self._take_slot()
        try:
            transport = self.transport()
            try:
                channel = transport.open_session(window_size=WINDOW, max_packet_size=MAX_PACKET,
                                                 timeout=self.config.connect_timeout)
            except paramiko.ChannelException as exc:
                raise HostError(f"host {self.config.where} refused a new SSH channel: {exc.text}",
                                "lower max_channels for this host (sshd allows MaxSessions, 10 by "
                                "default, per connection)") from None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self.lost(transport)
                raise Dropped(f"connection to {self.config.where} lost: {exc}") from None
            channel.settimeout(self.config.io_timeout)
            channel.in_buffer, channel.in_stderr_buffer = ChunkPipe(), ChunkPipe()  # (nothing came yet)
            try:
                channel.exec_command(command)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                channel.close()
                self.lost(transport)
                raise Dropped(f"connection to {self.config.where} lost: {exc}") from None
        except BaseException:
            self._give_slot()
            raise
        return Channel(channel, self._give_slot, self.config.where)

    @property
    def channels_in_use(self) -> int:
        return self._in_use

    def _take_slot(self) -> None:
        while True:
            with self._slots:
                if self._in_use < self.config.max_channels:
                    self._in_use += 1
                    return
            if any(reclaim() for reclaim in self.reclaimers):
                continue
            with self._slots:
                if self._in_use >= self.config.max_channels:
                    self._slots.wait(1.0)

    def _give_slot(self) -> None:
        with self._slots:
            self._in_use -= 1
            self._slots.notify()


# -- host keys ---------------------------------------------------------------------------


def _known_keys(cfg: SshConfig) -> list:
    """The keys known_hosts lists for this host (empty: unknown host)."""
    try:
        keys = paramiko.HostKeys(cfg.known_hosts)
    except FileNotFoundError:
        raise HostKeyError(f"host {cfg.where}: known_hosts file {cfg.known_hosts} does not exist; "
                           "nothing was sent to the host",
                           f"create it with the host's key after checking it: {_keyscan(cfg, 'ssh-ed25519')}") from None
    except (OSError, paramiko.hostkeys.InvalidHostKey) as exc:
        raise HostKeyError(f"host {cfg.where}: cannot read known_hosts file {cfg.known_hosts}: {exc}",
                           "fix the file (one `host keytype base64` line per key)") from None
    found = keys.lookup(cfg.known_hosts_name)
    return list(found.values()) if found else []


def _prefer(offered: tuple, known_types: list[str]) -> list[str]:
    """Ask first for the key types known_hosts has for this host."""
    wanted = []
    for name in known_types:
        wanted += ["rsa-sha2-512", "rsa-sha2-256"] if name == "ssh-rsa" else [name]
    return [t for t in wanted if t in offered] + [t for t in offered if t not in wanted]


def _keyscan(cfg: SshConfig, key_name: str) -> str:
    kind = "ecdsa" if key_name.startswith("ecdsa") else "rsa" if "rsa" in key_name else "ed25519"
    port = f"-p {cfg.port} " if cfg.port != 22 else ""
    where = f"(on jump host {cfg.jump.name}) " if cfg.jump else ""
    return (f"{where}ssh-keyscan {port}-t {kind} {cfg.address} > new_key; ssh-keygen -lf new_key; compare with "
            f"`ssh-keygen -lf /etc/ssh/ssh_host_{kind}_key.pub` run on the host itself; if they match: "
            f"cat new_key >> {cfg.known_hosts}")


def _check_host_key(cfg: SshConfig, offered, known: list) -> None:
    shown = f"{offered.get_name()} {offered.fingerprint}"
    if not known:
        raise HostKeyError(
            f"host {cfg.where} is not in {cfg.known_hosts}: it offered the unknown host key {shown}; "
            "refused, nothing was sent to it",
            f"check that this fingerprint is the host's own, then add it: {_keyscan(cfg, offered.get_name())}")
    if any(key.asbytes() == offered.asbytes() for key in known):
        return
    listed = ", ".join(f"{k.get_name()} {k.fingerprint}" for k in known)
    raise HostKeyError(
        f"HOST KEY CHANGED for host {cfg.where}: it offered {shown}, but {cfg.known_hosts} lists "
        f"{listed} for {cfg.known_hosts_name}; refused, nothing was sent to it (someone may be "
        "intercepting the connection, or the host was reinstalled)",
        f"if the change is expected, check the new fingerprint on the host itself, then replace the "
        f"old key: ssh-keygen -R '{cfg.known_hosts_name}' -f {cfg.known_hosts}; then "
        f"{_keyscan(cfg, offered.get_name())}")


# -- authentication --------------------------------------------------------------------------


def load_key(cfg: SshConfig):
    try:
        passphrase = cfg.passphrase().encode() if cfg.passphrase else None
        return paramiko.PKey.from_path(cfg.key_file, passphrase)
    except FileNotFoundError:
        raise HostAuthError(f"host {cfg.where}: key_file {cfg.key_file} does not exist",
                            "create a key (ssh-keygen -t ed25519 -f FILE) or fix key_file") from None
    except PermissionError:
        raise HostAuthError(f"host {cfg.where}: cannot read key_file {cfg.key_file} (permission denied)",
                            "run drorch as a user that may read the key") from None
    except paramiko.PasswordRequiredException:
        raise HostAuthError(f"host {cfg.where}: key_file {cfg.key_file} is protected by a passphrase",
                            "give it by reference: key_passphrase: \"${env:NAME}\" or \"${file:/path}\"") from None
    except (paramiko.SSHException, ValueError, TypeError) as exc:
        raise HostAuthError(f"host {cfg.where}: cannot load key_file {cfg.key_file}: {_key_problem(cfg, exc)}",
                            "check key_passphrase, and that the file is an OpenSSH or PEM private key") from None


def _key_problem(cfg: SshConfig, exc: Exception) -> str:
    """paramiko retries a failed OpenSSH key as PEM and reports that; say what went wrong first."""
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    try:
        with open(cfg.key_file, "rb") as handle:
            data = handle.read()
        if b"OPENSSH PRIVATE KEY" in data:
            load_ssh_private_key(data, cfg.passphrase().encode() if cfg.passphrase else None)
    except (ValueError, TypeError) as first:
        text = str(first)
        if cfg.passphrase and any(word in text.lower() for word in ("password", "decrypt", "passphrase", "checksum")):
            return "wrong passphrase"
        return text
    return str(exc) or type(exc).__name__


def _authenticate(cfg: SshConfig, transport) -> None:
    key = load_key(cfg)
    try:
        remaining = transport.auth_publickey(cfg.user, key)
    except paramiko.BadAuthenticationType as exc:
        raise HostAuthError(f"host {cfg.where} does not accept key authentication for {cfg.user} "
                            f"(it allows: {', '.join(exc.allowed_types) or 'nothing'})",
                            "enable PubkeyAuthentication in the host's sshd_config") from None
    except paramiko.AuthenticationException:
        if not transport.is_active():  # paramiko reports a connection lost during login as a refusal
            raise Dropped("connection lost during login") from None
        raise HostAuthError(
            f"host {cfg.where} refused our key for user {cfg.user}: {cfg.key_file} "
            f"({key.get_name()} {key.fingerprint}) is not authorized there",
            f"add the public key (ssh-keygen -y -f {cfg.key_file}) to ~{cfg.user}/.ssh/authorized_keys "
            "on the host, or fix `user` / `key_file`") from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise Dropped(f"authentication interrupted: {exc}") from None
    if remaining:
        raise HostAuthError(f"host {cfg.where} wants more than a key for {cfg.user} "
                            f"(also: {', '.join(remaining)})",
                            "drorch logs in with a key only; allow that for this user in sshd_config")
