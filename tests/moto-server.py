"""moto's server, with two things nodeeni uses that moto lacks.

- EC2 filters ENIs by `status` (available, in-use, ...); moto 5 raises FilterNotImplementedError for
  it. Leak collection asks EC2 for the cluster's *available* ENIs only, so the emulator must filter
  the way EC2 does.
- ModifyNetworkInterfaceAttribute with `Attachment.DeleteOnTermination`: moto ignores it, so its
  listings never show the change and a pool asking for `true` would set it again every pass.

Everything else is moto as installed.
"""

import sys

from moto.ec2.models.elastic_network_interfaces import NetworkInterface
from moto.ec2.responses.elastic_network_interfaces import ElasticNetworkInterfaces
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

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
