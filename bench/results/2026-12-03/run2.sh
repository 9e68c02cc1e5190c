#!/usr/bin/env bash
# gc = release build of 8b005ff, new = release build of cd82133 (see run.sh).
set -u
O=/tmp/perfwork/out; N=/tmp/perfwork/new; G=/tmp/perfwork/gc
for i in 2 3; do
  timeout 200 $G/confab-bench --confab $G/confab --peers none fan-out --agents 5000 --conversations 50 --rate 200 --seconds 10 > $O/fanout-before-$i.txt 2>&1
  timeout 200 $N/confab-bench --confab $N/confab --peers none fan-out --agents 5000 --conversations 50 --rate 200 --seconds 10 > $O/fanout-after-$i.txt 2>&1
done
CONFAB_WS_QUEUE_FRAMES=32 timeout 300 $N/confab-bench --confab $N/confab --peers none idle --connections 10000 > $O/idle-after-queue32.txt 2>&1
# profile: 16 senders on SQLite, perf attached to the server for 5 s
( timeout 120 $N/confab-bench --confab $N/confab --peers none ingest --backends sqlite --senders 16 --seconds 12 > $O/ingest-perf.txt 2>&1 ) &
for _ in $(seq 1 100); do P=$(pgrep -n -f "^$N/confab serve"); [ -n "$P" ] && break; sleep 0.2; done
sleep 6
perf record -F 499 -g -p "$P" -o $O/perf.data -- sleep 5 > $O/perf-record.log 2>&1
wait
perf report -i $O/perf.data --no-children --sort symbol --stdio 2>/dev/null | grep -v '^$' | grep -v '^#' | head -60 > $O/perf-report.txt
perf report -i $O/perf.data --no-children --sort dso --stdio 2>/dev/null | grep -v '^$' | grep -v '^#' | head -15 > $O/perf-dso.txt
date -u > $O/end2
