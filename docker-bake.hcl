# Images of the platform services: `docker buildx bake` builds them all, `docker buildx bake jobs` one.
# Every target builds the same Dockerfile; SERVICE picks the folder under services/ and the module run.
#
#   REGISTRY=ghcr.io/acme/ TAG=1.2.0 docker buildx bake --push        # both platforms, to a registry
#   TAG=dev docker buildx bake --set '*.platform=linux/amd64' --load    # this machine's, into Docker
#
# Images are <REGISTRY>openpai-py/<service>:<TAG>; Compose and the Kubernetes overlays name them the same
# way (compose.yaml's REGISTRY/TAG, deploy/k8s/overlays/*/release.env).

variable "REGISTRY" {
  # A prefix ending in "/" (a registry host and path), or empty for local images.
  default = ""
}

variable "TAG" {
  default = "dev"
}

variable "SOURCE_URL" {
  default = ""
}

variable "REVISION" {
  # The git commit the images are built from: REVISION=$(git rev-parse HEAD).
  default = ""
}

group "default" {
  targets = ["auth", "diagnosis", "gateway", "jobs", "marketplace", "monitoring", "orchestrator", "portal", "runtime", "scheduler", "storage"]
}

target "_service" {
  context    = "."
  dockerfile = "deploy/docker/Dockerfile"
  platforms  = ["linux/amd64", "linux/arm64"]
  # OCI annotations of every image (`docker inspect`, registries show them).
  labels = {
    "org.opencontainers.image.title"    = "openpai-py"
    "org.opencontainers.image.vendor"   = "openpai-py"
    "org.opencontainers.image.version"  = "${TAG}"
    "org.opencontainers.image.revision" = "${REVISION}"
    "org.opencontainers.image.source"   = "${SOURCE_URL}"
  }
}

target "auth" {
  inherits = ["_service"]
  args     = { SERVICE = "auth" }
  labels   = { "org.opencontainers.image.description" = "OpenPAI in Python: auth service" }
  tags     = ["${REGISTRY}openpai-py/auth:${TAG}"]
}

target "diagnosis" {
  inherits = ["_service"]
  args     = { SERVICE = "diagnosis" }
  labels   = { "org.opencontainers.image.description" = "OpenPAI in Python: diagnosis service" }
  tags     = ["${REGISTRY}openpai-py/diagnosis:${TAG}"]
}

target "marketplace" {
  inherits = ["_service"]
  args     = { SERVICE = "marketplace" }
  labels   = { "org.opencontainers.image.description" = "OpenPAI in Python: marketplace service" }
  tags     = ["${REGISTRY}openpai-py/marketplace:${TAG}"]
}

target "portal" {
  inherits = ["_service"]
  args     = { SERVICE = "portal" }
  labels   = { "org.opencontainers.image.description" = "OpenPAI in Python: web portal" }
  tags     = ["${REGISTRY}openpai-py/portal:${TAG}"]
}

target "gateway" {
  inherits = ["_service"]
  args     = { SERVICE = "gateway" }
  labels   = { "org.opencontainers.image.description" = "OpenPAI in Python: gateway service" }
  tags     = ["${REGISTRY}openpai-py/gateway:${TAG}"]
}

target "jobs" {
  inherits = ["_service"]
  args     = { SERVICE = "jobs" }
  labels   = { "org.opencontainers.image.description" = "OpenPAI in Python: jobs service" }
  tags     = ["${REGISTRY}openpai-py/jobs:${TAG}"]
}

target "monitoring" {
  inherits = ["_service"]
  args     = { SERVICE = "monitoring" }
  labels   = { "org.opencontainers.image.description" = "OpenPAI in Python: monitoring service" }
  tags     = ["${REGISTRY}openpai-py/monitoring:${TAG}"]
}

target "orchestrator" {
  inherits = ["_service"]
  args     = { SERVICE = "orchestrator" }
  labels   = { "org.opencontainers.image.description" = "OpenPAI in Python: orchestrator service" }
  tags     = ["${REGISTRY}openpai-py/orchestrator:${TAG}"]
}

target "runtime" {
  inherits = ["_service"]
  args     = { SERVICE = "runtime" }
  labels   = { "org.opencontainers.image.description" = "OpenPAI in Python: runtime (node agent)" }
  tags     = ["${REGISTRY}openpai-py/runtime:${TAG}"]
}

target "scheduler" {
  inherits = ["_service"]
  args     = { SERVICE = "scheduler" }
  labels   = { "org.opencontainers.image.description" = "OpenPAI in Python: scheduler service" }
  tags     = ["${REGISTRY}openpai-py/scheduler:${TAG}"]
}

target "storage" {
  inherits = ["_service"]
  args     = { SERVICE = "storage" }
  labels   = { "org.opencontainers.image.description" = "OpenPAI in Python: storage service" }
  tags     = ["${REGISTRY}openpai-py/storage:${TAG}"]
}
