"""packernel2d alone: K from the guide (forward) and d_guide from dK (backward), for the kernels
of W1–W4; pacnp against the unfold formulation. Parameters: backend × workload × impl.

``peakmem_forward`` is asv's whole-process peak, and this class's setup warms up the backward
too: read it as a regression signal only (common.py's ``_MemForward`` classes measure memory
properly)."""

from .common import BACKENDS, WORKLOADS, KernelRunner, set_threads


class PacKernel2d:
    params = [list(BACKENDS), list(WORKLOADS), ["pacnp", "torch_unfold"]]
    param_names = ["backend", "workload", "impl"]
    timeout = 600

    def setup(self, backend, workload, impl):
        self.runner = KernelRunner(impl, WORKLOADS[workload], backend)
        set_threads()
        self.runner.warm_up(("forward", "backward"))
        self.runner.prepare_backward()

    def time_forward(self, backend, workload, impl):
        self.runner.run("forward")

    def time_backward(self, backend, workload, impl):
        self.runner.run("backward")

    def peakmem_forward(self, backend, workload, impl):
        self.runner.run("forward")
