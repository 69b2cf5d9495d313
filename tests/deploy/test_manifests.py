"""The deployment files, checked offline: hadolint, Kubernetes schemas, and consistency with
the service (settings names, probe paths, labels, ports)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import msgspec
import pytest
import yaml

from service.settings import PREFIX, Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BASE = DEPLOY / "k8s" / "base"
OVERLAY = DEPLOY / "k8s" / "overlays" / "example"
KUBERNETES = "1.33.0"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization(directory: Path) -> dict[str, Any]:
    return documents(directory / "kustomization.yaml")[0]


def base_resources() -> list[dict[str, Any]]:
    return [doc for name in kustomization(BASE)["resources"] for doc in documents(BASE / name)]


def overlay_resources() -> list[dict[str, Any]]:
    """The example overlay, rendered: its JSON patches applied to the base, plus its own files."""
    spec = kustomization(OVERLAY)
    rendered = copy.deepcopy(base_resources())
    for patch in spec["patches"]:
        target = patch["target"]
        (resource,) = [
            r
            for r in rendered
            if r["kind"] == target["kind"] and r["metadata"]["name"] == target["name"]
        ]
        operations = msgspec.json.decode((OVERLAY / patch["path"]).read_bytes())
        resource.update(jsonpatch.apply_patch(resource, operations))
    own = [
        doc
        for name in spec["resources"]
        if name != "../../base"
        for doc in documents(OVERLAY / name)
    ]
    return rendered + own


def by_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


@pytest.mark.parametrize(
    "resource",
    [*base_resources(), *overlay_resources()],
    ids=lambda r: f"{r['kind']}/{r['metadata']['name']}",
)
def test_every_manifest_is_valid_kubernetes(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, KUBERNETES, strict=True)


def test_the_overlay_sets_what_it_says() -> None:
    rendered = overlay_resources()
    (deployment,) = by_kind(rendered, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    images = {i["name"] for i in kustomization(OVERLAY)["images"]}
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[0] in images


def test_the_deployment_is_hardened_and_probed() -> None:
    resources = base_resources()
    (deployment,) = by_kind(resources, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in [*pod["containers"], *pod["initContainers"]]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]
    service = pod["containers"][0]
    assert service["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert service["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    # The shutdown delay and the graceful drain fit in the grace period.
    settings = by_kind(resources, "ConfigMap")[0]["data"]
    assert (
        pod["terminationGracePeriodSeconds"]
        > float(settings["HANDSHAKE_SHUTDOWN_DELAY_SECONDS"]) + 20
    )
    # The policies volume is shared by git-sync (writes) and the service (reads).
    mounts = {c["name"]: {m["name"]: m for m in c["volumeMounts"]} for c in pod["containers"]}
    assert mounts["handshake"]["policies"]["readOnly"] is True
    assert "readOnly" not in mounts["git-sync"]["policies"]


def test_settings_in_the_config_map_are_real_settings() -> None:
    known = {PREFIX + f.name.upper() for f in msgspec.structs.fields(Settings)}
    (settings,) = [
        r
        for r in by_kind(base_resources(), "ConfigMap")
        if r["metadata"]["name"] == "handshake-settings"
    ]
    assert set(settings["data"]) <= known
    from service.settings import load_settings

    load_settings(settings["data"])  # every value is valid, too


def test_selectors_names_and_ports_line_up() -> None:
    resources = base_resources()
    (deployment,) = by_kind(resources, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        (resource,) = by_kind(resources, kind)
        selector = resource["spec"].get("selector") or resource["spec"]["podSelector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), kind
    (hpa,) = by_kind(resources, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    names = {r["metadata"]["name"] for r in by_kind(resources + overlay_resources(), "ConfigMap")}
    secrets = {r["metadata"]["name"] for r in by_kind(overlay_resources(), "Secret")}
    pod = deployment["spec"]["template"]["spec"]
    for container in [*pod["containers"], *pod["initContainers"]]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in names
            else:
                assert source["secretRef"]["name"] in secrets
    for volume in pod["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["secretName"] in secrets


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(hadolint), str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_file_runs_the_image_locked_down() -> None:
    (compose,) = documents(DEPLOY / "compose.yaml")
    service = compose["services"]["handshake"]
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert service["read_only"] is True
    assert "../policies:/policies:ro" in service["volumes"]
