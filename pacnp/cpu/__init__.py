"""numba CPU kernels. Each module holds the forward and backward of one op family; the CUDA
twins in ``pacnp.cuda`` use the same module and function names."""
