# Images of the platform services: `docker buildx bake` builds them all, `docker buildx bake jobs` one.
# Every target builds the same Dockerfile; SERVICE picks the folder under services/ and the module run.

group "default" {
  targets = ["auth", "diagnosis", "gateway", "jobs", "marketplace", "monitoring", "orchestrator", "portal", "runtime", "scheduler", "storage"]
}

target "_service" {
  context    = "."
  dockerfile = "deploy/docker/Dockerfile"
  # Bumping the base image is a one-line change for every service.
  args = {
    PYTHON_IMAGE = "python:3.11-slim"
  }
}

target "auth" {
  inherits = ["_service"]
  args = {
    SERVICE = "auth"
  }
  tags = ["openpai-py/auth:latest"]
}

target "diagnosis" {
  inherits = ["_service"]
  args = {
    SERVICE = "diagnosis"
  }
  tags = ["openpai-py/diagnosis:latest"]
}

target "marketplace" {
  inherits = ["_service"]
  args = {
    SERVICE = "marketplace"
  }
  tags = ["openpai-py/marketplace:latest"]
}

target "portal" {
  inherits = ["_service"]
  args = {
    SERVICE = "portal"
  }
  tags = ["openpai-py/portal:latest"]
}

target "gateway" {
  inherits = ["_service"]
  args = {
    SERVICE = "gateway"
  }
  tags = ["openpai-py/gateway:latest"]
}

target "jobs" {
  inherits = ["_service"]
  args = {
    SERVICE = "jobs"
  }
  tags = ["openpai-py/jobs:latest"]
}

target "monitoring" {
  inherits = ["_service"]
  args = {
    SERVICE = "monitoring"
  }
  tags = ["openpai-py/monitoring:latest"]
}

target "orchestrator" {
  inherits = ["_service"]
  args = {
    SERVICE = "orchestrator"
  }
  tags = ["openpai-py/orchestrator:latest"]
}

target "runtime" {
  inherits = ["_service"]
  args = {
    SERVICE = "runtime"
  }
  tags = ["openpai-py/runtime:latest"]
}

target "scheduler" {
  inherits = ["_service"]
  args = {
    SERVICE = "scheduler"
  }
  tags = ["openpai-py/scheduler:latest"]
}

target "storage" {
  inherits = ["_service"]
  args = {
    SERVICE = "storage"
  }
  tags = ["openpai-py/storage:latest"]
}
