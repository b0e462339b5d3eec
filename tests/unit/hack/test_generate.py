"""hack/generate.py: the reference rendered from a CRD, and the check that fails on a stale file."""

from __future__ import annotations

import io
from pathlib import Path

from hack import generate

WIDGET_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.dev
spec:
  group: example.dev
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd]}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          description: A widget.
          properties:
            spec:
              type: object
              description: What the widget should be.
              required: [size]
              x-kubernetes-validations:
                - rule: self.size > 1 || !has(self.mode)
                  message: spec.mode needs a size above 1
              properties:
                size:
                  type: integer
                  minimum: 1
                  maximum: 9
                  default: 3
                  description: How big, in <units>.
                mode:
                  type: string
                  enum: [Fast, Slow]
                  description: How it runs.
                period:
                  type: string
                  default: 30s
                  pattern: '^([0-9]+(s|m))+$'
                  description: How often.
                shape:
                  type: object
                  default: {}
                  description: Its outline.
                  properties:
                    corners:
                      type: integer
                      description: Corners.
                parts:
                  type: array
                  maxItems: 4
                  description: Its parts.
                  items:
                    type: object
                    required: [name]
                    properties:
                      name:
                        type: string
                        description: Part name.
                labels:
                  type: object
                  additionalProperties: {type: string}
                  description: Extra labels.
"""


def test_a_field_row_has_path_type_default_constraints_and_description() -> None:
    text = generate.render_reference(WIDGET_CRD)
    assert "| `spec.size` | integer | `3` | required; 1 to 9 | How big, in &lt;units&gt;. |" in text
    assert "| `spec.mode` | string |  | one of `Fast`, `Slow` | How it runs. |" in text
    assert "| `spec.labels` | map of string to string |  |  | Extra labels. |" in text


def test_a_pipe_in_a_pattern_is_escaped_so_the_table_keeps_its_columns() -> None:
    text = generate.render_reference(WIDGET_CRD)
    assert "| `spec.period` | string | `30s` | pattern `^([0-9]+(s\\|m))+$` | How often. |" in text


def test_nested_objects_get_a_section_of_their_own_linked_from_the_parent() -> None:
    text = generate.render_reference(WIDGET_CRD)
    assert "| `spec.shape` | [object](#specshape) | `{}` |  | Its outline. |" in text
    assert "## spec.shape\n" in text
    assert "| `spec.shape.corners` | integer |  |  | Corners. |" in text


def test_array_items_get_a_section_whose_paths_end_in_brackets() -> None:
    text = generate.render_reference(WIDGET_CRD)
    row = "| `spec.parts` | array of [object](#specparts) |  | at most 4 items | Its parts. |"
    assert row in text
    assert "## spec.parts[]\n" in text
    assert "| `spec.parts[].name` | string |  | required | Part name. |" in text


def test_object_rules_are_listed_under_their_section() -> None:
    text = generate.render_reference(WIDGET_CRD)
    spec_section = text.split("## spec\n", 1)[1].split("\n## ", 1)[0]
    assert "- spec.mode needs a size above 1" in spec_section


def test_sections_come_parents_first_and_the_contents_link_them() -> None:
    text = generate.render_reference(WIDGET_CRD)
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Widget", "## spec", "## spec.shape", "## spec.parts[]"]
    assert "- [spec.parts[]](#specparts)" in text


def test_the_intro_names_the_api_version_kind_and_short_names() -> None:
    text = generate.render_reference(WIDGET_CRD)
    assert text.startswith(generate.REFERENCE_HEADER)
    assert "`apiVersion: example.dev/v1`, `kind: Widget`, namespaced" in text
    assert "short names `wd`" in text


def test_check_fails_on_a_stale_file_and_leaves_it_alone(tmp_path: Path) -> None:
    target = tmp_path / "reference.md"
    target.write_text("old\n")
    err = io.StringIO()
    assert generate.sync([(target, "new\n")], check=True, err=err) == 1
    assert target.read_text() == "old\n"
    assert "is stale: run `make generate`" in err.getvalue()


def test_check_fails_on_a_missing_file(tmp_path: Path) -> None:
    target = tmp_path / "docs" / "reference.md"
    assert generate.sync([(target, "new\n")], check=True, err=io.StringIO()) == 1
    assert not target.exists()


def test_without_check_a_stale_file_is_written_and_then_passes_the_check(tmp_path: Path) -> None:
    target = tmp_path / "docs" / "reference.md"
    assert generate.sync([(target, "new\n")], check=False) == 0
    assert target.read_text() == "new\n"
    assert generate.sync([(target, "new\n")], check=True, err=io.StringIO()) == 0


def test_the_shipped_reference_is_current() -> None:
    wanted = generate.render_reference(generate.CRD_SOURCE.read_text())
    assert generate.REFERENCE_DOC.read_text() == wanted, "run `make generate`"
