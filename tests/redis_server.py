"""Private Redis processes for tests: redis-server on a free port in a temp
dir (optional AOF, optional TLS-only), sentinels, and a throwaway CA."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis


def wait_ready(r: "redis.Redis", proc: "subprocess.Popen[bytes]", timeout: float, what: str, logs: Path,
               *, loaded: bool = False) -> None:
    """Poll a just-started server until it answers PING (and, with ``loaded``,
    has finished loading its AOF); fail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if r.ping() and (not loaded or r.info("persistence").get("loading", 0) == 0):
                    return
            except (redis.ConnectionError, redis.BusyLoadingError):
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}; see {logs}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start in {timeout}s")
            time.sleep(0.01)
    finally:
        r.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process owned by the test session.

    ``aof=True`` turns on the append-only file with ``appendfsync always`` so
    that a SIGKILL loses nothing that was acknowledged.
    """

    def __init__(self, directory: Path, *, aof: bool = False, port: int | None = None,
                 extra: tuple[str, ...] = (), tls: "TlsFiles | None" = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not on PATH: install it (apt-get install redis-server) "
                "or run `docker compose up -d` and point BACKSTAGE_REDIS_URL at it"
            )
        self.binary = binary
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.aof = aof
        self.port = port or free_port()
        self.extra = extra
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        port = ["--port", str(self.port)]
        if self.tls:  # TLS only: no plain-text port at all
            port = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.server_cert),
                    "--tls-key-file", str(self.tls.server_key), "--tls-ca-cert-file", str(self.tls.ca),
                    "--tls-auth-clients", "optional"]
        args = [
            self.binary, *port, "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--save", "", "--daemonize", "no", "--logfile", str(self.dir / "redis.log"),
            "--appendonly", "yes" if self.aof else "no",
        ]
        if self.aof:
            args += ["--appendfsync", "always"]
        args += list(self.extra)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # a server loading its AOF answers LOADING until done
        wait_ready(self.client(socket_connect_timeout=0.5), self.proc, timeout, f"redis-server on port {self.port}",
                   self.dir / "redis.log", loaded=True)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown save, like a crash."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> "RedisServer":
        self.kill()
        return self.start()

    def client(self, **kwargs: Any) -> "redis.Redis":
        """An administrative client (the default user)."""
        if self.tls:
            kwargs.update(ssl=True, ssl_ca_certs=str(self.tls.ca))
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost signed by
    it, a client certificate signed by it, and a rogue client certificate
    signed by another CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN=backstage {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)


def _make_cert(directory: Path, name: str, ca: str, usage: str, serial: int) -> None:
    ext = directory / f"{name}.ext"
    ext.write_text(f"subjectAltName=IP:127.0.0.1,DNS:localhost\nkeyUsage=critical,digitalSignature\n"
                   f"extendedKeyUsage={usage}\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    _openssl("req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-set_serial", str(serial), "-out", f"{name}.crt", "-days", "2", "-extfile", ext.name, cwd=directory)


def make_tls_files(directory: Path) -> TlsFiles:
    """Make the CA and certificates with the openssl command line."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is not on PATH: install it (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    _make_ca(directory, "ca")
    _make_ca(directory, "rogue-ca")
    _make_cert(directory, "server", "ca", "serverAuth", 1001)
    _make_cert(directory, "client", "ca", "clientAuth", 1002)
    _make_cert(directory, "rogue", "rogue-ca", "clientAuth", 1003)
    return TlsFiles(ca=directory / "ca.crt", server_cert=directory / "server.crt", server_key=directory / "server.key",
                    client_cert=directory / "client.crt", client_key=directory / "client.key",
                    rogue_cert=directory / "rogue.crt", rogue_key=directory / "rogue.key")


class SentinelServer:
    """One ``redis-server <conf> --sentinel`` watching ``master_port`` as ``service``.

    Start a group with :func:`start_sentinels`: each knows the others' ids
    from its config, so quorum is there at once (no 2 s hello discovery).
    """

    def __init__(self, directory: Path, master_port: int, *, port: int, myid: str,
                 peers: list[tuple[int, str]], service: str = "mymaster", quorum: int = 2,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 3000) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.myid = myid
        self.conf = self.dir / "sentinel.conf"
        known = "".join(f"sentinel known-sentinel {service} 127.0.0.1 {p} {i}\n" for p, i in peers)
        # sentinel rewrites its config file: it must be writable and its own
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {self.dir}\n"
            f"logfile {self.dir / 'sentinel.log'}\nsentinel myid {myid}\n"
            f"sentinel monitor {service} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {service} 1\n{known}"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> "SentinelServer":
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = subprocess.Popen([binary, str(self.conf), "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(self.client(socket_connect_timeout=0.5), self.proc, timeout, f"sentinel on port {self.port}",
                   self.dir)
        return self

    def client(self, **kwargs: Any) -> "redis.Redis":
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_sentinels(directory: Path, master_port: int, n: int = 3, **options: Any) -> list[SentinelServer]:
    """``n`` sentinels monitoring the master at ``master_port``, each told about the others."""
    ids = [os.urandom(20).hex() for _ in range(n)]
    ports = [free_port() for _ in range(n)]
    out = []
    for k in range(n):
        peers = [(ports[j], ids[j]) for j in range(n) if j != k]
        out.append(SentinelServer(directory / f"sentinel-{k}", master_port, port=ports[k], myid=ids[k],
                                  peers=peers, **options))
    started: list[SentinelServer] = []
    try:
        for s in out:
            started.append(s.start())
    except BaseException:
        for s in started:
            s.stop()
        raise
    return out
