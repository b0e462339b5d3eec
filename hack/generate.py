"""Regenerate the chart's copy of the CRD from `crds/`; `--check` fails when the copy is stale.

Helm never upgrades or deletes files under a chart's `crds/` folder, so (as cert-manager does) the
chart ships the CRD in `templates/` behind `crds.enabled`, with the `helm.sh/resource-policy: keep`
annotation so that `helm uninstall` never deletes every AgentWorker. This script owns that copy
and nothing else; it reads and writes only files inside the repository.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_SOURCE = REPO_ROOT / "crds" / "agentworker.dev_agentworkers.yaml"
CHART_CRD = REPO_ROOT / "charts" / "agentworker-operator" / "templates" / "crd.yaml"
HEADER = (
    "# Generated from crds/agentworker.dev_agentworkers.yaml by `make generate`; do not edit.\n"
)


def render_chart_crd(source: str) -> str:
    """The chart template for one CRD document: keep annotation, behind crds.enabled."""
    if "{{" in source:
        raise ValueError(f"{CRD_SOURCE.name} contains '{{{{', which Helm would read as a template")
    crd = yaml.safe_load(source)
    annotations = crd["metadata"].setdefault("annotations", {})
    annotations["helm.sh/resource-policy"] = "keep"
    body = yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True)
    return f"{HEADER}{{{{- if .Values.crds.enabled }}}}\n{body}{{{{- end }}}}\n"


def main(argv: list[str] | None = None) -> int:
    """Write the generated files, or with --check report (exit 1) those that are stale."""
    parser = argparse.ArgumentParser(prog="python -m hack.generate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    args = parser.parse_args(argv)
    wanted = render_chart_crd(CRD_SOURCE.read_text())
    current = CHART_CRD.read_text() if CHART_CRD.exists() else ""
    if current == wanted:
        return 0
    if args.check:
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            str(CHART_CRD.relative_to(REPO_ROOT)),
            "generated",
            n=1,
        )
        sys.stderr.writelines(list(diff)[:40])
        sys.stderr.write(f"{CHART_CRD.relative_to(REPO_ROOT)} is stale: run `make generate`\n")
        return 1
    CHART_CRD.parent.mkdir(parents=True, exist_ok=True)
    CHART_CRD.write_text(wanted)
    print(f"wrote {CHART_CRD.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
