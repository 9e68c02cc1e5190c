#!/usr/bin/env bash
# gc = release build of 8b005ff (group commit on both backends, old fan-out), new = release build of cd82133; both copied from target/release.
# Runs after the release build: ingest (after), fan-out run 2 (before = gc binary, after), idle (before, after), perf on ingest.
set -u
O=/tmp/perfwork/out; mkdir -p $O
N=/tmp/perfwork/new; G=/tmp/perfwork/gc
date -u > $O/start; uptime > $O/uptime
timeout 400 $N/confab-bench --confab $N/confab --peers none ingest --size small > $O/ingest.txt 2>&1
uptime >> $O/uptime
timeout 300 $G/confab-bench --confab $G/confab --peers none fan-out --agents 5000 --conversations 50 --rate 200 --seconds 10 > $O/fanout-before.txt 2>&1
uptime >> $O/uptime
timeout 400 $N/confab-bench --confab $N/confab --peers ws fan-out --agents 5000 --conversations 50 --rate 200 --seconds 10 > $O/fanout-after.txt 2>&1
uptime >> $O/uptime
timeout 300 $G/confab-bench --confab $G/confab --peers none idle --connections 10000 > $O/idle-before.txt 2>&1
timeout 300 $N/confab-bench --confab $N/confab --peers none idle --connections 10000 > $O/idle-after.txt 2>&1
uptime >> $O/uptime
date -u > $O/end
