#!/usr/bin/env bash
# 40 clients against a server that remembers 8 connections: forgotten ones say Hello again
# without their callers noticing; nothing is lost or mixed up between connections.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
kv_start --set server.max_conns=8
"$B/tests/conn_churn" "$KV_EP" alice 40 3
kv_stop
echo "test_conn_churn: PASS"
