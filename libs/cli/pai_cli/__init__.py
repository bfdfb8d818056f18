"""Python SDK and `pai` command line for the OpenPAI-in-Python platform (OpenPAI REST API v2).

``PaiClient`` (synchronous) and ``AsyncPaiClient`` wrap every route; their answers are the typed models of
``pai_cli.models``; their failures the error types of ``pai_cli.errors``.
"""

from pai_cli.aclient import AsyncPaiClient
from pai_cli.client import PaiClient, job_state
from pai_cli.config import DEFAULT_URL, CliConfig, config_path, load_config, save_config
from pai_cli.errors import (
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    InvalidResponseError,
    NotFoundError,
    PaiApiError,
    PaiConnectionError,
    PaiError,
    PaiTimeoutError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    UnauthorizedError,
)
from pai_cli.models import FINAL_STATES
from pai_cli.routes import acls
from pai_cli.transport import RetryPolicy

__version__ = "0.2.0"

__all__ = [
    "DEFAULT_URL",
    "FINAL_STATES",
    "AsyncPaiClient",
    "CliConfig",
    "ConflictError",
    "ForbiddenError",
    "InvalidRequestError",
    "InvalidResponseError",
    "NotFoundError",
    "PaiApiError",
    "PaiClient",
    "PaiConnectionError",
    "PaiError",
    "PaiTimeoutError",
    "RateLimitedError",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailableError",
    "UnauthorizedError",
    "__version__",
    "acls",
    "config_path",
    "job_state",
    "load_config",
    "save_config",
]
