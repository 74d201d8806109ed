"""moto's server, with five things nodeeni uses that moto lacks or gets wrong.

- EC2 filters ENIs by `status` (available, in-use, ...); moto 5 raises FilterNotImplementedError for
  it. Leak collection asks EC2 for the cluster's *available* ENIs only, so the emulator must filter
  the way EC2 does.
- ModifyNetworkInterfaceAttribute with `Attachment.DeleteOnTermination`: moto ignores it, so its
  listings never show the change and a pool asking for `true` would set it again every pass.
- AttachNetworkInterface with `NetworkCardIndex`: moto accepts it but records every attachment on
  card 0, and keys an instance's interfaces by device index alone, so device index 1 of card 1
  would replace device index 1 of card 0. Here each card has its own device indexes, listings and
  DescribeInstances show the card, and an attach on a card the instance type lacks, at a place
  taken, or past a card's limit fails as EC2's does.
- DescribeSubnets' `Ipv6CidrBlockAssociationSet`: moto nests the state one level too deep
  (`ipv6CidrBlockState.state.State`), so a client reads no state and cannot tell an associated
  IPv6 CIDR from a disassociated one. Here it is `ipv6CidrBlockState.state`, as EC2 has it.
- AssignPrivateIpAddresses' `AssignedPrivateIpAddresses`: moto answers with every address of the
  ENI, the primary included; EC2 answers with the ones the call assigned. Here it is those.

Everything else is moto as installed.
"""

import sys

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.elastic_network_interfaces import Attachment, NetworkInterface
from moto.ec2.models.instance_types import INSTANCE_TYPES
from moto.ec2.models.instances import Instance
from moto.ec2.models.subnets import Subnet
from moto.ec2.responses.elastic_network_interfaces import ElasticNetworkInterfaces
from moto.core.responses import ActionResult
from moto.server import main

_moto_filter = NetworkInterface.get_filter_value


def _with_status(self, filter_name, method_name=None):
    if filter_name == "status":
        return self.status
    return _moto_filter(self, filter_name, method_name)


NetworkInterface.get_filter_value = _with_status

_moto_modify = ElasticNetworkInterfaces.modify_network_interface_attribute


def _with_delete_on_termination(self):
    result = _moto_modify(self)
    attachment = self._get_param("Attachment") or {}
    wanted = attachment.get("DeleteOnTermination") if isinstance(attachment, dict) else None
    if wanted is not None:
        eni = self.ec2_backend.get_network_interface(self._get_param("NetworkInterfaceId"))
        # moto builds each listing's attachment from the ENI's own flag.
        eni.delete_on_termination = str(wanted).lower() == "true"
    return result


ElasticNetworkInterfaces.modify_network_interface_attribute = _with_delete_on_termination

_moto_attachment_init = Attachment.__init__


def _attachment_on_card(self, eni):
    _moto_attachment_init(self, eni)
    self.network_card_index = getattr(eni, "network_card_index", 0)


Attachment.__init__ = _attachment_on_card


def _nic_key(card, device_index):
    # Card 0 keeps moto's own keys (it looks up nics[0] for the primary ENI).
    return device_index if card == 0 else (card, device_index)


def _card_limits(instance_type):
    info = INSTANCE_TYPES.get(instance_type, {}).get("NetworkInfo", {})
    cards = info.get("NetworkCards") or []
    if not cards:
        return {0: int(info.get("MaximumNetworkInterfaces", 2))}
    return {int(c["NetworkCardIndex"]): int(c["MaximumNetworkInterfaces"]) for c in cards}


def _attach_on_card(self):
    eni_id = self._get_param("NetworkInterfaceId")
    instance_id = self._get_param("InstanceId")
    device_index = int(self._get_param("DeviceIndex"))
    card = int(self._get_param("NetworkCardIndex") or 0)
    self.error_on_dryrun()
    instance = self.ec2_backend.get_instance(instance_id)
    limits = _card_limits(instance.instance_type)
    if card not in limits:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Invalid network card index '{card}' for instance type {instance.instance_type}",
        )
    if _nic_key(card, device_index) in instance.nics:
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Instance '{instance_id}' already has an interface attached at device index '{device_index}'.",
        )
    on_card = [n for n in instance.nics.values() if getattr(n, "network_card_index", 0) == card]
    if len(on_card) >= limits[card]:
        raise EC2ClientError(
            "AttachmentLimitExceeded",
            f"Interface count {len(on_card) + 1} exceeds the limit for {instance.instance_type}",
        )
    eni = self.ec2_backend.get_network_interface(eni_id)
    eni.network_card_index = card
    # moto puts it at nics[device_index], over card 0's ENI at that index: move it to its card's
    # own key and give card 0 its ENI back.
    displaced = instance.nics.get(device_index)
    attachment = self.ec2_backend.attach_network_interface(eni_id, instance_id, device_index)
    if card != 0:
        instance.nics.pop(device_index, None)
        if displaced is not None:
            instance.nics[device_index] = displaced
        instance.nics[_nic_key(card, device_index)] = eni
    return ActionResult({"AttachmentId": attachment.attachment_id, "NetworkCardIndex": card})


ElasticNetworkInterfaces.attach_network_interface = _attach_on_card

_moto_detach_eni = Instance.detach_eni


def _detach_from_card(self, eni):
    card = getattr(eni, "network_card_index", 0)
    if card != 0:
        self.nics.pop(_nic_key(card, eni.device_index), None)
        # moto's own detach pops nics[eni.device_index], which is card 0's ENI at that index.
        eni.device_index = None
    eni.network_card_index = 0
    _moto_detach_eni(self, eni)


Instance.detach_eni = _detach_from_card



def _ipv6_associations(self):
    return [
        {
            "ipv6CidrBlock": a["ipv6CidrBlock"],
            "associationId": a["associationId"],
            "ipv6CidrBlockState": {"state": a["ipv6CidrBlockState"]["State"]},
        }
        for a in self.ipv6_cidr_block_associations.values()
        if a["ipv6CidrBlockState"]["State"] == "associated"
    ]


Subnet.ipv6_cidr_block_association_set = property(_ipv6_associations)

def _assigned_only(self):
    eni_id = self._get_param("NetworkInterfaceId")
    before = {a["PrivateIpAddress"] for a in self.ec2_backend.get_network_interface(eni_id).private_ip_addresses}
    eni = self.ec2_backend.assign_private_ip_addresses(
        eni_id, self._get_param("PrivateIpAddresses", []), self._get_int_param("SecondaryPrivateIpAddressCount", 0)
    )
    added = [a for a in eni.private_ip_addresses if a["PrivateIpAddress"] not in before]
    return ActionResult({"NetworkInterfaceId": eni.id, "AssignedPrivateIpAddresses": added})


ElasticNetworkInterfaces.assign_private_ip_addresses = _assigned_only

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
