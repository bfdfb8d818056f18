#!/bin/sh
# Is this NATS server stuck after its JetStream store's disk filled, now that the disk has room again?
#
# When a write of the file store fails (no space left on device), nats-server fails every later store on
# that stream, also once space is back, until it restarts; its /healthz then answers 503 naming the
# stream's "write error" (its ?js-enabled-only and ?js-server-only checks still answer 200). A restart
# onto a disk still full fails the same way, so the server is restarted only once the store has room.
# `pai up` does the same from the server's log (libs/cli/pai_cli/store_watch.py).
#
#   store-check.sh probe          Kubernetes' liveness probe: exit 1 when stuck with room again, or when
#                                 the server does not answer at all; 0 otherwise (a 503 for another
#                                 reason, such as a stream catching up, is not a reason to restart)
#   store-check.sh run -- ARGS    Compose: run nats-server ARGS and stop it (exit 1) once it is stuck with
#                                 room again, so that the restart policy starts it afresh
#
# POSIX sh with busybox's nc, df and awk (the nats:2.10-alpine image). Environment: NATS_MONITOR
# (127.0.0.1:8222), NATS_STORE (/data), NATS_STORE_ROOM_KB (16384), NATS_STORE_CHECK_S (10), NATS_SERVER
# (nats-server), NC (nc).
MONITOR=${NATS_MONITOR:-127.0.0.1:8222}
STORE=${NATS_STORE:-/data}
ROOM_KB=${NATS_STORE_ROOM_KB:-16384}

# The monitoring port's /healthz answer, status line and body (nc: a 503's body is what names the error).
healthz() {
  host=${MONITOR%:*}
  port=${MONITOR##*:}
  printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" | ${NC:-nc} -w 5 "$host" "$port" 2>/dev/null
}

# 0 (true) when the answer reports a stream's write error and the store has room again.
stuck_with_room() {
  case "$1" in
    "HTTP/1."?" 503 "*"write error"*) ;;
    *) return 1 ;;
  esac
  free=$(df -Pk "$STORE" 2>/dev/null | awk 'NR == 2 {print $4}')
  [ "${free:-0}" -ge "$ROOM_KB" ]
}

case "$1" in
  probe)
    answer=$(healthz)
    if [ -z "$answer" ]; then
      echo "store-check: the NATS server at $MONITOR does not answer" >&2
      exit 1
    fi
    if stuck_with_room "$answer"; then
      echo "store-check: a stream's store failed a write and $STORE has room again: restart" >&2
      exit 1
    fi
    exit 0
    ;;
  run)
    shift
    [ "$1" = "--" ] && shift
    ${NATS_SERVER:-nats-server} "$@" &
    pid=$!
    trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid"; exit $?' TERM INT
    while kill -0 "$pid" 2>/dev/null; do
      sleep "${NATS_STORE_CHECK_S:-10}" &
      wait $!
      if stuck_with_room "$(healthz)"; then
        echo "store-check: a stream's store failed a write and $STORE has room again: stopping the server" >&2
        kill -TERM "$pid"
        wait "$pid"
        exit 1
      fi
    done
    wait "$pid"
    exit $?
    ;;
  *)
    echo "usage: $0 probe | run -- NATS-SERVER-ARGS..." >&2
    exit 2
    ;;
esac
