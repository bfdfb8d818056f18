"""The Kubernetes backend: each task a Pod bound to its node, through the official client's asyncio API.

``manifest`` builds the Pod and its Secret (pure), ``volumes`` the storages' volumes (pure), ``schema``
checks every object against the API schema of the official client, ``status`` reads a Pod's status as an
exit code, ``backend`` drives the API server.
"""

from pai_runtime.kubernetes.backend import KubernetesBackend, connect, files_script
from pai_runtime.kubernetes.manifest import PodOptions

__all__ = ["KubernetesBackend", "PodOptions", "connect", "files_script"]
