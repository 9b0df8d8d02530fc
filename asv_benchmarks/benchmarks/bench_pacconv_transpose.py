"""pacconv_transpose2d from the guide (transposed K) on W4. Parameters: backend × workload ×
impl."""

from .common import _MemBackward, _MemForward, _TimeSuite


class PacConvTranspose2d(_TimeSuite):
    workloads = ("W4",)


class PacConvTranspose2dMemForward(_MemForward):
    workloads = ("W4",)


class PacConvTranspose2dMemBackward(_MemBackward):
    workloads = ("W4",)
