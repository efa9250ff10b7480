/* Runs a kiln-compiled model (built with `--name model`) on the reference
   inputs embedded by scripts/npz-to-firmware.py, compares the outputs with
   the embedded reference outputs, and exits through semihosting:
   0 = match, 1 = mismatch, 2 = the model reported an error, 3 = size mismatch.
   Prints the arena size and the stack the inference used (painted and
   scanned). `bench_start`/`bench_stop` mark the inference for the
   instruction-counting QEMU plugin. */
#include <stdint.h>
#include <string.h>
#include "firmware.h"
#include "io.h"
#include "model.h"

#if KILN_IO_INPUTS != MODEL_NUM_INPUTS || KILN_IO_OUTPUTS != MODEL_NUM_OUTPUTS
#error "reference data and model disagree on the number of inputs or outputs"
#endif

#define STACK_PAINT 0xC0FFEE11u

static unsigned char arena[MODEL_ARENA_SIZE] __attribute__((aligned(MODEL_ARENA_ALIGN)));
static const unsigned char *const inputs[KILN_IO_INPUTS + 1] = KILN_IO_INPUT_PTRS;
static const unsigned char *const expected[] = KILN_IO_EXPECTED_PTRS;
static const size_t expected_sizes[] = KILN_IO_EXPECTED_SIZES;
static const char expected_kinds[] = KILN_IO_EXPECTED_KINDS;
/* Outputs in RAM, each 8-byte aligned. */
static uint64_t out_mem[(KILN_IO_OUTPUT_BYTES + 7) / 8 + KILN_IO_OUTPUTS];

volatile uint32_t kiln_bench_sink;
__attribute__((noinline)) void bench_start(uint32_t id) { kiln_bench_sink = id; }
__attribute__((noinline)) void bench_stop(void) { kiln_bench_sink = 0; }

extern uint32_t __stack_bottom[];

static void put_u(const char *label, unsigned long v) {
  char buf[24];
  int i = 23;
  buf[i] = 0;
  do { buf[--i] = (char)('0' + v % 10); v /= 10; } while (v && i > 0);
  kiln_puts(label);
  kiln_puts(&buf[i]);
  kiln_puts("\n");
}

static int close_f32(float got, float want) {
  float d = got - want, a = want < 0 ? -want : want;
  if (d < 0) d = -d;
  if (got != got || want != want) return (got != got) && (want != want);
  return d <= 1e-4f + 1e-3f * a;
}

int main(void) {
  void *outs[KILN_IO_OUTPUTS];
  uint32_t sp, *w, *lowest;
  size_t off = 0, i, j, bad = 0, n = 0;
  int rc;
  for (i = 0; i < KILN_IO_OUTPUTS; i++) {
    if (model_output_sizes[i] != expected_sizes[i]) {
      kiln_puts("kiln-fw: output size differs from the reference\n");
      return 3;
    }
    outs[i] = (unsigned char *)out_mem + off;
    off += (expected_sizes[i] + 7) & ~(size_t)7;
  }
  /* Paint the stack below the current frame (nothing lives below sp). */
  __asm__ volatile("mov %0, sp" : "=r"(sp));
  for (w = __stack_bottom; (uint32_t)(uintptr_t)w < sp - 64; w++) *w = STACK_PAINT;
  bench_start(1);
  rc = model_run((const void *const *)inputs, outs, arena);
  bench_stop();
  for (lowest = __stack_bottom; *lowest == STACK_PAINT; lowest++) {
  }
  if (rc != 0) {
    kiln_puts("kiln-fw: model_run failed\n");
    return 2;
  }
  for (i = 0; i < KILN_IO_OUTPUTS; i++) {
    const unsigned char *g = (const unsigned char *)outs[i], *e = expected[i];
    if (expected_kinds[i] == 'f') {
      for (j = 0; j + 4 <= expected_sizes[i]; j += 4) {
        float a, b;
        memcpy(&a, g + j, 4);
        memcpy(&b, e + j, 4);
        bad += !close_f32(a, b);
        n++;
      }
    } else {
      for (j = 0; j < expected_sizes[i]; j++) bad += g[j] != e[j];
      n += expected_sizes[i];
    }
  }
  put_u("kiln-fw: arena bytes ", MODEL_ARENA_SIZE);
  put_u("kiln-fw: stack bytes ", sp - (uint32_t)(uintptr_t)lowest);
  put_u("kiln-fw: values compared ", n);
  put_u("kiln-fw: mismatches ", bad);
  kiln_puts(bad ? "kiln-fw: FAIL\n" : "kiln-fw: PASS\n");
  return bad ? 1 : 0;
}
