# vcycle's reporting functions for pilots (HSF-TN-2016-04 shutdown messages, joboutputs, heartbeats, the
# cloud's interruption notices). Rendered into every shipped template; the machine's token, if any,
# authenticates it to vcycle.
JOBOUTPUTS={{ joboutputs_url | shquote }}
VCYCLE_TOKEN={{ token | default("") | shquote }}
HEARTBEAT_FILE={{ options.heartbeat_file | default("vm-heartbeat") | shquote }}
HEARTBEAT_SECONDS={{ options.heartbeat_seconds | default("60") | int }}
DRAIN_COMMAND={{ options.drain_command | default("") | shquote }}
export VCYCLE_DRAIN_FILE=${VCYCLE_DRAIN_FILE:-${TMPDIR:-/tmp}/vcycle-drain}  # written when vcycle drains it
WATCH_INTERRUPTIONS={{ options.watch_interruptions | default("true") | shquote }}
METADATA_URL=${VCYCLE_METADATA_URL:-{{ options.metadata_url | default("http://169.254.169.254") | shquote }}}

vcycle_put() {  # vcycle_put NAME FILE [CURL ARGS...]: upload FILE as joboutputs/NAME
    local auth=() name=$1 file=$2
    shift 2
    if [ -n "$VCYCLE_TOKEN" ]; then auth=(-H "Authorization: Bearer $VCYCLE_TOKEN"); fi
    curl --fail --silent --show-error --max-time 60 --retry 3 "${auth[@]}" "$@" -X PUT --data-binary "@$file" \
        "$JOBOUTPUTS/$name"
}

vcycle_drain() {  # vcycle_drain REASON: tell the pilot to take no more work and end (once)
    if [ -e "$VCYCLE_DRAIN_FILE" ]; then return 0; fi
    printf '%s\n' "$1" > "$VCYCLE_DRAIN_FILE"
    if [ -n "$DRAIN_COMMAND" ]; then timeout 60 bash -c "$DRAIN_COMMAND" || true; fi
}

vcycle_drained() {  # after a heartbeat: vcycle's answer says drain? Then say so to the pilot
    local answer="${TMPDIR:-/tmp}/vcycle-heartbeat-answer"
    if [ -e "$VCYCLE_DRAIN_FILE" ] || ! grep -qi '^vcycle-drain:' "$answer" 2>/dev/null; then return 0; fi
    vcycle_drain "$(grep -i '^vcycle-drain:' "$answer" | head -n 1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//')"
}

# shellcheck disable=SC2317  # not every template waits on its pilot with it
vcycle_wait() {  # vcycle_wait PID: its exit status; a SIGTERM meanwhile (a local machine drained) is a drain
    local status
    trap 'vcycle_drain "drain: SIGTERM from vcycle"' TERM
    while true; do
        wait "$1"
        status=$?
        if [ "$status" -gt 128 ] && kill -0 "$1" 2>/dev/null; then continue; fi  # the trap ran: wait on
        break
    done
    trap - TERM
    return "$status"
}

vcycle_heartbeats() {  # in the background until vcycle_stop_heartbeats: refresh the heartbeat file
    local sleeper="" watcher=""
    if [ "$WATCH_INTERRUPTIONS" = true ]; then
        vcycle_watch_interruptions &
        watcher=$!
    fi
    trap 'kill $sleeper $watcher 2>/dev/null; exit 0' TERM
    while true; do
        date +%s > "${TMPDIR:-/tmp}/vcycle-heartbeat"
        vcycle_put "$HEARTBEAT_FILE" "${TMPDIR:-/tmp}/vcycle-heartbeat" \
            --dump-header "${TMPDIR:-/tmp}/vcycle-heartbeat-answer" && vcycle_drained
        sleep "$HEARTBEAT_SECONDS" &
        sleeper=$!
        wait "$sleeper"
    done
}

vcycle_metadata() {  # vcycle_metadata PATH [CURL ARGS...]: the metadata service's answer, then its HTTP code
    local path=$1
    shift
    curl --silent --max-time 2 --write-out '\n%{http_code}' "$@" "$METADATA_URL$path" 2>/dev/null || true
}

vcycle_interrupted() {  # vcycle_interrupted KIND NOTICE: report the cloud's notice to vcycle at once
    printf '{"kind": "%s", "notice": %s}\n' "$1" "$2" > "${TMPDIR:-/tmp}/vcycle-interruption"
    vcycle_put interruption "${TMPDIR:-/tmp}/vcycle-interruption"
}

vcycle_watch_interruptions() {  # every 5 s: EC2's spot and rebalance notices, Azure's Preempt event
    local sleeper="" reported=" " silent=0 token answer code body kind
    trap 'if [ -n "$sleeper" ]; then kill "$sleeper" 2>/dev/null; fi; exit 0' TERM
    while true; do
        local heard=""
        token=$(curl --silent --fail --max-time 2 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" \
            "$METADATA_URL/latest/api/token" 2>/dev/null) || token=""
        local auth=()
        if [ -n "$token" ]; then auth=(-H "X-aws-ec2-metadata-token: $token"); fi
        for kind in spot rebalance preempt; do
            case "$kind" in
                spot) answer=$(vcycle_metadata /latest/meta-data/spot/instance-action "${auth[@]}") ;;
                rebalance) answer=$(vcycle_metadata /latest/meta-data/events/recommendations/rebalance "${auth[@]}") ;;
                preempt) answer=$(vcycle_metadata "/metadata/scheduledevents?api-version=2020-07-01" -H "Metadata: true") ;;
            esac
            code=${answer: -3}  # curl's --write-out: always three digits
            body=${answer%$'\n'*}
            if [ -n "$code" ] && [ "$code" != 000 ]; then heard=1; fi
            if [ "$code" != 200 ] || [[ "$reported" == *" $kind "* ]]; then continue; fi
            if [ "$kind" = preempt ] && ! grep -q '"EventType" *: *"Preempt"' <<< "$body"; then continue; fi
            if vcycle_interrupted "$kind" "$body"; then reported="$reported$kind "; fi
        done
        if [ -z "$heard" ]; then
            silent=$((silent + 1))
            if [ "$silent" -ge 3 ] && [ "$reported" = " " ]; then exit 0; fi  # no metadata service here
        else
            silent=0
        fi
        sleep 5 &
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
