"""``vcycle simulate``: a configuration's effect on a trace of jobs, before it costs anything.

The real sync, planner and executor run on a simulated clock against
simulated clouds (clouds.py) and a simulated batch system (batch.py) that
runs the trace's jobs (trace.py) on the machines vcycle makes; run.py drives
them, report.py sums up what happened.
"""
