#!/usr/bin/env python3
"""Reproduce the suite's real-trace extracts (drills/suite/trace-*.csv) from their public sources.

Usage:  python3 extract.py KIND SOURCE_FILE [OUT_CSV]

KIND         SOURCE_FILE (see README.md for repo / path / commit)
http         dataset/nasa/workload.tbz2 (or the workload.txt inside it)
             from reconfigurable-ml-pipeline/web-service-datasets
flash        invocation_count.csv from nimamahmoudi/worldcup98-dataset
taxi         data/realKnownCause/nyc_taxi.csv from numenta/NAB
social       data/realTweets/Twitter_volume_AAPL.csv from numenta/NAB
llm-api      data/AzureLLMInferenceTrace_code.csv from Azure/AzurePublicDataset
pageviews    examples/example_wp_log_peyton_manning.csv from facebook/prophet

Output: CSV with header "seconds,rps"; seconds start at 0; rps are integers.
Every trace uses ONE linear factor k = PEAK / max(window), so the window's
maximum maps to exactly PEAK rps (the gateway's top: 40 replicas x 500 rps).
Standard library only.
"""
import csv
import datetime as dt
import io
import math
import sys
import tarfile

PEAK = 20000


def scale(values, step_s):
    k = PEAK / max(values)
    rows = [(i * step_s, int(round(v * k))) for i, v in enumerate(values)]
    return rows, k


def read_nasa(path):
    # Space-separated per-second request counts; index 0 = 01/Jul/1995:00:00:01 -0400
    # (NASA-HTTP Jul95 log followed directly by the Aug95 log).
    if path.endswith((".tbz2", ".bz2")):
        with tarfile.open(path, "r:bz2") as tf:
            member = [m for m in tf.getmembers() if m.name.endswith("workload.txt")][0]
            text = tf.extractfile(member).read().decode()
    else:
        text = open(path).read()
    return [int(x) for x in text.split()]


def kind_http(path):
    # 13 Jul 1995 06:00:01-11:00:00 EDT (STS-70 launch 09:41 EDT), 1-minute sums.
    per_s = read_nasa(path)
    start = 12 * 86400 + 6 * 3600  # offset of 13/Jul/1995:06:00:01 from 01/Jul 00:00:01
    vals = [sum(per_s[start + 60 * i:start + 60 * (i + 1)]) for i in range(300)]
    return scale(vals, 60)


def kind_flash(path):
    # World Cup 98, requests per minute, 1998-07-07 18:00 .. 22:59 (300 rows).
    counts = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            counts[row["period"]] = counts.get(row["period"], 0) + int(row["count"])
    t0 = dt.datetime(1998, 7, 7, 18, 0)
    vals = [counts[(t0 + dt.timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S")]
            for i in range(300)]
    return scale(vals, 60)


def nab_window(path, first_ts, n):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    i = [j for j, r in enumerate(rows) if r["timestamp"] == first_ts][0]
    return [float(r["value"]) for r in rows[i:i + n]]


def kind_taxi(path):
    # NYC taxi passengers per 30 min, 2015-01-24 00:00 .. 2015-01-27 23:30 (192 rows);
    # time compressed 30x: each 30-minute bucket becomes 60 s.
    return scale(nab_window(path, "2015-01-24 00:00:00", 192), 60)


def kind_social(path):
    # AAPL tweet mentions per 5 min, 2015-03-31 00:27:53 .. 08:22:53 (96 rows), real time.
    return scale(nab_window(path, "2015-03-31 00:27:53", 96), 300)


def kind_llm_api(path):
    # Azure LLM inference (code) request arrivals, 20-s bins over
    # [2023-11-16 18:17:00, 19:14:20) -> 172 bins, real time.
    t0 = dt.datetime(2023, 11, 16, 18, 17, 0)
    nbins = 172
    bins = [0] * nbins
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            t = dt.datetime.strptime(row["TIMESTAMP"][:26], "%Y-%m-%d %H:%M:%S.%f")
            b = int((t - t0).total_seconds() // 20)
            if 0 <= b < nbins:
                bins[b] += 1
    return scale(bins, 20)


def kind_pageviews(path):
    # Daily Wikipedia views of "Peyton Manning" (file holds ln(views)),
    # 2013-12-01 .. 2014-02-28 (90 days); time compressed 1440x: 1 day -> 60 s.
    # The one missing day (2014-01-06) is filled with the geometric mean of its neighbours.
    with open(path, newline="") as f:
        logv = {r["ds"]: float(r["y"]) for r in csv.DictReader(f)}
    d0 = dt.date(2013, 12, 1)
    vals = []
    for i in range(90):
        d = d0 + dt.timedelta(days=i)
        key = d.isoformat()
        if key in logv:
            y = logv[key]
        else:
            y = (logv[(d - dt.timedelta(days=1)).isoformat()] +
                 logv[(d + dt.timedelta(days=1)).isoformat()]) / 2
        vals.append(math.exp(y))
    return scale(vals, 60)


KINDS = {
    "http": kind_http,
    "flash": kind_flash,
    "taxi": kind_taxi,
    "social": kind_social,
    "llm-api": kind_llm_api,
    "pageviews": kind_pageviews,
}


def main(argv):
    if len(argv) < 3 or argv[1] not in KINDS:
        sys.exit(__doc__)
    rows, k = KINDS[argv[1]](argv[2])
    out = argv[3] if len(argv) > 3 else "trace-%s.csv" % argv[1]
    buf = io.StringIO()
    buf.write("seconds,rps\n")
    for s, r in rows:
        buf.write("%d,%d\n" % (s, r))
    with open(out, "w", newline="") as f:
        f.write(buf.getvalue())
    rps = [r for _, r in rows]
    print("%s: %d points, factor k=%.6g, max=%d, min=%d, duration=%ds -> %s"
          % (argv[1], len(rows), k, max(rps), min(rps), rows[-1][0], out))


if __name__ == "__main__":
    main(sys.argv)
