"""The project's DIRAC testbed (scripts/dirac_testbed.py) is a real DIRAC 9: jobs submitted through the real
JobManager are optimised into task queues, and the real Matcher matches them by site, CPU time and tags, as
it will for vcycle's DIRAC demand source and Vcycle CE (issue 10)."""

from __future__ import annotations

import json
from typing import Any

CLIENT = '''

directory, site, ce = sys.argv[1:4]
jobs = user_jobs(directory)
for cpu, tags in ((3600, []), (3600, []), (7200, ["gpu"])):
    jdl = ('[Executable = "/bin/true"; JobType = "User"; CPUTime = %d; Site = "%s"; Tags = {%s};]'
           % (cpu, site, ", ".join('"%s"' % t for t in tags)))
    assert jobs.submitJob(jdl)["OK"]
matcher = MatcherClient(useCertificates=True)  # host credentials, as the SiteDirector
base = {"Site": site, "GridCE": ce, "Queue": "default", "CPUTime": 1728000, "VO": "vo"}
def jobs_matching(**changes):
    found = matcher.getMatchingTaskQueues(dict(base, **changes))
    assert found["OK"], found
    return sorted(tq["Jobs"] for tq in found["Value"].values())
deadline = time.time() + 60
while jobs_matching(Tag=["gpu"]) != [1, 2] and time.time() < deadline:
    time.sleep(0.5)
print(json.dumps({"all": jobs_matching(Tag=["gpu"]), "untagged_ce": jobs_matching(),
                  "other_site": jobs_matching(Site="LCG.Elsewhere.org"), "short_queue": jobs_matching(CPUTime=100)}))
'''


def test_jobs_become_task_queues_the_matcher_matches_by_site_cpu_time_and_tags(dirac_testbed: Any) -> None:
    import dirac_testbed as recipe

    found = json.loads(dirac_testbed.run(recipe.USER_CLIENT + CLIENT, str(dirac_testbed.directory), recipe.SITE,
                                         recipe.CE))
    assert found["all"] == [1, 2]  # two untagged 1-hour jobs in one queue, the gpu job in another
    assert found["untagged_ce"] == [2]  # a CE without the gpu tag is not offered the gpu job
    assert found["other_site"] == []
    assert found["short_queue"] == []
