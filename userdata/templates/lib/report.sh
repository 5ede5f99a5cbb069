# vcycle's reporting functions for pilots (HSF-TN-2016-04 shutdown messages, joboutputs, heartbeats).
# Rendered into every shipped template; the machine's token, if any, authenticates it to vcycle.
JOBOUTPUTS={{ joboutputs_url | shquote }}
VCYCLE_TOKEN={{ token | default("") | shquote }}
HEARTBEAT_FILE={{ options.heartbeat_file | default("vm-heartbeat") | shquote }}
HEARTBEAT_SECONDS={{ options.heartbeat_seconds | default("60") | int }}

vcycle_put() {  # vcycle_put NAME FILE: upload FILE as joboutputs/NAME
    local auth=()
    if [ -n "$VCYCLE_TOKEN" ]; then auth=(-H "Authorization: Bearer $VCYCLE_TOKEN"); fi
    curl --fail --silent --show-error --max-time 60 --retry 3 "${auth[@]}" -X PUT --data-binary "@$2" \
        "$JOBOUTPUTS/$1"
}

vcycle_heartbeats() {  # in the background until vcycle_stop_heartbeats: refresh the heartbeat file
    local sleeper=""
    trap 'if [ -n "$sleeper" ]; then kill "$sleeper" 2>/dev/null; fi; exit 0' TERM
    while true; do
        date +%s > "${TMPDIR:-/tmp}/vcycle-heartbeat"
        vcycle_put "$HEARTBEAT_FILE" "${TMPDIR:-/tmp}/vcycle-heartbeat" || true
        sleep "$HEARTBEAT_SECONDS" &
        sleeper=$!
        wait "$sleeper"
    done
}

vcycle_stop_heartbeats() {  # vcycle_stop_heartbeats PID
    kill "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

vcycle_finish() {  # vcycle_finish CODE TEXT [LOG...]: say why this machine stops, and upload its logs
    echo "$1 $2" > "${TMPDIR:-/tmp}/vcycle-shutdown-message"
    vcycle_put shutdown_message "${TMPDIR:-/tmp}/vcycle-shutdown-message" || true
    shift 2
    for log in "$@"; do
        if [ -f "$log" ]; then vcycle_put "$(basename "$log")" "$log" || true; fi
    done
}
