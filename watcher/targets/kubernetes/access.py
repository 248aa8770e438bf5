"""How the Kubernetes target reaches the API server (bearer token, in-cluster config or kubeconfig), and how the
API's error answers become the project's errors. Used by `watcher.targets.kubernetes.cluster`.
"""

from __future__ import annotations

import json

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from watcher.config.settings import Settings
from watcher.errors import Blocked, PassAborted, Permanent, Retryable, ServiceBuilderError


def api_client(settings: Settings) -> client.ApiClient:
    """Bearer token (K8S_API + K8S_API_KEY), else in-cluster config, else kubeconfig."""
    if settings.k8s_api:
        configuration = client.Configuration()
        configuration.host = settings.k8s_api
        configuration.verify_ssl = settings.k8s_verify_ssl
        if settings.k8s_api_key:
            configuration.api_key = {"authorization": settings.k8s_api_key.get_secret_value()}
            configuration.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(configuration)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as e:
            raise PassAborted(f"no Kubernetes access: set K8S_API, run in a cluster or provide a kubeconfig "
                              f"({e}); or run models on this machine with DEPLOY_TARGET=local") from None
    return client.ApiClient()


def translate(error: ApiException, verb: str, resource: str, kind: str, namespace: str) -> ServiceBuilderError:
    """The project's error for an API answer: 403 names the missing verb and resource; conflicts, throttling and
    server errors are retryable; anything else is permanent, with the API's message."""
    if error.status == 403:
        return Blocked(f"forbidden: the watcher's Role lacks '{verb}' on {resource} in namespace {namespace}")
    if error.status == 409 or error.status == 429 or (error.status or 0) >= 500:
        return Retryable(f"Kubernetes answered {error.status} to {verb} {kind}; will retry")
    if error.status == 422:
        return Permanent(f"Kubernetes rejected the {kind}: {_api_message(error)}")
    return Permanent(f"Kubernetes answered {error.status} to {verb} {kind}: {_api_message(error)}")


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message", ""))[:300]
    except ValueError:
        return str(error.reason or "")[:300]
