"""Manifests from the Jinja2 templates in `k8s_templates/`: render, parse, validate against the official
Kubernetes schemas (`manifests`), the scanner exemptions they carry (`exemptions`), a candidate's objects
(`candidate`), and the HTML drift report (`drift_report`). No I/O beyond reading the templates; may import
config, decide and errors."""
