"""Drives Helm v4's own engine (PyPI's helm-python-sdk) for the chart tests
(tests/it/helm_chart.rs); no helm binary.

  chart.py lint CHART KUBE_VERSION
      prints the lint report as JSON
  chart.py render CHART VALUES_FILE|- OUT_DIR
      validates the values against values.schema.json, renders the chart
      as an install, and writes every non-empty manifest to OUT_DIR under
      its template path (NOTES.txt left out); exit 1 with the engine's
      message on stderr when the values or the templates are refused
"""

import json
import os
import sys

import helm_python as helm


def lint(chart, kube_version):
    report = helm.lint(chart, None, strict=True, kube_version=kube_version)
    print(json.dumps(report))


def render(chart, values_file, out_dir):
    text = "" if values_file == "-" else open(values_file).read()
    try:
        values = helm.values_from_yaml(text)
        with helm.Chart.load(chart) as loaded:
            loaded.validate_schema(values)
            files = loaded.render(values, name="gw", namespace="gateway", is_install=True)
    except helm.HelmError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
    written = []
    for path, manifest in sorted(files.items()):
        # The engine returns every template, empty ones and NOTES.txt too.
        if path.endswith("NOTES.txt") or not manifest.strip():
            continue
        target = os.path.join(out_dir, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as f:
            f.write(manifest)
        written.append(path)
    print(json.dumps(written))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"lint": lint, "render": render}[command](*args)
