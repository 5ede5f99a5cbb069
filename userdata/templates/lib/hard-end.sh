# The hard end: this machine powers itself off hard_end_seconds past its shutdown time, whether or not vcycle
# or its pilot is alive then (an EC2 instance is terminated by it: vcycle asks for that at its creation).
VCYCLE_HARD_END=$(( {{ shutdown_time }} + {{ options.hard_end_seconds | default("300") | int }} - $(date +%s) ))
if [ "$VCYCLE_HARD_END" -lt 1 ]; then VCYCLE_HARD_END=1; fi
nohup setsid sh -c "sleep $VCYCLE_HARD_END; ${VCYCLE_POWEROFF:-/sbin/poweroff}" > /dev/null 2>&1 &
