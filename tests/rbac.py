"""The API server's RBAC authorizer for the test control plane: `cronjob/role.yaml`, bound (as
`cronjob/rolebinding.yaml` binds it) to the watcher's ServiceAccount in every namespace it works in.

Followed (kubernetes/kubernetes):
- `staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go` (`NewRequestInfo`): the verb of a
  resource request comes from the HTTP method and whether the URL names an object: GET on a collection is
  `list` (`watch` with `?watch=true`), GET on an object `get`, POST `create`, PUT `update`, PATCH `patch`,
  DELETE on an object `delete`, on a collection `deletecollection`.
- `plugin/pkg/auth/authorizer/rbac/rbac.go` with `pkg/apis/rbac/v1/evaluation_helpers.go` (`VerbMatches`,
  `APIGroupMatches`, `ResourceMatches` on `resource/subresource`, `ResourceNameMatches`): a request is
  allowed when one rule matches all four; a rule with `resourceNames` never matches a nameless request
  (a create or a list). A Role grants nothing at the cluster scope.
- `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go` (`Forbidden`,
  `forbiddenMessage`) and `apimachinery/pkg/api/errors` (`NewForbidden`): the 403 is a Status with reason
  Forbidden and the message `<resource>.<group> "<name>" is forbidden: User "..." cannot <verb> resource
  "<resource>" in API group "<group>" in the namespace "<ns>"`.

Authentication is not emulated: a request carrying `ADMIN_TOKEN` is the cluster admin (the test harness
acting as ops or another controller, as kubectl does with an admin kubeconfig); every other request is
the watcher's ServiceAccount. Each grant (group, resource, verb, name) that authorised a request is
recorded per namespace, so a test can show that the Role grants what the watcher uses and nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import yaml

ROLE_FILE = Path(__file__).resolve().parent.parent / "cronjob" / "role.yaml"
ADMIN_TOKEN = "test-harness-cluster-admin"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SERVICE_ACCOUNT = "service-builder"


@dataclass(frozen=True)
class Grant:
    """One (apiGroup, resource, verb, resourceName) a Role's rules expand to; name None: any name."""

    group: str
    resource: str
    verb: str
    name: str | None = None


@dataclass(frozen=True)
class Attributes:
    """requestinfo.go's RequestInfo, the part RBAC reads."""

    verb: str
    group: str
    resource: str
    namespace: str | None
    name: str | None


def grants(rules: list[dict[str, Any]]) -> set[Grant]:
    """Every grant the rules spell out (the Role has no wildcards: tests/ops checks that)."""
    return {Grant(group, resource, verb, name)
            for rule in rules for group in rule.get("apiGroups") or [] for resource in rule.get("resources") or []
            for verb in rule.get("verbs") or [] for name in rule.get("resourceNames") or [None]}


def shipped_grants() -> set[Grant]:
    return grants(yaml.safe_load(ROLE_FILE.read_text())["rules"])


def attributes(request: kmock.Request) -> Attributes | None:
    """requestinfo.go: the verb RBAC checks, or None for a request that is not for a resource."""
    if request.resource is None:
        return None
    method, name = str(request.method.value), request.name
    if method == "GET":
        verb = "watch" if str(request.params.get("watch", "")).lower() in ("true", "1") else \
            ("get" if name else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
    resource = str(request.resource.plural) + (f"/{request.subresource}" if request.subresource else "")
    return Attributes(verb, request.resource.group or "", resource, request.namespace, name)


def allowing(attrs: Attributes, granted: set[Grant]) -> Grant | None:
    """The grant that allows the request (rbac.go's RuleAllows over the expanded rules), if any."""
    if attrs.namespace is None:
        return None  # a Role (not a ClusterRole) binds in its namespace only
    for grant in (Grant(attrs.group, attrs.resource, attrs.verb, attrs.name),
                  Grant(attrs.group, attrs.resource, attrs.verb, None)):
        if grant in granted and (grant.name is None or attrs.name):
            return grant
    return None


class Authorizer:
    """Checks every request against the shipped Role; remembers which grants were used, by namespace."""

    def __init__(self) -> None:
        self.granted = shipped_grants()
        self.used: dict[str, set[Grant]] = {}

    def authorize(self, request: kmock.Request) -> None:
        """Raise the API server's 403 for a request of the watcher's identity that the Role does not allow."""
        attrs = attributes(request)
        if attrs is None or _is_admin(request):
            return
        grant = allowing(attrs, self.granted)
        if grant is None:
            raise kmock.KubernetesError(status=403, reason="Forbidden", message=_forbidden_message(attrs),
                                        details={"name": attrs.name or "", "group": attrs.group,
                                                 "kind": attrs.resource.split("/")[0]})
        self.used.setdefault(attrs.namespace or "", set()).add(grant)


def _is_admin(request: kmock.Request) -> bool:
    return str(request.headers.get("Authorization", "")) == ADMIN_HEADERS["Authorization"]


def _forbidden_message(attrs: Attributes) -> str:
    user = f"system:serviceaccount:{attrs.namespace or 'default'}:{SERVICE_ACCOUNT}"
    qualified = attrs.resource.split("/")[0] + (f".{attrs.group}" if attrs.group else "")
    subject = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return (f'{subject} is forbidden: User "{user}" cannot {attrs.verb} resource "{attrs.resource}" '
            f'in API group "{attrs.group}" {scope}')
