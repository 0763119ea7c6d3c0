#!/usr/bin/env python3
"""Deploys template.yaml to an AWS emulator's CloudFormation (ministack) with locally built
bootstraps, so the end-to-end test runs exactly the stack the template describes.

    emulator_stack.py --endpoint http://127.0.0.1:PORT --binaries DIR [--stack-name NAME]
                      [--parameter Key=Value ...]

Each function's code is a zip holding `bootstrap` (the binary its
`Metadata.BuildProperties.Binary` names, from DIR), uploaded to an artifacts bucket, as
`sam build` + `sam package` would. The template is transformed offline (same code as
check_template.py) and created as one stack. Prints one JSON object: the stack outputs, the
HTTP API id and its invoke URL on the emulator.

Two rewrites work around emulator gaps; both keep the template's meaning:
- ministack ignores the OpenAPI `Body` of an `AWS::ApiGatewayV2::Api` (the form SAM emits for
  an implicit HttpApi), so each path and method in the Body becomes an explicit
  `AWS::ApiGatewayV2::Integration` + `AWS::ApiGatewayV2::Route` pair.
- ministack passes `Number` parameters on as strings, and its SQS poller compares
  `ScalingConfig.MaximumConcurrency` with an int, so `Ref`s to Number parameters are replaced
  by their numeric values.

Needs boto3 and aws-sam-translator (scripts/test.sh installs them beside ministack).
"""
import argparse
import io
import json
import os
import sys
import time
import zipfile

import boto3
from samtranslator.yaml_helper import yaml_parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_template import transformed_template  # noqa: E402

ARTIFACTS_BUCKET = "pixpress-artifacts"


def function_binaries(path):
    """Logical id → binary name, from each function's Metadata.BuildProperties.Binary."""
    with open(path) as f:
        sam = yaml_parse(f.read())
    return {
        name: resource["Metadata"]["BuildProperties"]["Binary"]
        for name, resource in sam["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def bootstrap_zip(binary_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(binary_path, "rb") as f:
            archive.writestr(info, f.read())
    return buf.getvalue()


def explicit_http_api_routes(cfn):
    """Turns each HttpApi OpenAPI Body into Route + Integration resources (see module doc)."""
    added = {}
    for api_id, resource in cfn["Resources"].items():
        if resource["Type"] != "AWS::ApiGatewayV2::Api":
            continue
        body = resource["Properties"].get("Body") or {}
        for n, (path, methods) in enumerate(sorted(body.get("paths", {}).items())):
            for method, operation in methods.items():
                # OpenAPI's extension for an `ANY` route (a greedy `/{proxy+}` in SAM).
                if method == "x-amazon-apigateway-any-method":
                    method = "any"
                integration = operation["x-amazon-apigateway-integration"]
                uri = integration["uri"]["Fn::Sub"]
                function = uri.split("functions/${", 1)[1].split(".Arn}", 1)[0]
                name = f"{api_id}Route{n}{method.capitalize()}"
                added[f"{name}Integration"] = {
                    "Type": "AWS::ApiGatewayV2::Integration",
                    "Properties": {
                        "ApiId": {"Ref": api_id},
                        "IntegrationType": "AWS_PROXY",
                        "IntegrationUri": {"Fn::GetAtt": [function, "Arn"]},
                        "PayloadFormatVersion": integration.get("payloadFormatVersion", "2.0"),
                    },
                }
                added[name] = {
                    "Type": "AWS::ApiGatewayV2::Route",
                    "Properties": {
                        "ApiId": {"Ref": api_id},
                        "RouteKey": f"{method.upper()} {path}",
                        "Target": {"Fn::Join": ["/", ["integrations", {"Ref": f"{name}Integration"}]]},
                    },
                }
    cfn["Resources"].update(added)
    return len(added) // 2


def numeric_parameter_refs(cfn, values):
    """Replaces every {"Ref": P} of a Number parameter with its value as a number."""
    numbers = {
        name: float(values.get(name, spec.get("Default")))
        for name, spec in cfn.get("Parameters", {}).items()
        if spec.get("Type") == "Number"
    }

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {"Ref"} and node["Ref"] in numbers:
                value = numbers[node["Ref"]]
                return int(value) if value.is_integer() else value
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    # Environment variables must stay strings.
    for resource in cfn["Resources"].values():
        props = resource.get("Properties", {})
        for key, value in props.items():
            if key != "Environment":
                props[key] = walk(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--binaries", required=True, help="directory holding the built binaries")
    parser.add_argument("--template", default="template.yaml")
    parser.add_argument("--stack-name", default="pixpress")
    parser.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    parameters = dict(p.split("=", 1) for p in args.parameter)
    client = dict(
        endpoint_url=args.endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    )
    s3 = boto3.client("s3", **client)
    cfn_client = boto3.client("cloudformation", **client)

    s3.create_bucket(Bucket=ARTIFACTS_BUCKET)
    for name, binary in function_binaries(args.template).items():
        path = os.path.join(args.binaries, binary)
        if not os.path.isfile(path):
            sys.exit(f"{path} does not exist: build the functions first (cargo build --workspace --bins)")
        s3.put_object(Bucket=ARTIFACTS_BUCKET, Key=f"{name}.zip", Body=bootstrap_zip(path))

    cfn = transformed_template(args.template, lambda name: f"s3://{ARTIFACTS_BUCKET}/{name}.zip")
    explicit_http_api_routes(cfn)
    numeric_parameter_refs(cfn, parameters)
    # As `sam deploy` does, the template goes through S3: CreateStack's TemplateBody is limited
    # to 51,200 bytes, a template in S3 to 1 MB ("AWS CloudFormation quotas").
    s3.put_object(Bucket=ARTIFACTS_BUCKET, Key="template.json", Body=json.dumps(cfn).encode())
    cfn_client.create_stack(
        StackName=args.stack_name,
        TemplateURL=f"{args.endpoint}/{ARTIFACTS_BUCKET}/template.json",
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    deadline = time.monotonic() + 120
    while True:
        stack = cfn_client.describe_stacks(StackName=args.stack_name)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS"):
            break
        if time.monotonic() > deadline:
            sys.exit(f"stack still {stack['StackStatus']} after 120 s")
        time.sleep(0.25)
    if stack["StackStatus"] != "CREATE_COMPLETE":
        failures = [
            f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}"
            for e in cfn_client.describe_stack_events(StackName=args.stack_name)["StackEvents"]
            if e["ResourceStatus"].endswith("FAILED")
        ]
        sys.exit(f"stack {stack['StackStatus']}: " + "; ".join(failures))
    resources = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cfn_client.describe_stack_resources(StackName=args.stack_name)["StackResources"]
    }
    api_id = resources["HttpApi"]
    print(json.dumps({
        "outputs": {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        "api_id": api_id,
        "api_url": f"{args.endpoint}/_aws/execute-api/{api_id}/$default",
    }))


if __name__ == "__main__":
    main()
