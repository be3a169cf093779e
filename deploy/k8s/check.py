"""Offline checks of the Kubernetes manifests (run by `make lint`; no cluster needed).

1. Every document validates against the Kubernetes OpenAPI schema of ``--k8s-version`` (the
   `kubernetes-validate` package ships the schemas; strict: unknown fields are errors).
2. Hardening of every pod template: runs as non-root, read-only root filesystem, no privilege
   escalation, all capabilities dropped, CPU and memory requests and a memory limit per
   container.
3. No secret in a ConfigMap: no key or value that looks like a password, token or URL with
   credentials (those belong in a Secret, referenced through ``${VAR}`` or a mounted file).

Exit 1 with one line per problem, naming the file, the object and the field.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import kubernetes_validate
import yaml

POD_KINDS = {
    "Deployment": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
SECRET_KEY = re.compile(r"(password|passwd|secret|token|api[_-]?key)", re.I)
CREDENTIAL_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@$]+@", re.I)


def pod_spec(doc: dict) -> dict | None:
    path = POD_KINDS.get(doc.get("kind", ""))
    node = doc
    for key in path or ():
        node = (node or {}).get(key)
    return node if path else None


def hardening(where: str, spec: dict) -> list[str]:
    out = []
    pod_sc = spec.get("securityContext") or {}
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        name = f"{where} container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            out.append(f"{name}: securityContext.runAsNonRoot is not true")
        if not sc.get("readOnlyRootFilesystem"):
            out.append(f"{name}: securityContext.readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: securityContext.allowPrivilegeEscalation is not false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            out.append(f"{name}: securityContext.capabilities.drop does not include ALL")
        res = c.get("resources") or {}
        for what in ("cpu", "memory"):
            if what not in (res.get("requests") or {}):
                out.append(f"{name}: resources.requests.{what} missing")
        if "memory" not in (res.get("limits") or {}):
            out.append(f"{name}: resources.limits.memory missing")
    return out


def configmap_secrets(where: str, doc: dict) -> list[str]:
    out = []

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                literal = isinstance(v, str) and bool(v) and not v.startswith("${")
                if SECRET_KEY.search(str(k)) and not str(k).endswith("_file") and literal:
                    out.append(
                        f"{where}: {prefix}{k} holds a literal secret; use a Secret and ${{VAR}}"
                    )
                walk(f"{prefix}{k}.", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(f"{prefix}{i}.", v)
        elif isinstance(value, str) and CREDENTIAL_URL.search(value):
            out.append(f"{where}: {prefix.rstrip('.')} is a URL with credentials; use a Secret")

    for key, text in (doc.get("data") or {}).items():
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            parsed = text
        walk(f"data.{key}:", parsed)
    return out


def check(files: list[Path], k8s_version: str) -> list[str]:
    problems = []
    for path in files:
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if not doc:
                continue
            where = f"{path}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name', f'#{i}')}"
            try:
                kubernetes_validate.validate(doc, k8s_version, strict=True)
            except kubernetes_validate.ValidationError as e:
                loc = ".".join(str(p) for p in e.path) or "<root>"
                problems.append(f"{where}: schema: {loc}: {e.message}")
            spec = pod_spec(doc)
            if spec is not None:
                problems += hardening(where, spec)
            if doc.get("kind") == "ConfigMap":
                problems += configmap_secrets(where, doc)
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", type=Path)
    p.add_argument("--k8s-version", default="1.32")
    args = p.parse_args(argv)
    files = args.files or sorted(Path(__file__).parent.glob("*.yaml"))
    problems = check(files, args.k8s_version)
    for line in problems:
        print(line)
    if problems:
        return 1
    print(
        f"k8s: {len(files)} manifests valid for Kubernetes {args.k8s_version}, hardened, no secrets in ConfigMaps"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
