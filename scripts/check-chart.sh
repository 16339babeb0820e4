#!/usr/bin/env bash
# Offline checks of the Helm chart (charts/terarchitect); no cluster needed. Fails on the first
# problem. What it checks:
#   1. charts/terarchitect/crds/agentjob.yaml is identical to crds/agentjob.yaml (the CRD generated
#      by `terarchitect-operator crd`, kept fresh by operator/tests/crd_file.rs); with
#      CHECK_CRD_GENERATED=1 also that crds/agentjob.yaml matches what the operator prints now
#      (builds the operator, so off by default).
#   2. `helm lint --strict` with the default values and with every ci/*-values.yaml.
#   3. `helm template --include-crds` of each, then, for every rendered document:
#      - built-in kinds are validated by `kubernetes-validate --strict` against Kubernetes
#        $KUBE_VERSION's schemas; a kind it has no schema for is an error (it only warns);
#      - custom kinds the chart renders (ServiceMonitor) are checked against a schema of the
#        fields the chart sets, since kubernetes-validate skips them;
#      - chart policies: no cluster-scoped RBAC, restricted security contexts on every pod and
#        container, secrets only through secretKeyRef (never a literal value, and no Secret
#        value appearing in any other object), every secretKeyRef to a rendered Secret names a
#        key it has, every Service selects pods the chart renders, the operator's fixed
#        contract (command, LEADER_ELECTION, POD_NAME, probes on 8080), the operator's Role
#        grants exactly the verbs its code uses, the api-server requires the admin token, and
#        the agent pods' NetworkPolicy (on by default) allows no ingress and egress only to
#        DNS, the api-server port and ipBlocks that exclude every private, CGNAT, loopback and
#        link-local range (169.254.169.254); with ci/agents-egress-values.yaml, widened.
#   4. Negative tests: `helm template` with each ci/bad/*.yaml must fail, with the message
#      given on the file's first line (`# expect: <text>`).
#   5. The example AgentJobs (charts/terarchitect/examples/*.yaml) validate against the CRD's
#      openAPIV3Schema (python jsonschema; nullable, int-or-string and the CEL rules the CRD
#      uses translated), and broken variants of them do not.
#   6. Every value of values.schema.json has a row in charts/terarchitect/README.md's table.
#   7. `helm package` succeeds.
# Tools: helm, kubernetes-validate and the Python venv (jsonschema, pyyaml) from .tools/, which
# scripts/install-tools.sh fills (run here when something is missing).
# Usage: scripts/check-chart.sh        (KUBE_VERSION=1.33.0 by default)
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=charts/terarchitect
KUBE_VERSION="${KUBE_VERSION:-1.33.0}"
TOOLS="$PWD/.tools"
HELM="$TOOLS/bin/helm"
KUBE_VALIDATE="$TOOLS/bin/kubernetes-validate"
PY="$TOOLS/venv/bin/python"
RELEASE=terarchitect
NAMESPACE=terarchitect

step() { printf -- '--> %s\n' "$*"; }
die() {
  printf 'check-chart: FAILED: %s\n' "$*" >&2
  exit 1
}

if [ ! -x "$HELM" ] || [ ! -x "$KUBE_VALIDATE" ] || [ ! -x "$PY" ] ||
  ! "$PY" -c 'import jsonschema, yaml' 2>/dev/null; then
  step "installing the offline tools (scripts/install-tools.sh)"
  scripts/install-tools.sh
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The Python half: policy checks and splitting of rendered manifests, AgentJob validation.
cat >"$work/check.py" <<'PY'
import base64, copy, json, re, sys
import jsonschema, yaml

def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

def fail(msg):
    print(f"check-chart: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)

# ---- rendered manifests ----------------------------------------------------------------------

# Fields of the ServiceMonitors the chart renders (kubernetes-validate has no schema for them).
SERVICE_MONITOR = {
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {
                "selector": {"type": "object", "additionalProperties": False,
                             "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                                      "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["port"],
                    "properties": {"port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                                   "interval": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
                                   "scrapeTimeout": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"}}}},
            },
        },
    },
}
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR}
# Env names that look secret but hold plain settings.
NOT_SECRET_ENV = {"TERARCHITECT_REQUIRE_WORKER_API_KEY", "TERARCHITECT_REQUIRE_ADMIN_TOKEN",
                  "TERARCHITECT_REDACT_CONTEXT_SECRETS"}
# The operator's Role: exactly these verbs on the resources its code uses (rbac.extraRules may
# add other resources, never other verbs here). delete on agentjobs: retention (TTL); delete on
# secrets: the run's env Secret once its outcome is reported.
OPERATOR_ROLE = {
    ("terarchitect.io", "agentjobs", ()): {"get", "list", "watch", "create", "patch", "delete"},
    ("terarchitect.io", "agentjobs/status", ()): {"get", "patch"},
    ("terarchitect.io", "agentjobs/finalizers", ()): {"update"},
    ("batch", "jobs", ()): {"get", "list", "watch", "create", "delete"},
    ("", "pods", ()): {"get", "list", "watch"},
    ("", "secrets", ()): {"get", "create", "patch", "delete"},
    ("events.k8s.io", "events", ()): {"create", "patch"},
    ("coordination.k8s.io", "leases", ()): {"create"},
    ("coordination.k8s.io", "leases", ("LEASE",)): {"get", "patch"},
}
AGENT_LABELS = {"app.kubernetes.io/name": "terarchitect-agent",
                "app.kubernetes.io/managed-by": "terarchitect-operator"}
# Ranges no agent pod may reach through an ipBlock: private networks (pods, Services, nodes and
# the Kubernetes API on most clusters), CGNAT, loopback and link-local (cloud metadata).
AGENT_FORBIDDEN = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                   "127.0.0.0/8", "169.254.0.0/16", "169.254.169.254/32"]

def check_role(doc, err):
    """The operator's Role grants exactly OPERATOR_ROLE on the resources it names."""
    granted = {}
    for rule in doc.get("rules", []):
        names = tuple(rule.get("resourceNames", []))
        for group in rule.get("apiGroups", []):
            for res in rule.get("resources", []):
                key = (group, res, ("LEASE",) if names and res == "leases" else names)
                granted.setdefault(key, set()).update(rule.get("verbs", []))
    for key, verbs in OPERATOR_ROLE.items():
        if granted.get(key) != verbs:
            err(doc, f"{key[0] or 'core'}/{key[1]}{' (by name)' if key[2] else ''}: verbs {sorted(granted.get(key, []))}, expected {sorted(verbs)}")
    extra = {k for k in granted if (k[0], k[1]) in {(g, r) for g, r, _ in OPERATOR_ROLE} and k not in OPERATOR_ROLE}
    for key in extra:
        err(doc, f"unexpected rule on {key}")

def peer_selects_everything(peer):
    """A peer that matches every pod (of a namespace or of the cluster)."""
    if "ipBlock" in peer:
        return False
    ns, pod = peer.get("namespaceSelector"), peer.get("podSelector")
    empty = lambda s: s is not None and not s.get("matchLabels") and not s.get("matchExpressions")
    return (pod is None and empty(ns)) or empty(pod)

def check_agent_policy(name, docs, err):
    """The agent pods' NetworkPolicy (one, on by default) passes check_one_agent_policy."""
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"
                and d["spec"].get("podSelector", {}).get("matchLabels") == AGENT_LABELS]
    if name == "default":
        if len(policies) != 1:
            fail(f"default: expected one NetworkPolicy for agent pods, got {len(policies)}")
        self_test_agent_policy(policies[0])
    for doc in policies:
        check_one_agent_policy(name, doc, err)

def check_one_agent_policy(name, doc, err):
    """No ingress; egress to DNS (53), the api-server port and ipBlocks that exclude every
    private and link-local range; extra rules name their peers and ports."""
    import ipaddress
    spec = doc["spec"]
    if sorted(spec.get("policyTypes", [])) != ["Egress", "Ingress"]:
        err(doc, "agent policy must restrict Ingress and Egress")
    if spec.get("ingress"):
        err(doc, "agent pods must accept no ingress")
    kinds = []
    for rule in spec.get("egress", []):
        to, ports = rule.get("to"), rule.get("ports")
        if not to or not ports:
            err(doc, f"egress rule without 'to' or 'ports' allows too much: {rule}")
            continue
        if any(peer_selects_everything(p) for p in to):
            err(doc, f"egress peer selecting every pod: {rule}")
        port_set = {(p.get("port"), p.get("protocol", "TCP")) for p in ports}
        for peer in to:
            block = peer.get("ipBlock")
            if not block:
                continue
            cidr = ipaddress.ip_network(block["cidr"])
            excepts = [ipaddress.ip_network(e) for e in block.get("except", [])]
            for bad in map(ipaddress.ip_network, AGENT_FORBIDDEN):
                if bad.version == cidr.version and cidr.overlaps(bad) and not any(
                        e.version == bad.version and bad.subnet_of(e) for e in excepts):
                    err(doc, f"ipBlock {block['cidr']} reaches {bad}")
        if port_set == {(53, "UDP"), (53, "TCP")} and all("ipBlock" not in p for p in to):
            kinds.append("dns")
        elif port_set == {(5010, "TCP")} and all(p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "api-server" for p in to):
            kinds.append("api-server")
        elif all("ipBlock" in p for p in to):
            kinds.append("internet")
            if name == "default" and port_set != {(443, "TCP")}:
                err(doc, f"default: the outside world on 443 only, got {sorted(port_set)}")
        else:
            kinds.append("extra")
    if kinds[:2] != ["dns", "api-server"]:
        err(doc, f"egress must start with DNS and the api-server port, got {kinds}")
    if name == "default" and kinds != ["dns", "api-server", "internet"]:
        err(doc, f"default: egress must be DNS, api-server, internet; got {kinds}")
    if name == "agents-egress" and kinds.count("extra") != 1:
        err(doc, f"agents-egress: the extra egress rule is missing: {kinds}")

def self_test_agent_policy(good):
    """The agent policy check must reject broken policies, or it proves nothing."""
    def broken(mutate):
        d = copy.deepcopy(good); mutate(d["spec"]); return d
    def internet(s):
        return next(r for r in s["egress"] if any("ipBlock" in p for p in r["to"]))["to"][0]["ipBlock"]
    def drop_except(cidr):
        return lambda s: internet(s).update({"except": [e for e in internet(s)["except"] if e != cidr]})
    cases = {
        "the metadata address reachable": broken(drop_except("169.254.0.0/16")),
        "the pod network reachable": broken(drop_except("10.0.0.0/8")),
        "egress to anywhere on a port": broken(lambda s: s["egress"].append({"ports": [{"port": 6443}]})),
        "egress to every pod": broken(lambda s: s["egress"].append({"to": [{"namespaceSelector": {}}], "ports": [{"port": 80}]})),
        "ingress": broken(lambda s: s.update(ingress=[{"from": [{"podSelector": {}}]}])),
        "no Egress policy type": broken(lambda s: s.update(policyTypes=["Ingress"])),
        "port 80 to the outside": broken(lambda s: next(r for r in s["egress"] if any("ipBlock" in p for p in r["to"]))["ports"].append({"port": 80, "protocol": "TCP"})),
    }
    found = []
    check_one_agent_policy("default", good, lambda d, m: found.append(m))
    if found:
        fail(f"the agent NetworkPolicy self-test rejects the good policy: {found}")
    for what, doc in cases.items():
        found = []
        check_one_agent_policy("default", doc, lambda d, m: found.append(m))
        if not found:
            fail(f"the agent NetworkPolicy check accepts a policy with {what}")
    print(f"    agent NetworkPolicy: {len(cases)} broken variants rejected")
SECRET_ENV = re.compile(r"(KEY|TOKEN|PASSWORD|SECRET|DATABASE_URL|_URI)$")

def pod_spec(doc):
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"], doc["spec"]["template"]["metadata"].get("labels", {})
    return None, None

def check_render(name, path, out_builtin):
    docs = load_docs(path)
    errors = []
    def err(doc, msg):
        errors.append(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {msg}")
    builtin, kinds = [], {}
    secrets = {}
    for doc in docs:
        kinds[doc["kind"]] = kinds.get(doc["kind"], 0) + 1
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CUSTOM_KINDS:
            for e in jsonschema.Draft7Validator(CUSTOM_KINDS[key]).iter_errors(doc):
                err(doc, f"{'/'.join(map(str, e.path))}: {e.message}")
        else:
            builtin.append(doc)
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            err(doc, "the chart must not create cluster-scoped RBAC")
        if doc["kind"] == "Role":
            for rule in doc.get("rules", []):
                if "*" in rule.get("verbs", []) or "*" in rule.get("resources", []):
                    err(doc, f"wildcard in rule {rule}")
            if doc["metadata"]["name"].endswith("-operator"):
                check_role(doc, err)
        if doc["kind"] == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
            data.update(doc.get("stringData") or {})
            secrets[doc["metadata"]["name"]] = data
    with open(out_builtin, "w") as f:
        yaml.safe_dump_all(builtin, f, sort_keys=False)

    # No Secret value may appear anywhere but in its Secret.
    values = {v for data in secrets.values() for v in data.values() if len(v) >= 8}
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        text = json.dumps(doc)
        for v in values:
            if v in text:
                err(doc, "contains a Secret's value")

    pods = []
    for doc in docs:
        spec, labels = pod_spec(doc)
        if spec is None:
            continue
        pods.append((doc, labels))
        psc = spec.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            err(doc, "pod securityContext.runAsNonRoot must be true")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            err(doc, "pod seccompProfile must be RuntimeDefault")
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                err(doc, f"container {c['name']}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                err(doc, f"container {c['name']}: allowPrivilegeEscalation must be false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                err(doc, f"container {c['name']}: capabilities must drop ALL")
            if not c.get("resources"):
                err(doc, f"container {c['name']}: no resources")
            for env in c.get("env", []):
                n = env["name"]
                if SECRET_ENV.search(n) and n not in NOT_SECRET_ENV:
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if "value" in env or not ref:
                        err(doc, f"container {c['name']}: {n} must come from a secretKeyRef")
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] in secrets and ref["key"] not in secrets[ref["name"]]:
                    err(doc, f"container {c['name']}: {n} refers to key {ref['key']} missing from Secret {ref['name']}")
        if doc["metadata"]["name"].endswith("-operator") and doc["kind"] == "Deployment":
            c = spec["containers"][0]
            env = {e["name"]: e for e in c.get("env", [])}
            if c.get("command") != ["terarchitect-operator", "run"]:
                err(doc, "operator command must be [terarchitect-operator, run]")
            if env.get("LEADER_ELECTION", {}).get("value") != "true":
                err(doc, "LEADER_ELECTION must be \"true\"")
            if env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
                err(doc, "POD_NAME must come from fieldRef metadata.name")
            if env.get("OPERATOR_HTTP_BIND", {}).get("value") != "0.0.0.0:8080":
                err(doc, "OPERATOR_HTTP_BIND must be 0.0.0.0:8080")
            for probe, p in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                if c.get(probe, {}).get("httpGet", {}).get("path") != p:
                    err(doc, f"{probe} must GET {p}")
            for required in ("TERARCHITECT_API_URL", "TERARCHITECT_WORKER_API_KEY", "OPERATOR_NAMESPACE",
                             "AGENT_IMAGE", "AGENT_SERVICE_ACCOUNT", "LEADER_ELECTION_LEASE",
                             "TERARCHITECT_ADMIN_TOKEN", "AGENTJOB_TTL_SECONDS"):
                if required not in env:
                    err(doc, f"operator env lacks {required}")
        if doc["metadata"]["name"].endswith("-api-server") and doc["kind"] == "Deployment":
            env = {e["name"]: e for e in spec["containers"][0].get("env", [])}
            if "secretKeyRef" not in env.get("TERARCHITECT_ADMIN_TOKEN", {}).get("valueFrom", {}):
                err(doc, "api-server needs TERARCHITECT_ADMIN_TOKEN from a secretKeyRef")
            if name == "default" and env.get("TERARCHITECT_REQUIRE_ADMIN_TOKEN", {}).get("value") != "true":
                err(doc, "default: TERARCHITECT_REQUIRE_ADMIN_TOKEN must be \"true\"")

    check_agent_policy(name, docs, err)
    for doc in docs:
        if doc["kind"] == "NetworkPolicy" and doc["metadata"]["name"].endswith("-api-server"):
            for rule in doc["spec"].get("ingress", []):
                agents = [p for p in rule.get("from", [])
                          if p.get("podSelector", {}).get("matchLabels") == AGENT_LABELS]
                if agents and [p.get("port") for p in rule.get("ports", [])] != ["http"]:
                    err(doc, "agent pods may reach the api-server on its http port only")

    # Every Service selects pods of the chart.
    for doc in docs:
        if doc["kind"] != "Service":
            continue
        sel = doc["spec"].get("selector", {})
        if not any(all(labels.get(k) == v for k, v in sel.items()) for _, labels in pods):
            err(doc, f"selector {sel} matches no pod the chart renders")

    if errors:
        fail("\n  " + "\n  ".join(errors))
    summary = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    print(f"    {name}: {len(docs)} objects ({summary})")

# ---- AgentJob examples against the CRD ---------------------------------------------------------

UUID_RULE = re.compile(r"^self\.matches\('(.*)'\)$")

def to_jsonschema(s, unchecked, path="spec"):
    """Turns a structural openAPIV3Schema into a JSON schema: nullable, int-or-string, strict
    unknown fields (as `kubectl apply --validate=strict`), and the CEL rules the CRD uses."""
    s = copy.deepcopy(s)
    out = {k: v for k, v in s.items() if not k.startswith("x-kubernetes-") and k not in ("nullable", "properties", "items", "additionalProperties", "format")}
    if s.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if s.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in s:
        out["properties"] = {k: to_jsonschema(v, unchecked, f"{path}.{k}") for k, v in s["properties"].items()}
        if not s.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in s:
            out["additionalProperties"] = False
    if isinstance(s.get("additionalProperties"), dict):
        out["additionalProperties"] = to_jsonschema(s["additionalProperties"], unchecked, f"{path}.*")
    if "items" in s:
        out["items"] = to_jsonschema(s["items"], unchecked, f"{path}[]")
    rules = []
    for v in s.get("x-kubernetes-validations", []):
        rule = " ".join(v["rule"].split())
        m = UUID_RULE.match(rule)
        if m:
            rules.append({"pattern": m.group(1)})
        elif rule == "self != ''":
            rules.append({"minLength": 1})
        elif re.fullmatch(r"self >= -?\d+", rule):
            rules.append({"minimum": int(rule.split(">=")[1])})
        elif rule == "self.spec.kind != 'review' || (has(self.spec.review) && self.spec.review.prNumber > 0)":
            rules.append({"if": {"properties": {"spec": {"properties": {"kind": {"const": "review"}}, "required": ["kind"]}}},
                          "then": {"properties": {"spec": {"required": ["review"], "properties": {"review": {
                              "type": "object", "required": ["prNumber"], "properties": {"prNumber": {"type": "integer", "exclusiveMinimum": 0}}}}}}}})
        else:
            unchecked.append(f"{path}: {rule}")
    if rules:
        out = {"allOf": [out] + rules}
    return out

def agentjob_validator(crd_path):
    crd = next(d for d in load_docs(crd_path) if d["kind"] == "CustomResourceDefinition")
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    unchecked = []
    schema = to_jsonschema(version["schema"]["openAPIV3Schema"], unchecked, "")
    root = schema["allOf"][0] if "allOf" in schema else schema
    api_version = f"{crd['spec']['group']}/{version['name']}"
    root["properties"].update({
        "apiVersion": {"const": api_version},
        "kind": {"const": crd["spec"]["names"]["kind"]},
        "metadata": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", "maxLength": 253}}},
    })
    root.setdefault("required", []).extend(["apiVersion", "kind", "metadata"])
    for u in unchecked:
        print(f"    note: CEL rule not checked offline: {u}")
    return jsonschema.Draft7Validator(schema)

def check_examples(crd_path, *examples):
    validator = agentjob_validator(crd_path)
    docs = []
    for path in examples:
        for doc in load_docs(path):
            if doc.get("kind") != "AgentJob":
                continue
            errs = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]
            if errs:
                fail(f"{path}: AgentJob {doc.get('metadata', {}).get('name')} does not match the CRD:\n  " + "\n  ".join(errs))
            docs.append(doc)
            print(f"    {path}: AgentJob {doc['metadata']['name']} is valid")
    if not docs:
        fail("no example AgentJob found")
    # The validator must reject broken AgentJobs, or the checks above prove nothing.
    ticket = next(d for d in docs if d["spec"].get("kind", "ticket") == "ticket")
    def broken(mutate):
        d = copy.deepcopy(ticket); mutate(d); return d
    cases = {
        "missing spec.repoUrl": broken(lambda d: d["spec"].pop("repoUrl")),
        "empty spec.repoUrl": broken(lambda d: d["spec"].update(repoUrl="")),
        "unknown spec.kind": broken(lambda d: d["spec"].update(kind="deploy")),
        "projectId not a UUID": broken(lambda d: d["spec"].update(projectId="nope")),
        "unknown field": broken(lambda d: d["spec"].update(replicas=2)),
        "timeoutSeconds below 60": broken(lambda d: d["spec"].update(timeoutSeconds=5)),
        "negative ttlSecondsAfterFinished": broken(lambda d: d["spec"].update(ttlSecondsAfterFinished=-1)),
        "review without review": broken(lambda d: d["spec"].update(kind="review")),
        "wrong apiVersion": broken(lambda d: d.update(apiVersion="terarchitect.io/v1")),
    }
    for what, doc in cases.items():
        if validator.is_valid(doc):
            fail(f"the CRD schema check accepts an AgentJob with {what}")
    print(f"    {len(cases)} broken variants rejected")

# ---- the chart README's values table ------------------------------------------------------------

def value_keys(schema):
    """Dotted keys of the values schema down to its free-form leaves (what the table lists)."""
    defs = schema.get("definitions", {})
    def resolve(s):
        if "$ref" in s:
            return resolve(defs[s["$ref"].split("/")[-1]])
        return resolve(s["allOf"][0]) if "allOf" in s else s
    keys = []
    def walk(s, path):
        s = resolve(s)
        if "properties" in s and s.get("additionalProperties") is False:
            for k, sub in s["properties"].items():
                if k != "global":
                    walk(sub, f"{path}.{k}" if path else k)
        else:
            keys.append(path)
    walk(schema, "")
    return keys

def check_readme(schema_path, readme_path):
    schema = json.load(open(schema_path))
    readme = open(readme_path).read()
    missing = [k for k in value_keys(schema) if f"| `{k}` |" not in readme]
    if missing:
        fail(f"{readme_path} lacks rows for values: {', '.join(missing)}")
    print(f"    {len(value_keys(schema))} values documented")

if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"render": lambda: check_render(*args), "examples": lambda: check_examples(*args),
     "readme": lambda: check_readme(*args)}[cmd]()
PY

step "CRD: $CHART/crds/agentjob.yaml is crds/agentjob.yaml"
[ -f crds/agentjob.yaml ] || die "crds/agentjob.yaml is missing (cargo run -q -p terarchitect-operator -- crd > crds/agentjob.yaml)"
if ! cmp -s crds/agentjob.yaml "$CHART/crds/agentjob.yaml"; then
  diff -u crds/agentjob.yaml "$CHART/crds/agentjob.yaml" >&2 || true
  die "the chart's CRD differs from crds/agentjob.yaml: cp crds/agentjob.yaml $CHART/crds/agentjob.yaml"
fi
if [ "${CHECK_CRD_GENERATED:-0}" = 1 ]; then
  step "CRD: crds/agentjob.yaml is what the operator generates"
  cargo run -q --locked -p terarchitect-operator -- crd >"$work/generated-crd.yaml"
  if ! cmp -s "$work/generated-crd.yaml" crds/agentjob.yaml; then
    diff -u crds/agentjob.yaml "$work/generated-crd.yaml" >&2 || true
    die "crds/agentjob.yaml is stale: cargo run -q -p terarchitect-operator -- crd > crds/agentjob.yaml (and copy it into $CHART/crds/)"
  fi
fi

# Value sets: the defaults, then every ci/*-values.yaml.
sets=(default)
for f in "$CHART"/ci/*-values.yaml; do
  [ -f "$f" ] && sets+=("$f")
done

builtin_files=()
for set in "${sets[@]}"; do
  if [ "$set" = default ]; then
    name=default
    args=()
  else
    name=$(basename "$set" -values.yaml)
    args=(-f "$set")
  fi
  step "helm lint --strict ($name)"
  "$HELM" lint --strict "$CHART" ${args[@]+"${args[@]}"} >"$work/lint-$name.log" 2>&1 ||
    { cat "$work/lint-$name.log" >&2; die "helm lint ($name)"; }
  step "helm template ($name) and policy checks"
  "$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" --kube-version "$KUBE_VERSION" --include-crds \
    ${args[@]+"${args[@]}"} >"$work/render-$name.yaml" 2>"$work/template-$name.log" ||
    { cat "$work/template-$name.log" >&2; die "helm template ($name)"; }
  "$PY" "$work/check.py" render "$name" "$work/render-$name.yaml" "$work/builtin-$name.yaml"
  builtin_files+=("$work/builtin-$name.yaml")
done

step "kubernetes-validate --strict -k $KUBE_VERSION (built-in kinds of every render)"
if ! "$KUBE_VALIDATE" --strict -k "$KUBE_VERSION" --quiet "${builtin_files[@]}" >"$work/validate.log" 2>&1; then
  cat "$work/validate.log" >&2
  die "kubernetes-validate"
fi
# It only warns about kinds it has no schema for: custom kinds were set aside above, so any
# such warning is a typo'd or unexpected kind.
if grep -q "Couldn't find schema" "$work/validate.log"; then
  cat "$work/validate.log" >&2
  die "kubernetes-validate found kinds without a schema"
fi
[ -s "$work/validate.log" ] && sed 's/^/    /' "$work/validate.log"
echo "    ${#builtin_files[@]} renders valid"

step "negative tests: helm template with ci/bad/*.yaml must fail with the expected message"
bad=0
for f in "$CHART"/ci/bad/*.yaml; do
  [ -f "$f" ] || continue
  expect=$(sed -n '1s/^# expect: //p' "$f")
  [ -n "$expect" ] || die "$f: the first line must be '# expect: <message>'"
  if "$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" --kube-version "$KUBE_VERSION" -f "$f" \
    >"$work/bad.out" 2>&1; then
    die "$f: helm template succeeded, expected it to fail with: $expect"
  fi
  if ! grep -qF -- "$expect" "$work/bad.out"; then
    cat "$work/bad.out" >&2
    die "$f: helm template failed without the expected message: $expect"
  fi
  echo "    $(basename "$f"): rejected ($expect)"
  bad=$((bad + 1))
done
[ "$bad" -gt 0 ] || die "no negative tests in $CHART/ci/bad/"

step "example AgentJobs against the CRD's openAPIV3Schema"
"$PY" "$work/check.py" examples "$CHART/crds/agentjob.yaml" "$CHART"/examples/*.yaml

step "every value is in the values table of $CHART/README.md"
"$PY" "$work/check.py" readme "$CHART/values.schema.json" "$CHART/README.md"

step "helm package"
"$HELM" package "$CHART" -d "$work" >/dev/null || die "helm package"

echo "chart checks passed"
