"""Runs a command against the standalone gateway on the sample manifests, started and stopped
exactly as the Python SDK suite starts it (tests/sdk/conftest.py, `sample_gateway`).

    python tests/sdk/node/with_gateway.py node --test openai.test.mjs

The command gets UPROX_BASE_URL (`http://127.0.0.1:PORT`) and UPROX_TOKEN (the sample
MachineToken's token) in its environment and inherits stdout and stderr; this script exits with
its status, or 2 when the gateway does not start. tests/sdk/run.sh runs the Node suite this way.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402  (conftest reports start-up failures with pytest.fail)
from conftest import sample_gateway  # noqa: E402


def main(command: list[str]) -> int:
    if not command:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with sample_gateway() as gateway:
            env = dict(os.environ, UPROX_BASE_URL=gateway.base_url, UPROX_TOKEN=gateway.token)
            sys.stdout.flush()
            return subprocess.call(command, env=env, cwd=pathlib.Path(__file__).parent)
    except pytest.fail.Exception as failed:
        print(f"with_gateway: the gateway did not start: {failed}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
