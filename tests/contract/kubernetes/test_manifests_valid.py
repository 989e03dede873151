"""Every rendered object is valid Kubernetes for every version the chart claims (kubernetes-validate, strict),
custom resources (prometheus-operator's, the Gateway API's GRPCRoute) match their CRD schemas from ../shared, and
skaffold.yaml matches its schema."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from jsonschema.exceptions import best_match

from kube_support import (
    CHART,
    ROOT,
    Manifest,
    Rendering,
    load_all,
    load_one,
    pod_spec_of,
    restricted_violations,
    scenario_files,
    scenario_name,
    version_satisfies,
)
from prerequisites import SHARED, shared_path

try:
    import kubernetes_validate
    from kubernetes_validate.utils import all_versions
except ImportError:  # pragma: no cover - reported by the fixture below
    kubernetes_validate = None

CRD_DIR = SHARED / "schemas" / "crds"
SKAFFOLD_SCHEMA = SHARED / "schemas" / "skaffold-v4beta14.json"
SCENARIOS = [scenario_name(path) for path in scenario_files()]
# API groups of custom resources: validated against their CRDs, not by kubernetes-validate.
CUSTOM_GROUPS = ("monitoring.coreos.com/", "gateway.networking.k8s.io/")


def is_custom(obj: Manifest) -> bool:
    return str(obj["apiVersion"]).startswith(CUSTOM_GROUPS)


def claimed_versions() -> list[str]:
    """The Kubernetes versions kubernetes-validate has schemas for that satisfy Chart.yaml's kubeVersion."""
    if kubernetes_validate is None:
        return []
    constraint = load_one(CHART / "Chart.yaml")["kubeVersion"]
    versions = sorted(set(all_versions()), key=lambda v: tuple(int(p) for p in v.split(".")))
    return [v for v in versions if version_satisfies((int(v.split(".")[0]), int(v.split(".")[1])), constraint)]


@pytest.fixture(scope="module")
def versions() -> list[str]:
    if kubernetes_validate is None:
        from kube_support import unavailable

        unavailable("kubernetes-validate is not installed in this interpreter")
    found = claimed_versions()
    assert len(found) >= 3, f"kubernetes-validate knows too few of the claimed versions: {found}"
    return found


def validation_problems(objects: list[Manifest], versions: list[str]) -> list[str]:
    assert kubernetes_validate is not None
    problems: list[str] = []
    for obj in objects:
        if is_custom(obj):
            continue  # custom resources: validated against their CRDs below
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = "/".join(str(part) for part in error.path)
                problems.append(f"{version} {obj['kind']}/{obj['metadata']['name']} at {where}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                problems.append(f"{version} {obj['kind']}/{obj['metadata']['name']}: {error.message}")
    return problems


def test_versions_cover_the_claimed_range(versions: list[str]) -> None:
    """From the chart's lowest claimed minor to the newest kubernetes-validate knows, none missing."""
    constraint = load_one(CHART / "Chart.yaml")["kubeVersion"]
    lowest = re.search(r">=\s*v?(\d+)\.(\d+)", constraint)
    assert lowest, f"kubeVersion {constraint} has no lower bound"
    assert versions[0] == f"{lowest.group(1)}.{lowest.group(2)}.0"
    assert versions[-1] == max(all_versions(), key=lambda v: tuple(int(p) for p in v.split(".")))
    minors = [int(v.split(".")[1]) for v in versions]
    assert minors == list(range(minors[0], minors[-1] + 1)), versions


def test_templates_do_not_branch_on_the_cluster_version() -> None:
    """The objects are rendered once and validated against every claimed version; that is only sound while no
    template looks at .Capabilities (render per --kube-version here if one ever does)."""
    for template in (CHART / "templates").rglob("*"):
        if template.is_file():
            assert ".Capabilities" not in template.read_text(encoding="utf-8"), template


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_objects_are_valid_kubernetes(
    chart_renderings: dict[str, Rendering], versions: list[str], scenario: str
) -> None:
    problems = validation_problems(chart_renderings[scenario].objects, versions)
    assert problems == [], "\n".join(problems)


def test_dev_cluster_objects_are_valid_kubernetes(k8s_objects: list[Manifest], versions: list[str]) -> None:
    kinds = {obj["kind"] for obj in k8s_objects}
    assert {"Namespace", "Secret", "Deployment", "Job", "ConfigMap", "APIService"} <= kinds
    problems = validation_problems(k8s_objects, versions)
    assert problems == [], "\n".join(problems)


def test_dev_cluster_pods_meet_the_restricted_standard(k8s_objects: list[Manifest]) -> None:
    """Namespace rtserve enforces "restricted", so every pod of k8s/ must meet it or be refused at admission."""
    namespace = next(obj for obj in k8s_objects if obj["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    problems = {
        f"{obj['kind']}/{obj['metadata']['name']}": restricted_violations(spec)
        for obj in k8s_objects
        if (spec := pod_spec_of(obj)) is not None and restricted_violations(spec)
    }
    assert problems == {}
    pods = [obj for obj in k8s_objects if pod_spec_of(obj) is not None]
    assert len(pods) >= 5


def test_restricted_check_catches_a_violation(chart_renderings: dict[str, Rendering]) -> None:
    """Control: the restricted-standard check does fail on a violation."""
    spec = copy.deepcopy(chart_renderings["ci/default-values"].deployment()["spec"]["template"]["spec"])
    spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    spec["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert len(restricted_violations(spec)) == 2


def test_strict_validation_catches_a_misspelled_field(
    chart_renderings: dict[str, Rendering], versions: list[str]
) -> None:
    """Control: the validator refuses an unknown field, so the passes above mean something."""
    deployment = copy.deepcopy(chart_renderings["ci/default-values"].deployment())
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"periodSeconds": 5}
    assert validation_problems([deployment], versions[:1]), "an unknown field was accepted"


# --- prometheus-operator CRDs ---------------------------------------------------------------------------------


def closed(schema: Any) -> Any:
    """A copy of an openAPIV3Schema in which objects with declared properties refuse unknown ones, as a strict
    client would (the API server would silently prune them), unless the schema keeps unknown fields."""
    if isinstance(schema, dict):
        out = {key: closed(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    return schema


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, from ../shared/schemas/crds."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for crd in load_all(path.read_text(encoding="utf-8")):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schemas[(f"{group}/{version['name']}", kind)] = closed(version["schema"]["openAPIV3Schema"])
    return schemas


def crd_problems(obj: Manifest) -> list[str]:
    schema = crd_schemas().get((obj["apiVersion"], obj["kind"]))
    if schema is None:
        return [f"no CRD schema for {obj['apiVersion']} {obj['kind']} in {CRD_DIR}"]
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{obj['kind']}/{obj['metadata']['name']} at {'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(obj)
    ]


@pytest.fixture(scope="module")
def crds_present() -> None:
    shared_path("schemas/crds")


@pytest.mark.usefixtures("crds_present")
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_custom_resources_match_their_crds(chart_renderings: dict[str, Rendering], scenario: str) -> None:
    custom = [o for o in chart_renderings[scenario].objects if is_custom(o)]
    problems = [problem for obj in custom for problem in crd_problems(obj)]
    assert problems == [], "\n".join(problems)


@pytest.mark.usefixtures("crds_present")
def test_monitoring_scenario_has_operator_objects(chart_renderings: dict[str, Rendering]) -> None:
    kinds = {o["kind"] for o in chart_renderings["ci/monitoring-values"].objects}
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds
    assert {("monitoring.coreos.com/v1", kind) for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule")} <= set(
        crd_schemas()
    )


@pytest.mark.usefixtures("crds_present")
def test_crd_validation_catches_a_misspelled_field(chart_renderings: dict[str, Rendering]) -> None:
    monitor = copy.deepcopy(chart_renderings["ci/monitoring-values"].one("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "5s"
    assert crd_problems(monitor), "an unknown ServiceMonitor field was accepted"
    rule = copy.deepcopy(chart_renderings["ci/monitoring-values"].one("PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = 10
    assert crd_problems(rule), "a wrongly typed PrometheusRule field was accepted"


@pytest.mark.usefixtures("crds_present")
def test_grpc_scenario_has_a_grpc_route(chart_renderings: dict[str, Rendering]) -> None:
    routes = chart_renderings["ci/grpc-values"].of_kind("GRPCRoute")
    assert [route["apiVersion"] for route in routes] == ["gateway.networking.k8s.io/v1"]
    assert ("gateway.networking.k8s.io/v1", "GRPCRoute") in crd_schemas()
    everything = [obj for rendering in chart_renderings.values() for obj in rendering.objects]
    assert {o["kind"] for o in everything if is_custom(o)} == {"ServiceMonitor", "PrometheusRule", "GRPCRoute"}


@pytest.mark.usefixtures("crds_present")
def test_crd_validation_catches_a_bad_grpc_route(chart_renderings: dict[str, Rendering]) -> None:
    """Control: the GRPCRoute schema refuses a misspelled field and a backend port of the wrong type."""
    route = chart_renderings["ci/grpc-values"].one("GRPCRoute")
    misspelled = copy.deepcopy(route)
    misspelled["spec"]["rules"][0]["backendRef"] = misspelled["spec"]["rules"][0].pop("backendRefs")
    assert crd_problems(misspelled), "an unknown GRPCRoute field was accepted"
    named_port = copy.deepcopy(route)
    named_port["spec"]["rules"][0]["backendRefs"][0]["port"] = "grpc"
    assert crd_problems(named_port), "a named backend port was accepted (GRPCRoute wants a number)"


# --- skaffold -------------------------------------------------------------------------------------------------


def skaffold_problems(documents: list[Manifest]) -> list[str]:
    schema = json.loads(SKAFFOLD_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    problems: list[str] = []
    for document in documents:
        errors = list(validator.iter_errors(document))
        if errors:
            error = best_match(errors)
            # The schema wraps everything in anyOf: report the most specific error underneath.
            while error.context:
                error = best_match(error.context)
            problems.append(f"{'/'.join(map(str, error.absolute_path))}: {error.message}")
    return problems


@pytest.fixture(scope="module")
def skaffold_schema_present() -> None:
    shared_path("schemas/skaffold-v4beta14.json")


@pytest.mark.usefixtures("skaffold_schema_present")
def test_skaffold_yaml_matches_its_schema() -> None:
    documents = load_all((ROOT / "skaffold.yaml").read_text(encoding="utf-8"))
    assert [doc["apiVersion"] for doc in documents] == ["skaffold/v4beta14"]
    assert skaffold_problems(documents) == []


@pytest.mark.usefixtures("skaffold_schema_present")
def test_skaffold_schema_catches_a_misspelled_field() -> None:
    document = load_all((ROOT / "skaffold.yaml").read_text(encoding="utf-8"))[0]
    document["deploy"]["helm"]["releases"][0]["chartpath"] = "helm/rtserve"
    assert skaffold_problems([document])


def test_skaffold_builds_and_deploys_what_the_manifests_use(k8s_objects: list[Manifest]) -> None:
    config = load_all((ROOT / "skaffold.yaml").read_text(encoding="utf-8"))[0]
    image = config["build"]["artifacts"][0]["image"]
    assert config["build"]["artifacts"][0]["docker"]["dockerfile"] == "Dockerfile"
    assert config["manifests"]["kustomize"]["paths"] == ["k8s"]
    release = config["deploy"]["helm"]["releases"][0]
    assert Path(ROOT / release["chartPath"]) == CHART
    assert release["setValueTemplates"]["image.repository"] == f"{{{{.IMAGE_REPO_{image}}}}}"
    assert release["setValueTemplates"]["image.tag"] == f"{{{{.IMAGE_TAG_{image}}}}}"
    for values_file in release["valuesFiles"]:
        assert (ROOT / values_file).is_file(), values_file
    jobs = [obj for obj in k8s_objects if obj["kind"] == "Job"]
    job_images = [c["image"] for job in jobs for c in job["spec"]["template"]["spec"]["containers"]]
    assert [name.split(":")[0] for name in job_images] == [image], "skaffold must replace the Job's image"
    dev_values = load_one(ROOT / "k8s" / "values-dev.yaml")["image"]
    assert job_images == [f"{dev_values['repository']}:{dev_values['tag']}"], "by hand, one image serves both"

    forwarded = {(pf["resourceName"], pf["port"]) for pf in config["portForward"]}
    assert ("rtserve", 8080) in forwarded
    assert any(profile["name"] == "kind" for profile in config["profiles"])
