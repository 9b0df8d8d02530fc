"""pacconv_transpose2d from the guide (transposed K) on W4 and W4b
(stride 4, 9×9: the taps that meet a sample by output phase). Parameters: backend × workload ×
impl."""

from .common import _MemBackward, _MemForward, _TimeSuite


class PacConvTranspose2d(_TimeSuite):
    workloads = ("W4", "W4b")


class PacConvTranspose2dMemForward(_MemForward):
    workloads = ("W4",)


class PacConvTranspose2dMemBackward(_MemBackward):
    workloads = ("W4",)
