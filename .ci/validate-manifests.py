#!/usr/bin/env python3
"""Offline validation of deploy/ and charts/spillway: every kustomization builds, every built-in
kind validates against the Kubernetes OpenAPI schemas (kubernetes-validate, pinned in .ci/run),
and every ElasticGateway (in the builds and in deploy/examples) validates against the CRD's own
schema, with unknown fields rejected as kubectl's strict field validation would.

With HELM set (the path of a helm binary; .ci/run builds one): `helm lint --strict`, renders
with several value sets through the same validation, and the one-source-of-truth check: the
chart with the monitoring toggles on renders the very objects of `kubectl kustomize` of the base
plus the monitoring component (Helm's own labels aside)."""
import glob
import json
import os
import subprocess
import sys

import jsonschema
import yaml

K8S_VERSION = "1.33.0"
failures = []


def docs(path_or_text, is_text=False):
    text = path_or_text if is_text else open(path_or_text).read()
    return [d for d in yaml.safe_load_all(text) if d]


def strict(schema):
    """The CRD's structural schema as JSON Schema: nullable becomes a null type, objects with
    properties reject unknown fields."""
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if isinstance(v, (dict, list)) else v for k, v in schema.items() if not k.startswith("x-kubernetes")}
    for k in ("properties",):
        if k in out:
            out[k] = {name: strict(s) for name, s in schema[k].items()}
    if "items" in schema:
        out["items"] = strict(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(schema["additionalProperties"])
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = out["enum"] + [None]
    if "properties" in out and "additionalProperties" not in out and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


crd = docs("deploy/crd.yaml")[0]
version = crd["spec"]["versions"][0]
schema = strict(version["schema"]["openAPIV3Schema"])
schema["properties"]["metadata"] = {"type": "object"}
schema["properties"]["apiVersion"] = {"type": "string", "enum": ["spillway.io/" + version["name"]]}
schema["properties"]["kind"] = {"type": "string", "enum": ["ElasticGateway"]}
validator = jsonschema.Draft7Validator(schema)
pev_crd = docs("deploy/plannedevent-crd.yaml")[0]
pev_version = pev_crd["spec"]["versions"][0]
pev_schema = strict(pev_version["schema"]["openAPIV3Schema"])
pev_schema["properties"]["metadata"] = {"type": "object"}
pev_schema["properties"]["apiVersion"] = {"type": "string", "enum": ["spillway.io/" + pev_version["name"]]}
pev_schema["properties"]["kind"] = {"type": "string", "enum": ["PlannedEvent"]}
pev_validator = jsonschema.Draft7Validator(pev_schema)


def check_egw(doc, where):
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    for e in errors:
        failures.append(f"{where}: {'.'.join(str(p) for p in e.path) or '(root)'}: {e.message}")
    if not errors:
        print(f"ok   {where}: ElasticGateway {doc['metadata'].get('namespace')}/{doc['metadata']['name']} matches the CRD schema")


def validate_built(label, text):
    """kubernetes-validate --strict on a rendered set of objects, and the CRD schema on its
    ElasticGateways."""
    out = "target/rendered-" + label.replace("/", "-").replace(":", "-") + ".yaml"
    open(out, "w").write(text)
    v = subprocess.run(["kubernetes-validate", "--strict", "-k", K8S_VERSION, out], capture_output=True, text=True)
    for line in (v.stdout + v.stderr).splitlines():
        if line.startswith("ERROR") or (line.startswith("WARN") and "Couldn't find schema" not in line):
            failures.append(f"{label}: {line}")
        elif line.startswith("INFO") or "Couldn't find schema" in line:
            print(f"ok   {label}: {line.split(' ', 2)[2] if line.startswith('INFO') else line}")
    if v.returncode != 0 and not any(f.startswith(label + ":") for f in failures):
        failures.append(f"{label}: kubernetes-validate exited {v.returncode}: {v.stdout}{v.stderr}")
    for d in docs(text, is_text=True):
        if d.get("kind") == "ElasticGateway":
            check_egw(d, label)


def kustomize(path):
    built = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True)
    if built.returncode != 0:
        failures.append(f"{path}: kubectl kustomize failed: {built.stderr.strip()}")
        return None
    return built.stdout


# The base with the Prometheus Operator component, as a user's kustomization outside deploy/
# would combine them (an overlay inside deploy/ cannot include its own parent).
os.makedirs("target/kustomize-with-monitoring", exist_ok=True)
open("target/kustomize-with-monitoring/kustomization.yaml", "w").write(
    "resources: [../../deploy]\ncomponents: [../../deploy/monitoring]\n"
)
kustomizations = ["deploy", "target/kustomize-with-monitoring"] + sorted(
    p.rsplit("/", 1)[0] for p in glob.glob("deploy/overlays/*/kustomization.yaml")
)
built_text = {}
for k in kustomizations:
    text = kustomize(k)
    if text is None:
        continue
    built_text[k] = text
    validate_built(k, text)
if any(d.get("apiVersion", "").startswith("monitoring.coreos.com/") for d in docs(built_text.get("deploy", ""), is_text=True)):
    failures.append("deploy: the base must apply without the Prometheus Operator (move its objects to deploy/monitoring)")

HELM_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}


def comparable(text):
    out = {}
    for d in docs(text, is_text=True):
        labels = d.get("metadata", {}).get("labels") or {}
        for k in HELM_ONLY_LABELS:
            labels.pop(k, None)
        if d["kind"] == "CustomResourceDefinition":
            # The chart adds its labels and keeps the CRD on uninstall; the schema is the same.
            d["metadata"].pop("labels", None)
            d["metadata"].pop("annotations", None)
        out[(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])] = d
    return out


def helm(*args):
    r = subprocess.run([HELM, *args], capture_output=True, text=True)
    if r.returncode != 0:
        failures.append(f"helm {' '.join(args)}: exit {r.returncode}: {r.stdout}{r.stderr}")
        return None
    return r.stdout


HELM = os.environ.get("HELM")
if HELM:
    lint = helm("lint", "--strict", "charts/spillway")
    if lint is not None:
        print("ok   charts/spillway: helm lint --strict")
    same = [("charts/spillway/files/crd.yaml", "deploy/crd.yaml"),
            ("charts/spillway/files/plannedevent-crd.yaml", "deploy/plannedevent-crd.yaml"),
            ("charts/spillway/files/spillway-rules.yaml", "deploy/prometheus/spillway-rules.yaml"),
            ("charts/spillway/files/spillway-dashboard.json", "dashboards/spillway.json")]
    for copy, source in same:
        if open(copy).read() != open(source).read():
            failures.append(f"{copy} differs from {source}: cp {source} {copy}")
    value_sets = {
        "defaults": [],
        # deploy/ has no admission webhook (its certificate is the chart's to make): compared
        # without it; the defaults render it and are checked below.
        "monitoring": ["--set", "createNamespace=true,serviceMonitor.enabled=true,prometheusRule.enabled=true,webhook.enabled=false"],
        "options": ["--set", "leaderElection.enabled=false,replicaCount=1,prometheus.bearerToken.secretName=prom-token,"
                    "prometheus.ca.secretName=prom-ca,meshKubeconfig.secretName=asm-kubeconfig,log.level=debug,"
                    "interval=10s,podDisruptionBudget.enabled=false,gatewayNamespaces={istio-system,gateways},"
                    "fastPath.enabled=false,fastPath.port=15091,webhook.certificate.secretName=edge-tls,"
                    "webhook.caBundle=Q0EK,webhook.failurePolicy=Fail"],
    }
    # values.schema.json: a typo or a value out of range is refused by helm itself, by path.
    for bad, want in [("replicaCnt=3", "replicaCnt"), ("log.format=xml", "/log/format"),
                      ("gatewayNamespaces={Bad_NS}", "/gatewayNamespaces/0"),
                      ("image.digest=latest", "/image/digest")]:
        r = subprocess.run([HELM, "template", "spillway", "charts/spillway", "--set", bad],
                           capture_output=True, text=True)
        if r.returncode == 0 or want not in r.stderr:
            failures.append(f"values.schema.json: --set {bad} not refused at {want}: {r.stderr.strip()}")
        else:
            print(f"ok   values.schema.json refuses --set {bad} at {want}")
    rendered = {}
    for name, args in value_sets.items():
        text = helm("template", "spillway", "charts/spillway", "--namespace", "spillway-system", "--include-crds", *args)
        if text is None:
            continue
        rendered[name] = text
        validate_built(f"helm-{name}", text)
    if "monitoring" in rendered and "target/kustomize-with-monitoring" in built_text:
        chart = comparable(rendered["monitoring"])
        base = comparable(built_text["target/kustomize-with-monitoring"])
        for key in sorted(set(chart) | set(base), key=str):
            if key not in chart:
                failures.append(f"helm vs deploy/: {key} is in deploy/ but not rendered by the chart")
            elif key not in base:
                failures.append(f"helm vs deploy/: the chart renders {key}, which deploy/ lacks")
            elif chart[key] != base[key]:
                failures.append(f"helm vs deploy/: {key} differs:\n  chart:   {chart[key]}\n  deploy/: {base[key]}")
        if not any(f.startswith("helm vs deploy/") for f in failures):
            print(f"ok   charts/spillway renders the same {len(chart)} objects as deploy/ + deploy/monitoring")
    # Helm 4 beside Helm 3: the chart lints and renders the same objects under both (the
    # webhook's generated certificate aside: each render makes a new one).
    HELM4 = os.environ.get("HELM4")
    if HELM4:
        def without_generated(text):
            objs = comparable(text)
            for key, d in objs.items():
                if key[0] == "Secret" and key[2] == "spillway-webhook-tls":
                    d["data"] = "(generated)"
                if key[0] == "ValidatingWebhookConfiguration":
                    for w in d["webhooks"]:
                        w["clientConfig"].pop("caBundle", None)
            return objs
        r = subprocess.run([HELM4, "lint", "--strict", "charts/spillway"], capture_output=True, text=True)
        if r.returncode != 0:
            failures.append(f"helm 4 lint --strict: exit {r.returncode}: {r.stdout}{r.stderr}")
        else:
            print("ok   charts/spillway: helm 4 lint --strict")
        for name, args in value_sets.items():
            r = subprocess.run([HELM4, "template", "spillway", "charts/spillway", "--namespace", "spillway-system",
                                "--include-crds", *args], capture_output=True, text=True)
            if r.returncode != 0:
                failures.append(f"helm 4 template ({name}): exit {r.returncode}: {r.stderr}")
            elif name in rendered and without_generated(r.stdout) != without_generated(rendered[name]):
                a, b = without_generated(r.stdout), without_generated(rendered[name])
                diff = [k for k in set(a) | set(b) if a.get(k) != b.get(k)]
                failures.append(f"helm 4 template ({name}) renders differently from helm 3: {sorted(diff, key=str)}")
            else:
                print(f"ok   helm 4 template ({name}) renders what helm 3 does")
    else:
        print("skip helm 4: HELM4 is not set (.ci/run builds it and sets it)")
    # A second release, with the conventions users grep for: its cluster-wide objects and its
    # gateway Roles are its own; labels, annotations, relabelings and the dashboard reach their
    # objects.
    extras = helm("template", "edge", "charts/spillway", "--namespace", "edge-system", "--set",
                  "podLabels.team=edge,serviceAccount.annotations.pod-identity\\.alibabacloud\\.com/role-name=spillway,"
                  "serviceMonitor.enabled=true,serviceMonitor.relabelings[0].targetLabel=cluster,"
                  "serviceMonitor.relabelings[0].replacement=prod,serviceMonitor.metricRelabelings[0].action=drop,"
                  "serviceMonitor.metricRelabelings[0].regex=go_.*,serviceMonitor.metricRelabelings[0].sourceLabels[0]=__name__,"
                  "grafanaDashboard.enabled=true,grafanaDashboard.namespace=monitoring")
    if extras is not None:
        validate_built("helm-extras", extras)
        objs = comparable(extras)
        names = {k for k in objs}
        pod = objs[("Deployment", "edge-system", "spillway")]["spec"]["template"]
        sm = objs[("ServiceMonitor", "edge-system", "spillway")]["spec"]["endpoints"][0]
        dash = objs.get(("ConfigMap", "monitoring", "edge-dashboard"))
        checks = [
            ({("ClusterRole", None, "edge"), ("ClusterRoleBinding", None, "edge"),
              ("ClusterRole", None, "edge-elasticgateways-edit"), ("ClusterRole", None, "edge-elasticgateways-view"),
              ("Role", "istio-system", "edge-gateway"), ("ValidatingWebhookConfiguration", None, "edge-elasticgateways"),
              ("ValidatingAdmissionPolicy", None, "edge-pod-deletion-cost-only")} <= names,
             "a second release's cluster-wide objects and gateway Roles are its own"),
            (not any(k[1] is None and k[2].startswith("spillway") for k in names),
             "no cluster-wide object of another release's name"),
            (pod["metadata"]["labels"] == {"app.kubernetes.io/name": "spillway", "team": "edge"}, "podLabels reach the pods"),
            (objs[("ServiceAccount", "edge-system", "spillway")]["metadata"].get("annotations")
             == {"pod-identity.alibabacloud.com/role-name": "spillway"}, "serviceAccount.annotations reach it"),
            (sm.get("relabelings") == [{"targetLabel": "cluster", "replacement": "prod"}]
             and sm.get("metricRelabelings") == [{"action": "drop", "regex": "go_.*", "sourceLabels": ["__name__"]}],
             "the ServiceMonitor's relabelings"),
            (dash is not None and dash["metadata"]["labels"].get("grafana_dashboard") == "1"
             and json.loads(dash["data"]["spillway.json"]) == json.load(open("dashboards/spillway.json")),
             "the dashboard ConfigMap holds dashboards/spillway.json, labelled for Grafana's sidecar"),
        ]
        for ok, what in checks:
            (print(f"ok   helm-extras: {what}") if ok else failures.append(f"helm-extras: {what}: not so"))
    if "defaults" in rendered:
        objs = comparable(rendered["defaults"])
        dep = objs.get(("Deployment", "spillway-system", "spillway"))
        pod = dep["spec"]["template"]["spec"] if dep else {}
        env = {e["name"]: e.get("value") for e in (pod.get("containers") or [{}])[0].get("env", [])}
        hook = objs.get(("ValidatingWebhookConfiguration", None, "spillway-elasticgateways"))
        secret = objs.get(("Secret", "spillway-system", "spillway-webhook-tls"))
        import base64
        checks = [
            (env.get("SPILLWAY_WEBHOOK_ADDR") == "$(POD_IP):9443", "the webhook listens on the pod's IP, 9443"),
            (hook is not None and hook["webhooks"][0]["clientConfig"]["service"]["name"] == "spillway-webhook"
             and ("Service", "spillway-system", "spillway-webhook") in objs, "the webhook configuration names its Service"),
            (hook is not None and secret is not None
             and hook["webhooks"][0]["clientConfig"].get("caBundle") == secret["data"]["ca.crt"]
             and b"BEGIN CERTIFICATE" in base64.b64decode(secret["data"]["tls.crt"]),
             "the webhook's caBundle is the CA of the chart's certificate"),
            (any(v.get("secret", {}).get("secretName") == "spillway-webhook-tls" for v in pod.get("volumes", [])),
             "the certificate is mounted"),
        ]
        for ok, what in checks:
            (print(f"ok   helm-defaults: {what}") if ok else failures.append(f"helm-defaults: {what}: not so"))
    if "options" in rendered:
        objs = comparable(rendered["options"])
        dep = objs[("Deployment", "spillway-system", "spillway")]
        pod = dep["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        checks = [
            (env.get("SPILLWAY_LEADER_ELECTION") == "false", "leaderElection.enabled=false sets SPILLWAY_LEADER_ELECTION"),
            (("Role", "spillway-system", "spillway-leader") not in objs, "no Lease Role without leader election"),
            (("Role", "gateways", "spillway-gateway") in objs, "a write Role in every gateway namespace"),
            (env.get("SPILLWAY_GATEWAY_NAMESPACES") == "istio-system,gateways", "gatewayNamespaces reach the agent"),
            (env.get("SPILLWAY_PROMETHEUS_TOKEN_FILE") == "/etc/spillway/prometheus-token/token", "the token file is mounted"),
            (env.get("SPILLWAY_MESH_KUBECONFIG") == "/etc/spillway/mesh/kubeconfig", "the mesh kubeconfig is mounted"),
            ({v["secret"]["secretName"] for v in pod.get("volumes", [])} == {"prom-token", "prom-ca", "asm-kubeconfig", "edge-tls"},
             "the four Secrets are volumes"),
            (("Secret", "spillway-system", "spillway-webhook-tls") not in objs
             and objs[("ValidatingWebhookConfiguration", None, "spillway-elasticgateways")]["webhooks"][0]["clientConfig"]["caBundle"] == "Q0EK"
             and objs[("ValidatingWebhookConfiguration", None, "spillway-elasticgateways")]["webhooks"][0]["failurePolicy"] == "Fail",
             "the webhook serves an existing certificate with the given CA and failure policy"),
            (("PodDisruptionBudget", "spillway-system", "spillway") not in objs, "the PDB can be turned off"),
            (env.get("SPILLWAY_FAST_PATH") == "false" and env.get("SPILLWAY_FAST_PATH_PORT") == "15091",
             "fastPath.enabled=false and fastPath.port reach the agent"),
        ]
        for ok, what in checks:
            (print(f"ok   helm-options: {what}") if ok else failures.append(f"helm-options: {what}: not so"))
else:
    print("skip charts/spillway: HELM is not set (.ci/run builds helm and sets it)")

for f in sorted(glob.glob("deploy/examples/*.yaml")):
    if all(d.get("kind") == "ElasticGateway" for d in docs(f)):
        for d in docs(f):
            check_egw(d, f)
    elif all(d.get("kind") == "PlannedEvent" for d in docs(f)):
        for d in docs(f):
            errors = list(pev_validator.iter_errors(d))
            failures.extend(f"{f}: {'.'.join(str(p) for p in e.path) or '(root)'}: {e.message}" for e in errors)
            if not errors:
                print(f"ok   {f}: PlannedEvent matches the CRD schema")
    else:
        # Other examples (the gateway's NetworkPolicy for the fast path): Kubernetes' own schemas.
        validate_built(f, open(f).read())

# The schema check must be able to fail: a typo and a wrong type are rejected.
probe = docs("deploy/examples/elasticgateway.yaml")[0]
probe["spec"]["maxReplica"] = 3
probe["spec"]["minReplicas"] = "two"
if len(list(validator.iter_errors(probe))) != 2:
    failures.append("the CRD schema check does not reject a misspelt field and a wrong type")

if failures:
    print("\n".join(["FAIL " + f for f in failures]))
    sys.exit(1)
print(f"all manifests valid ({len(kustomizations)} kustomizations{', the Helm chart' if HELM else ''}, Kubernetes {K8S_VERSION})")
