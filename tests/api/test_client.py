"""Clients generated from the committed contract by tools nobody here wrote: a Python client
(openapi-python-client) that type-checks under `mypy --strict` with a plain `Client` and
works against a real server, and TypeScript types (openapi-typescript) under `tsc --strict`
for the README's minimal request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.api.server import ROOT, running_server

CONTRACT = ROOT / "openapi" / "openapi.yaml"
BIN = Path(sys.executable).parent
TOOLS = ROOT / "tools" / "contract" / "node_modules" / ".bin"

USE = """\
import json
import sys

from handshake_client import Client
from handshake_client.api.decisions import evaluate, evaluate_batch
from handshake_client.api.policies import list_policies
from handshake_client.models import (
    BatchBody,
    BatchResult,
    ConnectionRequest,
    DecisionResult,
    EvaluateBody,
    PolicyList,
    Problem,
)

client = Client(base_url=sys.argv[1])
request = ConnectionRequest.from_dict(json.loads(sys.argv[2]))

decided = evaluate.sync(client=client, body=EvaluateBody(request=request))
assert isinstance(decided, DecisionResult)
listed = list_policies.sync(client=client)
assert isinstance(listed, PolicyList)
refused = evaluate.sync(client=client, body=EvaluateBody(request=request, policy="no/such"))
assert isinstance(refused, Problem)
invalid = evaluate.sync(client=client, body=EvaluateBody(request=request, locale="not a locale"))
assert isinstance(invalid, Problem)
items = [EvaluateBody(request=request), EvaluateBody(request=request, policy="x")]
batch = evaluate_batch.sync(client=client, body=BatchBody(items=items))
assert isinstance(batch, BatchResult)
print(json.dumps({
    "decision": decided.decision.value,
    "rule": decided.rule,
    "evaluated_at": decided.evaluated_at.isoformat(),
    "policies": len(listed.policies),
    "refused": [refused.status, refused.code],
    "invalid": [invalid.status, invalid.code],
    "batch": [item.status.value for item in batch.results],
}))
"""

MINIMAL = """\
import type { components } from "./api";

type EvaluateBody = components["schemas"]["EvaluateBody"];
type DecisionResult = components["schemas"]["DecisionResult"];

// The README's request: only what is required is given.
const body: EvaluateBody = {
  request: {
    requester: { name: "Ada", has_photo: true },
    recipient: { name: "Sam", has_photo: true },
    relationship: { worked_together: true, last_interaction_at: "2021-06-30T12:00:00Z" },
    attributes: { crm_stage: "lead", score: 3 },
  },
  locale: "de",
};

function rule(decision: DecisionResult): string {
  return `${decision.decision} by ${decision.rule ?? "the default"} at ${decision.evaluated_at}`;
}

export { body, rule };
"""


def run(*command: str | Path, cwd: Path, timeout: float = 180) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def test_a_generated_python_client_type_checks_and_works(tmp_path: Path) -> None:
    # No post hooks: the generator's own `ruff --fix` run, under this project's newer ruff,
    # rewrites its templates into what mypy refuses; the generated code is checked as it is.
    (tmp_path / "generator.yaml").write_text("post_hooks: []\n")
    run(
        BIN / "openapi-python-client", "generate", "--path", CONTRACT, "--meta", "none",
        "--config", tmp_path / "generator.yaml", "--output-path", tmp_path / "handshake_client",
        cwd=tmp_path,
    )  # fmt: skip
    (tmp_path / "use.py").write_text(USE)
    run(BIN / "mypy", "--strict", "--no-incremental", "handshake_client", "use.py", cwd=tmp_path)
    request = (ROOT / "examples" / "requests" / "stranger.json").read_text()
    with running_server() as (url, _):
        answer = json.loads(run(sys.executable, "use.py", url, request, cwd=tmp_path))
    assert answer["decision"] == "defer"
    assert answer["rule"] == "ask-for-context"
    assert answer["evaluated_at"].endswith("+00:00")  # a datetime, not a string
    assert answer["policies"] >= 10
    assert answer["refused"] == [404, "unknown-policy"]
    assert answer["invalid"] == [400, "invalid-request"]
    assert answer["batch"] == [200, 404]


def test_typescript_types_take_the_readme_request_under_strict(tmp_path: Path) -> None:
    assert (TOOLS / "tsc").exists(), "make lint installs the contract tools (npm ci)"
    run(TOOLS / "openapi-typescript", CONTRACT, "--output", tmp_path / "api.ts", cwd=tmp_path)
    (tmp_path / "minimal.ts").write_text(MINIMAL)
    run(
        TOOLS / "tsc", "--strict", "--noEmit", "--target", "es2022", "--module", "es2022",
        "--moduleResolution", "bundler", "minimal.ts", cwd=tmp_path,
    )  # fmt: skip
