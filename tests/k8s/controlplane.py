"""A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler (v1.37, built from their Go modules by scripts/k8s-bin.sh), with generated certificates.

What a test can rely on:
- the API server on https://127.0.0.1:PORT with its own CA; authentication by static tokens (an admin in
  `system:masters`, and any users a test names, for RBAC), `--authorization-mode=RBAC` (so a token outside
  `system:masters` gets exactly what RBAC grants it), service-account tokens signed with a generated key pair;
- the controller manager (Job, Deployment, ReplicaSet, StatefulSet, HPA, garbage collector, PV binder, node
  lifecycle, service accounts, EndpointSlices, disruption, namespace deletion) and the scheduler, each as its own
  user (`system:kube-controller-manager`, `system:kube-scheduler`) with the RBAC roles Kubernetes bootstraps for them;
- no kubelet: Nodes are registered and pods run by Shipyard's node agent (shipyard.cluster.nodeagent).

Everything lives under one work directory and every process is stopped by `stop()`. Start-up costs a few
seconds (measured in docs/benchmarks.md), so tests share one control plane per session and a namespace each.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
K8S_BIN_SCRIPT = REPO / "scripts" / "k8s-bin.sh"
SERVICE_CIDR = "10.96.0.0/16"


def binaries() -> Path:
    """The directory of the built binaries (built now if missing: minutes on a cold cache).

    Raises RuntimeError with the reason when they cannot be built (no Go)."""
    result = subprocess.run(["bash", str(K8S_BIN_SCRIPT)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "k8s-bin failed")
    return Path(result.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- certificates --------------------------------------------------------------------------------------------

def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


@dataclass
class Authority:
    """A CA that signs the serving and client certificates of one control plane."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str) -> "Authority":
        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    def issue(self, common_name: str, hosts: list[str] = (), organizations: list[str] = (),
              client: bool = False) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a server (SANs `hosts`) or a client (CN = user, O = groups)."""
        key = _key()
        names = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        names += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(x509.Name(names)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                         else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False))
        if hosts:
            sans: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    sans.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


# --- processes -----------------------------------------------------------------------------------------------

def stop_process(process: subprocess.Popen[bytes], grace: float = 30.0) -> int:
    """SIGTERM (a graceful stop: the node agent stops its pods, the operator gives its Lease back), then SIGKILL
    of the process group after `grace` seconds. Returns the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


@dataclass
class Component:
    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env={**os.environ, **(env or {})})

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclass
class User:
    name: str
    token: str
    groups: list[str] = field(default_factory=list)


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler on loopback, under `workdir`."""

    workdir: Path
    users: list[User] = field(default_factory=list)
    bin_dir: Path | None = None
    components: list[Component] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.pki = self.workdir / "pki"
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.admin = User("shipyard-test-admin", secrets.token_hex(16), ["system:masters"])
        self.users = [self.admin,
                      User("system:kube-controller-manager", secrets.token_hex(16)),
                      User("system:kube-scheduler", secrets.token_hex(16)),
                      *self.users]
        self.kubeconfig = self.workdir / "admin.kubeconfig"

    # --- configuration -----------------------------------------------------------------------------------

    def _write(self, name: str, data: bytes | str, mode: int = 0o600) -> Path:
        path = self.pki / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        path.chmod(mode)
        return path

    def _pki(self) -> None:
        self.ca = Authority.create("shipyard-test-ca")
        self._write("ca.crt", self.ca.pem, 0o644)
        self._write("ca.key", _pem_key(self.ca.key))
        cert, key = self.ca.issue("kube-apiserver", hosts=[
            "127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local"])
        self._write("apiserver.crt", cert, 0o644)
        self._write("apiserver.key", key)
        # The API server's client identity towards kubelets (here: the node agent's log endpoint).
        cert, key = self.ca.issue("kube-apiserver-kubelet-client", organizations=["system:masters"], client=True)
        self._write("apiserver-kubelet-client.crt", cert, 0o644)
        self._write("apiserver-kubelet-client.key", key)
        sa = _key()
        self._write("sa.key", _pem_key(sa))
        self._write("sa.pub", sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
        # --token-auth-file: token,user,uid,"group1,group2"
        rows = [f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"' if u.groups else f"{u.token},{u.name},{u.name}"
                for u in self.users]
        self._write("tokens.csv", "\n".join(rows) + "\n")

    def kubeconfig_for(self, user: User, path: Path | None = None) -> Path:
        path = path or self.workdir / f"{user.name.replace(':', '-')}.kubeconfig"
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "shipyard-test",
            "clusters": [{"name": "shipyard-test", "cluster": {
                "server": self.server, "certificate-authority": str(self.pki / "ca.crt")}}],
            "users": [{"name": user.name, "user": {"token": user.token}}],
            "contexts": [{"name": "shipyard-test", "context": {"cluster": "shipyard-test", "user": user.name}}],
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def user(self, name: str) -> User:
        return next(u for u in self.users if u.name == name)

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> "ControlPlane":
        t0 = time.monotonic()
        bin_dir = self.bin_dir or binaries()
        self.timings["binaries"] = time.monotonic() - t0
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._pki()
        self.kubeconfig_for(self.admin, self.kubeconfig)
        logs = self.workdir / "logs"
        etcd_port, etcd_peer = free_port(), free_port()
        etcd = Component("etcd", [
            str(bin_dir / "etcd"), "--name", "shipyard-test", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"shipyard-test=http://127.0.0.1:{etcd_peer}",
            "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}",
            # A test cluster's data need not survive a power cut; fsync per write costs seconds per test.
            "--unsafe-no-fsync", "--log-level", "warn"], logs / "etcd.log")
        t = time.monotonic()
        etcd.start()
        self.components.append(etcd)
        self._await(etcd, lambda: _http_ok(f"http://127.0.0.1:{etcd_port}/health"), timeout)
        self.timings["etcd"] = time.monotonic() - t

        p = self.pki
        apiserver = Component("kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            # The `kubernetes` Service's endpoints may not be a loopback address; nothing here needs them.
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}", f"--token-auth-file={p / 'tokens.csv'}",
            "--authorization-mode=RBAC", "--anonymous-auth=false",
            f"--service-account-key-file={p / 'sa.pub'}", f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=false", "--profiling=false", "--v=1"], logs / "kube-apiserver.log")
        t = time.monotonic()
        apiserver.start()
        self.components.append(apiserver)
        self._await(apiserver, lambda: self._readyz(), timeout)
        self.timings["kube-apiserver"] = time.monotonic() - t

        t = time.monotonic()
        kcm = Component("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig_for(self.user('system:kube-controller-manager'))}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--service-account-private-key-file={p / 'sa.key'}", f"--root-ca-file={p / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--allocate-node-cidrs=false",
            # Each controller as its own ServiceAccount, with the roles Kubernetes bootstraps for it (the
            # controller manager's own user may do little more than hand out those credentials).
            "--use-service-account-credentials=true",
            # Quicker than a production cluster, so tests do not wait out minutes-long defaults.
            "--horizontal-pod-autoscaler-sync-period=5s", "--node-monitor-grace-period=40s",
            "--profiling=false", "--v=1"], logs / "kube-controller-manager.log")
        scheduler = Component("kube-scheduler", [
            str(bin_dir / "kube-scheduler"),
            f"--kubeconfig={self.kubeconfig_for(self.user('system:kube-scheduler'))}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--profiling=false", "--v=1"], logs / "kube-scheduler.log")
        for component in (kcm, scheduler):
            component.start()
            self.components.append(component)
        # Ready when the controller manager has made the default namespace's ServiceAccount (pods need it).
        self._await(kcm, lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None, timeout)
        scheduler.check_alive()
        self.timings["controllers"] = time.monotonic() - t
        self.timings["total"] = time.monotonic() - t0
        return self

    def _await(self, component: Component, ready: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            component.check_alive()
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{component.name} not ready after {timeout}s:\n{component.tail()}")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki / "ca.crt"))

    def _request(self, path: str, token: str | None = None) -> urllib.request.Request:
        return urllib.request.Request(self.server + path,
                                      headers={"Authorization": f"Bearer {token or self.admin.token}"})

    def _readyz(self) -> bool:
        try:
            with urllib.request.urlopen(self._request("/readyz"), context=self.ssl_context(), timeout=5) as resp:
                return resp.status == 200
        except urllib.error.HTTPError:
            return False

    def _get(self, path: str) -> dict[str, Any] | None:
        import json

        try:
            with urllib.request.urlopen(self._request(path), context=self.ssl_context(), timeout=5) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def stop(self) -> None:
        for component in reversed(self.components):
            component.stop()
        self.components.clear()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except urllib.error.URLError:
        return False
