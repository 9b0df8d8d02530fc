"""pacconv2d from the guide (packernel2d + pacconv2d, or pacconv2d_fused) on W1 and W2, and the
W1 layer's size sweep. Parameters: backend × workload × impl (see common.py).

The sweep's class name leaves out "W1" on purpose: ``asv run -b W1`` selects the W1 workload, not
the minutes-long sweep up to 1024² (select that with ``-b SizeSweep``)."""

from .common import _MemBackward, _MemForward, _SweepSuite, _TimeSuite


class PacConv2d(_TimeSuite):
    workloads = ("W1", "W2")


class PacConv2dMemForward(_MemForward):
    workloads = ("W1", "W2")


class PacConv2dMemBackward(_MemBackward):
    workloads = ("W1", "W2")


class PacConv2dSizeSweep(_SweepSuite):
    """The W1 layer on 64² … 1024² inputs (parameter ``size``)."""

    base = "W1"
