"""What reading one machine of a listing costs, per cloud: the SDK's parse of its answer, and vcycle's own.

For N machines of each cloud, a listing answer as the cloud sends it (EC2's DescribeInstances XML with the fields
an instance usually has, Nova's servers detail JSON, ARM's virtual machines JSON), then:

- EC2: botocore's parser (what boto3 does with every page), then vcycle's ``EC2Connector._machine``;
- OpenStack: openstacksdk's ``Server`` resources (what ``compute.servers()`` yields), then vcycle's
  ``OpenStackConnector._machine``;
- Azure: the SDK's ``VirtualMachine`` models with the fields a connector reads (what ``virtual_machines.list``
  yields), and vcycle's ``AzureConnector._machine`` on ARM's JSON, which is what it reads instead.

CPU time (process_time) per machine, the median of the rounds. No network: the answers are made here.

    .venv/bin/python benchmarks/parse.py [--machines 5000] [--rounds 5]

Ends with ``RESULT ec2_sdk_us=... ec2_vcycle_us=... openstack_sdk_us=... openstack_vcycle_us=...
azure_models_us=... azure_json_us=...`` (microseconds per machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# This directory holds azure.py and libcloud.py, which would shadow those packages.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

TAGS = {"vcycle-space": "bench.example.org", "vcycle-machinetype": "pilot", "vcycle-manager": "bench"}


def ec2_answer(count: int) -> bytes:
    items = []
    for n in range(count):
        tags = "".join(f"<item><key>{k}</key><value>{v}</value></item>" for k, v in
                       {**TAGS, "vcycle-request": f"req-{n}", "Name": f"vcycle-pilot-{n:010d}"}.items())
        items.append(f"""<item><reservationId>r-{n:017x}</reservationId><ownerId>123456789012</ownerId>
<instancesSet><item><instanceId>i-{n:017x}</instanceId><imageId>ami-0abcdef1234567890</imageId>
<instanceState><code>16</code><name>running</name></instanceState>
<privateDnsName>ip-10-0-{n % 250}-{n % 200}.ec2.internal</privateDnsName><dnsName/><reason/>
<amiLaunchIndex>0</amiLaunchIndex><productCodes/><instanceType>c6i.2xlarge</instanceType>
<launchTime>2026-12-02T05:00:00.000Z</launchTime><placement><availabilityZone>eu-west-1a</availabilityZone>
<groupName/><tenancy>default</tenancy></placement><monitoring><state>disabled</state></monitoring>
<subnetId>subnet-0a1b2c3d</subnetId><vpcId>vpc-12345678</vpcId>
<privateIpAddress>10.0.{n % 250}.{n % 200}</privateIpAddress>
<sourceDestCheck>true</sourceDestCheck><groupSet><item><groupId>sg-0123456789abcdef0</groupId>
<groupName>pilots</groupName></item></groupSet><architecture>x86_64</architecture><rootDeviceType>ebs</rootDeviceType>
<rootDeviceName>/dev/xvda</rootDeviceName><blockDeviceMapping><item><deviceName>/dev/xvda</deviceName><ebs>
<volumeId>vol-{n:017x}</volumeId><status>attached</status><attachTime>2026-12-02T05:00:01.000Z</attachTime>
<deleteOnTermination>true</deleteOnTermination></ebs></item></blockDeviceMapping>
<virtualizationType>hvm</virtualizationType><clientToken>req-{n}</clientToken><tagSet>{tags}</tagSet>
<hypervisor>xen</hypervisor><ebsOptimized>false</ebsOptimized><enaSupport>true</enaSupport>
<cpuOptions><coreCount>4</coreCount><threadsPerCore>2</threadsPerCore></cpuOptions>
<metadataOptions><state>applied</state><httpTokens>required</httpTokens><httpEndpoint>enabled</httpEndpoint>
</metadataOptions></item></instancesSet></item>""")
    return (f'<?xml version="1.0" encoding="UTF-8"?><DescribeInstancesResponse '
            f'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>x</requestId><reservationSet>'
            f'{"".join(items)}</reservationSet></DescribeInstancesResponse>').encode()


def nova_answer(count: int) -> list[dict[str, Any]]:
    return [{"id": f"{n:08x}-0000-4000-8000-000000000000", "name": f"vcycle-pilot-{n:010d}", "status": "ACTIVE",
             "tenant_id": "p", "user_id": "u", "metadata": {**TAGS, "vcycle-request": f"req-{n}"},
             "hostId": "h", "image": {"id": "img"}, "flavor": {"vcpus": 8, "ram": 16384, "disk": 20,
                                                                "original_name": "m1.xlarge", "extra_specs": {}},
             "created": "2026-12-02T05:00:00Z", "updated": "2026-12-02T05:01:00Z",
             "addresses": {"net": [{"version": 4, "addr": f"10.0.{n % 250}.{n % 200}", "OS-EXT-IPS:type": "fixed"}]},
             "accessIPv4": "", "accessIPv6": "", "links": [], "OS-DCF:diskConfig": "MANUAL", "progress": 0,
             "OS-EXT-AZ:availability_zone": "nova", "config_drive": "", "key_name": None,
             "OS-SRV-USG:launched_at": "2026-12-02T05:00:30.000000", "OS-SRV-USG:terminated_at": None,
             "security_groups": [{"name": "default"}], "OS-EXT-STS:task_state": None,
             "OS-EXT-STS:vm_state": "active", "OS-EXT-STS:power_state": 1, "os-extended-volumes:volumes_attached": [],
             "locked": False, "tags": [], "trusted_image_certificates": None, "server_groups": []}
            for n in range(count)]


def arm_answer(count: int) -> list[dict[str, Any]]:
    return [{"name": f"vcycle-pilot-{n:010d}", "id": f"/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/"
             f"virtualMachines/vcycle-pilot-{n:010d}", "type": "Microsoft.Compute/virtualMachines",
             "location": "westeurope", "tags": {**TAGS, "vcycle-request": f"req-{n}"}, "zones": ["1"],
             "properties": {"vmId": f"{n:08x}-0000-4000-8000-000000000000",
                            "hardwareProfile": {"vmSize": "Standard_D8s_v5"},
                            "storageProfile": {"imageReference": {"publisher": "Canonical", "offer": "o", "sku": "s",
                                                                  "version": "latest", "exactVersion": "1.0.0"},
                                               "osDisk": {"osType": "Linux", "name": f"vcycle-pilot-{n:010d}-osdisk",
                                                          "createOption": "FromImage", "caching": "ReadWrite",
                                                          "managedDisk": {"storageAccountType": "Premium_LRS",
                                                                          "id": "/subscriptions/s/disks/d"},
                                                          "deleteOption": "Delete", "diskSizeGB": 30},
                                               "dataDisks": []},
                            "osProfile": {"computerName": f"vcycle-pilot-{n:010d}", "adminUsername": "vcycle",
                                          "linuxConfiguration": {"disablePasswordAuthentication": True},
                                          "secrets": [], "allowExtensionOperations": True},
                            "networkProfile": {"networkInterfaces": [{"id": "/subscriptions/s/nics/n", "properties":
                                                                      {"primary": True, "deleteOption": "Delete"}}]},
                            "priority": "Spot", "evictionPolicy": "Delete", "billingProfile": {"maxPrice": -1},
                            "provisioningState": "Succeeded", "timeCreated": "2026-12-02T05:00:00.1234567+00:00"}}
            for n in range(count)]


def per_machine(work: Callable[[], object], count: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.process_time()
        work()
        times.append((time.process_time() - started) / count * 1e6)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    count, rounds = args.machines, args.rounds

    import botocore.parsers
    import botocore.session

    from vcycle.connectors.ec2 import EC2Connector

    shape = botocore.session.get_session().get_service_model("ec2").operation_model("DescribeInstances").output_shape
    xml = ec2_answer(count)
    ec2_parser = botocore.parsers.create_parser("ec2")
    parsed = ec2_parser.parse({"body": xml, "headers": {}, "status_code": 200}, shape)
    instances = [i for r in parsed["Reservations"] for i in r["Instances"]]
    assert len(instances) == count
    ec2 = EC2Connector.__new__(EC2Connector)
    ec2._vcpus = {}
    results = {"ec2_sdk_us": per_machine(lambda: ec2_parser.parse({"body": xml, "headers": {}, "status_code": 200},
                                                                  shape), count, rounds),
               "ec2_vcycle_us": per_machine(lambda: [ec2._machine(i) for i in instances], count, rounds)}

    from openstack.compute.v2.server import Server

    from vcycle.connectors.openstack import OpenStackConnector

    servers_json = nova_answer(count)
    servers = [Server.existing(**s) for s in servers_json]
    nova = OpenStackConnector.__new__(OpenStackConnector)
    results["openstack_sdk_us"] = per_machine(lambda: [Server.existing(**s) for s in servers_json], count, rounds)
    results["openstack_vcycle_us"] = per_machine(lambda: [nova._machine(s) for s in servers], count, rounds)

    from azure.mgmt.compute.models import VirtualMachine

    from vcycle.connectors.azure import AzureConnector

    vms = json.loads(json.dumps(arm_answer(count)))

    def models() -> None:
        for vm in vms:
            model = VirtualMachine(vm)
            _ = (model.provisioning_state, model.hardware_profile.vm_size, model.tags, model.zones,
                 model.time_created, model.priority, model.id, model.name)

    arm = AzureConnector.__new__(AzureConnector)
    results["azure_models_us"] = per_machine(models, count, rounds)
    results["azure_json_us"] = per_machine(lambda: [arm._machine(vm, None, {}) for vm in vms], count, rounds)
    for name, value in results.items():
        print(f"{name}: {value:.1f} us per machine ({count} machines, median of {rounds})")
    print("RESULT " + " ".join(f"{name}={value:.1f}" for name, value in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
