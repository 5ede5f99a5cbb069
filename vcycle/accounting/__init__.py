"""Accounting of the machines that ended: APEL records for WLCG and VacMon messages, as the old vcycle sent them.

    apel.py    APEL messages (individual job records, cloud summaries) and the dirq queues ssmsend reads
    vacmon.py  VacMon's factory, machinetype and machine JSON messages over UDP

What a machine used is vcycle/core/usage.py (pure). The cycle
(vcycle/loop/accounts.py) hands over the machines that became
GONE; the store marks each accounted in the transaction that adds it to its
month's usage, so a month is summed once however often a message is sent.
"""
