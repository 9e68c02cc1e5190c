#!/usr/bin/env bash
# Waits for the release server, then runs the real scenarios one after another.
set -u
T=/root/.cache/confab/target-bench
for _ in $(seq 1 600); do grep -q 'Finished' /tmp/bench-release-build.log && break; sleep 2; done
cp $T/release/confab /tmp/benchruns/confab-release || exit 1
B=$T/debug/confab-bench
O=/tmp/benchruns
date -u > $O/start
uptime > $O/uptime-start
timeout 420 $B --confab $O/confab-release fan-out --size large > $O/fanout-large.txt 2>&1
uptime >> $O/uptime-start
timeout 300 $B --confab $O/confab-release ingest --size small > $O/ingest.txt 2>&1
timeout 300 $B --confab $O/confab-release auth --size small > $O/auth.txt 2>&1
timeout 420 $B --confab $O/confab-release idle --size large > $O/idle.txt 2>&1
timeout 420 $B --confab $O/confab-release paging --size large > $O/paging.txt 2>&1
date -u > $O/end
