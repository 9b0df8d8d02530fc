"""Tunables of the kernels, in one place (never as literals inside kernels).

Two kinds, read at different times:

* **Frozen at compile time** (``FROZEN_AT_COMPILE``: ``CACHE``, ``FASTMATH``, ``PAIR_FASTMATH``,
  ``INV_EPS``): jit options and constants of the kernels' bodies, baked into the compiled code
  (and numba's on-disk cache, which is keyed on them). ``pacnp._jit`` reads them once per
  process, on the first call that runs a kernel; set them before that call. Changing one
  afterwards makes the next call raise a RuntimeError naming it (instead of silently keeping
  the old value).
* **Read at every call** (everything else): by the drivers (``pacnp._ops``) or by a backend's
  launchers when they derive their schedule (blocks, tiles, launch shapes); change them at any
  time.
"""

# --------------------------------------------------------------------------- compile time
#: The names below that the kernels read at compile time (see the module docstring).
FROZEN_AT_COMPILE = ("CACHE", "FASTMATH", "PAIR_FASTMATH", "INV_EPS")

#: Cache compiled kernels on disk so that a second process does not pay the compile again
#: (a cold ``pacnp filter`` compiles for ~10 s of CPU; from a warm cache it runs in < 1 s).
#: numba picks the directory: ``NUMBA_CACHE_DIR`` if set (also when set after ``import numba``,
#: before the first pacnp call), else ``__pycache__`` beside the kernel modules, else
#: ``~/.cache/numba``. Where none is writable (a read-only install, a read-only home), pacnp
#: compiles in memory in every process and says so once (``pacnp._jit.KernelCacheWarning``);
#: set ``NUMBA_CACHE_DIR`` to a directory that only you can write to keep the kernels.
CACHE = True

#: No fastmath: NaN/inf must propagate from inputs to outputs, and ``nnan``/``ninf`` would
#: allow the compiler to assume they never occur.
FASTMATH = False

#: Added to the squared feature distance of the ``inv_*`` kernels so that a negative λ never
#: meets 0^λ (Su et al. 2019, detail-preserving pooling uses the same ε² guard).
INV_EPS = 1e-4

#: fastmath flags of the pair-form kernel (``pacnp.cpu.depthwise``): multiply-add contraction
#: only (a·b + c may round once, as an FMA). Unlike the other fastmath flags it keeps every
#: NaN/inf semantics of FASTMATH = False; it made this kernel 10–20 % faster (its exp polynomial
#: and its scatter are chains of multiply-adds), where the GEMM-bound kernels showed no
#: measurable gain.
PAIR_FASTMATH = {"contract"}

# --------------------------------------------------------------------------- every call
#: Number of partial buffers for pixel reductions (weight, bias, α, λ, smoothing-kernel
#: gradients). Fixed, not tied to the thread count, so that results are bit-identical
#: whatever ``numba.set_num_threads`` says: each chunk sums its rows in order, then the
#: partials are added in chunk order.
REDUCTION_CHUNKS = 16

#: Upper bound on the bytes of K (and of dK) that the fused path holds at once: it walks the
#: image in stripes of output rows whose kernel fits in this budget (at least one row, so a
#: stripe's K ≤ max(STRIPE_BYTES, one row's K); the taps that can never meet the guide are
#: dropped first, so one row's K is bounded by what the window can reach, not by the window).
#: Bounds the extra memory independently of the image size, and keeps the stripe of K in cache
#: between the moment it is computed and the moment the op consumes it. The CPU launchers also
#: cap the number of per-block scratch buffers they allocate by it (``cpu.schedule``), and the
#: filters' direct path for windows larger than the image works in blocks of about this size.
STRIPE_BYTES = 4 << 20

#: CUDA launch shape: threads per block, and a cap on the blocks of one launch. Every CUDA
#: kernel walks its work with a grid-stride loop, so any launch shape is correct; the cap keeps
#: launches of huge tensors from creating more blocks than the GPU can keep resident anyway.
CUDA_THREADS_PER_BLOCK = 256
CUDA_MAX_BLOCKS = 4096

#: Under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) every simulated thread is a Python
#: thread: small blocks and few of them keep the simulated tests fast (grid-stride loops make
#: the result independent of the launch shape).
CUDA_SIM_THREADS_PER_BLOCK = 8
CUDA_SIM_MAX_BLOCKS = 4

#: Columns (modulated input patches) per GEMM of the dense weight gradient: several output rows
#: side by side, up to this many bytes — big enough for BLAS to run near its peak on the
#: longer inner dimension, small enough to stay in a core's L2 cache.
PARAM_GROUP_BYTES = 128 << 10

#: Kernels without reductions split their output rows into at most this many contiguous blocks
#: (many more than threads, for load balance; each block allocates its scratch buffers once).
#: The result does not depend on it.
ROW_BLOCKS = 64

#: OpenBLAS multiplies small matrices (M·N·K up to about 10⁶) with dedicated kernels that skip
#: the packing of its general path; on this machine's EPYC that runs ~1.6× faster (115 vs 70
#: GFLOP/s for (32×400)@(400×64) vs @(400×128), one thread). The dense forward therefore cuts
#: an output row into column tiles of a multiple of GEMM_MIN_TILE keeping Cout·m·tile within
#: GEMM_SMALL_MNK, when such a tile exists (W1: 64 of 128 columns at 128²); otherwise one GEMM
#: per row. Set GEMM_SMALL_MNK = 0 to always multiply whole rows.
GEMM_SMALL_MNK = 1_000_000
GEMM_MIN_TILE = 16

#: The pair form of the fused depthwise op (``pacnp.cpu.depthwise.pac_depthwise_symmetric_forward``)
#: splits the output into blocks of rows × columns. Each block also evaluates the pairs reaching
#: it from the ``reach`` = dilation·(kh − 1)/2 rows above it, so a block has at least
#: PAIR_ROWS_PER_REACH · reach rows (halo work ≤ ~1/(2·PAIR_ROWS_PER_REACH) of the block's), and
#: at most PAIR_BLOCK_COLS columns, which keeps the reach + 1 rows of input, guide and output
#: that one row of pairs touches in a core's L2 cache. The result does not depend on either.
PAIR_ROWS_PER_REACH = 4
PAIR_BLOCK_COLS = 1024

#: Joint bilateral upsampling (``pacnp.cpu.upsample``) hands its threads rows of the output;
#: with fewer rows than 4 per thread (a 1-D signal is one row per batch item) it also cuts the
#: rows into blocks of columns, each at least UPSAMPLE_MIN_BLOCK_COLS low-res columns long so
#: that its inner loops stay long vectorised runs. The result does not depend on it.
UPSAMPLE_MIN_BLOCK_COLS = 256
