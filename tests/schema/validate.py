#!/usr/bin/python3
"""Validates specs against kiln's JSON Schema, for tests/schema.rs.

Reads {"schema": SCHEMA, "specs": [{"name": NAME, "text": YAML}, ...]} on stdin and prints
[{"name": NAME, "errors": [MESSAGE, ...]}, ...]: no errors means the schema accepts the spec.
Uses Debian's python3-jsonschema (Draft7Validator) and python3-yaml. Exits 2 when the schema
itself is not a valid draft-07 schema.

YAML is read as kiln reads it (crates/kiln-spec/src/node.rs), which is also how the YAML
language server reads it (YAML 1.2's core schema): only true/True/TRUE/false/False/FALSE are
booleans (yes, no, on, off are strings), a number with a leading zero (0755) is a string,
there are no timestamps or sexagesimal numbers; mapping keys are their text as written
(8080: is the key "8080").
"""

import json
import re
import sys

import jsonschema
import yaml


class KilnLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core scalars and kiln's choices."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)  # `<<` merge keys
        mapping = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = key_node.value
            else:
                key = json.dumps(self.construct_object(key_node, deep=True))
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


KilnLoader.yaml_implicit_resolvers = {}
for tag, pattern, first in [
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("int", r"^(?:[-+]?(?:0|[1-9][0-9]*)|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|(?:0|[1-9][0-9]*)(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("merge", r"^(?:<<)$", ["<"]),
]:
    KilnLoader.add_implicit_resolver("tag:yaml.org,2002:" + tag, re.compile(pattern), list(first))


def errors(validator, text):
    try:
        document = yaml.load(text, Loader=KilnLoader)
    except yaml.YAMLError as e:
        return ["not YAML: %s" % str(e).replace("\n", " ")]
    found = []
    for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.path))):
        where = "/".join(map(str, error.absolute_path)) or "(root)"
        message = error.message
        if error.context:
            # oneOf/anyOf: say why the closest alternative failed.
            best = jsonschema.exceptions.best_match(error.context)
            message += " (closest: %s)" % best.message
        if len(message) > 240:
            message = message[:240] + "…"
        found.append("%s: %s" % (where, message))
    return found


def main():
    request = json.load(sys.stdin)
    schema = request["schema"]
    try:
        jsonschema.Draft7Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as e:
        print("the schema is not a valid draft-07 schema: %s" % e, file=sys.stderr)
        sys.exit(2)
    validator = jsonschema.Draft7Validator(schema)
    results = [
        {"name": spec["name"], "errors": errors(validator, spec["text"])}
        for spec in request["specs"]
    ]
    json.dump(results, sys.stdout)


main()
