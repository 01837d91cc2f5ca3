// cuda_layout.cu — nearest 2× upsample, channel concat, NCHW ↔ NHWC. Pure data movement, so
// each kernel copies storage-type elements without converting them (exact for every type).
//
// upsample / concat: one thread per OUTPUT element (grid-stride), reading its source — writes
// are coalesced, reads mostly so (neighbouring outputs read neighbouring or equal inputs).
// The layout changes are batched transposes through a 32 × 33 shared tile (the extra column
// keeps the column reads free of bank conflicts), so both global sides are coalesced.
#include "cuda_common.cuh"

namespace {

constexpr int THREADS = 256;
constexpr int TILE = 32;
constexpr int TILE_ROWS = 8;  // threads per tile column: each thread moves TILE / TILE_ROWS values

template <typename T>
__global__ void upsample2x_kernel(const T* __restrict__ x,  // (N, H, W, C)
                                  T* __restrict__ y,        // (N, 2H, 2W, C)
                                  int64_t H, int64_t W, int64_t C, int64_t n_out) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_out;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = i % C, p = i / C;
        const int64_t ox = p % (2 * W), t = p / (2 * W);
        const int64_t oy = t % (2 * H), n = t / (2 * H);
        y[i] = x[((n * H + oy / 2) * W + ox / 2) * C + c];
    }
}

template <typename T>
__global__ void concat_kernel(const T* __restrict__ a,  // (N·S, Ca)
                              const T* __restrict__ b,  // (N·S, Cb)
                              T* __restrict__ y,        // (N·S, Ca + Cb)
                              int64_t Ca, int64_t Cb, int64_t n_out) {
    const int64_t C = Ca + Cb;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_out;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = i % C, r = i / C;
        y[i] = c < Ca ? a[r * Ca + c] : b[r * Cb + (c - Ca)];
    }
}

// y[n](cols, rows) = x[n](rows, cols)ᵀ. grid (row tiles · col tiles, 1, N) — one flat tile index,
// since either side can be long (H·W of a large image) and grid.y stops at 65535;
// block (TILE, TILE_ROWS).
template <typename T>
__global__ void transpose_kernel(const T* __restrict__ x,  // (N, rows, cols)
                                 T* __restrict__ y,        // (N, cols, rows)
                                 int64_t rows, int64_t cols) {
    __shared__ T tile[TILE][TILE + 1];
    const int64_t n = blockIdx.z;
    const int64_t ctiles = (cols + TILE - 1) / TILE;
    const int64_t r0 = (int64_t)(blockIdx.x / ctiles) * TILE, c0 = (int64_t)(blockIdx.x % ctiles) * TILE;
    const T* xn = x + n * rows * cols;
    T* yn = y + n * rows * cols;
    for (int k = threadIdx.y; k < TILE; k += TILE_ROWS) {  // read rows of x: along cols
        const int64_t r = r0 + k, c = c0 + threadIdx.x;
        if (r < rows && c < cols) tile[k][threadIdx.x] = xn[r * cols + c];
    }
    __syncthreads();
    for (int k = threadIdx.y; k < TILE; k += TILE_ROWS) {  // write rows of y: along rows of x
        const int64_t c = c0 + k, r = r0 + threadIdx.x;
        if (r < rows && c < cols) yn[c * rows + r] = tile[threadIdx.x][k];
    }
}

template <typename T>
void transpose(ds_backend* be, const float* x, float* y, int64_t N, int64_t rows, int64_t cols) {
    if (N <= 0 || rows <= 0 || cols <= 0) return;
    const int64_t tiles = ((rows + TILE - 1) / TILE) * ((cols + TILE - 1) / TILE);
    if (N > 65535 || tiles > 0x7fffffff)
        ds_cuda_fatal(__FILE__, __LINE__, "transpose", "grid too large");
    auto* k = transpose_kernel<T>;
    DS_LAUNCH(k, dim3((unsigned)tiles, 1, (unsigned)N),
              dim3(TILE, TILE_ROWS), 0, ds_cuda_stream(be), ds_dev<T>(be, x), ds_dev<T>(be, y),
              rows, cols);
}

}  // namespace

void ds_cuda_upsample_nearest2x(ds_backend* be, const float* x, float* y, int64_t N, int64_t H,
                                int64_t W, int64_t C) {
    const int64_t n = N * 4 * H * W * C;
    if (n <= 0) return;
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        auto* k = upsample2x_kernel<T>;
        DS_LAUNCH(k, ds_cuda_grid(be, n, THREADS), THREADS, 0, ds_cuda_stream(be), ds_dev<T>(be, x),
                  ds_dev<T>(be, y), H, W, C, n);
    });
}

void ds_cuda_concat_channels(ds_backend* be, const float* a, const float* b, float* y, int64_t N,
                             int64_t S, int64_t Ca, int64_t Cb) {
    const int64_t n = N * S * (Ca + Cb);
    if (n <= 0) return;
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        auto* k = concat_kernel<T>;
        // a zero-width side has no memory to name: pass NULL rather than resolve its handle
        DS_LAUNCH(k, ds_cuda_grid(be, n, THREADS), THREADS, 0, ds_cuda_stream(be),
                  Ca > 0 ? ds_dev<T>(be, a) : (const T*)nullptr,
                  Cb > 0 ? ds_dev<T>(be, b) : (const T*)nullptr, ds_dev<T>(be, y), Ca, Cb, n);
    });
}

void ds_cuda_nchw_to_nhwc(ds_backend* be, const float* x, float* y, int64_t N, int64_t C, int64_t H,
                          int64_t W) {
    DS_DISPATCH(ds_cuda_act_dtype(be), T, transpose<T>(be, x, y, N, C, H * W));  // (C, HW) → (HW, C)
}

void ds_cuda_nhwc_to_nchw(ds_backend* be, const float* x, float* y, int64_t N, int64_t H, int64_t W,
                          int64_t C) {
    DS_DISPATCH(ds_cuda_act_dtype(be), T, transpose<T>(be, x, y, N, H * W, C));  // (HW, C) → (C, HW)
}
