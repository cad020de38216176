"""Parses an OpenMetrics exposition (fedcsg's /metrics) read from stdin with the Python
prometheus_client parser, and prints its samples as JSON: [{"name", "labels", "value"}, ...].

The parser is strict: a malformed exposition (bad names, a missing `# EOF`, a histogram
without its `+Inf` bucket) fails here with the parser's own message and a non-zero exit.
Run by server/tests/observability.rs; needs `pip install prometheus_client`
(tests/python/requirements.txt).
"""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    samples = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.append({"family": family.name, "type": family.type,
                            "name": s.name, "labels": s.labels, "value": s.value})
    json.dump(samples, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
