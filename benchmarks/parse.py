"""What a listing costs to parse, per machine: the SDK's own parsing and vcycle's turning it into CloudMachines.

    .venv/bin/python benchmarks/parse.py [--machines 20000] [--rounds 5]

EC2: a DescribeInstances answer in EC2's own XML (as moto and AWS send it, 1000 instances a page, each with
vcycle's tags), parsed by botocore's EC2 parser (the SDK's part), then EC2Connector._machine on each instance
(vcycle's). OpenStack: pages of GET /servers/detail as Nova answers them (microversion 2.47, flavor embedded),
read with json.loads (the SDK's part as vcycle now lists: no resources) and OpenStackConnector._listed on each
(vcycle's); for comparison, what making openstacksdk Server resources of the same bodies costs
(openstack_resources_us_per_machine, as the listing did before). CPU time, median of the rounds. The last line:
RESULT ec2_sdk_us_per_machine=... ec2_vcycle_us_per_machine=... openstack_sdk_us_per_machine=...
openstack_vcycle_us_per_machine=... openstack_resources_us_per_machine=...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

# benchmarks/openstack.py would stand for openstacksdk: this directory leaves the path first
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import botocore.parsers  # noqa: E402
import botocore.session  # noqa: E402
from openstack.compute.v2.server import Server  # noqa: E402

from vcycle.connectors.ec2 import EC2Connector  # noqa: E402
from vcycle.connectors.openstack import OpenStackConnector  # noqa: E402

PAGE = 1000


def ec2_page(first: int) -> bytes:
    items = []
    for n in range(first, first + PAGE):
        items.append(f"""<item><reservationId>r-{n:017x}</reservationId><ownerId>123456789012</ownerId><groupSet/>
<instancesSet><item><instanceId>i-{n:017x}</instanceId><imageId>ami-0123456789abcdef0</imageId>
<instanceState><code>16</code><name>running</name></instanceState><privateDnsName>ip-10-0-0-1.ec2.internal
</privateDnsName><dnsName/><reason/><amiLaunchIndex>0</amiLaunchIndex><productCodes/>
<instanceType>m5.large</instanceType><launchTime>2026-12-01T10:00:00.000Z</launchTime>
<placement><availabilityZone>eu-west-1a</availabilityZone><groupName/><tenancy>default</tenancy></placement>
<monitoring><state>disabled</state></monitoring><subnetId>subnet-0a1b2c3d</subnetId><vpcId>vpc-1</vpcId>
<privateIpAddress>10.0.{n // 250 % 250}.{n % 250}</privateIpAddress><sourceDestCheck>true</sourceDestCheck>
<groupSet><item><groupId>sg-0123456789abcdef0</groupId><groupName>default</groupName></item></groupSet>
<architecture>x86_64</architecture><rootDeviceType>ebs</rootDeviceType><rootDeviceName>/dev/xvda</rootDeviceName>
<blockDeviceMapping/><virtualizationType>hvm</virtualizationType><clientToken>req-{n}</clientToken>
<tagSet><item><key>Name</key><value>vcycle-pilot-{n:08x}</value></item>
<item><key>vcycle-space</key><value>aws-eu</value></item><item><key>vcycle-machinetype</key><value>pilot</value>
</item><item><key>vcycle-manager</key><value>vcycle.example.org</value></item>
<item><key>vcycle-request-id</key><value>req-{n}</value></item></tagSet><hypervisor>xen</hypervisor>
<networkInterfaceSet/><ebsOptimized>false</ebsOptimized><cpuOptions><coreCount>1</coreCount>
<threadsPerCore>2</threadsPerCore></cpuOptions></item></instancesSet></item>""")
    return (f'<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>1</requestId>'
            f'<reservationSet>{"".join(items)}</reservationSet></DescribeInstancesResponse>').encode()


def openstack_body(n: int) -> dict[str, object]:
    return {"id": f"{n:08x}-0000-4000-8000-000000000000", "name": f"vcycle-pilot-{n:08x}", "status": "ACTIVE",
            "OS-EXT-STS:task_state": None, "OS-EXT-STS:power_state": 1, "OS-EXT-STS:vm_state": "active",
            "OS-EXT-AZ:availability_zone": "nova", "created": "2026-12-01T10:00:00Z",
            "updated": "2026-12-01T10:05:00Z", "tenant_id": "p", "user_id": "u", "hostId": "h", "key_name": None,
            "flavor": {"vcpus": 8, "ram": 16384, "disk": 40, "ephemeral": 0, "swap": 0, "original_name": "m1.xlarge",
                       "extra_specs": {}},
            "image": {"id": "img"}, "addresses": {"net": [{"addr": "10.0.0.1", "version": 4}]},
            "metadata": {"vcycle-space": "os", "vcycle-machinetype": "pilot", "vcycle-manager": "vcycle.example.org",
                         "vcycle-request-id": f"req-{n}"}, "security_groups": [{"name": "default"}],
            "accessIPv4": "", "accessIPv6": "", "config_drive": "", "progress": 0, "locked": False, "tags": [],
            "links": [], "os-extended-volumes:volumes_attached": []}


def cpu(work: Callable[[], object], rounds: int) -> float:
    spent = []
    for _ in range(rounds):
        started = time.process_time()
        work()
        spent.append(time.process_time() - started)
    return statistics.median(spent)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--machines", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    count = args.machines - args.machines % PAGE or PAGE
    model = botocore.session.get_session().get_service_model("ec2").operation_model("DescribeInstances")
    ec2_parser = botocore.parsers.create_parser("ec2")
    pages = [ec2_page(first) for first in range(0, count, PAGE)]

    def ec2_sdk() -> list[dict[str, object]]:
        found = []
        for body in pages:
            parsed = ec2_parser.parse({"body": body, "headers": {}, "status_code": 200}, model.output_shape)
            found += [i for r in parsed["Reservations"] for i in r["Instances"]]
        return found

    instances = ec2_sdk()
    assert len(instances) == count and instances[0]["Tags"], "the XML did not parse as DescribeInstances"
    ec2 = EC2Connector(None, "aws-eu")
    machines = [ec2._machine(i) for i in instances]
    assert machines[0].owner is not None and machines[0].processors == 2
    bodies = [openstack_body(n) for n in range(count)]
    nova_pages = [json.dumps({"servers": bodies[first:first + PAGE]}).encode() for first in range(0, count, PAGE)]

    def openstack_json() -> list[dict[str, object]]:
        return [server for page in nova_pages for server in json.loads(page)["servers"]]

    listed = openstack_json()
    nova = OpenStackConnector(None, "os")
    assert nova._listed(listed[0]) == nova._machine(Server.existing(**listed[0]))  # both paths see one machine
    assert nova._listed(listed[0]).owner is not None and nova._listed(listed[0]).processors == 8
    figures = {
        "ec2_sdk_us_per_machine": cpu(ec2_sdk, args.rounds),
        "ec2_vcycle_us_per_machine": cpu(lambda: [ec2._machine(i) for i in instances], args.rounds),
        "openstack_sdk_us_per_machine": cpu(openstack_json, args.rounds),
        "openstack_vcycle_us_per_machine": cpu(lambda: [nova._listed(b) for b in listed], args.rounds),
        "openstack_resources_us_per_machine": cpu(lambda: [Server.existing(**b) for b in bodies], args.rounds),
    }
    for name, seconds in figures.items():
        print(f"{name}: {seconds:.3f} s CPU for {count} machines")
    print("RESULT " + " ".join(f"{name}={seconds / count * 1e6:.1f}" for name, seconds in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
