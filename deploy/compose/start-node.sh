#!/bin/sh
# Start one node of the compose federation (compose.yaml): wait until the
# configure service has written the configuration, the TSA its trust bundle
# and PostgreSQL listens, then run the node in the foreground.
#   start-node.sh NAME      (reads /etc/remembrancer/NAME/node.yaml)
# Environment: WAIT_SECONDS (default 180), WAIT_FOR (HOST:PORT, default postgres:5432).
set -eu
name=$1
config=/etc/remembrancer/$name/node.yaml
wait_for=${WAIT_FOR:-postgres:5432}
deadline=$(($(date +%s) + ${WAIT_SECONDS:-180}))

waiting() {  # waiting WHAT: give up at the deadline
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "start-node: $name gave up waiting for $1" >&2
    exit 1
  fi
  sleep 0.5
}

until [ -f /etc/remembrancer/.configured ] && [ -f "$config" ]; do waiting "its configuration"; done
bundle=$(python3 -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); print(((d.get("anchoring") or {}).get("rfc3161") or {}).get("tsa", {}).get("trust_bundle", ""))' "$config" 2>/dev/null || true)
if [ -n "$bundle" ]; then
  until [ -s "$bundle" ]; do waiting "the trust bundle $bundle"; done
fi
until python3 -c 'import socket, sys; h, p = sys.argv[1].rsplit(":", 1); socket.create_connection((h, int(p)), 2).close()' "$wait_for" 2>/dev/null; do
  waiting "$wait_for"
done
exec remembrancer serve --config "$config"
