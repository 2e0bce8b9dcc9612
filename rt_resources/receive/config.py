"""What the receiver listens on and whom it accepts: the allow list, TLS, and its configuration
(built by ``rtpipeline receive`` from the settings)."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rt_resources.receive.staging import ReceiveError


@dataclass(frozen=True)
class AllowRule:
    """One ``--allow`` entry: a calling AE title, from any host or from these networks."""

    text: str
    ae_title: str
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  #: empty: any host

    @classmethod
    def parse(cls, text: str) -> AllowRule:
        """``AE`` (any host) or ``AE@HOST``; HOST is an IP address, a network (``10.1.0.0/16``) or
        a host name, resolved now to its addresses."""
        ae, sep, host = text.strip().partition("@")
        ae = ae.strip()
        if not ae or len(ae) > 16 or "\\" in ae:
            raise ReceiveError(f"--allow {text!r}: expected AE@HOST with an AE title of 1-16 characters")
        if not sep or host.strip() in ("", "*"):
            return cls(text, ae)
        host = host.strip()
        try:
            return cls(text, ae, (ipaddress.ip_network(host, strict=False),))
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError as exc:
            raise ReceiveError(f"--allow {text!r}: host {host!r} cannot be resolved ({exc})") from exc
        addresses = sorted({info[4][0] for info in infos})
        return cls(text, ae, tuple(ipaddress.ip_network(a) for a in addresses))

    def allows(self, ae_title: str, address: str) -> bool:
        if ae_title.strip() != self.ae_title:
            return False
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks if net.version == ip.version)


@dataclass(frozen=True)
class TlsFiles:
    """``--tls CERT KEY CA``: the receiver's certificate and key, and the CA that signs the senders'
    certificates (a sender without a certificate from that CA cannot connect)."""

    cert: Path
    key: Path
    ca: Path

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        for role, path in (("certificate", self.cert), ("key", self.key), ("CA", self.ca)):
            if not Path(path).is_file():
                raise ReceiveError(f"--tls: {role} file {path} does not exist")
        try:
            ctx.load_cert_chain(str(self.cert), str(self.key))
        except (ssl.SSLError, OSError) as exc:
            raise ReceiveError(f"--tls: certificate {self.cert} with key {self.key} cannot be loaded: {exc}") from exc
        try:
            ctx.load_verify_locations(cafile=str(self.ca))
        except (ssl.SSLError, OSError) as exc:
            raise ReceiveError(f"--tls: CA file {self.ca} cannot be loaded: {exc}") from exc
        return ctx


@dataclass
class ReceiverConfig:
    """What the receiver listens on and where it writes (built by the CLI from the settings)."""

    drop: Path
    ae_title: str = "RTPIPELINE"
    bind: str = "0.0.0.0"
    port: int = 11112  #: 0: any free port (tests)
    allow: Sequence[AllowRule] = ()  #: empty: every calling AE
    tls: TlsFiles | None = None
    stale_after_s: float = 24 * 3600.0
    sweep_interval_s: float = 300.0
    max_associations: int = 20
    network_timeout_s: float = 60.0


class ListenError(ReceiveError):
    """The receiver cannot listen on its address and port (in use, not permitted)."""
