"""Validates recorded Firecracker API requests against firecracker.yaml.

usage: python3 validate.py firecracker.yaml calls.json
calls.json: [{"method": "PUT", "path": "/drives/rootfs", "body": {...}}, ...]
Exit 0 when every body matches the schema of its path and method; 1 otherwise.
"""
import json
import re
import sys

import jsonschema
import yaml

spec = yaml.safe_load(open(sys.argv[1]))
calls = json.load(open(sys.argv[2]))
definitions = spec["definitions"]
failures = []


def find_operation(method, path):
    for template, ops in spec["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in ops:
            return template, ops[method.lower()]
    return None, None


for call in calls:
    template, op = find_operation(call["method"], call["path"])
    if op is None:
        failures.append(f"{call['method']} {call['path']}: not in the specification")
        continue
    params = [p for p in op.get("parameters", []) if p.get("in") == "body"]
    if not params:
        if call.get("body") is not None:
            failures.append(f"{call['method']} {call['path']}: the specification takes no body")
        continue
    schema = dict(params[0]["schema"])
    schema["definitions"] = definitions
    validator = jsonschema.Draft4Validator(schema)
    errors = sorted(validator.iter_errors(call["body"]), key=str)
    for e in errors:
        failures.append(f"{call['method']} {call['path']} (schema of {template}): {e.message}")
    if not errors:
        print(f"ok {call['method']} {call['path']} against {template}")

for f in failures:
    print("FAIL", f)
sys.exit(1 if failures else 0)
