#!/usr/bin/env bash
set -u
T=/root/.cache/confab/target-bench
B=$T/debug/confab-bench
O=/tmp/benchruns
for _ in $(seq 1 400); do [ -f $O/end ] && break; sleep 2; done
timeout 400 $B --confab $O/confab-release fan-out --agents 5000 --conversations 50 --rate 200 --seconds 10 > $O/fanout-rooms.txt 2>&1
# profile: 16 senders on SQLite, perf attached to the server for 6 s
( timeout 120 $B --confab $O/confab-release --peers none ingest --backends sqlite --senders 16 --seconds 12 > $O/ingest-perf.txt 2>&1 ) &
for _ in $(seq 1 100); do P=$(pgrep -n -f "^$O/confab-release serve"); [ -n "$P" ] && break; sleep 0.2; done
sleep 6
perf record -F 499 -g -p "$P" -o $O/perf.data -- sleep 5 > $O/perf-record.log 2>&1
wait
perf report -i $O/perf.data --no-children --sort symbol --stdio 2>/dev/null | grep -v '^$' | head -80 > $O/perf-report.txt
perf report -i $O/perf.data --children --sort symbol --stdio -g none 2>/dev/null | grep -v '^$' | head -80 > $O/perf-children.txt
date -u > $O/end2
