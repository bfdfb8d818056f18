"""Python SDK and `pai` command line for the OpenPAI-in-Python platform (OpenPAI REST API v2)."""

from pai_cli.client import (
    FINAL_STATES,
    PaiApiError,
    PaiClient,
    PaiConnectionError,
    PaiError,
    PaiTimeoutError,
    job_state,
)
from pai_cli.config import DEFAULT_URL, CliConfig, config_path, load_config, save_config

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "FINAL_STATES",
    "CliConfig",
    "PaiApiError",
    "PaiClient",
    "PaiConnectionError",
    "PaiError",
    "PaiTimeoutError",
    "__version__",
    "config_path",
    "job_state",
    "load_config",
    "save_config",
]
