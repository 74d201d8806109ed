"""moto's server, with the one DescribeNetworkInterfaces filter nodeeni uses that moto lacks.

EC2 filters ENIs by `status` (available, in-use, ...); moto 5 raises FilterNotImplementedError for it.
Leak collection asks EC2 for the cluster's *available* ENIs only, so the emulator must filter the way
EC2 does. Everything else is moto as installed.
"""

import sys

from moto.ec2.models.elastic_network_interfaces import NetworkInterface
from moto.server import main

_moto_filter = NetworkInterface.get_filter_value


def _with_status(self, filter_name, method_name=None):
    if filter_name == "status":
        return self.status
    return _moto_filter(self, filter_name, method_name)


NetworkInterface.get_filter_value = _with_status

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
