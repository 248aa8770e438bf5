"""Behind a TLS Ingress: the pod sees plain http from the Ingress controller, and its redirects must still
say https. uvicorn believes X-Forwarded-Proto only from FORWARDED_ALLOW_IPS (default 127.0.0.1, which an
Ingress controller in another pod never is); the watcher renders that variable from TRUSTED_PROXIES.

The wrapper here is started with the environment the watcher renders, and the request comes from
127.0.0.2, an address that is not the pod's own loopback, as the Ingress controller's would not be.
"""

from __future__ import annotations

import httpx

from devstack.models import LoggedModel
from devstack.servers import LocalMlflow
from tests.wrapper.conftest import serve
from watcher.config.settings import load_settings
from watcher.render.manifests import Release, Renderer


def rendered_env(**settings: str) -> dict[str, str]:
    renderer = Renderer(load_settings(mlflow_tracking_uri="http://mlflow.example.org", **settings))
    rendered = renderer.render(Release(name="iris", version=1, source="s3://b/m", run_id=None, slug="iris"))
    container = rendered.deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def test_a_redirect_behind_a_tls_ingress_keeps_https(iris_model: LoggedModel, mlflow_server: LocalMlflow) -> None:
    env = rendered_env(tls_secret_name="models-tls")
    for served in serve(iris_model, mlflow_server, FORWARDED_ALLOW_IPS=env["FORWARDED_ALLOW_IPS"]):
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=transport, timeout=30) as from_the_ingress:
            answer = from_the_ingress.get(served.base.rstrip("/"), headers={
                "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7", "Host": "models.example.org"})

        assert answer.status_code in (301, 307, 308)
        assert answer.headers["location"].startswith("https://models.example.org/")


def test_the_trusted_proxies_are_configurable() -> None:
    assert rendered_env()["FORWARDED_ALLOW_IPS"] == "*"
    assert rendered_env(trusted_proxies="10.0.0.0/8")["FORWARDED_ALLOW_IPS"] == "10.0.0.0/8"
