"""VcycleDIRAC: the DIRAC extension through which DIRAC's SiteDirector submits pilots to vcycle.

Installed with vcycle (``pip install vcycle[dirac]``) and registered in the
``dirac`` entry-point group, so that DIRAC's ObjectLoader finds
``VcycleDIRAC.Resources.Computing.VcycleComputingElement`` for queues with
``CEType = Vcycle``, next to DIRAC's own CEs. It is not a primary extension:
it adds a CE and changes nothing else of DIRAC.
"""


def extension_metadata() -> dict[str, object]:
    """What DIRAC asks of an extension: searched before DIRAC itself (priority 0), never primary."""
    return {"priority": 10}
