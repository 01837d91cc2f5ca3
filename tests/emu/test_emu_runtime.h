// test_emu_runtime.h — host wrappers of the self-test kernels (test_emu_runtime.cu), called by
// test_emu_runtime.cpp. Pointers are device memory.
#ifndef DS_TEST_EMU_RUNTIME_H
#define DS_TEST_EMU_RUNTIME_H

#include <cuda_fp16.h>
#include <cuda_runtime.h>

void st_reduce(const float* in, float* out, int n, int blocks);
void st_shuffle(float* out, int threads);
void st_vote(unsigned* out, int threads);
void st_syncthreads_ops(int* out, int threads);
void st_atomics(int* cnt, float* fsum, unsigned* umax, unsigned long long* cas, double* dsum, int blocks, int threads);
void st_dyn_reverse(const float* in, float* out, int n, int threads);
cudaError_t st_dyn_big(float* out, size_t bytes, bool set_attribute);
void st_odd_block(const int* in, int* out, int blocks, int threads);
void st_grid3d(int* hits, int* coords, int nx, int ny, int nz, dim3 block);
void st_wmma(const __half* a, const __half* b, float* c, float* c_col);
void st_half_math(const float* in, float* out, int n);
void st_poison(unsigned* out, int blocks);
void st_racy(int* out);
cudaError_t st_launch_config(dim3 grid, dim3 block, size_t smem);
cudaError_t st_static_plus_dynamic(size_t dyn, size_t* static_bytes);
void st_inc(float* p, int n, cudaStream_t s);
void st_softmax_rows(const float* in, float* out, int rows, int cols);
void st_barrier_loop(int blocks, int threads, int iters, int* out);
float st_intrinsics();
void st_spin(int* out);
bool st_constant_and_2d();  // < 0: inconsistent
// negative
void st_deadlock(float* out);
void st_oob_write(float* p, int n, int beyond);
void st_exited_lane(float* out);
void st_early_exit(float* out);
void st_early_exit_count(int* out);
void st_stack_overflow(float* out);
void st_divergent_barrier(float* out);
void st_assert(int* p);

#endif
