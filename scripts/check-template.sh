#!/usr/bin/env bash
# Offline template check: SAM → CloudFormation with aws-sam-translator, then cfn-lint on the
# result. Installs both (pinned) in a venv under ~/.cache/pixpress on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
VENV="$HOME/.cache/pixpress/cfn-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check aws-sam-translator==1.115.0 cfn-lint==1.58.0
AWS_DEFAULT_REGION="$AWS_REGION" "$VENV/bin/python" scripts/check_template.py template.yaml
