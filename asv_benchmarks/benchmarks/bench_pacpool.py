"""pacpool2d from the guide (normalised K) on W3. Parameters: backend × workload × impl."""

from .common import _MemBackward, _MemForward, _TimeSuite


class PacPool2d(_TimeSuite):
    workloads = ("W3",)


class PacPool2dMemForward(_MemForward):
    workloads = ("W3",)


class PacPool2dMemBackward(_MemBackward):
    workloads = ("W3",)
