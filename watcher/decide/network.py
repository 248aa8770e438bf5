"""Who may reach a model's pods, and what they may reach: the NetworkPolicy rules, built from settings.

Pure functions called by `render` (and by `settings` to validate at start-up). Sources and
destinations are written by ops as short words, `namespace:NAME`, `namespace:KEY=VALUE[,...]`,
`pods:KEY=VALUE[,...]` (this namespace) or `cidr:10.0.0.0/8`, and become NetworkPolicy peers
as `networking/v1` defines them (k8s.io/api/networking/v1/types.go, `NetworkPolicyPeer`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

MODEL_PORT = 8080
WATCHER_POD_LABELS = {"app.kubernetes.io/name": "service-builder"}
"""The label the CronJob's and `serve-webhooks`' pods carry (cronjob/): the smoke test comes from them."""
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace since Kubernetes 1.21 (the NamespaceDefaultLabelName gate)."""
DNS = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "kube-system"}},
       "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
"""CoreDNS and kube-dns both carry `k8s-app: kube-dns` in kube-system (the label kubeadm, kind and k3s use)."""

# apimachinery's validation: pkg/util/validation/validation.go (IsQualifiedName, IsValidLabelValue, IsDNS1123Label).
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL_KEY = re.compile(rf"({_PREFIX}/)?{_NAME}")
_LABEL_VALUE = re.compile(rf"({_NAME})?")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SVC_HOST = re.compile(r"[a-z0-9-]+\.([a-z0-9-]+)\.svc(\.[a-z0-9.-]+)?")


def namespace_selector(text: str) -> dict[str, Any]:
    """`NAME` (a namespace) or `KEY=VALUE[,KEY=VALUE]` (namespaces carrying all those labels)."""
    if "=" not in text:
        if not _NAMESPACE.fullmatch(text):
            raise ValueError(f"{text!r} is neither a namespace name nor KEY=VALUE labels")
        return {"matchLabels": {NAMESPACE_NAME_LABEL: text}}
    return {"matchLabels": _labels(text)}


def parse_peers(text: str) -> list[dict[str, Any]]:
    """Whitespace-separated `namespace:…`, `pods:…` or `cidr:…` words as NetworkPolicy peers."""
    return [_peer(word) for word in text.split()]


def ingress_sources(*, ingress_namespace: str, metrics_namespace: str | None, extra: str) -> list[dict[str, Any]]:
    """The Ingress controller's namespace, the watcher's own pods, the metrics scraper's namespace, extras."""
    sources = [{"namespaceSelector": namespace_selector(ingress_namespace)},
               {"podSelector": {"matchLabels": dict(WATCHER_POD_LABELS)}}]
    if metrics_namespace:
        sources.append({"namespaceSelector": namespace_selector(metrics_namespace)})
    return sources + parse_peers(extra)


def egress_rules(*, urls: list[str], destinations: str) -> list[dict[str, Any]]:
    """DNS, then one rule per server a model pod calls (MLflow, S3): its port, to where it lives.

    A NetworkPolicy names addresses, not host names. Where the server lives is `destinations`
    when ops give it; else what the URL's host says (an IP address, or a `NAME.NAMESPACE.svc`
    Service); else (a public host name) only its port is enforced.
    """
    rules: list[dict[str, Any]] = [{"to": [DNS], "ports": [{"protocol": "UDP", "port": 53},
                                                           {"protocol": "TCP", "port": 53}]}]
    for url in urls:
        if urlsplit(url).scheme not in ("http", "https"):
            continue
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        to = parse_peers(destinations) if destinations.strip() else _where(parts.hostname or "")
        rule = {**({"to": to} if to else {}), "ports": [{"protocol": "TCP", "port": port}]}
        if rule not in rules:
            rules.append(rule)
    return rules


def s3_url(endpoint: str | None) -> str:
    """Where boto3 sends S3 calls: the endpoint, or AWS (https) when none is set."""
    return endpoint or "https://s3.amazonaws.com"


def _where(host: str) -> list[dict[str, Any]]:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [{"ipBlock": {"cidr": f"{address}/{address.max_prefixlen}"}}]
    if match := _SVC_HOST.fullmatch(host):
        return [{"namespaceSelector": namespace_selector(match[1])}]
    return []


def _peer(word: str) -> dict[str, Any]:
    kind, _, rest = word.partition(":")
    if kind == "namespace" and rest:
        return {"namespaceSelector": namespace_selector(rest)}
    if kind == "pods" and rest:
        return {"podSelector": {"matchLabels": _labels(rest)}}
    if kind == "cidr" and rest:
        try:
            return {"ipBlock": {"cidr": str(ipaddress.ip_network(rest))}}
        except ValueError:
            raise ValueError(f"{word!r}: {rest!r} is not a network (host bits must be zero, e.g. 10.0.0.0/8)") \
                from None
    raise ValueError(f"{word!r} is not a source; use namespace:NAME, namespace:KEY=VALUE, pods:KEY=VALUE "
                     "or cidr:NETWORK")


def _labels(text: str) -> dict[str, str]:
    labels = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        if not sep or not _LABEL_KEY.fullmatch(key) or len(key.rpartition("/")[2]) > 63 \
                or not _LABEL_VALUE.fullmatch(value) or len(value) > 63:
            raise ValueError(f"{pair!r} is not a Kubernetes label KEY=VALUE")
        labels[key] = value
    return labels
