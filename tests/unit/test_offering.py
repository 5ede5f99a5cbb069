"""Offerings (flavor, zone, capacity type): how a machinetype names them, the order they are tried in, how a hold
on one covers another, and the configuration errors for what a space's connector cannot make."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vctest import T0, config_text, load_text

from vcycle.core import rules
from vcycle.core.model import Cooldown, Offering, SpaceSnapshot
from vcycle.core.planner import plan
from vcycle.errors import ConfigError

parts = st.none() | st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="@/"),
                            min_size=1, max_size=12)
offerings = st.builds(Offering, parts | st.just("m1/ssd"), parts, st.none() | st.sampled_from(["spot", "on-demand"]))


@given(offerings)
def test_a_key_names_its_offering_and_a_flavor_alone_is_its_key(offering: Offering) -> None:
    """What the store keeps (a cooldown's offering) reads back as the same offering; a single-flavor
    machinetype's key is its flavor, as cooldowns were stored before zones and capacity types."""
    assert Offering.parse(offering.key) == offering
    if offering.zone is None and offering.capacity is None:
        assert offering.key == (offering.flavor or "")


@pytest.mark.parametrize(("held", "other", "covered"), [
    (Offering("m5", "a", "spot"), Offering("m5", "a", "spot"), True),
    (Offering("m5", "a", "spot"), Offering("m5", "a", "on-demand"), False),
    (Offering("m5", "a", "spot"), Offering("m5", "b", "spot"), False),
    (Offering("m5", "a", "spot"), Offering("c5", "a", "spot"), False),
    (Offering("m5", "a", "spot"), Offering("m5", None, "spot"), True),  # the cloud may choose zone a again
    (Offering("m5", "a"), Offering("m5", "a", "spot"), True),  # capacity type the connector's: both
    (Offering(None), Offering("m5", "b", "on-demand"), True),  # a flavor vcycle does not know: all
])
def test_a_hold_covers_what_it_cannot_tell_apart(held: Offering, other: Offering, covered: bool) -> None:
    assert held.covers(other) is covered


def machinetype(**keys: object):  # type: ignore[no-untyped-def]
    config = load_text(config_text(machinetypes={"mt": {"min_processors": 2, **keys}}))
    return config, config.spaces["sp"].machinetypes["mt"]


def test_spot_everywhere_comes_before_on_demand_then_flavors_then_zones() -> None:
    _, mt = machinetype(flavor_names="m5.large m5a.large c5.xlarge", zones="za zb", capacity_types="spot on-demand",
                        max_processors=2)
    found = rules.offerings(mt, {"m5.large": 2, "m5a.large": 2, "c5.xlarge": 4})
    assert isinstance(found, list)
    assert [(o.key, size) for o, size in found] == [
        ("m5.large@za/spot", 2), ("m5.large@zb/spot", 2), ("m5a.large@za/spot", 2), ("m5a.large@zb/spot", 2),
        ("m5.large@za/on-demand", 2), ("m5.large@zb/on-demand", 2), ("m5a.large@za/on-demand", 2),
        ("m5a.large@zb/on-demand", 2)]  # c5.xlarge has 4 processors: it fits no offering


def test_without_zones_or_capacity_types_one_offering_per_flavor_as_before() -> None:
    _, mt = machinetype(flavor_names="m5.large m5a.large")
    found = rules.offerings(mt, {"m5.large": 2, "m5a.large": 2})
    assert found == [(Offering("m5.large"), 2), (Offering("m5a.large"), 2)]
    _, bare = machinetype()
    assert rules.offerings(bare, None) == [(Offering(), 2)]


def test_the_plan_falls_over_cooled_offerings_and_says_so() -> None:
    config, _ = machinetype(flavor_names="m5.large", zones="za zb", capacity_types="spot on-demand",
                            target_share=1)
    cooled = {("mt", key): Cooldown("mt", key, T0, "InsufficientInstanceCapacity") for key in ("m5.large@za/spot",)}
    result = plan(SpaceSnapshot("sp", (), cooldowns=cooled), {}, config, T0 + timedelta(seconds=60))
    assert result.creates
    order = result.creates[0]
    assert (order.flavor, order.zone, order.capacity) == ("m5.large", "zb", "spot")
    assert [o.key for o in order.fallbacks] == ["m5.large@za/on-demand", "m5.large@zb/on-demand"]
    assert "on m5.large@zb/spot (m5.large@za/spot cooling)" in order.reason
    later = plan(SpaceSnapshot("sp", (), cooldowns=cooled), {}, config, T0 + timedelta(seconds=180))
    assert later.creates[0].offering.key == "m5.large@za/spot"  # cooled no longer


def problems(text: str) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_text(text)
    return [(p.section, p.key, p.message) for p in caught.value.problems]


MT = "[machinetype {space} mt]\nuser_data = u\nbackoff_seconds = 1\nfizzle_seconds = 1\n"
EC2 = "[space e]\napi = ec2\nurl = https://ec2\naccess_key = A\nsecret_key = B\n"
OPENSTACK = ("[space o]\napi = openstack\nurl = https://keystone/v3\nusername = u\npassword_base64 = cA==\n"
             "project_name = p\n")
LOCAL = "[space l]\napi = local\n"


@pytest.mark.parametrize(("space", "name", "lines", "key", "words"), [
    (LOCAL, "l", "zones = a b\n", "zones", "the local connector cannot make a machine in a zone"),
    (OPENSTACK, "o", "capacity_types = spot on-demand\n", "capacity_types",
     "the openstack connector cannot make spot machines (it makes on-demand)"),
    (LOCAL, "l", "capacity_types = spot\n", "capacity_types", "cannot make spot machines (it makes none)"),
    (EC2, "e", "root_image = image:ami-1\nflavor_names = m5.large\nspot = true\ncapacity_types = spot on-demand\n",
     "spot", "keep capacity_types"),
    (EC2, "e", "root_image = image:ami-1\nflavor_names = m5.large\ncapacity_types = spot preemptible\n",
     "capacity_types", "'preemptible' is not a capacity type: use spot or on-demand"),
    (EC2, "e", "root_image = image:ami-1\nflavor_names = m5.large\ncapacity_types = spot spot\n",
     "capacity_types", "names a capacity type twice"),
    (EC2, "e", "root_image = image:ami-1\nflavor_names = m5.large\nzones = a b a\n", "zones", "names a zone twice"),
])
def test_offering_keys_a_connector_cannot_honour_are_refused_naming_section_and_key(
        space: str, name: str, lines: str, key: str, words: str) -> None:
    found = problems(space + MT.format(space=name) + lines)
    assert any(section == f"machinetype {name} mt" and k == key and words in message
               for section, k, message in found), found


def test_ec2_and_openstack_take_zones_and_ec2_spot() -> None:
    config = load_text(EC2 + MT.format(space="e") + "root_image = image:ami-1\nflavor_names = m5.large\n"
                       "zones = eu-west-1a eu-west-1b\ncapacity_types = spot on-demand\n"
                       + OPENSTACK + MT.format(space="o") + "zones = nova az2\n")
    assert config.spaces["e"].machinetypes["mt"].capacity_types == ("spot", "on-demand")
    assert config.spaces["o"].machinetypes["mt"].zones == ("nova", "az2")
