"""``CEType = Vcycle``: DIRAC's SiteDirector submits pilots, vcycle turns each into a machine.

The queue's parameters in DIRAC's configuration map it to vcycle::

    Resources/Sites/LCG/LCG.Example.org/CEs/cloud.example.org
      CEType = Vcycle
      Queues/default
        VcycleSpace = cloud.example.org          # a [space ...] of vcycle's configuration
        VcycleMachinetype = dirac-pilot          # its [machinetype ...], with demand = a sitedirector section
        VcycleConfig = /etc/vcycle.conf, /etc/vcycle.d   # optional: vcycle's default locations
        maxCPUTime = 2880
        SI00 = 2500
        MaxTotalJobs = 100
        MaxWaitingJobs = 10

``submitJob`` records the pilots in vcycle's state store and returns their
references (``vcycle://SPACE/MACHINE``) and stamps; vcycle's cycle creates
the machines under its limits, shares and backoff, each booting with the
wrapper the SiteDirector handed over. ``getJobStatus``, ``killJob``,
``getCEStatus`` and ``cleanupPilots`` answer from the store (vcycle.demand.sitedirector),
so they hold across restarts of the SiteDirector and of vcycle. The CE never
calls a cloud.
"""

from __future__ import annotations

from DIRAC import S_ERROR, S_OK
from DIRAC.Resources.Computing.ComputingElement import ComputingElement

from vcycle.config import load_config
from vcycle.demand.sitedirector import Director
from vcycle.errors import ConfigError, DirectorError, VcycleError
from vcycle.store import Store


def open_director(config_paths, space, machinetype, **where):
    """The Director of a queue: vcycle's configuration (default: vcycle's own locations) and its store."""
    try:
        config = load_config(list(config_paths) if config_paths else None)
    except ConfigError as exc:
        raise DirectorError("vcycle's configuration is invalid: " + "; ".join(map(str, exc.problems))) from exc
    try:
        store = Store.open(config.settings.state_url)
    except VcycleError as exc:
        raise DirectorError(f"vcycle's state store: {exc}") from exc
    return Director(config, store, space, machinetype, **where)


class VcycleComputingElement(ComputingElement):
    """A DIRAC CE whose pilots are vcycle's machines."""

    def __init__(self, ceUniqueID):
        super().__init__(ceUniqueID)
        self._director = None
        self._mapping = None

    def _getDirector(self):
        """S_OK(the vcycle.demand.sitedirector.Director of this queue) or S_ERROR naming what is wrong."""
        params = self.ceParameters
        mapping = (str(params.get("VcycleConfig", "")), str(params.get("VcycleSpace", "")),
                   str(params.get("VcycleMachinetype", "")))
        if self._director is not None and mapping == self._mapping:
            return S_OK(self._director)
        config, space, machinetype = mapping
        if not space or not machinetype:
            return S_ERROR(f"CE {self.ceName}: the queue needs VcycleSpace and VcycleMachinetype")
        paths = [p.strip() for p in config.split(",") if p.strip()]
        try:
            self._director = open_director(paths, space, machinetype, ce=str(params.get("GridCE", self.ceName)),
                                           queue=str(params.get("Queue", "")))
        except VcycleError as exc:
            return S_ERROR(f"CE {self.ceName}: {exc}")
        self._mapping = mapping
        return S_OK(self._director)

    def _call(self, action, *args):
        director = self._getDirector()
        if not director["OK"]:
            return director
        try:
            return S_OK(action(director["Value"], *args))
        except VcycleError as exc:  # the store or configuration failed: DIRAC logs it and retries later
            return S_ERROR(f"CE {self.ceName}: {exc}")

    def submitJob(self, executableFile, proxy=None, numberOfJobs=1, **kwargs):
        """Record ``numberOfJobs`` pilots running the wrapper ``executableFile``; their references and stamps."""
        try:
            with open(executableFile, encoding="utf-8") as stream:
                wrapper = stream.read()
        except OSError as exc:
            return S_ERROR(f"CE {self.ceName}: pilot wrapper {executableFile} not read: {exc.strerror}")
        submitted = self._call(lambda d: d.submit(wrapper, int(numberOfJobs)))
        if not submitted["OK"]:
            return submitted
        stamps = submitted["Value"]
        self.log.info("Pilots recorded for vcycle", f"{len(stamps)} in {self._mapping[1]}/{self._mapping[2]}")
        result = S_OK(list(stamps))
        result["PilotStampDict"] = stamps
        return result

    def getJobStatus(self, jobIDList):
        """DIRAC's PilotStatus of each pilot, from where its machine is in vcycle."""
        return self._call(lambda d: d.status(jobIDList))

    def killJob(self, jobIDList):
        """Cancel pilots still waiting; the machines of the others are deleted by vcycle's next cycle."""
        killed = self._call(lambda d: d.kill(jobIDList))
        if killed["OK"] and killed["Value"]:
            return S_ERROR(f"CE {self.ceName}: not this queue's pilots: {', '.join(killed['Value'])}")
        return killed if not killed["OK"] else S_OK()

    def getCEStatus(self):
        """Pilots waiting for or booting in their machines as WaitingJobs, running ones as RunningJobs."""
        counts = self._call(lambda d: d.ce_status())
        if not counts["OK"]:
            return counts
        result = S_OK()
        result["SubmittedJobs"] = 0
        result["WaitingJobs"], result["RunningJobs"] = counts["Value"]
        return result

    def cleanupPilots(self):
        """Give up the pilots that waited for a machine longer than the sitedirector request timeout."""
        cleaned = self._call(lambda d: d.cleanup())
        return cleaned if not cleaned["OK"] else S_OK()

    def getJobOutput(self, jobID, localDir=None):
        """The pilot's log as its machine uploaded it to vcycle's joboutputs, if it did."""
        return self._call(lambda d: d.output(jobID))
