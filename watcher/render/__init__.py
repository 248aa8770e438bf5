"""Manifests from the Jinja2 templates in `k8s_templates/`: render, parse, validate against the official
Kubernetes schemas (`manifests`), and the scanner exemptions they carry (`exemptions`). No I/O beyond
reading the templates; may import config, decide and errors."""
