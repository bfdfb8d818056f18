"""A task's storages as volumes of its Pod. Pure.

``local`` is a hostPath folder; ``pvc`` the claim; ``nfs`` the NFS volume (the NFS CSI driver
``nfs.csi.k8s.io`` where mount options are given, which the core volume cannot carry); ``samba`` the SMB
CSI driver; ``azureFile`` and ``azureBlob`` Azure's CSI drivers. Credentials come from a Kubernetes
Secret: the one the storage names (``secretName``), or one the agent creates from the credentials the
storage service keeps, owned by the Pod (``secrets``: its name → its data, with the keys each driver
reads). A storage that is not shared is mounted at the user's folder (``subPath``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pai_common.contract.types import StorageMount

CSI = {
    "samba": "smb.csi.k8s.io",
    "azureFile": "file.csi.azure.com",
    "azureBlob": "blob.csi.azure.com",
    "nfs": "nfs.csi.k8s.io",
}


class VolumeError(ValueError):
    """A storage the Kubernetes backend cannot turn into a volume (credentials missing)."""


@dataclass
class PodStorage:
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    # Secrets to create beside the Pod (owned by it): name → stringData.
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)


def volume_name(storage: str) -> str:
    return ("storage-" + re.sub(r"[^a-z0-9-]+", "-", storage.lower()).strip("-"))[:63].rstrip("-")


def _secret_data(m: StorageMount, credentials: dict[str, str]) -> dict[str, str]:
    if m.type == "samba":
        return {"username": m.data.get("username", ""), "password": credentials.get("password", "")}
    data = {"azurestorageaccountname": m.data["accountName"]}
    if "accountKey" in credentials:
        data["azurestorageaccountkey"] = credentials["accountKey"]
    if "sasToken" in credentials:
        data["azurestorageaccountsastoken"] = credentials["sasToken"]
    return data


def pod_storage(pod: str, mounts: list[StorageMount], credentials: dict[str, dict[str, str]]) -> PodStorage:
    out = PodStorage()
    for m in mounts:
        name = volume_name(m.name)
        options = ",".join(m.mount_options)
        secret = m.secret_name
        if m.type in ("samba", "azureFile", "azureBlob") and secret is None:
            if m.has_credentials and m.name not in credentials:
                raise VolumeError(f"storage {m.name}: its credentials were not given to the agent")
            if m.name in credentials or m.type != "samba":
                secret = f"{pod}-{name}"[:253]
                out.secrets[secret] = _secret_data(m, credentials.get(m.name, {}))
        volume: dict[str, Any] = {"name": name}
        if m.type == "local":
            volume["hostPath"] = {"path": m.data["path"], "type": "Directory"}
        elif m.type == "pvc":
            volume["persistentVolumeClaim"] = {"claimName": m.data["claimName"], "readOnly": m.read_only}
        elif m.type == "nfs" and not options:
            volume["nfs"] = {"server": m.data["server"], "path": m.data["path"], "readOnly": m.read_only}
        else:
            attributes: dict[str, str] = {}
            if m.type == "nfs":
                attributes = {"server": m.data["server"], "share": m.data["path"]}
            elif m.type == "samba":
                attributes = {"source": m.data["address"]}
            elif m.type == "azureFile":
                attributes = {"shareName": m.data["shareName"]}
            else:
                attributes = {"containerName": m.data["containerName"]}
            if m.type in ("azureFile", "azureBlob") and secret:
                attributes["secretName"] = secret
            if options:
                attributes["mountOptions"] = options
            csi: dict[str, Any] = {
                "driver": CSI[m.type],
                "readOnly": m.read_only,
                "volumeAttributes": attributes,
            }
            if secret and m.type == "samba":
                csi["nodePublishSecretRef"] = {"name": secret}
            volume["csi"] = csi
        out.volumes.append(volume)
        mount: dict[str, Any] = {"name": name, "mountPath": m.mount_path, "readOnly": m.read_only}
        if m.sub_path:
            mount["subPath"] = m.sub_path
        out.mounts.append(mount)
    return out
