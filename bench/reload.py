#!/usr/bin/env python3
"""Standalone-mode change-to-effect latency: how long after a manifest edit the gateway answers
accordingly. A benchmark, not a test (run: python3 bench/reload.py [ROUNDS]).

For each round it adds a MachineToken with a pre-supplied token Secret and polls (every 5 ms)
until the token is accepted, then sets `revoked: true` and polls until it is refused. Prints
each latency and the median and maximum. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
BINARY = ROOT / "target" / "release" / "uprox-gateway"
BASE = """
apiVersion: uprox.dev/v1alpha1
kind: Provider
metadata: {name: mock, namespace: bench}
spec: {type: mock}
---
apiVersion: uprox.dev/v1alpha1
kind: Service
metadata: {name: app, namespace: bench}
spec: {}
"""


def token_manifest(index: int, revoked: bool) -> tuple[str, str]:
    token = "uprox_live_" + f"{index:043d}"
    text = f"""
---
apiVersion: uprox.dev/v1alpha1
kind: MachineToken
metadata: {{name: t{index}, namespace: bench}}
spec: {{service: app, secretName: t{index}-token, revoked: {str(revoked).lower()}}}
---
apiVersion: v1
kind: Secret
metadata:
  name: t{index}-token
  namespace: bench
  labels: {{uprox.dev/machine-token: t{index}}}
stringData: {{token: "{token}"}}
"""
    return token, text


def status(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def wait_for(url: str, token: str, wanted: int, limit: float = 10.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if status(url, token) == wanted:
            return time.monotonic() - start
        time.sleep(0.005)
    raise SystemExit(f"no {wanted} within {limit} s")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "uprox-gateway", "--bin", "uprox-gateway"], check=True, cwd=ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        config = pathlib.Path(tmp) / "config"
        config.mkdir()
        manifest = config / "all.yaml"
        manifest.write_text(BASE)
        proc = subprocess.Popen(
            [str(BINARY), "--config", str(config), "--state", f"{tmp}/state", "--listen", "127.0.0.1:0"],
            stderr=subprocess.PIPE, text=True, env={"NO_COLOR": "1", "UPROX_LOG": "info"},
        )
        try:
            assert proc.stderr is not None
            port = None
            for line in proc.stderr:
                found = re.search(r"listening on http://[0-9.]+:(\d+)", line)
                if found:
                    port = found.group(1)
                    break
            url = f"http://127.0.0.1:{port}/v1/models"
            accepted, revoked = [], []
            for index in range(rounds):
                token, text = token_manifest(index, revoked=False)
                manifest.write_text(BASE + text)
                accepted.append(wait_for(url, token, 200))
                manifest.write_text(BASE + token_manifest(index, revoked=True)[1])
                revoked.append(wait_for(url, token, 401))
            for name, values in (("new token accepted", accepted), ("revoked token refused", revoked)):
                ms = [v * 1000 for v in values]
                print(f"{name}: median {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms ({', '.join(f'{v:.0f}' for v in ms)})")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
