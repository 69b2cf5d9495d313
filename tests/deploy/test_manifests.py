"""The Kubernetes manifests, checked offline: Kubernetes schemas, consistency with the service
(settings names, probe paths, labels, ports), and what the deployment promises (the HPA owns the
replica count, the NetworkPolicy's rules, probes that tolerate a pause, topology spread)."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    """The base as kustomize renders it: its `labels` added to every resource and, with
    includeSelectors, to the template and every selector's matchLabels, a peer's included (as
    `kubectl kustomize` does; a selector with only matchExpressions is left alone)."""
    spec = kustomization(BASE)
    resources = [doc for name in spec["resources"] for doc in documents(BASE / name)]
    for entry in spec.get("labels", []):
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(entry["pairs"])
            if entry.get("includeSelectors"):
                for labels in selector_labels(resource):
                    labels.update(entry["pairs"])
    return resources


def selector_labels(resource: dict[str, Any]) -> Iterator[dict[str, str]]:
    """The label maps kustomize's includeSelectors writes to in one resource."""
    if resource["kind"] == "Service":
        yield resource["spec"]["selector"]

    def walk(node: Any) -> Iterator[dict[str, str]]:
        if isinstance(node, list):
            for item in node:
                yield from walk(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in {"selector", "podSelector", "labelSelector"} and "matchLabels" in value:
                    yield value["matchLabels"]
                elif key == "template":
                    yield value["metadata"].setdefault("labels", {})
                yield from walk(value)

    yield from walk(resource.get("spec", {}))


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
    (hpa,) = by_kind(rendered, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == "320Mi"
    images = {i["name"] for i in kustomization(OVERLAY)["images"]}
    assert container["image"].split(":")[0] in images


@pytest.mark.parametrize("render", [base_resources, overlay_resources], ids=["base", "overlay"])
def test_the_hpa_alone_owns_the_replica_count(render: Any) -> None:
    """A `replicas` in the Deployment would reset the HPA's count on every `kubectl apply`."""
    resources = render()
    (deployment,) = by_kind(resources, "Deployment")
    (hpa,) = by_kind(resources, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"]
    # The HPA's floor is what a fresh Deployment scales to, so it carries the redundancy.
    assert hpa["spec"]["minReplicas"] >= 2
    (pdb,) = by_kind(resources, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_the_deployment_is_hardened_and_probed() -> None:
    resources = base_resources()
    (deployment,) = by_kind(resources, "Deployment")
    spec = deployment["spec"]
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


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against one label set."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        held = {
            "In": key in labels and labels[key] in expression.get("values", []),
            "NotIn": key not in labels or labels[key] not in expression.get("values", []),
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not held:
            return False
    return True


def admits(peers: list[dict[str, Any]], namespace: dict[str, str], pod: dict[str, str]) -> bool:
    """Whether a rule's peers (`from` or `to`) let in a pod with these labels, in a namespace
    with these labels other than the policy's own (so a peer without a namespaceSelector, which
    means "this namespace", never admits it)."""
    return any(
        "namespaceSelector" in peer
        and selects(peer["namespaceSelector"], namespace)
        and selects(peer.get("podSelector", {}), pod)
        for peer in peers
    )


def namespace_named(name: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name}  # set on every namespace by Kubernetes


def ports_of(rule: dict[str, Any]) -> set[tuple[int | str, str]]:
    return {(port["port"], port.get("protocol", "TCP")) for port in rule["ports"]}


def git_port(resources: list[dict[str, Any]]) -> int:
    """The port git-sync reaches the policy repository on, from GITSYNC_REPO."""
    (config,) = [r for r in by_kind(resources, "ConfigMap") if "GITSYNC_REPO" in r.get("data", {})]
    repository = config["data"]["GITSYNC_REPO"]
    if "://" not in repository:  # scp-like `git@host:path`: SSH
        return 22
    url = urlsplit(repository)
    return url.port or {"https": 443, "ssh": 22}[url.scheme]


RENDERINGS = pytest.mark.parametrize(
    "render", [base_resources, overlay_resources], ids=["base", "overlay"]
)


@RENDERINGS
def test_egress_is_dns_and_the_policy_repository_only(render: Any) -> None:
    resources = render()
    (policy,) = by_kind(resources, "NetworkPolicy")
    assert "Egress" in policy["spec"]["policyTypes"]
    rules = policy["spec"]["egress"]
    # Every rule names its ports and its peers: a rule without either allows all of them.
    assert all(rule.get("ports") and rule.get("to") for rule in rules)
    dns = [rule for rule in rules if ports_of(rule) == {(53, "UDP"), (53, "TCP")}]
    git = [rule for rule in rules if ports_of(rule) == {(git_port(resources), "TCP")}]
    assert len(dns) == len(git) == 1
    assert len(rules) == 2, "egress beyond DNS and the policy repository"
    # DNS: the cluster's resolver pods in kube-system, by label, and no one else.
    (peers,) = [rule["to"] for rule in dns]
    assert admits(peers, namespace_named("kube-system"), {"k8s-app": "kube-dns"})
    assert not admits(peers, namespace_named("kube-system"), {"k8s-app": "metrics-server"})
    assert not admits(peers, namespace_named("default"), {"k8s-app": "kube-dns"})
    assert not any("ipBlock" in peer for peer in peers)
    # The git host: addresses only, which an overlay narrows.
    (peers,) = [rule["to"] for rule in git]
    assert all(set(peer) == {"ipBlock"} for peer in peers)


def test_the_overlay_narrows_git_egress_to_the_git_host() -> None:
    resources = overlay_resources()
    (policy,) = by_kind(resources, "NetworkPolicy")
    port = git_port(resources)
    (rule,) = [r for r in policy["spec"]["egress"] if (port, "TCP") in ports_of(r)]
    networks = [ipaddress.ip_network(peer["ipBlock"]["cidr"]) for peer in rule["to"]]
    assert networks
    # Not the whole internet (0.0.0.0/0, ::/0), nor a good part of it.
    assert all(network.prefixlen >= (16 if network.version == 4 else 48) for network in networks)


@RENDERINGS
def test_ingress_is_by_port_and_by_peer(render: Any) -> None:
    resources = render()
    (policy,) = by_kind(resources, "NetworkPolicy")
    (deployment,) = by_kind(resources, "Deployment")
    template = deployment["spec"]["template"]
    (service,) = [c for c in template["spec"]["containers"] if c["name"] == "handshake"]
    number = {p["name"]: p["containerPort"] for p in service["ports"]}  # a port, by name or number
    assert "Ingress" in policy["spec"]["policyTypes"]
    rules = policy["spec"]["ingress"]
    for rule in rules:
        # Each rule names the container ports it opens and who may use them.
        assert rule.get("ports")
        assert {number.get(port, port) for port, _ in ports_of(rule)} <= set(number.values())
        assert rule.get("from")
        for peer in rule["from"]:
            assert "ipBlock" not in peer, "from addresses, not workloads"
            # An empty or missing selector on both sides admits every pod.
            assert peer.get("namespaceSelector") or peer.get("podSelector"), "from anyone"

    def open_to(namespace: dict[str, str], pod: dict[str, str]) -> set[int | str]:
        return {
            number.get(port, port)
            for rule in rules
            if admits(rule["from"], namespace, pod)
            for port, _ in ports_of(rule)
        }

    # Prometheus in the monitoring namespace reaches the port the pods say /metrics is on.
    metrics_port = int(template["metadata"]["annotations"]["prometheus.io/port"])
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    assert metrics_port in open_to(namespace_named("monitoring"), prometheus)
    assert not open_to(namespace_named("monitoring"), {"app.kubernetes.io/name": "grafana"})
    # Callers: pods in a namespace labelled as one reach the API; an unlabelled one, nothing.
    caller = {**namespace_named("crm"), "handshake/caller": "true"}
    assert number["http"] in open_to(caller, {"app": "crm"})
    assert not open_to(namespace_named("crm"), {"app": "crm"})
    assert not open_to(namespace_named("default"), prometheus)


def tolerated_pause(probe: dict[str, Any]) -> float:
    """The longest pause that leaves this probe passing: `failureThreshold` probes in a row must
    time out, the last one `timeoutSeconds` after it starts (Kubernetes' defaults if unset)."""
    period = probe.get("periodSeconds", 10)
    return probe.get("timeoutSeconds", 1) + (probe.get("failureThreshold", 3) - 1) * period


def test_probes_tolerate_a_pause_of_several_seconds() -> None:
    (deployment,) = by_kind(base_resources(), "Deployment")
    (service,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "handshake"
    ]
    for kind in ("livenessProbe", "readinessProbe"):
        probe = service[kind]
        assert probe.get("timeoutSeconds", 1) >= 2, kind
        assert probe.get("failureThreshold", 3) >= 3, kind
        assert tolerated_pause(probe) >= 5, kind
    # Liveness restarts the pod: it waits longer than readiness, which only takes it out.
    assert tolerated_pause(service["livenessProbe"]) > tolerated_pause(service["readinessProbe"])
    # The startup probe gives a start the 30 s docs/operations.md promises.
    startup = service["startupProbe"]
    assert startup["httpGet"]["path"] == "/health/live"
    assert startup["failureThreshold"] * startup.get("periodSeconds", 10) >= 30


@RENDERINGS
def test_replicas_spread_over_nodes_and_zones(render: Any) -> None:
    (deployment,) = by_kind(render(), "Deployment")
    template = deployment["spec"]["template"]
    constraints = {c["topologyKey"]: c for c in template["spec"]["topologySpreadConstraints"]}
    assert set(constraints) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    labels = template["metadata"]["labels"]
    for key, constraint in constraints.items():
        # Soft: a pod is never left pending because a node or a zone is missing.
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway", key
        assert constraint["maxSkew"] == 1, key
        # It counts this Deployment's pods: all of them, and not every pod in the namespace.
        assert selects(constraint["labelSelector"], labels), key
        assert not selects(constraint["labelSelector"], {}), key
