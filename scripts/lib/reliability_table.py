#!/usr/bin/env python3
"""The reliability suite's summary table, built from measured results only.

Reads the JSON lines the scenarios write to $KDP_RELIABILITY_RESULTS (one
per scenario, see tests/common/report.rs) and prints a Markdown table; with
--doc FILE it replaces the part of FILE between the markers

    <!-- reliability-table:start -->
    <!-- reliability-table:end -->

with a line naming the run (date, commit, Kafka, wall time) and the table.
Every cell comes from a field of a result line; a field a scenario does not
report is shown as "-", never filled in.

    scripts/lib/reliability_table.py RESULTS.jsonl
    scripts/lib/reliability_table.py RESULTS.jsonl --doc docs/reliability.md \
        --commit abc1234 --date 2026-01-01 --kafka 4.4.0 --wall-seconds 300
"""

import argparse
import json
import sys

START = "<!-- reliability-table:start -->"
END = "<!-- reliability-table:end -->"

COLUMNS = [
    ("scenario", "scenario"),
    ("acked", "acked"),
    ("consumed", "consumed"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("out_of_order", "out of order"),
    ("offset_mismatch", "offset mismatch"),
    ("answered_by_proxy", "answered by proxy"),
    ("faults", "faults injected (as counted)"),
    ("checks", "checks passed / failed"),
    ("duration_s", "duration s"),
]


def cell(result, key):
    if key == "checks":
        checks = result.get("checks")
        if not isinstance(checks, dict):
            return "-"
        failed = checks.get("failed") or []
        text = f"{checks.get('passed', 0)} / {len(failed)}"
        if failed:
            text += ": " + "; ".join(failed)
        return text
    value = result.get(key)
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).replace("|", "\\|")


def load(path):
    results = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                results.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{number}: not JSON: {e}")
    return results


def table(results):
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in sorted(results, key=lambda r: r.get("scenario", "")):
        lines.append("| " + " | ".join(cell(r, key) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


# Further measured fields shown per scenario below the table, when present.
DETAILS = [
    "new_leader",
    "forwarded",
    "answered_during_hold",
    "relay",
    "proxy_down_s",
    "drains",
    "epochs",
    "old_epoch_retry",
    "new_epoch_retry",
    "zombie_retry_before_new_epoch",
    "broker_answer_to_zombie_retry",
    "zombie_retry_after_new_epoch",
    "aborted_records",
    "crc",
    "slowloris",
    "stalled_frame",
    "idle",
    "rss_kib",
    "frame_errors",
    "canary",
    "rejected_and_closed",
    "rejected_logged",
    "kdp_connections_rejected_total",
    "held",
    "peak_len",
    "evicted_capacity",
    "bytes_per_entry",
]


def details(results):
    lines = []
    for r in sorted(results, key=lambda r: r.get("scenario", "")):
        shown = [
            f"{key} `{json.dumps(r[key], separators=(',', ':'))}`"
            for key in DETAILS
            if key in r
        ]
        if shown:
            lines.append(f"* **{r.get('scenario', '?')}**: " + "; ".join(shown))
    return "\n".join(lines)


def run_line(args, results):
    failed = sum(1 for r in results if (r.get("checks") or {}).get("failed"))
    parts = [f"Run of {args.date}" if args.date else "Run"]
    if args.commit:
        parts.append(f"at commit {args.commit}")
    if args.kafka:
        parts.append(f"against Apache Kafka {args.kafka} (3 KRaft nodes)")
    text = " ".join(parts)
    text += f": {len(results)} scenarios, {failed} with failed checks"
    if args.wall_seconds is not None:
        text += f", {args.wall_seconds} s wall time for the suite"
    return text + "."


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", help="JSON lines, one per scenario")
    p.add_argument("--doc", help="rewrite the table between the markers of this file")
    p.add_argument("--commit")
    p.add_argument("--date")
    p.add_argument("--kafka")
    p.add_argument("--wall-seconds", type=int)
    args = p.parse_args()

    results = load(args.results)
    if not results:
        sys.exit(f"{args.results}: no results")
    body = table(results)
    if not args.doc:
        print(body)
        return
    with open(args.doc, encoding="utf-8") as f:
        doc = f.read()
    if START not in doc or END not in doc:
        sys.exit(f"{args.doc}: markers {START} / {END} not found")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    block = (
        f"{START}\n{run_line(args, results)}\n\n{body}\n\n"
        f"Further measured fields per scenario (from the same JSON lines):\n\n"
        f"{details(results)}\n{END}"
    )
    with open(args.doc, "w", encoding="utf-8") as f:
        f.write(head + block + tail)
    print(body)


if __name__ == "__main__":
    main()
