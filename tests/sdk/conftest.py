"""Starts the gateway in standalone mode on the sample manifests, once per test session.

The gateway is the real binary (`target/debug/uprox-gateway`, or `$UPROX_GATEWAY_BIN`) on
127.0.0.1 with port 0. Its address comes from the `listening on http://IP:PORT` line it writes to
stderr; the machine token for the sample MachineToken comes from the stdout line it prints when it
issues one, or from the Secret manifest it writes under the state folder (or, when the samples
supply the token themselves, from the sample Secret).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import pathlib
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Callable, Iterator

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "config" / "samples"
STARTUP_TIMEOUT = 60.0
TOKEN_LABEL = "uprox.dev/machine-token"
# The sample MachineToken the tests authenticate as.
SAMPLE_TOKEN = ("default", "demo-app")

LISTEN_RE = re.compile(r"listening on http://([0-9.]+):(\d+)")
ISSUED_RE = re.compile(r"uprox: issued token for MachineToken ([^/\s]+)/(\S+): (uprox_live_[A-Za-z0-9_-]{43})")
TOKEN_RE = re.compile(r"^uprox_live_[A-Za-z0-9_-]{43}$")


# A loopback port where nothing listens: a test that reaches a real provider by mistake gets a
# refused connection here instead of sending traffic off the machine.
OFFLINE_UPSTREAM = "http://127.0.0.1:9/v1"


def keep_upstreams_on_loopback(config: pathlib.Path) -> None:
    """Points every non-mock Provider of the copied samples at OFFLINE_UPSTREAM.

    The samples include a real `openai` Provider; listing models would otherwise make the gateway
    contact api.openai.com. Tests only ever talk to 127.0.0.1.
    """
    for path in config.rglob("*.y*ml"):
        docs = list(yaml.safe_load_all(path.read_text()))
        changed = False
        for doc in docs:
            if doc and doc.get("kind") == "Provider" and doc.get("spec", {}).get("type") != "mock":
                doc["spec"]["baseUrl"] = OFFLINE_UPSTREAM
                for key in doc["spec"].get("keys", []):
                    key.pop("endpoint", None)
                changed = True
        if changed:
            path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def gateway_binary() -> pathlib.Path:
    explicit = os.environ.get("UPROX_GATEWAY_BIN")
    if explicit:
        return pathlib.Path(explicit)
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    if not target.is_absolute():
        target = ROOT / target
    return target / "debug" / "uprox-gateway"


class OutputReader:
    """Drains one pipe of the child in a thread (so the child never blocks on a full pipe)."""

    def __init__(self, stream, name: str) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(stream,), name=name, daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            with self._lock:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
        stream.close()

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.snapshot()[-n:])

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def secret_token(doc: dict) -> str | None:
    """The `token` of a Secret manifest, from stringData or base64 data."""
    string_data = doc.get("stringData") or {}
    if isinstance(string_data.get("token"), str):
        return string_data["token"].strip()
    data = doc.get("data") or {}
    if isinstance(data.get("token"), str):
        return base64.b64decode(data["token"]).decode().strip()
    return None


def tokens_in_manifests(folder: pathlib.Path) -> dict[tuple[str, str], str]:
    """(namespace, MachineToken name) -> token, for every token Secret under the folder."""
    found: dict[tuple[str, str], str] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.rglob("*")):
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            continue
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError):
            continue  # possibly half-written; the caller polls again
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "Secret":
                continue
            meta = doc.get("metadata") or {}
            owner = (meta.get("labels") or {}).get(TOKEN_LABEL)
            token = secret_token(doc)
            if owner and token and TOKEN_RE.match(token):
                found[(meta.get("namespace") or "default", owner)] = token
    return found


@dataclasses.dataclass(frozen=True)
class Gateway:
    base_url: str
    token: str
    stderr: OutputReader
    stdout: OutputReader


def find_token(stdout: OutputReader, folders: list[pathlib.Path]) -> str | None:
    issued: dict[tuple[str, str], str] = {}
    for line in stdout.snapshot():
        m = ISSUED_RE.search(line)
        if m:
            issued[(m.group(1), m.group(2))] = m.group(3)
    for folder in folders:
        for key, token in tokens_in_manifests(folder).items():
            issued.setdefault(key, token)
    if SAMPLE_TOKEN in issued:
        return issued[SAMPLE_TOKEN]
    return None


@contextlib.contextmanager
def gateway_on(prepare: Callable[[pathlib.Path], None], name: str, args: tuple[str, ...] = ()) -> Iterator[Gateway]:
    """The gateway binary (standalone, with extra command-line `args`) on a config folder that
    `prepare` fills, stopped on exit. The yielded token is the one of the MachineToken
    SAMPLE_TOKEN names."""
    binary = gateway_binary()
    if not binary.is_file():
        pytest.fail(f"{binary} does not exist: run `cargo build -p uprox-gateway --bins` (tests/sdk/run.sh does)")
    with tempfile.TemporaryDirectory(prefix=f"uprox-{name}-") as tmp:
        config = pathlib.Path(tmp) / "config"
        state = pathlib.Path(tmp) / "state"
        prepare(config)
        config.mkdir(exist_ok=True)
        state.mkdir()
        proc = subprocess.Popen(
            [str(binary), "--config", str(config), "--state", str(state), "--listen", "127.0.0.1:0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ, NO_COLOR="1"),
        )
        stdout = OutputReader(proc.stdout, f"{name}-gateway-stdout")
        stderr = OutputReader(proc.stderr, f"{name}-gateway-stderr")
        try:
            base_url, token = wait_until_ready(proc, stdout, stderr, [state, config])
            yield Gateway(base_url=base_url, token=token, stderr=stderr, stdout=stdout)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            stdout.join(5)
            stderr.join(5)


@contextlib.contextmanager
def sample_gateway(extra: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> Iterator[Gateway]:
    """The gateway on a copy of the samples (plus `extra` files by name, and extra command-line
    `args`), stopped on exit; tests/sdk/node runs against it too."""

    def prepare(config: pathlib.Path) -> None:
        shutil.copytree(SAMPLES, config)
        keep_upstreams_on_loopback(config)
        for file, text in (extra or {}).items():
            (config / file).write_text(text)

    with gateway_on(prepare, "sdk", args) as started:
        yield started


def anthropic_documents(anthropic_url: str, token: str, provider_key: str) -> list[dict]:
    """A config of its own: an `anthropic` Provider for `claude-*` at a fake Anthropic, a `mock`
    Provider for `mock-*`, and the Service and MachineToken SAMPLE_TOKEN names, holding `token`."""
    namespace, name = SAMPLE_TOKEN  # so wait_until_ready finds the token
    meta = lambda n, **extra: {"name": n, "namespace": namespace, **extra}  # noqa: E731
    return [
        {
            "apiVersion": "uprox.dev/v1alpha1",
            "kind": "Provider",
            "metadata": meta("claude"),
            "spec": {
                "type": "anthropic",
                "baseUrl": anthropic_url,
                "models": ["claude-*"],
                "timeoutSeconds": 10,
                "keys": [{"label": "main", "secretRef": {"name": "anthropic-key", "key": "apiKey"}}],
            },
        },
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta("anthropic-key"), "stringData": {"apiKey": provider_key}},
        {
            "apiVersion": "uprox.dev/v1alpha1",
            "kind": "Provider",
            "metadata": meta("mock"),
            "spec": {"type": "mock", "models": ["mock-*"]},
        },
        {"apiVersion": "uprox.dev/v1alpha1", "kind": "Service", "metadata": meta(name), "spec": {}},
        {
            "apiVersion": "uprox.dev/v1alpha1",
            "kind": "MachineToken",
            "metadata": meta(name),
            "spec": {"service": name, "secretName": f"{name}-token"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(f"{name}-token", labels={TOKEN_LABEL: name}),
            "stringData": {"token": token},
        },
    ]


@contextlib.contextmanager
def anthropic_gateway_on(anthropic_url: str, provider_key: str, name: str) -> Iterator[Gateway]:
    """A gateway on `anthropic_documents`, with a fresh token."""
    token = "uprox_live_" + secrets.token_urlsafe(32)
    documents = anthropic_documents(anthropic_url, token, provider_key)

    def prepare(config: pathlib.Path) -> None:
        config.mkdir()
        (config / "all.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))

    with gateway_on(prepare, name) as started:
        assert started.token == token
        yield started


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    with sample_gateway() as started:
        yield started


def is_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


def wait_until_ready(
    proc: subprocess.Popen, stdout: OutputReader, stderr: OutputReader, folders: list[pathlib.Path]
) -> tuple[str, str]:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    base_url = None
    token = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stdout.join(2)
            stderr.join(2)
            pytest.fail(
                f"uprox-gateway exited with {proc.returncode} during startup\n"
                f"--- stderr ---\n{stderr.tail()}\n--- stdout ---\n{stdout.tail()}"
            )
        if base_url is None:
            for line in stderr.snapshot():
                m = LISTEN_RE.search(line)
                if m:
                    base_url = f"http://{m.group(1)}:{m.group(2)}"
                    break
        if token is None:
            token = find_token(stdout, folders)
        if base_url is not None and token is not None and is_ready(base_url):
            return base_url, token
        time.sleep(0.1)
    pytest.fail(
        f"uprox-gateway not ready within {STARTUP_TIMEOUT:.0f}s "
        f"(address: {base_url or 'not seen'}, ready: {bool(base_url) and is_ready(base_url)}, token for {'/'.join(SAMPLE_TOKEN)}: "
        f"{'found' if token else 'not found'})\n"
        f"--- stderr ---\n{stderr.tail()}\n--- stdout ---\n{stdout.tail()}"
    )
