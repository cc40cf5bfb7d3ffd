#!/usr/bin/env python3
"""Convert Kubernetes OpenAPI definitions and CRDs to kubeconform JSON schemas.

Used by hack/tools.sh (k8s-schemas). Runs offline; stdlib only, plus PyYAML
for the CRD subcommands.

Subcommands
-----------
k8s SWAGGER OUTDIR --k8s-version vX.Y.Z
    Read Kubernetes' api/openapi-spec/swagger.json (OpenAPI v2) and write one
    standalone schema per API kind, in kubeconform's default layout:
        OUTDIR/vX.Y.Z-standalone-strict/<kind><kindsuffix>.json
        OUTDIR/vX.Y.Z-standalone/<kind><kindsuffix>.json
    e.g. role-rbac-v1.json, configmap-v1.json. This is what the
    openapi2jsonschema tool does for yannh/kubernetes-json-schema:
      * every $ref is inlined (recursive types, e.g. JSONSchemaProps, are
        kept as local "#/definitions/..." refs so the file stays standalone);
      * format int-or-string -> oneOf [string, integer]; resource.Quantity ->
        oneOf [string, number] (swagger v2 calls it a plain string, but the
        API server accepts `cpu: 1`);
      * optional fields also accept null (the API server treats null as
        unset), `kind` and `apiVersion` get an enum of the one valid value;
      * strict variant: additionalProperties: false on every object schema
        that lists properties and has no additionalProperties of its own.

crd OUTDIR CRD_YAML... [--object-meta-from SWAGGER]
    Write OUTDIR/<group>/<kind>_<version>.json for every served version of
    every CustomResourceDefinition, i.e. kubeconform's
    -schema-location '<OUTDIR>/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json'.
    Strict: additionalProperties: false on every object schema that lists
    properties, unless it sets x-kubernetes-preserve-unknown-fields or its
    own additionalProperties; the root object is strict too. With
    --object-meta-from, the bare `metadata: {type: object}` of the CRD is
    replaced by the real ObjectMeta schema so metadata typos are caught.

compare CRD_YAML VERSION REFERENCE_JSON
    Exit 0 if the openAPIV3Schema of VERSION in the CRD equals the JSON in
    REFERENCE_JSON, else print the first differences and exit 1.

kubeconform loads these with JSON-schema draft 4 semantics (its default
draft), and silently treats a schema that fails to compile as "not found";
keep the output draft-4 clean ("definitions", no $ref siblings that matter).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile

REF_PREFIX = "#/definitions/"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

# Keywords whose value is a single sub-schema / a list of sub-schemas /
# a map name -> sub-schema. Anything else (descriptions, enums, x-* vendor
# extensions, defaults, examples) is data and must not be rewritten.
SCHEMA_KEYS = ("items", "additionalProperties", "not", "additionalItems")
SCHEMA_LIST_KEYS = ("allOf", "anyOf", "oneOf")
SCHEMA_MAP_KEYS = ("properties", "patternProperties", "definitions")


def _walk_children(schema, fn):
    """Apply fn to every direct sub-schema of schema, in place."""
    for k in SCHEMA_KEYS:
        v = schema.get(k)
        if isinstance(v, dict):
            schema[k] = fn(v)
        elif k == "items" and isinstance(v, list):
            schema[k] = [fn(x) for x in v]
    for k in SCHEMA_LIST_KEYS:
        if isinstance(schema.get(k), list):
            schema[k] = [fn(x) if isinstance(x, dict) else x for x in schema[k]]
    for k in SCHEMA_MAP_KEYS:
        if isinstance(schema.get(k), dict):
            schema[k] = {n: fn(s) if isinstance(s, dict) else s for n, s in schema[k].items()}


# --------------------------------------------------------------------------
# Built-in Kubernetes kinds (swagger.json, OpenAPI v2)
# --------------------------------------------------------------------------


def _fix_k8s_leaf(schema):
    """int-or-string and Quantity fix-ups, on a schema that is not a $ref."""
    if schema.get("format") == "int-or-string":
        out = {k: v for k, v in schema.items() if k not in ("type", "format")}
        out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
        return out
    return schema


class Inliner:
    """Inline #/definitions/ refs of a swagger document, cycle-safe."""

    def __init__(self, definitions):
        self.defs = definitions

    def definition(self, name):
        d = copy.deepcopy(self.defs[name])
        if name == QUANTITY:
            d.pop("type", None)
            d.pop("format", None)
            d["oneOf"] = [{"type": "string"}, {"type": "number"}]
        return d

    def expand(self, name):
        """Return (schema, local_defs) for definition `name`.

        local_defs holds the definitions that had to stay as refs because
        they are recursive; they are expanded the same way.
        """
        local = {}
        pending = []

        def inline(schema, stack):
            ref = schema.get("$ref")
            if ref is not None:
                target = ref[len(REF_PREFIX) :]
                if target in stack:  # recursion: keep a local ref
                    if target not in local:
                        local[target] = None
                        pending.append(target)
                    return {"$ref": ref}
                body = inline(self.definition(target), stack + (target,))
                # draft 4 ignores $ref siblings, so merging the description
                # of the referring property is purely cosmetic; keep it.
                if "description" in schema and "description" not in body:
                    body = dict(body, description=schema["description"])
                return body
            schema = _fix_k8s_leaf(schema)
            _walk_children(schema, lambda s: inline(s, stack))
            return schema

        root = inline(self.definition(name), (name,))
        while pending:
            t = pending.pop()
            local[t] = inline(self.definition(t), (t,))
        return root, local


def allow_null_optional(schema):
    """Optional properties may be null (the API server treats null as unset)."""

    def visit(s):
        props = s.get("properties")
        if isinstance(props, dict):
            required = set(s.get("required") or [])
            for pname, p in props.items():
                if isinstance(p, dict) and pname not in required:
                    _add_null(p)
        _walk_children(s, lambda c: visit(c) or c)
        return s

    return visit(schema)


def _add_null(p):
    if "$ref" in p:
        return
    t = p.get("type")
    if isinstance(t, str) and t != "null":
        p["type"] = [t, "null"]
    elif isinstance(t, list) and "null" not in t:
        p["type"] = t + ["null"]
    elif t is None:
        for k in ("oneOf", "anyOf"):
            if isinstance(p.get(k), list):
                if {"type": "null"} not in p[k]:
                    p[k] = p[k] + [{"type": "null"}]
                break
        else:
            return  # no type at all: already accepts anything
    if isinstance(p.get("enum"), list) and None not in p["enum"]:
        p["enum"] = p["enum"] + [None]


def deny_additional_properties(schema, preserve_unknown_key=None):
    """Strict mode: objects listing properties reject unknown fields.

    preserve_unknown_key: vendor extension that opts a node out
    (x-kubernetes-preserve-unknown-fields for CRDs).
    """

    def visit(s):
        if (
            "properties" in s
            and "additionalProperties" not in s
            and not (preserve_unknown_key and s.get(preserve_unknown_key) is True)
        ):
            s["additionalProperties"] = False
        _walk_children(s, lambda c: visit(c) or c)
        return s

    return visit(schema)


def pin_kind(schema, kind, api_version):
    props = schema.setdefault("properties", {})
    for field, value in (("kind", kind), ("apiVersion", api_version)):
        p = props.get(field, {})
        p = dict(p, type="string", enum=[value])
        props[field] = p
    req = schema.setdefault("required", [])
    for field in ("apiVersion", "kind"):
        if field not in req:
            req.append(field)


def kind_suffix(group, version):
    """kubeconform's {{ .KindSuffix }}: -<first label of group>-<version>."""
    api_version = f"{group}/{version}" if group else version
    parts = api_version.split("/")
    suffix = "-" + parts[0].split(".")[0].lower()
    if len(parts) > 1:
        suffix += "-" + parts[1].lower()
    return suffix


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def object_meta_schema(swagger_path, strict):
    with open(swagger_path) as f:
        defs = json.load(f)["definitions"]
    s, local = Inliner(defs).expand(OBJECT_META)
    if local:
        s["definitions"] = local
    allow_null_optional(s)
    if strict:
        deny_additional_properties(s)
    return s


def cmd_k8s(args):
    with open(args.swagger) as f:
        defs = json.load(f)["definitions"]
    inl = Inliner(defs)
    version = args.k8s_version if args.k8s_version.startswith("v") else "v" + args.k8s_version
    written = {}
    for name in sorted(defs):
        gvks = defs[name].get("x-kubernetes-group-version-kind") or []
        if len(gvks) != 1:  # DeleteOptions/WatchEvent are shared helpers, not manifests
            continue
        gvk = gvks[0]
        group, ver, kind = gvk.get("group", ""), gvk["version"], gvk["kind"]
        api_version = f"{group}/{ver}" if group else ver
        fname = kind.lower() + kind_suffix(group, ver) + ".json"
        if fname in written:
            print(
                f"warning: {fname}: {name} collides with {written[fname]}, keeping the first",
                file=sys.stderr,
            )
            continue
        written[fname] = name
        base, local = inl.expand(name)
        if local:
            base["definitions"] = local
        allow_null_optional(base)
        pin_kind(base, kind, api_version)
        write_json(os.path.join(args.outdir, f"{version}-standalone", fname), base)
        strict = deny_additional_properties(copy.deepcopy(base))
        write_json(os.path.join(args.outdir, f"{version}-standalone-strict", fname), strict)
    print(
        f"wrote {len(written)} kinds x 2 (standalone, standalone-strict) under {args.outdir}",
        file=sys.stderr,
    )


# --------------------------------------------------------------------------
# CustomResourceDefinitions
# --------------------------------------------------------------------------


def load_yaml_docs(path):
    try:
        import yaml
    except ImportError:
        sys.exit("openapi2jsonschema.py: PyYAML is required for CRDs (pip install pyyaml)")

    class Loader(yaml.SafeLoader):
        pass

    # An unquoted `=` is YAML's "value" tag; keep it a plain string
    # (see https://github.com/yaml/pyyaml/issues/89).
    Loader.add_constructor(
        "tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node)
    )
    with open(path) as f:
        return [d for d in yaml.load_all(f, Loader=Loader) if d]


def crd_docs(paths):
    for p in paths:
        for d in load_yaml_docs(p):
            items = d.get("items") if d.get("kind") == "List" else [d]
            for y in items or []:
                if y.get("kind") == "CustomResourceDefinition":
                    yield y


def crd_version_schema(crd, version):
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(f"{crd['metadata']['name']} has no version {version}")


PUK = "x-kubernetes-preserve-unknown-fields"


def crd_fixups(schema):
    """Structural-schema extensions that plain JSON schema does not know."""

    def visit(s):
        if s.get("x-kubernetes-int-or-string") is True and not any(
            k in s for k in ("anyOf", "oneOf")
        ):
            s.pop("type", None)
            s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if s.get("x-kubernetes-embedded-resource") is True and "properties" in s:
            for f in ("apiVersion", "kind"):
                s["properties"].setdefault(f, {"type": "string"})
            s["properties"].setdefault("metadata", {"type": "object", PUK: True})
        if s.get("nullable") is True:
            _add_null(s)
        _walk_children(s, lambda c: visit(c) or c)
        return s

    return visit(schema)


def cmd_crd(args):
    meta = object_meta_schema(args.object_meta_from, strict=True) if args.object_meta_from else None
    n = 0
    for crd in crd_docs(args.crds):
        spec = crd["spec"]
        group, kind = spec["group"], spec["names"]["kind"]
        for v in spec["versions"]:
            if not v.get("served", True) or "openAPIV3Schema" not in (v.get("schema") or {}):
                continue
            s = copy.deepcopy(v["schema"]["openAPIV3Schema"])
            crd_fixups(s)
            allow_null_optional(s)
            props = s.setdefault("properties", {})
            if meta is not None and set(props.get("metadata", {"type": "object"})) <= {"type"}:
                props["metadata"] = copy.deepcopy(meta)
            pin_kind(s, kind, f"{group}/{v['name']}")
            deny_additional_properties(s, preserve_unknown_key=PUK)
            write_json(os.path.join(args.outdir, group, f"{kind.lower()}_{v['name']}.json"), s)
            n += 1
    print(f"wrote {n} CRD schemas under {args.outdir}", file=sys.stderr)


def _diff(a, b, path="", out=None, limit=10):
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{path}/{k}: only in reference")
            elif k not in b:
                out.append(f"{path}/{k}: only in CRD")
            else:
                _diff(a[k], b[k], f"{path}/{k}", out, limit)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}/{i}", out, limit)
    elif a != b or type(a) is not type(b):
        out.append(f"{path}: CRD {json.dumps(a)[:80]} != reference {json.dumps(b)[:80]}")
    return out


def cmd_compare(args):
    crds = list(crd_docs([args.crd]))
    if len(crds) != 1:
        sys.exit(f"{args.crd}: expected one CRD, found {len(crds)}")
    mine = crd_version_schema(crds[0], args.version)
    with open(args.reference) as f:
        ref = json.load(f)
    diffs = _diff(mine, ref)
    if diffs:
        print(f"DIFFERENT: {crds[0]['metadata']['name']} {args.version} vs {args.reference}:")
        for d in diffs:
            print("  " + d)
        return 1
    name = crds[0]["metadata"]["name"]
    print(f"identical: {name} {args.version} openAPIV3Schema == {args.reference}")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("k8s")
    k.add_argument("swagger")
    k.add_argument("outdir")
    k.add_argument("--k8s-version", required=True)
    c = sub.add_parser("crd")
    c.add_argument("outdir")
    c.add_argument("crds", nargs="+")
    c.add_argument("--object-meta-from", metavar="SWAGGER")
    m = sub.add_parser("compare")
    m.add_argument("crd")
    m.add_argument("version")
    m.add_argument("reference")
    args = ap.parse_args(argv)
    return {"k8s": cmd_k8s, "crd": cmd_crd, "compare": cmd_compare}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
