#!/bin/bash
# the recording behind tests/testdata/leak (see its README)
set -e
I=cgwatch-test/busybox:1
R="docker run -d --network none"
cgwatch record --sources cgroupfs,mem --duration 19m -o ./rec.jsonl > record.log 2>&1 &
sleep 3
$R --name cgw-leak --memory 256m --memory-swap 256m $I sh -c '(while :; do head -c 1048576 /dev/zero; sleep 4; done) | tail'
$R --name cgw-flat --memory 128m --memory-swap 128m $I sh -c '(head -c 41943040 /dev/zero; sleep 100000) | tail'
$R --name cgw-batch --memory 128m --memory-swap 128m $I sh -c 'while :; do (i=0; while [ $i -lt 150 ]; do head -c 524288 /dev/zero; sleep 2; i=$((i+1)); done) | tail >/dev/null; sleep 60; done'
$R --name cgw-cache --memory 128m --memory-swap 128m $I sh -c 'while :; do dd if=/dev/zero of=/f bs=1M count=100 2>/dev/null; sync; rm /f; sleep 20; done'
wait
docker rm -f cgw-leak cgw-flat cgw-batch cgw-cache
