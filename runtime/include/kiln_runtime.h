/* kiln runtime: the functions kiln's generated code calls, and that a host
   program may call. Link with libkiln_runtime.a
   (`cargo build --release -p kiln-runtime [--features std] [--target TRIPLE]`);
   on Linux also -lpthread -ldl -lm. */
#ifndef KILN_RUNTIME_H
#define KILN_RUNTIME_H
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A loop body: runs iterations [begin, end) of a loop over ctx. */
typedef void (*kiln_task_fn)(void *ctx, size_t begin, size_t end);

/* Runs task over disjoint ranges covering [0, n) and returns when all are
   done. Without the runtime's `std` feature this is task(ctx, 0, n); with it,
   the range is split statically over a persistent thread pool (the calling
   thread takes the first part). Calls made from inside a task, or while
   another thread is using the pool, run inline. task must tolerate running
   concurrently on disjoint ranges. */
void kiln_parallel_for(size_t n, kiln_task_fn task, void *ctx);

/* Threads kiln_parallel_for uses, the caller's included: 1 without `std`;
   with it KILN_NUM_THREADS (read once, when the pool starts) or all cores. */
int kiln_runtime_num_threads(void);

/* The runtime version, e.g. "0.1.0" (static storage). */
const char *kiln_runtime_version(void);

#ifdef __cplusplus
}
#endif
#endif
