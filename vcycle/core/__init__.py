"""The pure core: vcycle's rules as functions of values and ``now``.

Everything here is pure: no clock, no randomness, no files, sockets, processes or threads, no SDK and no
store; ``now`` and any randomness are handed in. Every decision is reproducible and carries its reason.
A test (tests/unit/test_purity.py) walks every module of this package and fails if one imports or calls
anything else.
"""
