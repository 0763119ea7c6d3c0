#!/usr/bin/env python3
"""Transforms template.yaml (SAM) to CloudFormation offline and lints the result with cfn-lint.

Linting the SAM template alone misses bad Refs, wrong event types and circular dependencies
that only exist after the transform.
"""
import json
import os
import subprocess
import sys
import tempfile

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class OfflinePolicyLoader:
    """Answers managed-policy lookups without calling IAM (the template uses inline policies)."""

    def load(self):
        return {}


def transformed_template(path, code_uri):
    """template.yaml as CloudFormation, each function's code at `code_uri(logical_id)`.

    `sam build` + `sam package` replace local code paths with S3 URIs; this does the same
    offline, then applies the SAM transform without calling AWS.
    """
    with open(path) as f:
        sam = yaml_parse(f.read())
    sam.get("Globals", {}).get("Function", {}).pop("CodeUri", None)
    for name, resource in sam["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = code_uri(name)
    return transform(sam, {}, OfflinePolicyLoader())


def main(path):
    cfn = transformed_template(path, lambda name: f"s3://pixpress-artifacts/{name}.zip")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as out:
        json.dump(cfn, out, indent=1)
    print(f"transformed {path}: {len(cfn['Resources'])} CloudFormation resources")
    cfn_lint = os.path.join(os.path.dirname(sys.executable), "cfn-lint")
    result = subprocess.run([cfn_lint, "--regions", "us-east-1", "--", out.name])
    if result.returncode != 0:
        sys.exit(result.returncode)
    print("cfn-lint: no findings")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml")
