"""Generate a synthetic manifest set of N resources (a realistic mix) for the scale benchmark."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{i}
  namespace: ns-{ns}
  labels: {{app: app-{i}, tier: {tier}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: app-{i}}}}}
  template:
    metadata:
      labels: {{app: app-{i}, tier: {tier}}}
    spec:
      serviceAccountName: app-{i}
      automountServiceAccountToken: false
      securityContext: {{runAsNonRoot: true, runAsUser: 10001, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
        - name: main
          image: {image}
          imagePullPolicy: Always
          ports: [{{name: http, containerPort: 8080}}]
          env:
            - {{name: LOG_LEVEL, value: info}}
            - {{name: DB_PASSWORD, valueFrom: {{secretKeyRef: {{name: db, key: password}}}}}}
          resources:
            requests: {{cpu: 100m, memory: 128Mi}}
            limits: {{cpu: 500m, memory: 256Mi}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: {ro}
            privileged: {priv}
            capabilities: {{drop: [ALL]}}
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {{name: app-{i}, namespace: ns-{ns}}}
spec:
  type: {stype}
  selector: {{app: app-{i}}}
  ports: [{{port: 80, targetPort: http}}]
"""
CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {{name: app-{i}-config, namespace: ns-{ns}}}
data:
  settings.yaml: |
    feature_flags: [a, b, c]
    endpoint: https://api.example.com/v1/{i}
  max_connections: "{i}"
"""
NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: ns-{ns}
  labels: {{kubepci.io/scope: {scope}, pod-security.kubernetes.io/enforce: restricted}}
"""


def generate(out: Path, total: int, files: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    namespaces = max(1, total // 200)
    docs: list[str] = [NAMESPACE.format(ns=n, scope=("cde" if n % 10 == 0 else "connected")) for n in range(namespaces)]
    i = 0
    while len(docs) < total:
        ns = rng.randrange(namespaces)
        image = rng.choice(["harbor.example.com/team/app:1.4.2", "nginx:latest", "harbor.example.com/team/app@sha256:"
                            + "ab" * 32, "docker.io/library/redis:7"])
        docs.append(DEPLOYMENT.format(i=i, ns=ns, tier=rng.choice(["web", "api", "db"]), image=image,
                                      ro=rng.choice(["true", "false"]), priv=rng.choice(["false"] * 9 + ["true"])))
        docs.append(SERVICE.format(i=i, ns=ns, stype=rng.choice(["ClusterIP"] * 8 + ["NodePort", "LoadBalancer"])))
        docs.append(CONFIGMAP.format(i=i, ns=ns))
        i += 1
    docs = docs[:total]
    per_file = (len(docs) + files - 1) // files
    for f in range(files):
        chunk = docs[f * per_file:(f + 1) * per_file]
        if chunk:
            (out / f"part-{f:04d}.yaml").write_text("---\n".join(chunk))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=100)
    args = parser.parse_args()
    generate(args.out, args.resources, args.files)


if __name__ == "__main__":
    main()
