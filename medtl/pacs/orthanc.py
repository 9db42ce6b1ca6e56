"""A throw-away local Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb`` + ``orthanc-gdcm``) for
tests, benchmarks and trying medtl's PACS commands: own folder, free loopback ports, stopped by PID.

    with LocalOrthanc(tmp, modalities={"MEDTL": ("127.0.0.1", 11113)}) as pacs:
        pacs.url            # http://127.0.0.1:<port>/dicom-web
        pacs.dicom_port     # C-FIND/C-GET/C-MOVE/C-STORE as AE "ORTHANC"

``users={"name": "password"}`` turns HTTP authentication on.

Orthanc 1.10 has no setting for the address it binds (it listens on every interface), so the
process is started with a tiny ``LD_PRELOAD`` shim, compiled here with the system C compiler,
that turns a bind to "any address" into a bind to loopback: it only ever listens on 127.0.0.1
(:meth:`LocalOrthanc.listening` checks). Without a C compiler it refuses to start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from medtl.errors import MedtlError

__all__ = ["ORTHANC", "PLUGINS", "LocalOrthanc", "free_port", "orthanc_missing"]

ORTHANC = "/usr/sbin/Orthanc"
PLUGINS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/share/orthanc/plugins/libOrthancGdcm.so")


_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static bind_fn real = 0;
    if (!real) real = (bind_fn)dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        if (a.sin_addr.s_addr == htonl(INADDR_ANY)) {
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    } else if (addr && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a;
        memcpy(&a, addr, sizeof a);
        if (!memcmp(&a.sin6_addr, &in6addr_any, sizeof a.sin6_addr)) {
            a.sin6_addr = in6addr_loopback;
            return real(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real(fd, addr, len);
}
"""


def _compiler() -> str | None:
    return next((c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)), None)


def build_loopback_shim(folder: str | os.PathLike) -> Path:
    """Compile the bind-to-loopback ``LD_PRELOAD`` shim into ``folder`` (once)."""
    out = Path(folder) / "loopback_bind.so"
    if out.is_file():
        return out
    cc = _compiler()
    if cc is None:
        raise MedtlError("no C compiler (cc/gcc) to build the shim that keeps Orthanc on 127.0.0.1")
    src = Path(folder) / "loopback_bind.c"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(_SHIM)
    proc = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(src), "-ldl"], capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        raise MedtlError(f"cannot build the loopback shim: {proc.stderr.strip()[:300]}")
    return out


def listening_addresses(ports: set[int]) -> set[str]:
    """Local addresses (``ip:port``) listening on ``ports`` according to /proc/net/tcp{,6}."""
    import ipaddress

    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, state = cols[1], cols[3]
            if state != "0A":  # LISTEN
                continue
            hexip, hexport = local.split(":")
            port = int(hexport, 16)
            if port not in ports:
                continue
            raw = bytes.fromhex(hexip)
            if width == 8:
                ip = str(ipaddress.IPv4Address(raw[::-1]))
            else:
                ip = str(ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
            found.add(f"{ip}:{port}")
    return found


def orthanc_missing() -> str | None:
    """Why a local Orthanc cannot start here (``None`` when it can)."""
    if not (Path(ORTHANC).is_file() and os.access(ORTHANC, os.X_OK)):
        return (f"{ORTHANC} not found: apt-get install -y --no-install-recommends orthanc orthanc-dicomweb "
                "orthanc-gdcm")
    missing = [p for p in PLUGINS if not Path(p).is_file()]
    if missing:
        return f"Orthanc plugin {missing[0]} not found: apt-get install -y orthanc-dicomweb orthanc-gdcm"
    if _compiler() is None:
        return "no C compiler (cc/gcc) to build the shim that keeps Orthanc on 127.0.0.1"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalOrthanc:
    """Start/stop an Orthanc process in ``folder`` (config, storage, index, log)."""

    def __init__(self, folder: str | os.PathLike, aet: str = "ORTHANC",
                 modalities: dict[str, tuple[str, int]] | None = None, users: dict[str, str] | None = None,
                 http_port: int | None = None, dicom_port: int | None = None) -> None:
        self.folder = Path(folder)
        self.aet = aet
        self.modalities = dict(modalities or {})
        self.users = dict(users or {})
        self.http_port = http_port or free_port()
        self.dicom_port = dicom_port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        return f"{self.base}/dicom-web"

    @property
    def log(self) -> Path:
        return self.folder / "orthanc.log"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "medtl-test", "StorageDirectory": str(self.folder / "db"), "IndexDirectory": str(self.folder / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users), "RegisteredUsers": self.users,
            "DicomModalities": {k: [k, h, p] for k, (h, p) in self.modalities.items()},
            "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": False, "StableAge": 1,
            "Plugins": list(PLUGINS), "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "OverwriteInstances": False, "HttpTimeout": 30,
        }

    def start(self, timeout: float = 30.0) -> "LocalOrthanc":
        why = orthanc_missing()
        if why:
            raise MedtlError(why)
        conf = self.folder / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "orthanc.json").write_text(json.dumps(self.config(), indent=2))
        os.chmod(conf / "orthanc.json", 0o600)
        env = {**os.environ, "LD_PRELOAD": str(build_loopback_shim(self.folder))}
        self.proc = subprocess.Popen([ORTHANC, f"--logfile={self.log}", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-800:] if self.log.exists() else ""
                raise MedtlError(f"Orthanc exited at start (code {self.proc.returncode}): {tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=0.2), \
                        socket.create_connection(("127.0.0.1", self.dicom_port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            exposed = {a for a in self.listening() if not a.startswith(("127.0.0.1:", "::1:"))}
            if exposed:
                self.stop()
                raise MedtlError(f"Orthanc listens beyond loopback ({', '.join(sorted(exposed))}): stopped")
            return self
        self.stop()
        raise MedtlError(f"Orthanc did not open its ports within {timeout:g} s (log: {self.log})")

    def listening(self) -> set[str]:
        """Addresses this Orthanc's ports listen on (expected: only 127.0.0.1)."""
        return listening_addresses({self.http_port, self.dicom_port})

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> "LocalOrthanc":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- REST helpers (tests, benchmarks) -------------------------------------------------------

    def rest(self, method: str, path: str, body: Any = None, auth: tuple[str, str] | None = None) -> Any:
        import requests

        if auth is None and self.users:
            auth = next(iter(self.users.items()))
        data = body if isinstance(body, (bytes, bytearray)) else None if body is None else json.dumps(body)
        r = requests.request(method, self.base + path, data=data, auth=auth, timeout=60)
        r.raise_for_status()
        return r.json() if r.content and "json" in r.headers.get("content-type", "") else r.content

    def upload(self, path: str | os.PathLike) -> int:
        """POST every file under ``path`` (a file or a folder) to /instances; the number sent."""
        p = Path(path)
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        for f in files:
            self.rest("POST", "/instances", f.read_bytes())
        return len(files)

    def clear(self) -> None:
        for pid in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{pid}")


def main(argv: list[str] | None = None) -> int:
    """``python -m medtl.pacs.orthanc FOLDER``: a local Orthanc on loopback until Ctrl+C (trying medtl out)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m medtl.pacs.orthanc", description=main.__doc__)
    ap.add_argument("folder", help="where Orthanc keeps its config, database and log")
    ap.add_argument("--http-port", type=int, default=8042)
    ap.add_argument("--dicom-port", type=int, default=4242)
    ap.add_argument("--register", action="append", default=[], metavar="AET=PORT",
                    help="a DICOM peer on 127.0.0.1 allowed C-FIND/C-GET/C-MOVE (e.g. MEDTL=11113)")
    args = ap.parse_args(argv)
    mods = {}
    for item in args.register:
        aet, _, port = item.partition("=")
        mods[aet] = ("127.0.0.1", int(port))
    server = LocalOrthanc(args.folder, modalities=mods, http_port=args.http_port, dicom_port=args.dicom_port)
    server.start()
    print(f"Orthanc: DICOMweb {server.url}, DICOM {server.aet}@127.0.0.1:{server.dicom_port}, log {server.log} "
          "(Ctrl+C stops it)", flush=True)
    try:
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
