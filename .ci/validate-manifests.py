#!/usr/bin/env python3
"""Offline validation of deploy/: every kustomization builds, every built-in kind validates
against the Kubernetes OpenAPI schemas (kubernetes-validate, pinned in .ci/run), and every
ElasticGateway (in the builds and in deploy/examples) validates against the CRD's own schema,
with unknown fields rejected as kubectl's strict field validation would."""
import glob
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


def check_egw(doc, where):
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    for e in errors:
        failures.append(f"{where}: {'.'.join(str(p) for p in e.path) or '(root)'}: {e.message}")
    if not errors:
        print(f"ok   {where}: ElasticGateway {doc['metadata'].get('namespace')}/{doc['metadata']['name']} matches the CRD schema")


kustomizations = ["deploy"] + sorted(p.rsplit("/", 1)[0] for p in glob.glob("deploy/overlays/*/kustomization.yaml"))
for k in kustomizations:
    built = subprocess.run(["kubectl", "kustomize", k], capture_output=True, text=True)
    if built.returncode != 0:
        failures.append(f"{k}: kubectl kustomize failed: {built.stderr.strip()}")
        continue
    out = f"target/kustomize-{k.replace('/', '-')}.yaml"
    open(out, "w").write(built.stdout)
    v = subprocess.run(["kubernetes-validate", "--strict", "-k", K8S_VERSION, out], capture_output=True, text=True)
    for line in (v.stdout + v.stderr).splitlines():
        if line.startswith("ERROR") or (line.startswith("WARN") and "Couldn't find schema" not in line):
            failures.append(f"{k}: {line}")
        elif line.startswith("INFO") or "Couldn't find schema" in line:
            print(f"ok   {k}: {line.split(' ', 2)[2] if line.startswith('INFO') else line}")
    if v.returncode != 0 and not any(f.startswith(k + ":") for f in failures):
        failures.append(f"{k}: kubernetes-validate exited {v.returncode}: {v.stdout}{v.stderr}")
    for d in docs(built.stdout, is_text=True):
        if d.get("kind") == "ElasticGateway":
            check_egw(d, k)

for f in sorted(glob.glob("deploy/examples/*.yaml")):
    for d in docs(f):
        check_egw(d, f)

# The schema check must be able to fail: a typo and a wrong type are rejected.
probe = docs("deploy/examples/elasticgateway.yaml")[0]
probe["spec"]["maxReplica"] = 3
probe["spec"]["minReplicas"] = "two"
if len(list(validator.iter_errors(probe))) != 2:
    failures.append("the CRD schema check does not reject a misspelt field and a wrong type")

if failures:
    print("\n".join(["FAIL " + f for f in failures]))
    sys.exit(1)
print(f"all manifests valid ({len(kustomizations)} kustomizations, Kubernetes {K8S_VERSION})")
