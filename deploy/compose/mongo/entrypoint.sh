#!/bin/sh
# The mongo container's entrypoint (compose.yaml): mongod refuses a keyfile that anyone but its owner may
# read, and reads its files as the mongodb user (999), while a bind mount keeps the host's owner and mode
# (0600, the host user's). Running as root, copy the keyfile and the TLS files to files of that user only,
# then hand over to the image's own entrypoint, which drops to that user (and, on an empty volume, first
# starts mongod without access control to create root from MONGO_INITDB_ROOT_USERNAME/_PASSWORD).
set -eu
dir=/tmp/pai-mongo
install -d -o mongodb -g mongodb -m 0700 "$dir"
install -o mongodb -g mongodb -m 0400 /run/pai-mongo/keyfile "$dir/keyfile"
install -o mongodb -g mongodb -m 0400 /run/pai-mongo/server.pem "$dir/server.pem"
# The health check's mongosh runs as root and reads the CA too.
install -o mongodb -g mongodb -m 0444 /run/pai-mongo/ca.crt "$dir/ca.crt"
exec docker-entrypoint.sh "$@"
