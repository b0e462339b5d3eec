"""Regenerate the files made from the CRD in `crds/`; `--check` fails when one is stale.

Two files come from `crds/agentworker.dev_agentworkers.yaml`:

- the chart's copy of the CRD. Helm never upgrades or deletes files under a chart's `crds/`
  folder, so (as cert-manager does) the chart ships the CRD in `templates/` behind
  `crds.enabled`, with the `helm.sh/resource-policy: keep` annotation so that `helm uninstall`
  never deletes every AgentWorker;
- `docs/reference.md`, the AgentWorker reference: one table per object level of the
  openAPIV3Schema (field path, type, default, constraints, description).

The renderers are pure functions of the CRD text; `sync` compares and writes. This script reads
and writes only files inside the repository.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_SOURCE = REPO_ROOT / "crds" / "agentworker.dev_agentworkers.yaml"
CHART_CRD = REPO_ROOT / "charts" / "agentworker-operator" / "templates" / "crd.yaml"
REFERENCE_DOC = REPO_ROOT / "docs" / "reference.md"
HEADER = (
    "# Generated from crds/agentworker.dev_agentworkers.yaml by `make generate`; do not edit.\n"
)
REFERENCE_HEADER = (
    "<!-- Generated from crds/agentworker.dev_agentworkers.yaml by `make generate` "
    "(hack/generate.py); do not edit. -->\n"
)

Schema = Mapping[str, Any]
"""One node of an openAPIV3Schema, as parsed from YAML."""


def render_chart_crd(source: str) -> str:
    """The chart template for one CRD document: keep annotation, behind crds.enabled."""
    if "{{" in source:
        raise ValueError(f"{CRD_SOURCE.name} contains '{{{{', which Helm would read as a template")
    crd = yaml.safe_load(source)
    annotations = crd["metadata"].setdefault("annotations", {})
    annotations["helm.sh/resource-policy"] = "keep"
    body = yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True)
    return f"{HEADER}{{{{- if .Values.crds.enabled }}}}\n{body}{{{{- end }}}}\n"


# -- the reference ---------------------------------------------------------------------------


def render_reference(source: str) -> str:
    """The Markdown reference of the CRD's one version: an intro, then a section per object."""
    crd = yaml.safe_load(source)
    versions = crd["spec"]["versions"]
    if len(versions) != 1:
        raise ValueError(f"the reference renders one CRD version, not {len(versions)}")
    version, names = versions[0], crd["spec"]["names"]
    schema: Schema = version["schema"]["openAPIV3Schema"]
    kind = names["kind"]
    sections = list(_sections(schema, ""))
    lines = [
        REFERENCE_HEADER,
        f"# {kind} reference\n",
        *_intro(crd, version, schema),
        "Contents:\n",
        *(f"- [{_title(path, kind)}](#{_anchor(_title(path, kind))})" for path, _ in sections),
        "",
    ]
    for path, node in sections:
        lines += _section(path, node, kind)
    return "\n".join(lines).rstrip("\n") + "\n"


def _intro(crd: Schema, version: Schema, schema: Schema) -> list[str]:
    spec, names = crd["spec"], crd["spec"]["names"]
    short = ", ".join(f"`{n}`" for n in names.get("shortNames", []))
    lines = [
        f"`apiVersion: {spec['group']}/{version['name']}`, `kind: {names['kind']}`, "
        f"{spec['scope'].lower()}; plural `{names['plural']}`"
        + (f", short names {short}" if short else "")
        + ".\n",
        _text(schema.get("description", "")) + "\n",
    ]
    subresources = version.get("subresources") or {}
    if subresources:
        listed = ", ".join(_subresource(k, v) for k, v in subresources.items())
        lines.append(f"Subresources: {listed}.\n")
    columns = version.get("additionalPrinterColumns") or []
    if columns:
        lines += ["`kubectl get` columns:\n", "| Column | Type | JSON path | Description |"]
        lines.append("|---|---|---|---|")
        for column in columns:
            cells = [column["name"], column["type"], f"`{column['jsonPath']}`"]
            lines.append(_row([*cells, _text(column.get("description", ""))]))
        lines.append("")
    return lines


def _subresource(name: str, value: object) -> str:
    if name == "scale" and isinstance(value, Mapping):
        paths = ", ".join(f"{key} `{path}`" for key, path in value.items())
        return f"`scale` ({paths})"
    return f"`{name}`"


def _sections(schema: Schema, path: str) -> Iterator[tuple[str, Schema]]:
    """(path, object schema) of every object with properties, parents first."""
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        nested = _nested(child, _join(path, name))
        if nested is not None:
            yield from _sections(nested[1], nested[0])


def _nested(schema: Schema, path: str) -> tuple[str, Schema] | None:
    """The object under `schema` that gets a section of its own (arrays add `[]`), if any."""
    if schema.get("properties"):
        return path, schema
    if schema.get("type") == "array" and isinstance(schema.get("items"), Mapping):
        return _nested(schema["items"], f"{path}[]")
    return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _title(path: str, kind: str) -> str:
    return path or kind


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def _section(path: str, schema: Schema, kind: str) -> list[str]:
    lines = [f"## {_title(path, kind)}\n"]
    if path and schema.get("description"):
        lines.append(_text(schema["description"]) + "\n")
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        lines.append("Fields not listed here are kept as given.\n")
    rules = _rules(schema)
    if rules:
        lines += ["Rules:\n", *(f"- {rule}" for rule in rules), ""]
    lines += ["| Field | Type | Default | Constraints | Description |", "|---|---|---|---|---|"]
    required = set(schema.get("required") or [])
    for name, child in (schema.get("properties") or {}).items():
        field = _join(path, name)
        has_section = _nested(child, field) is not None and child.get("type") != "array"
        cells = [
            f"`{field}`",
            _type(child, field),
            _default(child),
            "; ".join(_constraints(child, required=name in required, with_rules=not has_section)),
            _text(child.get("description", "")),
        ]
        lines.append(_row(cells))
    return [*lines, ""]


def _type(schema: Schema, path: str) -> str:
    """The field's type for a person, with a link to its section when it has one."""
    if schema.get("type") == "array":
        items = schema.get("items")
        return "array of " + (_type(items, f"{path}[]") if isinstance(items, Mapping) else "any")
    if schema.get("properties"):
        return f"[object](#{_anchor(path)})"
    values = schema.get("additionalProperties")
    if isinstance(values, Mapping):
        return f"map of string to {_type(values, path)}"
    if schema.get("x-kubernetes-int-or-string") or "anyOf" in schema:
        kinds = [str(option.get("type")) for option in schema.get("anyOf", [])]
        return " or ".join(kinds or ["integer", "string"])
    text = str(schema.get("type", "any"))
    return f"{text} ({schema['format']})" if "format" in schema else text


def _default(schema: Schema) -> str:
    if "default" not in schema:
        return ""
    value = schema["default"]
    if isinstance(value, str) and value:
        return f"`{value}`"
    return f"`{json.dumps(value, separators=(',', ':'))}`"


def _constraints(schema: Schema, *, required: bool, with_rules: bool) -> list[str]:
    found = ["required"] if required else []
    if "enum" in schema:
        found.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    found += _bounds(schema, "minimum", "maximum", "{}")
    found += _bounds(schema, "minLength", "maxLength", "length {}")
    found += _bounds(schema, "minItems", "maxItems", "{} items")
    found += _bounds(schema, "minProperties", "maxProperties", "{} entries")
    if "pattern" in schema:
        found.append(f"pattern `{schema['pattern']}`")
    values = schema.get("additionalProperties")
    if isinstance(values, Mapping) and "pattern" in values:
        found.append(f"values match `{values['pattern']}`")
    if schema.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(f"`{k}`" for k in schema.get("x-kubernetes-list-map-keys", []))
        found.append(f"one entry per {keys}")
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        found.append("other fields kept as given" if schema.get("properties") else "any fields")
    items = schema.get("items")
    if isinstance(items, Mapping) and not items.get("properties"):
        found += [f"each item: {c}" for c in _constraints(items, required=False, with_rules=True)]
    return found + (_rules(schema) if with_rules else [])


def _rules(schema: Schema) -> list[str]:
    """The messages of the node's CEL rules (the rule itself when it has no message)."""
    return [
        _text(r.get("message") or r["rule"]) for r in schema.get("x-kubernetes-validations", [])
    ]


def _bounds(schema: Schema, low_key: str, high_key: str, template: str) -> list[str]:
    low, high = schema.get(low_key), schema.get(high_key)
    if low is not None and high is not None:
        return [template.format(f"{low} to {high}")]
    if low is not None:
        return [template.format(f"at least {low}")]
    if high is not None:
        return [template.format(f"at most {high}")]
    return []


def _text(text: str) -> str:
    """One line; `<` and `>` outside code spans escaped, so Markdown shows them as written."""
    parts = " ".join(str(text).split()).split("`")
    for i in range(0, len(parts), 2):  # outside code spans
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


# -- writing and checking --------------------------------------------------------------------


def generated(source: str) -> list[tuple[Path, str]]:
    """Every generated file and the text it should hold, from the CRD's text."""
    return [(CHART_CRD, render_chart_crd(source)), (REFERENCE_DOC, render_reference(source))]


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def sync(files: Sequence[tuple[Path, str]], *, check: bool, err: TextIO = sys.stderr) -> int:
    """Write each file whose text differs (0), or with `check` report them and return 1."""
    stale = 0
    for path, wanted in files:
        current = path.read_text() if path.exists() else ""
        if current == wanted:
            continue
        if check:
            stale += 1
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                wanted.splitlines(keepends=True),
                _shown(path),
                "generated",
                n=1,
            )
            err.writelines(list(diff)[:40])
            err.write(f"{_shown(path)} is stale: run `make generate`\n")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(wanted)
        print(f"wrote {_shown(path)}")
    return 1 if stale else 0


def main(argv: list[str] | None = None) -> int:
    """Write the generated files, or with --check report (exit 1) those that are stale."""
    parser = argparse.ArgumentParser(prog="python -m hack.generate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    args = parser.parse_args(argv)
    return sync(generated(CRD_SOURCE.read_text()), check=args.check)


if __name__ == "__main__":
    sys.exit(main())
