"""The optional single sign-on component of the Kubernetes deployment (deploy/k8s/components/oidc), as an
operator uses it: their overlay adds the component and their provider's settings as a ConfigMap. Rendered by
kustomize and checked against the strict Kubernetes 1.30 schema; the auth pods get the settings, the client
secret as a file, and HTTPS egress; no other service gains any. Offline, a few seconds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pai_auth.shell import AuthSettings
from tests.deploy.manifests import K8S, KUBERNETES_VERSION, by_name, of_kind, pod_labels, render, selects

SERVICES = sorted(p.name for p in (K8S.parents[1] / "services").iterdir() if (p / "pyproject.toml").is_file())
OPERATOR = {
    "PAI_OIDC_ISSUER": "https://login.example.org/tenant/v2.0",
    "PAI_OIDC_CLIENT_ID": "openpai",
    "PAI_OIDC_NAME": "Example IdP",
    "PAI_BASIC_LOGIN": "false",
}


def operator_overlay(tmp: Path, literals: dict[str, str]) -> list[dict[str, Any]]:
    """The production overlay with the component and the operator's own settings (their ConfigMap)."""
    tmp.mkdir(parents=True, exist_ok=True)
    up = os.path.relpath(K8S, tmp)  # kustomize accepts relative paths only
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f"{up}/overlays/production"],
        "components": [f"{up}/components/oidc"],
        "configMapGenerator": [
            {
                "name": "pai-oidc",
                "namespace": "pai",
                "literals": [f"{k}={v}" for k, v in literals.items()],
            }
        ],
    }
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return render(tmp)


@pytest.fixture(scope="module")
def with_sso(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return operator_overlay(tmp_path_factory.mktemp("k8s-oidc"), OPERATOR)


def _auth_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = by_name(objects, "Deployment")["auth"]["spec"]["template"]["spec"]
    container: dict[str, Any] = pod["containers"][0]
    return container


def test_the_component_renders_and_passes_the_strict_schema(with_sso: list[dict[str, Any]]) -> None:
    for obj in with_sso:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}") from None


def test_auth_gets_the_operators_settings_over_the_services_defaults(
    with_sso: list[dict[str, Any]], tmp_path: Path
) -> None:
    container = _auth_container(with_sso)
    refs = [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e]
    assert refs[0] == "pai-config" and refs[1].startswith("pai-oidc-"), refs  # hashed: a change rolls auth
    data = by_name(with_sso, "ConfigMap", "pai")[refs[1]]["data"]
    fields = {f"PAI_{name.upper()}": info for name, info in AuthSettings.model_fields.items()}
    assert set(data) <= set(fields), f"not settings of the auth service: {set(data) - set(fields)}"
    assert data == OPERATOR
    # Without the component nothing of it is there: single sign-on is off by default.
    plain = render(K8S / "overlays" / "production")
    assert not [c for c in of_kind(plain, "ConfigMap") if c["metadata"]["name"].startswith("pai-oidc")]
    assert "PAI_OIDC_CLIENT_SECRET_FILE" not in {e["name"] for e in _auth_container(plain)["env"]}

    # The client secret: a file from the operator's Secret, where the setting points.
    path = next(e["value"] for e in container["env"] if e["name"] == "PAI_OIDC_CLIENT_SECRET_FILE")
    pod = by_name(with_sso, "Deployment")["auth"]["spec"]["template"]["spec"]
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert mount.get("readOnly") is True and volume["secret"]["secretName"] == "pai-oidc-client"
    item = next(i for i in volume["secret"]["items"] if i["path"] == path[len(mount["mountPath"]) + 1 :])
    assert item["key"] == "client-secret"

    # What the auth service makes of it, the Secret holding a client secret.
    secret = tmp_path / "client-secret"
    secret.write_text("s3cret\n")
    with pytest.MonkeyPatch.context() as env:
        for key, value in {**data, "PAI_OIDC_CLIENT_SECRET_FILE": str(secret)}.items():
            env.setenv(key, value)
        settings = AuthSettings()
    settings.check_sign_in()
    assert (settings.oidc_issuer, settings.basic_login, settings.oidc_client_secret()) == (
        OPERATOR["PAI_OIDC_ISSUER"],
        False,
        "s3cret",
    )
    assert settings.oidc_label() == "Example IdP"


def test_only_auth_gains_egress_and_only_to_https(with_sso: list[dict[str, Any]]) -> None:
    plain = render(K8S / "overlays" / "production")
    before = {p["metadata"]["name"] for p in of_kind(plain, "NetworkPolicy")}
    added = [p for p in of_kind(with_sso, "NetworkPolicy") if p["metadata"]["name"] not in before]
    assert [p["metadata"]["name"] for p in added] == ["auth-oidc-egress"]
    (policy,) = added
    assert policy["spec"]["policyTypes"] == ["Egress"] and "ingress" not in policy["spec"]
    workloads = {
        o["metadata"]["name"]: o for o in of_kind(with_sso, "Deployment", "DaemonSet", "StatefulSet")
    }
    chosen = policy["spec"]["podSelector"]
    selected = {name for name, w in workloads.items() if selects(chosen, pod_labels(w))}
    assert selected == {"auth"}
    ports = {(port["protocol"], port["port"]) for rule in policy["spec"]["egress"] for port in rule["ports"]}
    assert ports == {("TCP", 443)}
    assert len(SERVICES) > 5  # the services exist: the selection above is not vacuous
