"""2-D and 3-D kernels launched without a configuration: right answers on odd shapes, or a refusal."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numba import cuda

from ringkernel import LaunchConfigError, gpu_kernel
from ringkernel.kernel.indexing import KernelIndexing, analyze_kernel
from ringkernel.kernel.intrinsics import global_thread_id_2d, grid_stride_2d


@gpu_kernel
def stencil2d(u, out):  # type: ignore[no-untyped-def]
    col, row = cuda.grid(2)  # x along the contiguous axis
    if 0 < row < out.shape[0] - 1 and 0 < col < out.shape[1] - 1:
        out[row, col] = u[row - 1, col] + u[row + 1, col] + u[row, col - 1] + u[row, col + 1] - 4 * u[row, col]


@gpu_kernel
def matrix_add(a, b, c):  # type: ignore[no-untyped-def]
    row, col = cuda.grid(2)  # numba's documentation's convention: x along axis 0
    if row < c.shape[0] and col < c.shape[1]:
        c[row, col] = a[row, col] + b[row, col]


@gpu_kernel
def stencil3d(u, out):  # type: ignore[no-untyped-def]
    i = cuda.threadIdx.x + cuda.blockIdx.x * cuda.blockDim.x
    j = cuda.threadIdx.y + cuda.blockIdx.y * cuda.blockDim.y
    k = cuda.threadIdx.z + cuda.blockIdx.z * cuda.blockDim.z
    if 0 < k < u.shape[0] - 1 and 0 < j < u.shape[1] - 1 and 0 < i < u.shape[2] - 1:
        out[k, j, i] = (
            u[k - 1, j, i] + u[k + 1, j, i] + u[k, j - 1, i] + u[k, j + 1, i] + u[k, j, i - 1] + u[k, j, i + 1]
            - 6 * u[k, j, i]
        )  # fmt: skip


@gpu_kernel(grid_stride=True)
def scale2d_gs(a, out, s):  # type: ignore[no-untyped-def]
    x0, y0 = global_thread_id_2d()
    sx, sy = grid_stride_2d()
    for r in range(y0, out.shape[0], sy):
        for c in range(x0, out.shape[1], sx):
            out[r, c] = s * a[r, c]


@cuda.jit(device=True)
def _laplace_rows(u, r, c):  # type: ignore[no-untyped-def]
    return u[r - 1, c] - 2 * u[r, c] + u[r + 1, c]


@gpu_kernel
def rows_second_diff(u, out):  # type: ignore[no-untyped-def]
    tid = cuda.threadIdx  # an alias, and the subscripts inside a device function
    x = tid.x + cuda.blockIdx.x * cuda.blockDim.x
    y = tid.y + cuda.blockIdx.y * cuda.blockDim.y
    if 0 < y < u.shape[0] - 1 and x < u.shape[1]:
        out[y, x] = _laplace_rows(u, y, x)


def _stencil2d_ref(u: np.ndarray) -> np.ndarray:
    out = np.zeros_like(u)
    out[1:-1, 1:-1] = u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4 * u[1:-1, 1:-1]
    return out


def test_stencil2d_odd_shape(rng: np.random.Generator) -> None:
    u = rng.standard_normal((37, 61)).astype(np.float32)
    d_out = cuda.to_device(np.zeros_like(u))
    stencil2d(cuda.to_device(u), d_out)
    np.testing.assert_allclose(d_out.copy_to_host(), _stencil2d_ref(u), rtol=1e-5, atol=1e-5)
    d = stencil2d.last_config
    assert d is not None and d.ndim == 2 and d.extent == (61, 37)
    assert d.grid[0] * d.block[0] >= 61 and d.grid[1] * d.block[1] >= 37
    assert d.block[0] >= d.block[1]  # warps run along x, the contiguous axis
    text = d.explain()
    assert "2-D launch" in text and "61 x 37" in text and "out" in text


def test_matrix_add_transposed_convention(rng: np.random.Generator) -> None:
    shape = (37, 61)  # not square: a wrong axis mapping would leave a band unwritten
    a = rng.standard_normal(shape)
    b = rng.standard_normal(shape)
    d_c = cuda.to_device(np.full(shape, np.nan))
    matrix_add(cuda.to_device(a), cuda.to_device(b), d_c)
    np.testing.assert_array_equal(d_c.copy_to_host(), a + b)
    d = matrix_add.last_config
    assert d is not None and d.extent == (37, 61)
    assert d.block[0] == 1  # x runs along axis 0 (strided): warps are laid along y, the contiguous axis


def test_stencil3d_odd_shape(rng: np.random.Generator) -> None:
    u = rng.standard_normal((5, 7, 9)).astype(np.float64)
    d_out = cuda.to_device(np.zeros_like(u))
    stencil3d(cuda.to_device(u), d_out)
    ref = np.zeros_like(u)
    c = u[1:-1, 1:-1, 1:-1]
    ref[1:-1, 1:-1, 1:-1] = (
        u[:-2, 1:-1, 1:-1] + u[2:, 1:-1, 1:-1] + u[1:-1, :-2, 1:-1] + u[1:-1, 2:, 1:-1]
        + u[1:-1, 1:-1, :-2] + u[1:-1, 1:-1, 2:] - 6 * c
    )  # fmt: skip
    np.testing.assert_allclose(d_out.copy_to_host(), ref, rtol=1e-12, atol=1e-12)
    d = stencil3d.last_config
    assert d is not None and d.ndim == 3 and d.extent == (9, 7, 5)


def test_grid_stride_2d(rng: np.random.Generator) -> None:
    a = rng.standard_normal((45, 23)).astype(np.float32)
    d_out = cuda.to_device(np.zeros_like(a))
    scale2d_gs(cuda.to_device(a), d_out, np.float32(2.5))
    np.testing.assert_allclose(d_out.copy_to_host(), 2.5 * a, rtol=1e-6)
    d = scale2d_gs.last_config
    assert d is not None and d.ndim == 2 and d.grid_stride and d.extent == (23, 45)


def test_subscripts_inside_device_function(rng: np.random.Generator) -> None:
    u = rng.standard_normal((19, 33))
    d_out = cuda.to_device(np.zeros_like(u))
    rows_second_diff(cuda.to_device(u), d_out)
    ref = np.zeros_like(u)
    ref[1:-1] = u[:-2] - 2 * u[1:-1] + u[2:]
    np.testing.assert_allclose(d_out.copy_to_host(), ref, atol=1e-12)


def test_fortran_order_puts_warps_on_axis_0(rng: np.random.Generator) -> None:
    u = np.asfortranarray(rng.standard_normal((37, 61)).astype(np.float32))
    d_u = cuda.to_device(u)
    d_out = cuda.to_device(np.asfortranarray(np.zeros_like(u)))
    stencil2d(d_u, d_out)
    np.testing.assert_allclose(d_out.copy_to_host(), _stencil2d_ref(np.ascontiguousarray(u)), rtol=1e-5, atol=1e-5)
    d = stencil2d.last_config
    assert d is not None and d.block[0] == 1  # x is axis 1, which is strided in Fortran order


def test_same_size_other_shape_is_replanned(rng: np.random.Generator) -> None:
    for shape in ((20, 30), (30, 20), (600, 1)):
        a = rng.standard_normal(shape)
        d_c = cuda.to_device(np.full(shape, np.nan))
        matrix_add(cuda.to_device(a), cuda.to_device(a), d_c)
        np.testing.assert_array_equal(d_c.copy_to_host(), 2 * a)
        assert matrix_add.last_config is not None and matrix_add.last_config.extent == shape


@gpu_kernel
def flat2d(a, n):  # type: ignore[no-untyped-def]
    x, y = cuda.grid(2)
    if x < n and y < n:
        a[y * n + x] = y * n + x


def test_unknown_extent_is_refused_with_the_fix() -> None:
    d_a = cuda.to_device(np.zeros(30, np.int64))
    with pytest.raises(LaunchConfigError) as err:
        flat2d(d_a, 5)
    msg = str(err.value)
    assert "flat2d" in msg and "elements=(nx, ny)" in msg and "kernel[grid, block]" in msg
    flat2d(d_a, 5, elements=(5, 5))  # the fix the message names works
    np.testing.assert_array_equal(d_a.copy_to_host()[:25], np.arange(25))
    with pytest.raises(LaunchConfigError, match="one integer extent per grid dimension"):
        flat2d(d_a, 5, elements=25)


def test_kernel_without_index_is_refused() -> None:
    @gpu_kernel
    def no_index(a):  # type: ignore[no-untyped-def]
        a[0] = 1

    with pytest.raises(LaunchConfigError, match="reads no thread or block index") as err:
        no_index(cuda.to_device(np.zeros(4)))
    assert "kernel[1, 1]" in str(err.value)


def test_single_block_kernel_is_refused() -> None:
    @gpu_kernel
    def one_block(a):  # type: ignore[no-untyped-def]
        i = cuda.threadIdx.x
        if i < a.size:
            a[i] += 1

    with pytest.raises(LaunchConfigError, match="written for one block"):
        one_block(cuda.to_device(np.zeros(300)))


def test_non_constant_dimension_is_refused() -> None:
    @gpu_kernel
    def dyn(a):  # type: ignore[no-untyped-def]
        i = cuda.grid(a.ndim)
        a[i] = 1

    with pytest.raises(LaunchConfigError, match="dimensionality") as err:
        dyn(cuda.to_device(np.zeros(4)))
    assert "ndim=" in str(err.value)


def test_declared_ndim_with_explicit_extent(rng: np.random.Generator) -> None:
    @gpu_kernel(ndim=2)
    def fill(a, w):  # type: ignore[no-untyped-def]
        i = cuda.grid(a.ndim + 1)[0]  # non-constant: the analysis gives up, the declaration stands
        j = cuda.threadIdx.y + cuda.blockIdx.y * cuda.blockDim.y
        if i < w and j * w + i < a.size:
            a[j * w + i] = 1.0

    d_a = cuda.to_device(np.zeros(7 * 11))
    fill(d_a, 7, elements=(7, 11))
    assert d_a.copy_to_host().sum() == 77


def test_indexing_record_round_trip_and_refuses_garbage() -> None:
    ix = analyze_kernel(stencil3d.py_func)
    assert ix.ndim == 3 and ix.axis_maps["u"].axes == (2, 1, 0)
    assert KernelIndexing.from_json(ix.to_json()) == ix
    for bad in ("{}", "[]", '{"ndim": 7, "dims_used": [], "axis_maps": {}, "problems": [], "sources": []}', "nope"):
        with pytest.raises(ValueError):
            KernelIndexing.from_json(bad)
    # a record of an older analysis (cache entries keep theirs) is not trusted: analysed again
    import json

    from ringkernel.kernel.indexing import ANALYSIS_VERSION, StaleIndexingRecord

    old_record = json.loads(ix.to_json())
    assert old_record.pop("analysis") == ANALYSIS_VERSION
    with pytest.raises(StaleIndexingRecord):
        KernelIndexing.from_json(json.dumps(old_record))


def test_one_d_kernels_unchanged(rng: np.random.Generator) -> None:
    @gpu_kernel
    def twice(a, out):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < out.size:
            out[i] = 2 * a[i]

    a = rng.standard_normal(1001)
    d_out = cuda.device_array_like(a)
    twice(cuda.to_device(a), d_out)
    np.testing.assert_array_equal(d_out.copy_to_host(), 2 * a)
    d = twice.last_config
    assert d is not None and d.ndim == 1 and d.elements == 1001


# -- kernels an adversarial trial found launched wrongly (each now right, or refused) ----------
def _nan(shape: tuple[int, ...]) -> Any:
    return cuda.to_device(np.full(shape, np.nan))


def test_block_per_row_kernel_is_refused(rng: np.random.Generator) -> None:
    @gpu_kernel
    def copy_rows(a, out):  # type: ignore[no-untyped-def]
        row = cuda.blockIdx.x
        j = cuda.threadIdx.x
        while j < a.shape[1]:
            out[row, j] = a[row, j]
            j += cuda.blockDim.x

    with pytest.raises(LaunchConfigError, match="blockIdx.x without threadIdx.x") as err:
        copy_rows(cuda.to_device(rng.random((200, 3))), _nan((200, 3)))
    assert "kernel[rows, threads]" in (err.value.hint or "")


def test_lone_block_or_thread_index_in_nd_is_refused(rng: np.random.Generator) -> None:
    @gpu_kernel
    def batch(a, out):  # type: ignore[no-untyped-def]
        x, y = cuda.grid(2)
        b = cuda.blockIdx.z
        if b < a.shape[0] and y < a.shape[1] and x < a.shape[2]:
            out[b, y, x] = a[b, y, x]

    @gpu_kernel
    def mixed(a, out):  # type: ignore[no-untyped-def]
        x = cuda.grid(1)
        y = cuda.threadIdx.y
        if y < a.shape[0] and x < a.shape[1]:
            out[y, x] = a[y, x]

    for k, shape in ((batch, (64, 1, 1)), (mixed, (20, 13))):
        with pytest.raises(LaunchConfigError, match="alone"):
            k(cuda.to_device(rng.random(shape)), _nan(shape))


def test_small_array_indexed_modulo_does_not_set_the_extent(rng: np.random.Generator) -> None:
    @gpu_kernel
    def tile(w, out):  # type: ignore[no-untyped-def]
        x, y = cuda.grid(2)
        if y < out.shape[0] and x < out.shape[1]:
            cuda.atomic.add(out, (y, x), w[y % 3, x % 3])

    w = rng.random((3, 3))
    out = cuda.to_device(np.zeros((7, 13)))
    tile(cuda.to_device(w), out)  # the atomic's subscript is seen: out spans the work
    np.testing.assert_allclose(out.copy_to_host(), np.tile(w, (3, 5))[:7, :13])

    @gpu_kernel
    def tile_flat(w, out, width):  # type: ignore[no-untyped-def]
        x, y = cuda.grid(2)
        if x < width and y * width + x < out.size:
            out[y * width + x] = w[y % 3, x % 3]

    with pytest.raises(LaunchConfigError, match="elements="):
        tile_flat(cuda.to_device(w), _nan((91,)), 13)  # only w is visible, and only transformed


def test_upsampling_both_ways(rng: np.random.Generator) -> None:
    @gpu_kernel
    def up_over_output(a, out):  # type: ignore[no-untyped-def]
        x, y = cuda.grid(2)
        if y < out.shape[0] and x < out.shape[1]:
            out[y, x] = a[y // 2, x // 2]

    @gpu_kernel
    def up_over_input(a, out):  # type: ignore[no-untyped-def]
        x, y = cuda.grid(2)
        if y < a.shape[0] and x < a.shape[1]:
            v = a[y, x]
            out[2 * y, 2 * x] = v
            out[2 * y + 1, 2 * x] = v
            out[2 * y, 2 * x + 1] = v
            out[2 * y + 1, 2 * x + 1] = v

    a = rng.random((7, 13))
    ref = np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)
    for k in (up_over_output, up_over_input):
        out = _nan((14, 26))
        k(cuda.to_device(a), out)
        np.testing.assert_array_equal(out.copy_to_host(), ref)


def test_declared_ndim_contradicting_the_code_is_refused(rng: np.random.Generator) -> None:
    @gpu_kernel(ndim=1)
    def k(a, out):  # type: ignore[no-untyped-def]
        x, y = cuda.grid(2)
        if y < out.shape[0] and x < out.shape[1]:
            out[y, x] = a[y, x]

    with pytest.raises(LaunchConfigError, match="declared ndim=1, but its code reads a 2-D grid"):
        k(cuda.to_device(rng.random((7, 13))), _nan((7, 13)))


def test_elements_in_numpy_order_is_refused(rng: np.random.Generator) -> None:
    a = rng.random((7, 13))
    with pytest.raises(LaunchConfigError, match="NumPy's shape order") as err:
        stencil2d(cuda.to_device(a), _nan((7, 13)), elements=(7, 13))
    assert "(13, 7)" in (err.value.hint or "")
    out = cuda.to_device(np.zeros((7, 13)))
    stencil2d(cuda.to_device(a), out, elements=(13, 7))
    np.testing.assert_allclose(out.copy_to_host(), _stencil2d_ref(a), atol=1e-12)


def test_arrays_in_tuples(rng: np.random.Generator) -> None:
    @gpu_kernel
    def fan_out(w, outs):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < outs[0].size:
            outs[0][i] = w[i % 3]
        if i < outs[1].size:
            outs[1][i] = 2 * w[i % 3]

    w = rng.random(3)
    o1, o2 = _nan((50,)), _nan((20,))
    with pytest.raises(LaunchConfigError, match="indexed by the thread's position"):
        fan_out(cuda.to_device(w), (o1, o2))  # w is indexed i % 3 only, the outputs are hidden
    fan_out(cuda.to_device(w), (o1, o2), elements=50)
    np.testing.assert_array_equal(o1.copy_to_host(), w[np.arange(50) % 3])

    @gpu_kernel
    def copy_into(a, outs):  # type: ignore[no-untyped-def]
        i = cuda.grid(1)
        if i < a.size:
            outs[0][i] = a[i]
        if i < outs[1].size:
            outs[1][i] = 1.0

    big = _nan((64,))
    copy_into(cuda.to_device(rng.random(10)), (_nan((10,)), big))  # the tuple's arrays count for the size
    assert not np.isnan(big.copy_to_host()).any()


def test_pairwise_kernel_needs_its_thread_count(rng: np.random.Generator) -> None:
    @gpu_kernel
    def pairwise(a, b, out):  # type: ignore[no-untyped-def]
        t = cuda.grid(1)
        n = a.size
        if t < n * n:
            cuda.atomic.add(out, 0, a[t // n] * b[t % n])

    a, b = rng.random(9), rng.random(9)
    out = cuda.to_device(np.zeros(1))
    with pytest.raises(LaunchConfigError, match="pairwise"):
        pairwise(cuda.to_device(a), cuda.to_device(b), out)
    pairwise(cuda.to_device(a), cuda.to_device(b), out, elements=81)
    np.testing.assert_allclose(out.copy_to_host()[0], a.sum() * b.sum())


def test_keyword_arguments_to_device_functions(rng: np.random.Generator) -> None:
    @cuda.jit(device=True)
    def store(arr, i, j, v):  # type: ignore[no-untyped-def]
        arr[i, j] = v

    @gpu_kernel
    def kw(a, out):  # type: ignore[no-untyped-def]
        x, y = cuda.grid(2)
        if y < a.shape[0] and x < a.shape[1]:
            store(out, y, x, a[y, x] * 2)

    assert kw.indexing.written == ("out",)
    a = rng.random((7, 13))
    out = np.full((7, 13), np.nan)
    kw(a, out, host_transfer=True)
    np.testing.assert_array_equal(out, 2 * a)

    def body(a, out):  # type: ignore[no-untyped-def]
        x, y = cuda.grid(2)
        if y < a.shape[0] and x < a.shape[1]:
            store(arr=out, j=x, i=y, v=a[y, x] * 2)

    ix = analyze_kernel(body)  # the simulator cannot run keyword device calls; the analysis reads them
    assert ix.written == ("out",) and ix.axis_maps["out"].axes == (1, 0)


def test_fixed_shared_tile_needs_a_declared_block(rng: np.random.Generator) -> None:
    from numba import float64

    TPB = 4

    def matmul_body(A, B, C):  # type: ignore[no-untyped-def]
        sA = cuda.shared.array(shape=(TPB, TPB), dtype=float64)
        sB = cuda.shared.array(shape=(TPB, TPB), dtype=float64)
        x, y = cuda.grid(2)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        bpg = cuda.gridDim.x
        tmp = 0.0
        for i in range(bpg):
            sA[ty, tx] = 0
            sB[ty, tx] = 0
            if y < A.shape[0] and (tx + i * TPB) < A.shape[1]:
                sA[ty, tx] = A[y, tx + i * TPB]
            if x < B.shape[1] and (ty + i * TPB) < B.shape[0]:
                sB[ty, tx] = B[ty + i * TPB, x]
            cuda.syncthreads()
            for j in range(TPB):
                tmp += sA[ty, j] * sB[j, tx]
            cuda.syncthreads()
        if y < C.shape[0] and x < C.shape[1]:
            C[y, x] = tmp

    A, B = rng.random((8, 8)), rng.random((8, 8))
    with pytest.raises(LaunchConfigError, match="shared memory of a fixed shape") as err:
        gpu_kernel(matmul_body)(cuda.to_device(A), cuda.to_device(B), _nan((8, 8)))
    assert "block=" in (err.value.hint or "")
    C = _nan((8, 8))
    gpu_kernel(block=(TPB, TPB))(matmul_body)(cuda.to_device(A), cuda.to_device(B), C)  # the fix works
    np.testing.assert_allclose(C.copy_to_host(), A @ B, rtol=1e-12)


def test_a_grid_position_on_a_view_of_an_argument_is_refused_not_undersized() -> None:
    """out[row][col] (or r = out[row]; r[col]) with a smaller input: the grid was sized from the
    input and 1968 of 2000 outputs were never written (an adversarial trial). Refused now, and
    the declared form works."""

    @gpu_kernel
    def pad(a, out):  # type: ignore[no-untyped-def]
        row, col = cuda.grid(2)
        if row < out.shape[0] and col < out.shape[1]:
            v = 0.0
            if row < a.shape[0] and col < a.shape[1]:
                v = a[row, col]
            out[row][col] = v

    a = cuda.to_device(np.ones((4, 5)))
    out = cuda.to_device(np.full((40, 50), np.nan))
    with pytest.raises(LaunchConfigError, match=r"out\[row, col\]"):
        pad(a, out)
    declared = gpu_kernel(ndim=2)(pad.py_func)
    declared(a, out, elements=(50, 40))
    want = np.zeros((40, 50))
    want[:4, :5] = 1.0
    np.testing.assert_array_equal(out.copy_to_host(), want)


@cuda.jit(device=True)
def _store(row_view, col, v):  # type: ignore[no-untyped-def]
    row_view[col] = v


def test_stores_through_views_are_refused_and_reads_through_them_are_fine() -> None:
    """A review: a row passed to a device function that writes it got round the refusal (1984 of
    2000 outputs unwritten), and a matrix multiply that only reads A[row][k] was refused."""

    @gpu_kernel
    def pad_via_device(a, out):  # type: ignore[no-untyped-def]
        row, col = cuda.grid(2)
        if row < out.shape[0] and col < out.shape[1]:
            v = 0.0
            if row < a.shape[0] and col < a.shape[1]:
                v = a[row, col]
            _store(out[row], col, v)

    with pytest.raises(LaunchConfigError, match="store into a view"):
        pad_via_device(cuda.to_device(np.ones((4, 5))), cuda.to_device(np.zeros((40, 50))))

    @gpu_kernel
    def matmul(A, B, C):  # type: ignore[no-untyped-def]
        row, col = cuda.grid(2)
        if row < C.shape[0] and col < C.shape[1]:
            acc = 0.0
            for k in range(A.shape[1]):
                acc += A[row][k] * B[k][col]
            C[row, col] = acc

    rng = np.random.default_rng()
    A, B = rng.standard_normal((7, 5)), rng.standard_normal((5, 9))
    C = cuda.to_device(np.zeros((7, 9)))
    matmul(cuda.to_device(A), cuda.to_device(B), C)
    np.testing.assert_allclose(C.copy_to_host(), A @ B, rtol=1e-12)
